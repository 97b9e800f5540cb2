package run

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/spool"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) pruneCommand() *cli.Command {
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
		Action: a.prune,
	}
}

func parseDur(flag, v string) (time.Duration, error) {
	d, err := config.ParseDuration(v)
	if err != nil {
		return 0, status.Errorf(status.Usage, "--%s: %v", flag, err).WithHint("e.g. --%s 30d", flag)
	}
	return d, nil
}

func (a *app) prune(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if !c.IsSet("older-than") && !c.IsSet("keep") {
		return status.Errorf(status.Usage, "prune needs --older-than or --keep").
			WithHint("e.g. cmesh-run prune --older-than 30d, or --keep 100")
	}
	var age time.Duration
	if c.IsSet("older-than") {
		var err error
		if age, err = parseDur("older-than", c.String("older-than")); err != nil {
			return err
		}
	}
	keep := c.Int("keep")
	if c.IsSet("keep") && keep < 0 {
		return status.Errorf(status.Usage, "--keep must be 0 or more").WithHint("--keep 0 keeps none")
	}
	removed := []status.Job{}
	st, err := a.store(false)
	if err == nil {
		removed, err = a.pruneJobs(st, age, keep, c.Bool("dry-run"), -1)
		if err != nil {
			return err
		}
		if !c.Bool("dry-run") {
			pruneResults(st, age)
		}
	} else if status.KindOf(err) != status.NotFound {
		return err
	}
	if a.jsonOut {
		return printJSON(a.stdout, map[string]any{"dry_run": c.Bool("dry-run"), "removed": removed})
	}
	verb := "removed"
	if c.Bool("dry-run") {
		verb = "would remove"
	}
	for _, j := range removed {
		fmt.Fprintf(a.stdout, "%s %s (%s, finished %s)\n", verb, j.ID, j.State, fmtTime(j.FinishedAt))
	}
	_, err = fmt.Fprintf(a.stdout, "%s %d finished jobs\n", verb, len(removed))
	return err
}

// pruneJobs removes finished jobs finished more than age ago (0: any age),
// keeping the newest keep finished ones (<0: none kept). It looks at
// the oldest jobs first and at most budget of them (<0: all), which bounds
// what schedule's retain rule costs.
func (a *app) pruneJobs(st *status.Store, age time.Duration, keep int, dry bool, budget int) ([]status.Job, error) {
	ids, err := st.IDs() // newest first
	if err != nil {
		return nil, err
	}
	probe := a.probe()
	now := time.Now()
	var removed []status.Job
	finishedSeen := 0
	// With keep, the newest finished jobs are spared: count them from the
	// newest end, then prune from the oldest end.
	spare := map[string]bool{}
	if keep > 0 {
		for _, id := range ids {
			if finishedSeen == keep {
				break
			}
			if j, ok := a.load(st, id, probe); ok && j.State.Finished() {
				spare[id] = true
				finishedSeen++
			}
		}
	}
	for i := len(ids) - 1; i >= 0; i-- {
		if budget == 0 {
			break
		}
		budget--
		id := ids[i]
		if spare[id] {
			continue
		}
		j, ok := a.load(st, id, probe)
		if !ok || !j.State.Finished() {
			continue
		}
		when := j.CreatedAt
		if j.FinishedAt != nil {
			when = *j.FinishedAt
		}
		if age > 0 && now.Sub(when) < age {
			continue
		}
		if !dry {
			if err := st.Remove(id); err != nil {
				a.log.Warnf("prune %s: %v", id, err)
				continue
			}
		}
		removed = append(removed, j)
	}
	return removed, nil
}

// retainBudget bounds how many records one schedule reads for the
// config's retain rule.
const retainBudget = 32

// retain applies the config's [retain] rule on the way out of schedule:
// from the oldest job on, finished jobs past max_age, or beyond the newest
// max_jobs jobs, are removed. It reads at most retainBudget records.
func (a *app) retain(st *status.Store) {
	r := a.cfg.Retain
	if r.MaxAge.Duration == 0 && r.MaxJobs == 0 {
		return
	}
	ids, err := st.IDs()
	if err != nil {
		return
	}
	excess := 0
	if r.MaxJobs > 0 {
		excess = len(ids) - r.MaxJobs
	}
	probe := a.probe()
	now := time.Now()
	for i, budget := len(ids)-1, retainBudget; i >= 0 && budget > 0; i, budget = i-1, budget-1 {
		j, ok := a.load(st, ids[i], probe)
		if !ok || !j.State.Finished() {
			continue
		}
		when := j.CreatedAt
		if j.FinishedAt != nil {
			when = *j.FinishedAt
		}
		old := r.MaxAge.Duration > 0 && now.Sub(when) > r.MaxAge.Duration
		if !old && excess <= 0 {
			break
		}
		if err := st.Remove(j.ID); err == nil {
			excess--
			a.log.WithField("id", j.ID).Debug("retain: removed")
		}
	}
}

// pruneResults removes answers to spool requests older than age (a day
// when no age is given): a caller that has not read its answer by then
// has given up.
func pruneResults(st *status.Store, age time.Duration) {
	if age == 0 {
		age = 24 * time.Hour
	}
	spool.New(st.Dir).PruneRejected(age)
	dir := filepath.Join(st.Dir, "spool", "results")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && time.Since(info.ModTime()) > age {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
