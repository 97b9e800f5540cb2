// Package policy holds cmesh-run's security rules: when it runs under
// sudo (or setuid), what callers may and may not ask for, and how profile
// arguments become an argv.
package policy

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/status"
)

// Mode is how cmesh-run was started.
type Mode struct {
	// Sudo is set when another user's rights were lent to the caller:
	// SUDO_USER is set, or the real uid is not the effective one.
	Sudo bool
	// Asker is who asked: SUDO_USER, else the real user's name.
	Asker string
	// Root is set when the effective user is root.
	Root bool
}

// Detect reads the mode from the process.
func Detect() Mode {
	su := os.Getenv("SUDO_USER")
	return Mode{Sudo: su != "" || os.Getuid() != os.Geteuid(), Asker: su, Root: os.Geteuid() == 0}
}

// CheckCommand refuses, under sudo, the commands a caller lent another
// user's rights has no business running: the backends' own (the wrapper
// would run any argv it is handed), the spool's worker and drain, setup
// unless sudo made the caller root (an administrator), and the commands
// that read a file the caller names (they would read it as the sudo
// target, and print parts of it). name is the command as typed ("config
// check"); fileArgs tells whether it was given a file to read.
func CheckCommand(name string, fileArgs bool, m Mode) error {
	if !m.Sudo {
		return nil
	}
	switch name {
	case "_wrap", "_exec", "_man", "_hook":
		return Deny("%s is cmesh-run's own command and is refused under sudo", name).
			WithHint("backends run it; no caller ever needs to")
	case "worker", "drain":
		return Deny("%s is refused under sudo", name).
			WithHint("run it as the state dir's owner from supervisor, systemd or cron, or with: runuser -u OWNER -- cmesh-run %s", name)
	case "setup":
		if !m.Root {
			return Deny("setup is refused under sudo").WithHint("setup changes the system: run it as root")
		}
	case "config check", "doctor":
		if fileArgs {
			return Deny("%s with a file to read is refused under sudo: it would read the file as the sudo target", name).
				WithHint("run it without sudo, as the file's owner or root; under sudo, %s alone checks the config in use", name)
		}
	}
	return nil
}

// Deny builds a refusal (exit 5).
func Deny(format string, args ...any) *errs.Error {
	return errs.Errorf(errs.Denied, format, args...)
}

// CheckConfigFile refuses, like sudo and sshd do, a config that someone
// other than root could have written: under sudo it decides what runs.
func CheckConfigFile(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil // no config: the defaults, which allow profiles only
		}
		return Deny("cannot check %s: %v", path, err)
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		return Deny("refusing %s under sudo: it is a symlink", path).
			WithHint("make it a regular file owned by root, mode 0644")
	case sys == nil || sys.Uid != 0:
		return Deny("refusing %s under sudo: it is not owned by root", path).
			WithHint("chown root:root %s", path)
	case st.Mode().Perm()&0o022 != 0:
		return Deny("refusing %s under sudo: group or others may write it (mode %04o)", path, st.Mode().Perm()).
			WithHint("chmod 0644 %s", path)
	}
	return nil
}

// CheckJobID validates a job ID given by a caller, so that no ID can name a
// path outside the state dir; under sudo a malformed one is an attempt on
// paths, refused (exit 5) rather than a usage error.
func CheckJobID(id string, m Mode) error {
	err := status.CheckID(id)
	if err != nil && m.Sudo {
		return Deny("%v", err).WithHint("%s", errs.HintOf(err))
	}
	return err
}

// CheckOverrides refuses, under sudo, anything that would point cmesh-run
// at a config or state dir other than root's: the flags and their
// variables. configFlag and stateDirFlag are the flags' values.
func CheckOverrides(m Mode, configFlag, stateDirFlag string) error {
	if !m.Sudo {
		return nil
	}
	for _, f := range []struct{ flag, value, env string }{{"config", configFlag, "CMESH_RUN_CONFIG"}, {"state-dir", stateDirFlag, "CMESH_RUN_STATE_DIR"}} {
		if f.value != "" || os.Getenv(f.env) != "" {
			return Deny("--%s and %s are refused under sudo", f.flag, f.env).
				WithHint("the state dir and config come from %s only; ask its owner to change it", config.DefaultPath)
		}
	}
	return nil
}

// CheckWorkerStateDir refuses a spool worker or drain running as root on
// a state dir another user owns: what its queue holds, that user put
// there, and root would run it.
func CheckWorkerStateDir(dir string, euid, owner int, ownerName string) error {
	if euid != 0 || owner == 0 {
		return nil
	}
	return Deny("refusing to work as root on %s: it belongs to %s", dir, ownerName).
		WithHint("run the worker or drain as %s (supervisor's user=, cron's user field, or runuser -u %s -- cmesh-run ...)", ownerName, ownerName)
}

// CheckQueueControl refuses, under sudo, pausing and resuming queues
// unless the config allows it (allow_queue_control): a paused queue stops
// everyone's builds.
func CheckQueueControl(m Mode, cfg *config.Config) error {
	if m.Sudo && !cfg.AllowQueueControl {
		return Deny("pausing and resuming queues is refused under sudo").
			WithHint("set allow_queue_control = true in %s to allow it", configPath(cfg))
	}
	return nil
}

// FreeCommandsAllowed tells whether a command that is not a profile may
// run: what the config says, else yes for a plain caller and no under sudo.
func FreeCommandsAllowed(cfg *config.Config, m Mode) bool {
	if cfg.AllowFreeCommands != nil {
		return *cfg.AllowFreeCommands
	}
	return !m.Sudo
}

// Expanded is a profile with its arguments substituted.
type Expanded struct {
	Argv []string
	Name string
}

// Expand substitutes args into profile p. Every value must match its
// pattern in full; a value replaces its {key} inside one argv element, so
// it never becomes two words or a shell fragment. Every key the profile
// names must be given, and no other.
func Expand(name string, p config.Profile, args map[string]string) (Expanded, error) {
	var unknown []string
	for k := range args {
		if _, ok := p.Args[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Expanded{}, Deny("profile %s takes no argument %q", name, unknown[0]).
			WithHint("its arguments: %s", strings.Join(argNames(p), ", "))
	}
	for _, k := range argNames(p) {
		v, ok := args[k]
		if !ok {
			return Expanded{}, Deny("profile %s needs --arg %s=VALUE", name, k).
				WithHint("its arguments: %s", strings.Join(argNames(p), ", "))
		}
		re, err := config.Pattern(p.Args[k])
		if err != nil {
			return Expanded{}, errs.Errorf(errs.Internal, "profile %s: argument %s: %v", name, k, err)
		}
		if !re.MatchString(v) {
			shown := strconv.Quote(v)
			if len(v) > 200 {
				shown = strconv.Quote(v[:200]) + "...(" + strconv.Itoa(len(v)) + " bytes)"
			}
			return Expanded{}, Deny("profile %s: --arg %s=%s does not match %s", name, k, shown, p.Args[k]).
				WithHint("give a value that matches the pattern in full")
		}
	}
	e := Expanded{Argv: make([]string, len(p.Command))}
	for i, w := range p.Command {
		e.Argv[i] = config.Substitute(w, args)
	}
	if p.Name != "" {
		e.Name = config.Substitute(p.Name, args)
	}
	return e, nil
}

func argNames(p config.Profile) []string {
	names := make([]string, 0, len(p.Args))
	for k := range p.Args {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// ParseArgs reads --arg KEY=VALUE pairs.
func ParseArgs(pairs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, Deny("--arg %q: want KEY=VALUE", p).WithHint("e.g. --arg org=mars")
		}
		if _, dup := m[k]; dup {
			return nil, Deny("--arg %s given twice", k).WithHint("give each argument once")
		}
		m[k] = v
	}
	return m, nil
}

// Describe renders a profile call for audit lines.
func Describe(name string, args map[string]string) string {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, args[k])
	}
	return b.String()
}
