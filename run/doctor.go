package run

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/atsched"
	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/doctor"
	"github.com/cmesh/cmesh-run/jobs"
)

func (a *app) newDoctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check everything a working setup needs, and print the fix for each problem",
		Description: "Checks, as the calling user: at installed, atd running, at.allow/at.deny, the state dir,\n" +
			"a probe job's round trip, PHP-FPM pools (user, clear_env, disable_functions), SELinux,\n" +
			"the sudo rule when there is one, for the slurm backend the controller (scontrol ping), munge,\n" +
			"the partition and whether the state dir is on a file system the nodes can share, where the audit trail goes (a warning when no syslog daemon\n" +
			"listens and no audit_log is set), and profile patterns that accept a value starting with '-'.\n" +
			"Each check is ok, warn or fail; exit 1 on any fail.\n" +
			"Run it as the web server's user to check what PHP will meet.\n\n" +
			"EXAMPLE:\n   sudo -u www-data /usr/local/bin/cmesh-run doctor\n   cmesh-run doctor --json",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: `print {"ok":BOOL,"checks":[{"name","status","message","fix"}]}`},
			&cli.StringSliceFlag{Name: "fpm-conf", Usage: "`GLOB` of PHP-FPM config files to check (repeatable)",
				Value: cli.NewStringSlice("/etc/php/*/fpm/php-fpm.conf", "/etc/php/*/fpm/pool.d/*.conf")},
			&cli.DurationFlag{Name: "probe-timeout", Value: 10 * time.Second, Usage: "how long the probe job may take (`DUR`)"},
		},
		Action: a.runDoctor,
	}
}

func (a *app) runDoctor(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	who := jobs.CurrentCaller()
	be, err := a.svc.Backend("", who)
	if err != nil {
		return err
	}
	var findings func() []backend.Finding
	if d, ok := be.(backend.Diagnoser); ok {
		findings = func() []backend.Finding { return d.Diagnose(a.svc.AbsStateDir()) }
	}
	checks := doctor.Run(doctor.Env{
		BackendFindings: findings,
		Backend:         be.Name(),
		BackendCheck:    be.Check,
		At:              atsched.New(who.Name, who.UID),
		StateDir:        a.svc.StateDir,
		FPMConfs:        c.StringSlice("fpm-conf"),
		Sudoers:         config.SudoersPath,
		Probe:           func(timeout time.Duration) error { return a.svc.ProbeJob(be.Name(), timeout) },
		Auto: func() (string, string) {
			be, why := a.svc.Auto(who)
			return be.Name(), why
		},
		ProbeTimeout:    c.Duration("probe-timeout"),
		AuditLog:        a.svc.Cfg.AuditLog,
		SyslogListens:   jobs.SyslogListens(),
		PatternWarnings: dashWarnings(a.svc.Cfg),
	})
	failed := doctor.Failed(checks)
	if a.jsonOut {
		if err := printJSON(a.stdout, map[string]any{"ok": !failed, "checks": checks}); err != nil {
			return err
		}
	} else {
		var b strings.Builder
		for _, ch := range checks {
			fmt.Fprintf(&b, "%-4s  %s: %s\n", strings.ToUpper(ch.Status), ch.Name, ch.Message)
			if ch.Fix != "" && ch.Status != doctor.OK {
				fmt.Fprintf(&b, "      fix: %s\n", ch.Fix)
			}
		}
		if _, err := fmt.Fprint(a.stdout, b.String()); err != nil {
			return err
		}
	}
	if failed {
		return exitError(ExitInternal)
	}
	return nil
}
