package run

import (
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/status"
)

func (a *app) listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list jobs, newest first",
		Description: "EXAMPLE:\n   cmesh-run list --state running,queued\n" +
			"   cmesh-run list --name mars-mpvg --limit 1 --json",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state", Usage: "only jobs in these states: `S[,S...]`"},
			&cli.StringFlag{Name: "name", Usage: "only jobs of this `NAME`"},
			&cli.IntFlag{Name: "limit", Value: 50, Usage: "at most `N` jobs; 0 for all"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array of job objects"},
		},
		Action: a.list,
	}
}

func (a *app) list(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() > 0 {
		return status.Errorf(status.Usage, "list takes no arguments").WithHint("filter with --state and --name")
	}
	states, err := parseStates(c.String("state"))
	if err != nil {
		return err
	}
	limit := c.Int("limit")
	if limit < 0 {
		return status.Errorf(status.Usage, "--limit must be 0 or more").WithHint("--limit 0 lists every job")
	}
	name := c.String("name")
	var jobs []status.Job
	if st, err := a.store(false); err == nil {
		probe := a.probe()
		err := st.Newest(func(id string) bool {
			j, ok := a.load(st, id, probe)
			if ok && (name == "" || j.NameOrEmpty() == name) && (states == nil || states[j.State]) {
				jobs = append(jobs, j)
			}
			return limit == 0 || len(jobs) < limit
		})
		if err != nil {
			return err
		}
	} else if status.KindOf(err) != status.NotFound {
		return err
	}
	if a.jsonOut {
		return printJSON(a.stdout, jobList(jobs))
	}
	return printTable(a.stdout, jobs)
}

func parseStates(s string) (map[status.State]bool, error) {
	if s == "" {
		return nil, nil
	}
	m := map[status.State]bool{}
	for _, w := range strings.Split(s, ",") {
		st := status.State(strings.TrimSpace(w))
		if !slices.Contains(status.AllStates, st) {
			return nil, status.Errorf(status.Usage, "unknown state %q", w).
				WithHint("states: queued, waiting, running, succeeded, failed, canceled, timed_out, lost")
		}
		m[st] = true
	}
	return m, nil
}

func sortNewestFirst(jobs []status.Job) {
	slices.SortFunc(jobs, func(x, y status.Job) int { return strings.Compare(y.ID, x.ID) })
}
