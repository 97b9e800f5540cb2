package run

import (
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) newStatusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show one job, or every unfinished job and the latest finished ones",
		ArgsUsage: "[ID]",
		Description: "With an ID: the job as key: value lines (--json: the job object).\n" +
			"Without: jobs not yet finished plus the 10 most recently finished, newest first, as a table\n" +
			"with times relative to now; states are coloured on a terminal unless NO_COLOR is set.\n\n" +
			"EXAMPLE:\n   cmesh-run status\n   cmesh-run status --json 20261127-203735.123456-a1b2c3",
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: a.runStatus,
	}
}

func (a *app) runStatus(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() > 1 {
		return errs.Errorf(errs.Usage, "status takes at most one job ID").
			WithHint("options go before the ID: cmesh-run status --json ID")
	}
	if c.NArg() == 1 {
		j, _, err := a.job(c.Args().First())
		if err != nil {
			return err
		}
		if a.jsonOut {
			return printJSON(a.stdout, j)
		}
		return printJob(a.stdout, j)
	}
	jobs, err := a.svc.Overview()
	if err != nil {
		return err
	}
	if a.jsonOut {
		return printJSON(a.stdout, jobList(jobs))
	}
	return printTable(a.stdout, jobs)
}

// job gets one job; a refused ID (malformed, under sudo) is audited.
func (a *app) job(id string) (status.Job, *status.Record, error) {
	j, rec, err := a.svc.Get(id)
	if errs.KindOf(err) == errs.Denied {
		return j, rec, a.refuse(nil, err)
	}
	return j, rec, err
}
