package run

import (
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/jobs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) newScheduleCommand() *cli.Command {
	return &cli.Command{
		Name:      "schedule",
		Usage:     "start a job through the backend and print its ID",
		ArgsUsage: "[-- PROGRAM [ARG...] | --command STRING | --profile NAME --arg KEY=VALUE...]",
		Description: "Records the job, hands a wrapper script to the backend (at now) and returns at once.\n" +
			"The job runs exactly the argv given, in --workdir, with a clean environment.\n\n" +
			"EXAMPLE:\n" +
			"   cmesh-run schedule --name mars-mpvg -- /opt/cmesh/scripts/pushfin.sh -o mars -n mpvg\n" +
			"   cmesh-run schedule --json --command '/opt/cmesh/scripts/pushfin.sh -o mars -n \"m p\"'\n" +
			"   cmesh-run schedule --profile pushfin --arg org=mars --arg name=mpvg",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "command", Usage: "the job as one `STRING`, split into words as sh would, expanding nothing"},
			&cli.StringFlag{Name: "profile", Usage: "run the config's profile `NAME` (the only way under sudo, unless allow_free_commands)"},
			&cli.StringSliceFlag{Name: "arg", KeepSpace: true, Usage: "`KEY=VALUE` for the profile; VALUE must match the profile's pattern for KEY in full (repeatable)"},
			&cli.StringFlag{Name: "name", Usage: "a `NAME` for the job ([A-Za-z0-9][A-Za-z0-9._@+-]{0,127})"},
			&cli.StringFlag{Name: "workdir", Usage: "`DIR` the job starts in", DefaultText: "the config's workdir, else the current directory"},
			&cli.StringSliceFlag{Name: "env", KeepSpace: true, Usage: "set `K=V` in the job's environment (repeatable)"},
			&cli.BoolFlag{Name: "inherit-env", Usage: "pass the caller's whole environment to the job (under the clean one)"},
			&cli.BoolFlag{Name: "unique", Usage: "with --name: when a job of that name is queued, waiting or running, start nothing and print that job (\"reused\": true)"},
			&cli.StringFlag{Name: "timeout", Usage: "stop each attempt after `DUR` (90s, 15m, 2h): SIGTERM to the whole job, SIGKILL after --grace; state timed_out", DefaultText: "the config's timeout, else none"},
			&cli.StringFlag{Name: "grace", Usage: "`DUR` between SIGTERM and SIGKILL when the timeout strikes", DefaultText: "the config's grace, else 10s"},
			&cli.IntFlag{Name: "retries", Usage: "start the job again up to `N` more times after a non-zero exit (never after a cancel or timeout)", DefaultText: "the config's retries, else 0"},
			&cli.StringFlag{Name: "retry-delay", Usage: "wait `DUR` before each retry", DefaultText: "the config's retry_delay, else 10s"},
			&cli.IntFlag{Name: "nice", Usage: "run the job at niceness `N` (-20..19; below 0 needs root)"},
			&cli.Uint64Flag{Name: "limit-cpu", Usage: "RLIMIT_CPU: at most `SECONDS` of CPU time"},
			&cli.Uint64Flag{Name: "limit-nofile", Usage: "RLIMIT_NOFILE: at most `N` open files"},
			&cli.Uint64Flag{Name: "limit-core", Usage: "RLIMIT_CORE: core files up to `BYTES` (0: none)"},
			&cli.StringFlag{Name: "memory-max", Usage: "memory quota (`BYTES`); only a backend that can enforce it accepts it (at cannot: refused)"},
			&cli.StringFlag{Name: "cpu-quota", Usage: "CPU quota (`PERCENT`); only a backend that can enforce it accepts it (at cannot: refused)"},
			&cli.StringFlag{Name: "backend", Usage: "`BACKEND` that starts the job: at, systemd, spool, slurm, direct or auto (see BACKENDS)", DefaultText: "the config's backend, else at"},
			&cli.StringFlag{Name: "queue", Usage: "run in the config's queue `NAME` ([queues.NAME]: its own max_running; creation order)", DefaultText: "the profile's, else default"},
			&cli.StringFlag{Name: "after", Usage: "start only once the jobs `ID[,ID...]` have finished, and only if all succeeded (else end canceled, with the reason)"},
			&cli.BoolFlag{Name: "after-any", Usage: "with --after: start whatever they ended as"},
			&cli.StringFlag{Name: "at", Usage: "start no earlier than `TIME`: RFC 3339 (2026-12-24T03:00:00Z) or HH:MM (the next such time, local)"},
			&cli.StringFlag{Name: "in", Usage: "start no earlier than `DUR` from now (90s, 15m, 2h)"},
			&cli.BoolFlag{Name: "json", Usage: "print the job object as one line of JSON instead of the ID"},
		},
		Action: a.runSchedule,
	}
}

func (a *app) runSchedule(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	r, err := requestFromFlags(c, a.mode)
	if err != nil {
		return err
	}
	return a.submit(c, r)
}

// submit checks r, submits it and prints the job: its ID, or the job
// object with --json. schedule and rerun end here.
func (a *app) submit(c *cli.Context, r policy.Request) error {
	sub, err := policy.Check(r, a.svc.Cfg)
	if err != nil {
		if errs.KindOf(err) == errs.Denied {
			return a.refuse(c, err)
		}
		return err
	}
	rec, reused, err := a.svc.Submit(sub)
	if err != nil {
		return err
	}
	if a.jsonOut {
		j := rec.Public()
		j.Reused = status.Ptr(reused)
		return printJSON(a.stdout, j)
	}
	_, err = a.stdout.Write([]byte(rec.ID + "\n"))
	return err
}

// requestFromFlags is the command line's request: the flags as typed
// values, nothing checked yet.
func requestFromFlags(c *cli.Context, m policy.Mode) (policy.Request, error) {
	r := policy.Request{
		From: policy.CommandLine, Argv: c.Args().Slice(), Unique: c.Bool("unique"), Env: c.StringSlice("env"),
		Inherit: c.Bool("inherit-env"), Nice: c.Int("nice"), Backend: c.String("backend"),
		MemoryMax: c.String("memory-max"), CPUQuota: c.String("cpu-quota"),
	}
	if m.Sudo {
		r.From = policy.Sudo
	}
	str := func(flag string) *string {
		if !c.IsSet(flag) {
			return nil
		}
		v := c.String(flag)
		return &v
	}
	r.Profile, r.Command, r.Name, r.Workdir = str("profile"), str("command"), str("name"), str("workdir")
	r.Queue, r.AfterAny = str("queue"), c.Bool("after-any")
	if c.IsSet("after") {
		for _, id := range strings.Split(c.String("after"), ",") {
			if id = strings.TrimSpace(id); id != "" {
				r.After = append(r.After, id)
			}
		}
	}
	if err := startTime(c, &r, time.Now()); err != nil {
		return r, err
	}
	if c.IsSet("arg") {
		r.Args = c.StringSlice("arg")
	}
	if c.IsSet("retries") {
		n := c.Int("retries")
		r.Retries = &n
	}
	for _, d := range []struct {
		flag string
		to   **time.Duration
	}{{"timeout", &r.Timeout}, {"grace", &r.Grace}, {"retry-delay", &r.RetryDelay}} {
		if !c.IsSet(d.flag) {
			continue
		}
		v, err := config.ParseDuration(c.String(d.flag))
		if err != nil {
			return r, errs.Errorf(errs.Usage, "--%s: %v", d.flag, err).WithHint("e.g. --%s 15m", d.flag)
		}
		*d.to = &v
	}
	for _, l := range []struct{ flag, name string }{{"limit-cpu", "cpu"}, {"limit-nofile", "nofile"}, {"limit-core", "core"}} {
		if c.IsSet(l.flag) {
			r.Limits = append(r.Limits, status.Rlimit{Name: l.name, Value: c.Uint64(l.flag)})
		}
	}
	return r, nil
}

// startTime reads --at and --in into r.
func startTime(c *cli.Context, r *policy.Request, now time.Time) error {
	if c.IsSet("in") {
		d, err := config.ParseDuration(c.String("in"))
		if err != nil {
			return errs.Errorf(errs.Usage, "--in: %v", err).WithHint("e.g. --in 15m")
		}
		r.In = &d
	}
	if c.IsSet("at") {
		t, err := jobs.ParseStartTime(c.String("at"), now)
		if err != nil {
			return err
		}
		r.NotBefore = &t
	}
	return nil
}
