package run

import (
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
)

func (a *app) newRerunCommand() *cli.Command {
	return &cli.Command{
		Name:      "rerun",
		Usage:     "schedule a job again, as it was, and print the new job's ID",
		ArgsUsage: "ID",
		Description: "The new job has the recorded argv (or profile and arguments, checked against today's config),\n" +
			"workdir, name, queue, timeout, retries, --env and --unique, never the rerunning caller's\n" +
			"environment; its rerun_of names ID. Under sudo only a profile job may be rerun.\n\n" +
			"EXAMPLE:\n   cmesh-run rerun 20261127-203735.123456-a1b2c3\n   cmesh-run rerun --json ID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "backend", Usage: "`BACKEND` that starts the new job", DefaultText: "the config's backend, else at"},
			&cli.BoolFlag{Name: "json", Usage: "print the new job object as one line of JSON instead of the ID"},
		},
		Action: a.runRerun,
	}
}

func (a *app) runRerun(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return errs.Errorf(errs.Usage, "rerun takes exactly one job ID").WithHint("cmesh-run rerun ID")
	}
	from := policy.CommandLine
	if a.mode.Sudo {
		from = policy.Sudo
	}
	r, err := a.svc.RerunRequest(c.Args().First(), from)
	if err != nil {
		return err
	}
	r.Backend = c.String("backend")
	return a.submit(c, r)
}
