// Package run is cmesh-run's command line: one file per command. It
// parses flags, talks to the user, and leaves the work to status/ (jobs,
// records, output), the backends (atsched/) and wrapper/.
package run

import (
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/atsched"
	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/direct"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/spool"
	"github.com/cmesh/cmesh-run/status"
	"github.com/cmesh/cmesh-run/systemd"
)

// Version is set at build time with -ldflags "-X ...run.Version=...".
var Version = "dev"

// app is one run of the command line.
type app struct {
	stdout, stderr io.Writer
	log            *logrus.Logger
	cfg            *config.Config
	stateDir       string
	jsonOut        bool // the running command was asked for --json
	mode           policy.Mode
	auditLog       *logrus.Logger
	st             *status.Store // opened once: log and cancel read a record, then its output
	command        string        // the command refused before urfave/cli knew it, for the audit
	audited        bool          // a refusal of this run is in the audit already
}

// New builds the command line. Output goes to stdout and stderr.
func New(stdout, stderr io.Writer) *cli.App {
	_, c := newApp(stdout, stderr)
	return c
}

func newApp(stdout, stderr io.Writer) (*app, *cli.App) {
	a := &app{stdout: stdout, stderr: stderr, log: logrus.New()}
	a.log.SetOutput(stderr)
	// --log-level's default, for what happens before flags are read (a
	// refusal under sudo comes first).
	a.log.SetLevel(logrus.WarnLevel)
	c := &cli.App{
		Name:    "cmesh-run",
		Usage:   "start jobs that outlive whoever asked for them",
		Version: Version,
		Description: "cmesh-run hands each job to a backend (by default at(1): `at now`) so that it runs outside\n" +
			"the caller's process tree, records it as JSON in the state dir, and lets anyone who may read\n" +
			"that dir follow its state and output.",
		Writer:                    stdout,
		ErrWriter:                 stderr,
		HideHelpCommand:           true,
		HideVersion:               true,
		EnableBashCompletion:      true,
		DisableSliceFlagSeparator: true,
		ExitErrHandler:            func(*cli.Context, error) {},
		OnUsageError:              usageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", EnvVars: []string{"CMESH_RUN_STATE_DIR"}, Usage: "`DIR` where records and outputs live", DefaultText: "see FILES"},
			&cli.StringFlag{Name: "config", EnvVars: []string{"CMESH_RUN_CONFIG"}, Usage: "TOML config `FILE`", DefaultText: config.DefaultPath + " when it exists"},
			&cli.StringFlag{Name: "log-level", Value: "warning", Usage: "`LEVEL` of cmesh-run's own diagnostics: error, warning, info or debug (always on stderr)"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "`FORMAT` of the diagnostics: text or json"},
		},
		Before: a.before,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return status.Errorf(status.Usage, "unknown command %q", c.Args().First()).
					WithHint("cmesh-run --help lists the commands")
			}
			return cli.ShowAppHelp(c)
		},
		Commands: []*cli.Command{
			a.scheduleCommand(),
			a.statusCommand(),
			a.listCommand(),
			a.logCommand(),
			a.waitCommand(),
			a.cancelCommand(),
			a.pruneCommand(),
			a.doctorCommand(),
			a.setupCommand(),
			a.workerCommand(),
			a.drainCommand(),
			a.configCommand(),
			a.versionCommand(),
			a.wrapCommand(),
			a.execCommand(),
			a.manCommand(),
		},
	}
	for _, cmd := range c.Commands {
		cmd.OnUsageError = usageError
		cmd.HideHelpCommand = true
		cmd.Before = a.guard
		for _, sub := range cmd.Subcommands {
			sub.OnUsageError = usageError
			sub.Before = a.guard
		}
	}
	return a, c
}

// guard applies policy.CheckCommand once the command line is parsed; Main
// has applied it to the raw arguments already (guardArgs), before any
// flag of the command was looked at. Both, because a refusal must not
// depend on how well a pre-parse guesses what urfave/cli will run.
func (a *app) guard(c *cli.Context) error {
	m := policy.Detect()
	if !m.Sudo {
		return nil
	}
	name := c.Command.FullName()
	files := name == "config check" && c.Args().Present() || name == "doctor" && c.IsSet("fpm-conf")
	if err := policy.CheckCommand(name, files, m); err != nil {
		a.command = name
		return a.refuseEarly(err)
	}
	return nil
}

// guardArgs is guard for the raw command line: args[0] is the program.
func (a *app) guardArgs(args []string) error {
	m := policy.Detect()
	if !m.Sudo {
		return nil
	}
	name, files := commandOf(args)
	if err := policy.CheckCommand(name, files, m); err != nil {
		a.command = name
		return a.refuseEarly(err)
	}
	return nil
}

// globalValueFlags are the global flags that take a value.
var globalValueFlags = map[string]bool{"state-dir": true, "config": true, "log-level": true, "log-format": true}

// commandOf finds the command that urfave/cli will run ("config check"
// for a subcommand) and whether it was given a file to read: a file
// argument of config check, or doctor's --fpm-conf.
func commandOf(args []string) (name string, files bool) {
	i := 1
	for ; i < len(args); i++ {
		s := args[i]
		if s == "--" {
			return "", false
		}
		if !strings.HasPrefix(s, "-") || s == "-" {
			break
		}
		f := strings.TrimLeft(s, "-")
		if !strings.Contains(f, "=") && globalValueFlags[f] {
			i++
		}
	}
	if i >= len(args) {
		return "", false
	}
	name = args[i]
	rest := args[i+1:]
	switch name {
	case "config":
		for j, s := range rest {
			if !strings.HasPrefix(s, "-") {
				name += " " + s
				rest = rest[j+1:]
				break
			}
		}
		if name == "config check" {
			for _, s := range rest {
				if s != "--help" && s != "-h" && s != "-help" && s != "--" {
					files = true
				}
			}
		}
	case "doctor":
		for _, s := range rest {
			if s == "--" {
				break
			}
			f := strings.TrimLeft(s, "-")
			if strings.HasPrefix(s, "-") && (f == "fpm-conf" || strings.HasPrefix(f, "fpm-conf=")) {
				files = true
			}
		}
	}
	return name, files
}

// refuseEarly records a refusal that came before the command's own setup:
// the root-owned config, read only to learn where the audit goes.
func (a *app) refuseEarly(err error) error {
	a.auditSetup()
	return a.refuse(nil, err)
}

// auditSetup makes sure the auditor knows the config and state dir even
// when the command never got to setup: under sudo, the root-owned default
// config when it passes CheckConfigFile.
func (a *app) auditSetup() {
	if a.cfg != nil {
		return
	}
	path := ""
	if policy.Detect().Sudo {
		if policy.CheckConfigFile(config.DefaultPath) != nil {
			return
		}
		path = config.DefaultPath
	}
	if path == "" {
		return
	}
	cfg, err := config.Load(path, false)
	if err != nil {
		return
	}
	a.cfg = cfg
	if a.stateDir == "" {
		a.stateDir = defaultStateDir(cfg)
	}
}

func usageError(_ *cli.Context, err error, _ bool) error {
	return status.Errorf(status.Usage, "%v", err).WithHint("cmesh-run COMMAND --help shows its options")
}

func (a *app) before(c *cli.Context) error {
	lvl, err := logrus.ParseLevel(c.String("log-level"))
	if err != nil {
		return status.Errorf(status.Usage, "bad --log-level %q", c.String("log-level")).
			WithHint("use error, warning, info or debug")
	}
	a.log.SetLevel(lvl)
	switch c.String("log-format") {
	case "text":
		a.log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	case "json":
		a.log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return status.Errorf(status.Usage, "bad --log-format %q", c.String("log-format")).WithHint("use text or json")
	}
	return nil
}

// setup loads the config and finds the state dir; commands call it first,
// so that `--help` and `version` work on any machine.
func (a *app) setup(c *cli.Context) error {
	a.mode = policy.Detect()
	path := c.String("config")
	required := path != ""
	if a.mode.Sudo {
		// Under sudo only root decides: the root-owned default config, its
		// state dir, nothing the caller could point elsewhere. The config
		// is read first, so that a refusal lands in its audit_log.
		if err := policy.CheckConfigFile(config.DefaultPath); err != nil {
			return a.refuse(c, err)
		}
		cfg, err := config.Load(config.DefaultPath, false)
		if err != nil {
			return a.refuse(c, policy.Deny("%v", err).WithHint("%s", status.HintOf(err)))
		}
		a.cfg = cfg
		for _, f := range []struct{ flag, env string }{{"config", "CMESH_RUN_CONFIG"}, {"state-dir", "CMESH_RUN_STATE_DIR"}} {
			if c.String(f.flag) != "" || os.Getenv(f.env) != "" {
				return a.refuse(c, policy.Deny("--%s and %s are refused under sudo", f.flag, f.env).
					WithHint("the state dir and config come from %s only; ask its owner to change it", config.DefaultPath))
			}
		}
		path, required = config.DefaultPath, false
	}
	if path == "" {
		path = config.DefaultPath
	}
	cfg, err := config.Load(path, required)
	if err != nil {
		return err
	}
	a.cfg = cfg
	a.stateDir = c.String("state-dir")
	if a.stateDir == "" {
		a.stateDir = defaultStateDir(cfg)
	}
	a.log.WithFields(logrus.Fields{"config": cfg.File, "state_dir": a.stateDir}).Debug("setup")
	return nil
}

// defaultStateDir follows SPEC.md: the config's, else the system one for
// root or when the caller may write it, else the user's XDG state dir.
func defaultStateDir(cfg *config.Config) string {
	if cfg.StateDir != "" {
		return cfg.StateDir
	}
	const sys = "/var/lib/cmesh-run"
	if os.Geteuid() == 0 || unix.Access(sys, unix.W_OK|unix.X_OK) == nil {
		return sys
	}
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "cmesh-run")
	}
	home := os.Getenv("HOME")
	if home == "" {
		if u, err := user.Current(); err == nil {
			home = u.HomeDir
		}
	}
	return filepath.Join(home, ".local", "state", "cmesh-run")
}

// store opens the state dir; only schedule creates it. A new state dir
// gets the config's group and the setgid bit, so that everything below it
// is readable by that group (the web user's, typically).
func (a *app) store(create bool) (*status.Store, error) {
	if a.st != nil {
		return a.st, nil
	}
	if create && a.cfg.Group != "" {
		if _, err := os.Stat(a.stateDir); os.IsNotExist(err) {
			g, err := user.LookupGroup(a.cfg.Group)
			if err != nil {
				return nil, status.Errorf(status.Usage, "config group %q: %v", a.cfg.Group, err).WithHint("set group to an existing group")
			}
			gid, _ := strconv.Atoi(g.Gid)
			if err := os.MkdirAll(a.stateDir, 0o750); err == nil {
				_ = os.Chown(a.stateDir, -1, gid)
				_ = os.Chmod(a.stateDir, 0o750|os.ModeSetgid)
			}
		}
	}
	st, err := status.Open(a.stateDir, create)
	if err == nil {
		a.st = st
	}
	return st, err
}

// caller is who runs cmesh-run, as the job will run.
type caller struct {
	name, home, shell string
	uid               int
}

func currentCaller() caller {
	uid := os.Getuid()
	c := caller{name: strconv.Itoa(uid), home: "/", shell: "/bin/sh", uid: uid}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		c.name, c.home = u.Username, u.HomeDir
		c.shell = loginShell(u.Username)
	}
	return c
}

// loginShell reads the user's shell from /etc/passwd; os/user does not
// expose it.
func loginShell(name string) string {
	data, err := os.ReadFile("/etc/passwd")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 7 && f[0] == name && f[6] != "" {
				return f[6]
			}
		}
	}
	return "/bin/sh"
}

// backendFor returns the backend named name for the calling user.
func (a *app) backendFor(name string, who caller) (backend.Backend, error) {
	switch name {
	case "", "at":
		return atsched.New(who.name, who.uid), nil
	case "systemd":
		return systemd.New(who.name, who.uid), nil
	case "direct":
		return direct.Direct{}, nil
	case "spool":
		return spool.New(a.absStateDir()), nil
	case "auto":
		be, _ := a.autoBackend(who)
		return be, nil
	}
	return nil, status.Errorf(status.Usage, "unknown backend %q", name).
		WithHint("backends: at, systemd, spool, direct, auto")
}

// autoBackend picks at when it is usable, else systemd, else the spool
// when a worker is alive, else direct; the reason says why.
func (a *app) autoBackend(who caller) (backend.Backend, string) {
	at := atsched.New(who.name, who.uid)
	err := at.Check()
	if err == nil && !at.PermissionKnown() {
		return at, "at is installed and atd runs; " + who.name + " cannot read at.allow or at.deny, so only at itself can say whether it may use it (the probe job tells)"
	}
	if err == nil {
		return at, "at is installed, atd runs and lets " + who.name + " use it"
	}
	why := "at: " + err.Error()
	if sd, err := a.backendFor("systemd", who); err == nil {
		if err := sd.Check(); err == nil {
			return sd, why + "; systemd runs as init"
		} else {
			why += "; systemd: " + err.Error()
		}
	}
	sp := spool.New(a.absStateDir())
	if sp.WorkerAlive() {
		return sp, why + "; a spool worker holds " + sp.Dir + "/worker.lock"
	}
	return direct.Direct{}, why + "; no spool worker runs; so direct (it dies with the caller's cgroup)"
}

func (a *app) absStateDir() string {
	abs, err := filepath.Abs(a.stateDir)
	if err != nil {
		return a.stateDir
	}
	return abs
}

// probe returns the check a reader applies to queued jobs: the probe of
// the backend that took each job.
func (a *app) probe() status.Probe {
	// Looked up only when a queued job needs a probe: most reads are of
	// jobs that started, and the lookup reads /etc/passwd twice.
	who := sync.OnceValue(currentCaller)
	probes := map[string]status.Probe{}
	return func(r *status.Record) (bool, error) {
		p, ok := probes[r.Backend]
		if !ok {
			if be, err := a.backendFor(r.Backend, who()); err == nil && r.Backend != "auto" {
				p = be.Probe()
			}
			probes[r.Backend] = p
		}
		if p == nil {
			return true, nil
		}
		return p(r)
	}
}
