package status

import "github.com/cmesh/cmesh-run/proc"

// Probe answers what a record alone cannot: whether a queued job is still
// in its backend's queue. The at backend asks atq; nil means "assume yes".
type Probe func(r *Record) (pending bool, err error)

// Derive returns the job as it stands now: the record, corrected by what
// the processes and the output file say. It writes nothing, so anyone who
// may read the state dir may call it.
func (s *Store) Derive(r *Record, pending Probe) Job {
	j := r.Job
	j.Queue = j.QueueName()
	switch j.State {
	case Running, Waiting:
		if proc.Alive(r.WrapperPID, r.WrapperStart, r.BootID) || proc.Alive(pid(j.PID), r.PIDStart, r.BootID) {
			return j
		}
		// Both gone. The wrapper may have written its end marker and died
		// before it could update the record; the record may also have been
		// updated since we read it.
		if fresh, err := s.Load(j.ID); err == nil && fresh.State != j.State {
			return s.Derive(fresh, pending)
		}
		if m := s.findEnd(r); m != nil {
			ApplyEnd(&j, *m)
			return j
		}
		j.State = Lost
	case Queued:
		// A wrapper that took the job holds it until its start time: the
		// backend may have let go of it (at's job ran, the spool's claim
		// is old).
		if r.WrapperPID > 0 && proc.Alive(r.WrapperPID, r.WrapperStart, r.BootID) {
			return j
		}
		if pending == nil {
			return j
		}
		ok, err := pending(r)
		if err != nil || ok {
			return j
		}
		// Gone from the queue: either it started (re-read) or it never will.
		if fresh, err := s.Load(j.ID); err == nil && fresh.State != Queued {
			return s.Derive(fresh, pending)
		}
		j.State = Lost
	}
	return j
}

func (s *Store) findEnd(r *Record) *Marker {
	o, err := OpenOutput(s.OutputPath(r.ID), r.Nonce)
	if err != nil {
		return nil
	}
	defer o.Close()
	m, _ := o.FindEnd(r.StartOffset, r.Attempt)
	return m
}

// ApplyEnd sets the fields of j that an end marker decides.
func ApplyEnd(j *Job, m Marker) {
	j.ExitCode = m.Exit
	j.Signal = m.Signal
	t := m.Time
	j.FinishedAt = &t
	switch {
	case m.Reason == "canceled":
		j.State = Canceled
	case m.Reason == "timeout":
		j.State = TimedOut
	case m.Exit != nil && *m.Exit == 0 && m.Signal == "":
		j.State = Succeeded
	default:
		j.State = Failed
	}
}

func pid(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}
