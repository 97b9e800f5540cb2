// Package run is cmesh-run's command line: one file per command, each a
// newXCommand that builds the flags and a runX that calls the application
// layer (jobs/) with typed options, then prints. The one place where
// errors become exit statuses and messages is errors.go.
package run

import (
	"io"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/jobs"
	"github.com/cmesh/cmesh-run/policy"
)

// Version is set at build time with -ldflags "-X ...run.Version=...".
var Version = "dev"

// app is one run of the command line.
type app struct {
	stdout, stderr io.Writer
	log            *logrus.Logger
	audit          *jobs.Audit
	svc            *jobs.Service // set by setup
	jsonOut        bool          // the running command was asked for --json
	mode           policy.Mode
	command        string // the command refused before urfave/cli knew it, for the audit
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
	a.audit = jobs.NewAudit(a.log)
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
				return errs.Errorf(errs.Usage, "unknown command %q", c.Args().First()).
					WithHint("cmesh-run --help lists the commands")
			}
			return cli.ShowAppHelp(c)
		},
		Commands: []*cli.Command{
			a.newScheduleCommand(),
			a.newStatusCommand(),
			a.newListCommand(),
			a.newLogCommand(),
			a.newWaitCommand(),
			a.newCancelCommand(),
			a.newRerunCommand(),
			a.newQueueCommand(),
			a.newPruneCommand(),
			a.newDoctorCommand(),
			a.newSetupCommand(),
			a.newWorkerCommand(),
			a.newDrainCommand(),
			a.newConfigCommand(),
			a.newVersionCommand(),
			a.newWrapCommand(),
			a.newExecCommand(),
			a.newHookCommand(),
			a.newManCommand(),
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

func usageError(_ *cli.Context, err error, _ bool) error {
	return errs.Errorf(errs.Usage, "%v", err).WithHint("cmesh-run COMMAND --help shows its options")
}

func (a *app) before(c *cli.Context) error {
	lvl, err := logrus.ParseLevel(c.String("log-level"))
	if err != nil {
		return errs.Errorf(errs.Usage, "bad --log-level %q", c.String("log-level")).
			WithHint("use error, warning, info or debug")
	}
	a.log.SetLevel(lvl)
	switch c.String("log-format") {
	case "text":
		a.log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	case "json":
		a.log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return errs.Errorf(errs.Usage, "bad --log-format %q", c.String("log-format")).WithHint("use text or json")
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
			return a.refuse(c, policy.Deny("%v", err).WithHint("%s", errs.HintOf(err)))
		}
		a.audit.Configure(cfg, jobs.DefaultStateDir(cfg))
		if err := policy.CheckOverrides(a.mode, c.String("config"), c.String("state-dir")); err != nil {
			return a.refuse(c, err)
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
	dir := c.String("state-dir")
	if dir == "" {
		dir = jobs.DefaultStateDir(cfg)
	}
	a.svc = jobs.New(cfg, dir, a.mode, a.log, a.audit)
	a.log.WithFields(logrus.Fields{"config": cfg.File, "state_dir": dir}).Debug("setup")
	return nil
}

// refuse records a refusal of what the command line asked, and returns
// err unchanged.
func (a *app) refuse(c *cli.Context, err error) error {
	name := a.command
	if c != nil && c.Command != nil {
		name = c.Command.FullName()
	}
	a.audit.Refused(name, os.Args[1:], err)
	return err
}

// refuseEarly records a refusal that came before the command's own setup:
// the root-owned config, read only to learn where the audit goes.
func (a *app) refuseEarly(err error) error {
	if !a.audit.Configured() && policy.Detect().Sudo && policy.CheckConfigFile(config.DefaultPath) == nil {
		if cfg, lerr := config.Load(config.DefaultPath, false); lerr == nil {
			a.audit.Configure(cfg, jobs.DefaultStateDir(cfg))
		}
	}
	return a.refuse(nil, err)
}
