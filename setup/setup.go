// Package setup prepares a machine for PHP to run cmesh-run through sudo
// as a dedicated user: the user, the sudo rule, at's permission, the state
// dir and a sample config. Each step is printed as the commands an admin
// would type; Apply carries them out.
package setup

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cmesh/cmesh-run/systemd"
)

// Options say who is who and where things go.
type Options struct {
	WebUser  string // the PHP-FPM pool's user, e.g. www-data
	RunAs    string // the user jobs run as, e.g. cmesh
	Binary   string // where cmesh-run is installed, e.g. /usr/local/bin/cmesh-run
	StateDir string
	Config   string // e.g. /etc/cmesh-run/config.toml
	Sudoers  string // e.g. /etc/sudoers.d/cmesh-run
	AtAllow  string
	AtDeny   string
	Self     string // the running binary, copied to Binary when missing
	// Supervisor, when set, is where the worker's supervisor program
	// config goes (e.g. /etc/supervisor/conf.d/cmesh-run-worker.conf).
	Supervisor string
	// SystemdTemplate, when set, is where systemd's template unit for the
	// systemd backend goes (systemd.TemplatePath).
	SystemdTemplate string
}

// SupervisorProgram is the supervisor config that keeps one spool worker
// running as the run-as user. stopasgroup is off on purpose: the jobs the
// worker started run detached and must outlive a worker restart.
func SupervisorProgram(o Options) string {
	return fmt.Sprintf(`[program:cmesh-run-worker]
command=%s --state-dir %s worker
user=%s
directory=/
autostart=true
autorestart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=10
redirect_stderr=true
stdout_logfile=syslog
`, o.Binary, o.StateDir, o.RunAs)
}

// Step is one thing to do: why, and the commands.
type Step struct {
	What     string
	Commands []string
	apply    func() error
}

// SudoersLine is the rule that lets the web user run cmesh-run, and only
// cmesh-run, as the run-as user.
func SudoersLine(o Options) string {
	return fmt.Sprintf("%s ALL=(%s) NOPASSWD: %s\n", o.WebUser, o.RunAs, o.Binary)
}

// SampleConfig is the commented config setup installs when none exists.
func SampleConfig(o Options) string {
	return fmt.Sprintf(`# cmesh-run config: see man cmesh-run, section CONFIG.
# Under sudo this file alone decides what may run: keep it root-owned, 0644.
state_dir = %q
# Only profiles may run (the sudo default); true lets callers run any command.
allow_free_commands = false
# max_running = 2
# timeout = "15m"
# audit_log = "/var/log/cmesh-run/audit.log"

# [env]
# NODE_OPTIONS = "--max-old-space-size=8192"

# [profiles.pushfin]
# command = ["/opt/cmesh/scripts/pushfin.sh", "-o", "{org}", "-n", "{name}"]
# args = { org = "[a-z0-9][a-z0-9-]*", name = "[a-z0-9][a-z0-9-]*" }  # never a leading "-": it would be an option
# name = "{org}-{name}"
# unique = true
# timeout = "15m"
# workdir = "/opt/cmesh"
`, o.StateDir)
}

// Plan lists the steps that would bring the machine in line; steps that
// are already done are left out.
func Plan(o Options) []Step {
	var steps []Step
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

	if _, err := user.Lookup(o.RunAs); err != nil {
		steps = append(steps, Step{
			What: "create the user jobs run as",
			// A home of its own, not the state dir: what jobs leave in
			// $HOME must not land among the records.
			Commands: []string{fmt.Sprintf("useradd --system --create-home --home-dir %s --shell /usr/sbin/nologin %s", q("/home/"+o.RunAs), q(o.RunAs))},
			apply: func() error {
				return run("useradd", "--system", "--create-home", "--home-dir", "/home/"+o.RunAs, "--shell", "/usr/sbin/nologin", o.RunAs)
			},
		})
	}
	if !sameFile(o.Self, o.Binary) {
		steps = append(steps, Step{
			What:     "install the binary the sudo rule names",
			Commands: []string{fmt.Sprintf("install -D -m 0755 %s %s", q(o.Self), q(o.Binary))},
			apply:    func() error { return installFile(o.Self, o.Binary, 0o755, 0, 0) },
		})
	}
	if o.WebUser != o.RunAs {
		want := SudoersLine(o)
		if b, err := os.ReadFile(o.Sudoers); err != nil || string(b) != want {
			steps = append(steps, Step{
				What: "let the web user run cmesh-run, and only it, as " + o.RunAs,
				Commands: []string{
					fmt.Sprintf("printf '%%s' %s > %s.tmp", q(want), q(o.Sudoers)),
					fmt.Sprintf("visudo -cf %s.tmp && install -m 0440 -o root -g root %s.tmp %s && rm %s.tmp", q(o.Sudoers), q(o.Sudoers), q(o.Sudoers), q(o.Sudoers)),
				},
				apply: func() error { return installSudoers(o.Sudoers, want) },
			})
		}
	}
	steps = append(steps, atSteps(o, q)...)
	if st, err := os.Stat(o.StateDir); err != nil || !stateDirOK(st, o) {
		steps = append(steps, Step{
			What:     "the state dir: owned by " + o.RunAs + ", readable by the group " + webGroup(o) + " (setgid keeps that group on everything below)",
			Commands: []string{fmt.Sprintf("install -d -m 2750 -o %s -g %s %s", q(o.RunAs), q(webGroup(o)), q(o.StateDir))},
			apply:    func() error { return run("install", "-d", "-m", "2750", "-o", o.RunAs, "-g", webGroup(o), o.StateDir) },
		})
	}
	if o.Supervisor != "" {
		want := SupervisorProgram(o)
		if b, err := os.ReadFile(o.Supervisor); err != nil || string(b) != want {
			steps = append(steps, Step{
				What:     "keep a spool worker running under supervisor (then: supervisorctl reread && supervisorctl update)",
				Commands: []string{fmt.Sprintf("install -D -m 0644 /dev/stdin %s <<'EOF'\n%sEOF", q(o.Supervisor), want)},
				apply:    func() error { return writeFile(o.Supervisor, []byte(want), 0o644, 0, 0) },
			})
		}
	}
	if o.SystemdTemplate != "" {
		want := systemd.TemplateUnit()
		if b, err := os.ReadFile(o.SystemdTemplate); err != nil || string(b) != want {
			steps = append(steps, Step{
				What: "systemd's template unit: --backend systemd then starts each job as cmesh-run@ID.service instead of a transient unit",
				Commands: []string{
					fmt.Sprintf("install -D -m 0644 -o root -g root /dev/stdin %s <<'EOF'\n%sEOF", q(o.SystemdTemplate), want),
					"systemctl daemon-reload",
				},
				apply: func() error {
					if err := writeFile(o.SystemdTemplate, []byte(want), 0o644, 0, 0); err != nil {
						return err
					}
					if st, err := os.Stat(systemd.BootedDir); err == nil && st.IsDir() {
						return run("systemctl", "daemon-reload")
					}
					return nil
				},
			})
		}
	}
	if _, err := os.Stat(o.Config); err != nil {
		steps = append(steps, Step{
			What:     "a commented config, root-owned (under sudo it alone decides what runs)",
			Commands: []string{fmt.Sprintf("install -D -m 0644 /dev/stdin %s <<'EOF'\n%sEOF", q(o.Config), SampleConfig(o))},
			apply: func() error {
				return writeFile(o.Config, []byte(SampleConfig(o)), 0o644, 0, 0)
			},
		})
	}
	return steps
}

// atSteps makes at accept the user jobs are submitted as.
func atSteps(o Options, q func(string) string) []Step {
	if allow, err := os.ReadFile(o.AtAllow); err == nil {
		if lineOf(allow, o.RunAs) > 0 {
			return nil
		}
		return []Step{{
			What:     o.AtAllow + " exists and does not list " + o.RunAs,
			Commands: []string{fmt.Sprintf("echo %s >> %s", q(o.RunAs), q(o.AtAllow))},
			apply: func() error {
				return editKeepingMode(o.AtAllow, append(withNewline(allow), []byte(o.RunAs+"\n")...))
			},
		}}
	}
	deny, err := os.ReadFile(o.AtDeny)
	if err != nil || lineOf(deny, o.RunAs) == 0 {
		return nil
	}
	return []Step{{
		What:     fmt.Sprintf("line %d of %s denies at to %s", lineOf(deny, o.RunAs), o.AtDeny, o.RunAs),
		Commands: []string{fmt.Sprintf("sed -i '/^%s$/d' %s", o.RunAs, q(o.AtDeny))},
		apply: func() error {
			var keep []string
			for _, l := range strings.Split(string(deny), "\n") {
				if strings.TrimSpace(l) != o.RunAs {
					keep = append(keep, l)
				}
			}
			return editKeepingMode(o.AtDeny, []byte(strings.Join(keep, "\n")))
		},
	}}
}

func webGroup(o Options) string {
	if u, err := user.Lookup(o.WebUser); err == nil {
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			return g.Name
		}
	}
	return o.WebUser
}

func stateDirOK(st os.FileInfo, o Options) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || !st.IsDir() || st.Mode()&os.ModeSetgid == 0 || st.Mode().Perm() != 0o750 {
		return false
	}
	u, err1 := user.Lookup(o.RunAs)
	g, err2 := user.LookupGroup(webGroup(o))
	return err1 == nil && err2 == nil && strconv.Itoa(int(sys.Uid)) == u.Uid && strconv.Itoa(int(sys.Gid)) == g.Gid
}

// Print writes the plan as a commented shell script.
func Print(w io.Writer, steps []Step) {
	if len(steps) == 0 {
		fmt.Fprintln(w, "# nothing to do: the machine is set up")
		return
	}
	for _, s := range steps {
		fmt.Fprintf(w, "# %s\n", s.What)
		for _, c := range s.Commands {
			fmt.Fprintln(w, c)
		}
		fmt.Fprintln(w)
	}
}

// Apply carries out the steps in order; it stops at the first failure.
func Apply(w io.Writer, steps []Step) error {
	for _, s := range steps {
		if err := s.apply(); err != nil {
			return fmt.Errorf("%s: %w", s.What, err)
		}
		fmt.Fprintf(w, "done: %s\n", s.What)
	}
	return nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// installSudoers checks the rule with visudo before it goes live: a broken
// sudoers file can lock everyone out of sudo.
func installSudoers(path, content string) error {
	tmp := path + ".tmp"
	if err := writeFile(tmp, []byte(content), 0o440, 0, 0); err != nil {
		return err
	}
	if err := run("visudo", "-cf", tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func installFile(src, dst string, mode os.FileMode, uid, gid int) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFile(dst, b, mode, uid, gid)
}

// writeFile writes atomically with the given mode and owner.
func writeFile(path string, b []byte, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chown(uid, gid); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	tmp.Close()
	return os.Rename(tmp.Name(), path)
}

// editKeepingMode rewrites a file keeping its owner and mode (at.deny
// must stay root:daemon 0640 or at refuses everyone).
func editKeepingMode(path string, b []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	sys := st.Sys().(*syscall.Stat_t)
	return writeFile(path, b, st.Mode().Perm(), int(sys.Uid), int(sys.Gid))
}

func lineOf(data []byte, name string) int {
	for i, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == name {
			return i + 1
		}
	}
	return 0
}

func withNewline(b []byte) []byte {
	if len(b) > 0 && !bytes.HasSuffix(b, []byte("\n")) {
		return append(b, '\n')
	}
	return b
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	if err1 != nil || err2 != nil {
		return false
	}
	if os.SameFile(sa, sb) {
		return true
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	return bytes.Equal(ba, bb)
}
