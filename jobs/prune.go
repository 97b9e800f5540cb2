package jobs

import (
	"time"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/spool"
	"github.com/cmesh/cmesh-run/status"
)

// PruneOptions says what Prune removes: finished jobs that finished more
// than OlderThan ago (0: any age), except the newest Keep finished ones
// (<0: none kept). DryRun removes nothing.
type PruneOptions struct {
	OlderThan time.Duration
	Keep      int
	DryRun    bool
}

// Prune removes finished jobs (record, output, indexes) as o says, and
// old answers to spool requests, and returns the jobs removed (or that
// would be). A queued, waiting or running job is never touched.
func (s *Service) Prune(o PruneOptions) ([]status.Job, error) {
	removed := []status.Job{}
	st, err := s.Store(false)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return removed, nil
		}
		return nil, err
	}
	jobs, err := s.pruneJobs(st, o.OlderThan, o.Keep, o.DryRun, -1)
	if err != nil {
		return nil, err
	}
	if !o.DryRun {
		pruneResults(st, o.OlderThan)
	}
	return append(removed, jobs...), nil
}

// pruneJobs removes finished jobs finished more than age ago (0: any age),
// keeping the newest keep finished ones (<0: none kept). It looks at
// the oldest jobs first and at most budget of them (<0: all), which bounds
// what schedule's retain rule costs.
func (s *Service) pruneJobs(st *status.Store, age time.Duration, keep int, dry bool, budget int) ([]status.Job, error) {
	ids, err := st.IDs() // newest first
	if err != nil {
		return nil, err
	}
	probe := s.Probe()
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
			if j, ok := s.load(st, id, probe); ok && j.State.Finished() {
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
		j, ok := s.load(st, id, probe)
		if !ok || !j.State.Finished() {
			continue
		}
		if age > 0 && now.Sub(finishedAt(j)) < age {
			continue
		}
		if !dry {
			if err := st.Remove(id); err != nil {
				s.Log.Warnf("prune %s: %v", id, err)
				continue
			}
		}
		removed = append(removed, j)
	}
	return removed, nil
}

func finishedAt(j status.Job) time.Time {
	if j.FinishedAt != nil {
		return *j.FinishedAt
	}
	return j.CreatedAt
}

// retainBudget bounds how many records one schedule reads for the
// config's retain rule.
const retainBudget = 32

// Retain applies the config's [retain] rule on the way out of schedule:
// from the oldest job on, finished jobs past max_age, or beyond the newest
// max_jobs jobs, are removed. It reads at most retainBudget records.
func (s *Service) Retain(st *status.Store) {
	r := s.Cfg.Retain
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
	probe := s.Probe()
	now := time.Now()
	for i, budget := len(ids)-1, retainBudget; i >= 0 && budget > 0; i, budget = i-1, budget-1 {
		j, ok := s.load(st, ids[i], probe)
		if !ok || !j.State.Finished() {
			continue
		}
		old := r.MaxAge.Duration > 0 && now.Sub(finishedAt(j)) > r.MaxAge.Duration
		if !old && excess <= 0 {
			break
		}
		if err := st.Remove(j.ID); err == nil {
			excess--
			s.Log.WithField("id", j.ID).Debug("retain: removed")
		}
	}
}

// pruneResults removes answers to spool requests, and refused requests,
// older than age (a day when no age is given): a caller that has not read
// its answer by then has given up.
func pruneResults(st *status.Store, age time.Duration) {
	if age == 0 {
		age = 24 * time.Hour
	}
	spool.New(st.Dir).PruneResults(age)
}
