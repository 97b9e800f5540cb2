package run

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/atsched"
	"github.com/cmesh/cmesh-run/doctor"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check everything a working setup needs, and print the fix for each problem",
		Description: "Checks, as the calling user: at installed, atd running, at.allow/at.deny, the state dir,\n" +
			"a probe job's round trip, PHP-FPM pools (user, clear_env, disable_functions), SELinux,\n" +
			"the sudo rule when there is one, where the audit trail goes (a warning when no syslog daemon\n" +
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
		Action: a.doctor,
	}
}

func (a *app) doctor(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	who := currentCaller()
	checks := doctor.Run(doctor.Env{
		At:       atsched.New(who.name, who.uid),
		StateDir: a.stateDir,
		FPMConfs: c.StringSlice("fpm-conf"),
		Sudoers:  "/etc/sudoers.d/cmesh-run",
		Probe:    a.probeJob,
		Auto: func() (string, string) {
			be, why := a.autoBackend(who)
			return be.Name(), why
		},
		ProbeTimeout:    c.Duration("probe-timeout"),
		AuditLog:        a.cfg.AuditLog,
		SyslogListens:   syslogListens(),
		PatternWarnings: dashWarnings(a.cfg),
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

// probeJob runs a harmless job through the real backend and waits for its
// end marker; it removes the job's files afterwards.
func (a *app) probeJob(timeout time.Duration) error {
	name := "cmesh-run-doctor"
	rec, _, err := a.submit(submission{argv: []string{"true"}, name: &name, workdir: "/"})
	if err != nil {
		return err
	}
	st, err := a.store(false)
	if err != nil {
		return err
	}
	defer st.Remove(rec.ID)
	deadline := time.Now().Add(timeout)
	for {
		r, err := st.Load(rec.ID)
		if err != nil {
			return err
		}
		j := st.Derive(r, nil)
		switch {
		case j.State == status.Succeeded:
			return nil
		case j.State.Finished():
			return status.Errorf(status.Internal, "the probe job ended %s (exit %s): %s", j.State, fmtInt(j.ExitCode), tailOf(st, r)).
				WithHint("read the job's output above; run cmesh-run doctor as the user PHP runs as")
		case time.Now().After(deadline):
			return status.Errorf(status.Unavailable, "the probe job (at job %s) did not %s within %v", fmtRef(j.BackendRef), map[bool]string{true: "start", false: "end"}[j.State == status.Queued], timeout).
				WithHint("check atd: is it running and reading /var/spool/cron/atjobs? (journalctl -u atd, atq)")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tailOf(st *status.Store, r *status.Record) string {
	o, err := status.OpenOutput(st.OutputPath(r.ID), r.Nonce)
	if err != nil {
		return err.Error()
	}
	defer o.Close()
	b, _ := o.Tail(3, false)
	return strings.TrimSpace(string(b))
}
