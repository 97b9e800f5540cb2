package run

import (
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/jobs"
)

func (a *app) newListCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list jobs, newest first",
		Description: "EXAMPLE:\n   cmesh-run list --state running,queued\n" +
			"   cmesh-run list --name mars-mpvg --limit 1 --json",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state", Usage: "only jobs in these states: `S[,S...]`"},
			&cli.StringFlag{Name: "name", Usage: "only jobs of this `NAME`"},
			&cli.StringFlag{Name: "queue", Usage: "only jobs of queue `NAME`"},
			&cli.IntFlag{Name: "limit", Value: 50, Usage: "at most `N` jobs; 0 for all"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array of job objects"},
		},
		Action: a.runList,
	}
}

func (a *app) runList(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() > 0 {
		return errs.Errorf(errs.Usage, "list takes no arguments").WithHint("filter with --state and --name")
	}
	states, err := jobs.ParseStates(c.String("state"))
	if err != nil {
		return err
	}
	limit := c.Int("limit")
	if limit < 0 {
		return errs.Errorf(errs.Usage, "--limit must be 0 or more").WithHint("--limit 0 lists every job")
	}
	list, err := a.svc.List(jobs.Filter{States: states, Name: c.String("name"), Queue: c.String("queue"), Limit: limit})
	if err != nil {
		return err
	}
	if a.jsonOut {
		return printJSON(a.stdout, jobList(list))
	}
	return printTable(a.stdout, list)
}
