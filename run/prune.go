package run

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/jobs"
)

func (a *app) newPruneCommand() *cli.Command {
	return &cli.Command{
		Name:  "prune",
		Usage: "remove finished jobs (record, output, everything of theirs)",
		Description: "Removes finished jobs older than --older-than, except the newest --keep finished ones.\n" +
			"A queued, waiting or running job is never touched. Give at least one of the two.\n\n" +
			"EXAMPLE:\n   cmesh-run prune --older-than 30d --keep 100\n   cmesh-run prune --keep 0 --dry-run",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "older-than", Usage: "only jobs that finished more than `DUR` ago (90m, 12h, 30d)"},
			&cli.IntFlag{Name: "keep", Value: -1, Usage: "keep the newest `N` finished jobs whatever their age", DefaultText: "none kept"},
			&cli.BoolFlag{Name: "dry-run", Usage: "say what would be removed, remove nothing"},
			&cli.BoolFlag{Name: "json", Usage: `print {"dry_run":BOOL,"removed":[job objects]}`},
		},
		Action: a.runPrune,
	}
}

func parseDur(flag, v string) (time.Duration, error) {
	d, err := config.ParseDuration(v)
	if err != nil {
		return 0, errs.Errorf(errs.Usage, "--%s: %v", flag, err).WithHint("e.g. --%s 30d", flag)
	}
	return d, nil
}

func (a *app) runPrune(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if !c.IsSet("older-than") && !c.IsSet("keep") {
		return errs.Errorf(errs.Usage, "prune needs --older-than or --keep").
			WithHint("e.g. cmesh-run prune --older-than 30d, or --keep 100")
	}
	o := jobs.PruneOptions{Keep: c.Int("keep"), DryRun: c.Bool("dry-run")}
	if c.IsSet("older-than") {
		var err error
		if o.OlderThan, err = parseDur("older-than", c.String("older-than")); err != nil {
			return err
		}
	}
	if c.IsSet("keep") && o.Keep < 0 {
		return errs.Errorf(errs.Usage, "--keep must be 0 or more").WithHint("--keep 0 keeps none")
	}
	removed, err := a.svc.Prune(o)
	if err != nil {
		return err
	}
	if a.jsonOut {
		return printJSON(a.stdout, map[string]any{"dry_run": o.DryRun, "removed": removed})
	}
	verb := "removed"
	if o.DryRun {
		verb = "would remove"
	}
	for _, j := range removed {
		fmt.Fprintf(a.stdout, "%s %s (%s, finished %s)\n", verb, j.ID, j.State, fmtTime(j.FinishedAt))
	}
	_, err = fmt.Fprintf(a.stdout, "%s %d finished jobs\n", verb, len(removed))
	return err
}
