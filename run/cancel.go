package run

import (
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) newCancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "stop a job: take it out of its backend, or end its whole process tree",
		ArgsUsage: "ID",
		Description: "A queued job is removed from its backend. A waiting or running job's whole process tree\n" +
			"(grandchildren too, even those that called setsid) gets SIGTERM, then SIGKILL after --grace.\n" +
			"cancel returns once the job has ended; its state is then canceled. A finished job is left as\n" +
			"it is (exit 0).\n\n" +
			"EXAMPLE:\n   cmesh-run cancel ID\n   cmesh-run cancel --grace 30s --json ID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "grace", Value: status.DefaultGrace.String(), Usage: "`DUR` between SIGTERM and SIGKILL"},
			&cli.BoolFlag{Name: "json", Usage: "print the job object"},
		},
		Action: a.runCancel,
	}
}

func (a *app) runCancel(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return errs.Errorf(errs.Usage, "cancel takes exactly one job ID").
			WithHint("options go before the ID: cmesh-run cancel --grace 30s ID")
	}
	grace, err := parseDur("grace", c.String("grace"))
	if err != nil {
		return err
	}
	if err := policy.CheckJobID(c.Args().First(), a.mode); err != nil {
		if errs.KindOf(err) == errs.Denied {
			return a.refuse(c, err)
		}
		return err
	}
	j, err := a.svc.Cancel(c.Args().First(), grace)
	if err != nil {
		return err
	}
	if a.jsonOut {
		return printJSON(a.stdout, j)
	}
	return printJob(a.stdout, j)
}
