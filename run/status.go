package run

import (
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

// overviewFinished is how many finished jobs `status` without ID shows.
const overviewFinished = 10

func (a *app) statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show one job, or every unfinished job and the latest finished ones",
		ArgsUsage: "[ID]",
		Description: "With an ID: the job as key: value lines (--json: the job object).\n" +
			"Without: jobs not yet finished plus the 10 most recently finished, newest first, as a table\n" +
			"with times relative to now; states are coloured on a terminal unless NO_COLOR is set.\n\n" +
			"EXAMPLE:\n   cmesh-run status\n   cmesh-run status --json 20261127-203735.123456-a1b2c3",
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: a.status,
	}
}

func (a *app) status(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() > 1 {
		return status.Errorf(status.Usage, "status takes at most one job ID").
			WithHint("options go before the ID: cmesh-run status --json ID")
	}
	if c.NArg() == 1 {
		j, err := a.job(c.Args().First())
		if err != nil {
			return err
		}
		if a.jsonOut {
			return printJSON(a.stdout, j)
		}
		return printJob(a.stdout, j)
	}
	jobs, err := a.overview()
	if err != nil {
		return err
	}
	if a.jsonOut {
		return printJSON(a.stdout, jobList(jobs))
	}
	return printTable(a.stdout, jobs)
}

// job loads and derives one job.
func (a *app) job(id string) (status.Job, error) {
	j, _, err := a.jobRecord(id)
	return j, err
}

func (a *app) jobRecord(id string) (status.Job, *status.Record, error) {
	if err := status.CheckID(id); err != nil {
		if a.mode.Sudo {
			// Under sudo a malformed ID is an attempt on paths: refused.
			return status.Job{}, nil, a.refuse(nil, policy.Deny("%v", err).WithHint("%s", status.HintOf(err)))
		}
		return status.Job{}, nil, err
	}
	st, err := a.store(false)
	if err != nil {
		if status.KindOf(err) == status.NotFound {
			return status.Job{}, nil, status.Errorf(status.NotFound, "no job %s (no state dir at %s)", id, a.stateDir).
				WithHint("pass the --state-dir the job was scheduled with")
		}
		return status.Job{}, nil, err
	}
	rec, err := st.Load(id)
	if err != nil {
		return status.Job{}, nil, err
	}
	return st.Derive(rec, a.probe()), rec, nil
}

// overview returns unfinished jobs and the latest finished ones. Its cost
// follows the jobs it shows, not the size of the state dir: unfinished jobs
// come from the active index, finished ones from the newest records.
func (a *app) overview() ([]status.Job, error) {
	st, err := a.store(false)
	if err != nil {
		if status.KindOf(err) == status.NotFound {
			return nil, nil
		}
		return nil, err
	}
	probe := a.probe()
	seen := map[string]bool{}
	var jobs []status.Job
	active, err := st.ActiveIDs()
	if err != nil {
		return nil, err
	}
	for _, id := range active {
		if j, ok := a.load(st, id, probe); ok {
			seen[id] = true
			jobs = append(jobs, j)
		}
	}
	finished := 0
	err = st.Newest(func(id string) bool {
		if !seen[id] {
			if j, ok := a.load(st, id, probe); ok && j.State.Finished() {
				jobs = append(jobs, j)
				finished++
			}
		}
		return finished < overviewFinished
	})
	if err != nil {
		return nil, err
	}
	sortNewestFirst(jobs)
	return jobs, nil
}

// load reads and derives one job for a listing; a corrupt record is
// reported on stderr and skipped.
func (a *app) load(st *status.Store, id string, probe status.Probe) (status.Job, bool) {
	rec, err := st.Load(id)
	if err != nil {
		if status.KindOf(err) != status.NotFound {
			a.log.Warnf("skipping job %s: %v", id, err)
		}
		return status.Job{}, false
	}
	return st.Derive(rec, probe), true
}
