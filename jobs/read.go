package jobs

import (
	"slices"
	"strings"
	"time"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

// OverviewFinished is how many finished jobs the status overview shows.
const OverviewFinished = 10

// Get loads and derives job id, and returns its record too.
func (s *Service) Get(id string) (status.Job, *status.Record, error) {
	if err := policy.CheckJobID(id, s.Mode); err != nil {
		return status.Job{}, nil, err
	}
	st, err := s.Store(false)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return status.Job{}, nil, errs.Errorf(errs.NotFound, "no job %s (no state dir at %s)", id, s.StateDir).
				WithHint("pass the --state-dir the job was scheduled with")
		}
		return status.Job{}, nil, err
	}
	rec, err := st.Load(id)
	if err != nil {
		return status.Job{}, nil, err
	}
	return s.derive(st, rec, s.Probe()), rec, nil
}

// Overview returns unfinished jobs and the latest finished ones, newest
// first. Its cost follows the jobs it shows, not the size of the state
// dir: unfinished jobs come from the active index, finished ones from the
// newest records.
func (s *Service) Overview() ([]status.Job, error) {
	st, err := s.Store(false)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return nil, nil
		}
		return nil, err
	}
	probe := s.Probe()
	seen := map[string]bool{}
	var jobs []status.Job
	active, err := st.ActiveIDs()
	if err != nil {
		return nil, err
	}
	for _, id := range active {
		if j, ok := s.load(st, id, probe); ok {
			seen[id] = true
			jobs = append(jobs, j)
		}
	}
	finished := 0
	err = st.Newest(func(id string) bool {
		if !seen[id] {
			if j, ok := s.load(st, id, probe); ok && j.State.Finished() {
				jobs = append(jobs, j)
				finished++
			}
		}
		return finished < OverviewFinished
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(jobs, func(x, y status.Job) int { return strings.Compare(y.ID, x.ID) })
	return jobs, nil
}

// Filter is what List keeps: jobs in one of States (nil: any) called Name
// ("": any), at most Limit of them (0: all).
type Filter struct {
	States map[status.State]bool
	Name   string
	Queue  string
	Limit  int
}

// List returns the jobs f keeps, newest first.
func (s *Service) List(f Filter) ([]status.Job, error) {
	st, err := s.Store(false)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return nil, nil
		}
		return nil, err
	}
	var jobs []status.Job
	probe := s.Probe()
	err = st.Newest(func(id string) bool {
		j, ok := s.load(st, id, probe)
		if ok && (f.Name == "" || j.NameOrEmpty() == f.Name) && (f.Queue == "" || j.QueueName() == f.Queue) && (f.States == nil || f.States[j.State]) {
			jobs = append(jobs, j)
		}
		return f.Limit == 0 || len(jobs) < f.Limit
	})
	return jobs, err
}

// ParseStates reads a comma-separated list of states.
func ParseStates(list string) (map[status.State]bool, error) {
	if list == "" {
		return nil, nil
	}
	m := map[status.State]bool{}
	for _, w := range strings.Split(list, ",") {
		st := status.State(strings.TrimSpace(w))
		if !slices.Contains(status.AllStates, st) {
			return nil, errs.Errorf(errs.Usage, "unknown state %q", w).
				WithHint("states: queued, waiting, running, succeeded, failed, canceled, timed_out, lost")
		}
		m[st] = true
	}
	return m, nil
}

// load reads and derives one job for a listing; a corrupt record is
// reported on stderr and skipped.
func (s *Service) load(st *status.Store, id string, probe status.Probe) (status.Job, bool) {
	rec, err := st.Load(id)
	if err != nil {
		if errs.KindOf(err) != errs.NotFound {
			s.Log.Warnf("skipping job %s: %v", id, err)
		}
		return status.Job{}, false
	}
	return s.derive(st, rec, probe), true
}

// Wait blocks until job id has finished and returns it; ok is false when
// deadline fired first. It polls the record with a growing pause.
func (s *Service) Wait(id string, deadline <-chan time.Time) (j status.Job, ok bool, err error) {
	pause := 20 * time.Millisecond
	for {
		if j, _, err = s.Get(id); err != nil || j.State.Finished() {
			return j, err == nil, err
		}
		select {
		case <-deadline:
			return j, false, nil
		case <-time.After(pause):
		}
		pause = min(pause*2, 500*time.Millisecond)
	}
}
