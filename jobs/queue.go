package jobs

import (
	"time"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
	"github.com/sirupsen/logrus"
)

// QueueInfo is one line of queue list.
type QueueInfo struct {
	Name       string `json:"name"`
	MaxRunning int    `json:"max_running"` // 0: no limit
	Running    int    `json:"running"`
	Waiting    int    `json:"waiting"`
	Paused     bool   `json:"paused"`
}

// Queues returns every queue of the config with what it runs and holds
// now, from the active index.
func (s *Service) Queues() ([]QueueInfo, error) {
	names := s.Cfg.QueueNames()
	out := make([]QueueInfo, len(names))
	at := map[string]*QueueInfo{}
	for i, n := range names {
		slots, _ := s.Cfg.QueueSlots(n)
		out[i] = QueueInfo{Name: n, MaxRunning: slots}
		at[n] = &out[i]
	}
	st, err := s.Store(false)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return out, nil
		}
		return nil, err
	}
	for i := range out {
		out[i].Paused = st.Paused(out[i].Name)
	}
	ids, err := st.ActiveIDs()
	if err != nil {
		return nil, err
	}
	probe := s.Probe()
	for _, id := range ids {
		j, ok := s.load(st, id, probe)
		q := at[j.QueueName()]
		if !ok || q == nil {
			continue
		}
		switch j.State {
		case status.Running:
			q.Running++
		case status.Waiting:
			q.Waiting++
		}
	}
	return out, nil
}

// SetPaused pauses (on) or resumes queue name: a paused queue starts
// nothing new; its running jobs go on, its waiting ones wait.
func (s *Service) SetPaused(name string, on bool) error {
	if err := policy.CheckQueueControl(s.Mode, s.Cfg); err != nil {
		return err
	}
	if _, ok := s.Cfg.QueueSlots(name); !ok || !config.ValidQueueName(name) {
		return errs.Errorf(errs.Usage, "no queue %q", name).WithHint("queues: cmesh-run queue list")
	}
	st, err := s.Store(true)
	if err != nil {
		return err
	}
	if err := st.SetPaused(name, on); err != nil {
		return err
	}
	outcome := "resumed"
	if on {
		outcome = "paused"
	}
	// A pause stops everyone's builds: who did it is in the audit.
	who := CurrentCaller()
	s.Audit.Line(logrus.Fields{"queue": name, "requested_by": RequestedBy(who), "user": who.Name, "outcome": outcome}, "queue "+outcome, "cmesh-run queue "+outcome)
	return nil
}

// RerunRequest is the request that runs job id again: its profile and
// arguments (checked again against today's config), or its argv and
// workdir; its name, queue, timeout, retries, --env and --unique as
// recorded. The rerunning caller's environment never reaches it.
func (s *Service) RerunRequest(id string, from policy.Source) (policy.Request, error) {
	_, rec, err := s.Get(id)
	if err != nil {
		return policy.Request{}, err
	}
	st, err := s.Store(false)
	if err != nil {
		return policy.Request{}, err
	}
	env, err := st.RerunEnv(rec.ID)
	if err != nil {
		return policy.Request{}, err
	}
	r := policy.Request{From: from, Env: env, Unique: rec.Unique, RerunOf: rec.ID, Name: rec.Name}
	if rec.ProfileName != "" {
		// The profile decides again what it decided then: its queue,
		// timeout and retries as the config says today.
		name := rec.ProfileName
		r.Profile = &name
		r.Args = pairs(rec.ProfileArgs) // never nil: "given", even when the profile takes none
		r.Name = nil                    // the profile names its jobs itself
		return r, nil
	}
	if rec.Profile != "" {
		return r, errs.Errorf(errs.Usage, "job %s is a profile job from before rerun kept its arguments", id).
			WithHint("schedule it again with --profile")
	}
	r.Argv = rec.Command
	wd := rec.Workdir
	r.Workdir = &wd
	q := rec.QueueName()
	r.Queue = &q
	if rec.Timeout != nil {
		if d, err := time.ParseDuration(*rec.Timeout); err == nil {
			r.Timeout = &d
		}
	}
	retries := rec.Retries
	r.Retries = &retries
	return r, nil
}
