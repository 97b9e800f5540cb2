package status

import "github.com/cmesh/cmesh-run/proc"

// Seen is what a job's backend knows of it that the record alone cannot
// say.
type Seen struct {
	// Held: the backend still has the job, queued or started and not yet
	// ended (at's queue, the unit, Slurm's job).
	Held bool
	// End is how the backend saw the job end, when it no longer has it
	// and knows (Slurm's exit code, its TIMEOUT): it stands in for an end
	// marker the wrapper could not write. nil otherwise.
	End *Marker
	// Why is the backend's word on an end it saw, for the job's reason
	// ("slurm: NODE_FAIL on n2"); "" when it has none.
	Why string
}

// Probe asks a job's backend what it knows of the job: whether a queued
// job is still in at's queue, whether a job on another host still runs.
// nil means "assume it is held".
type Probe func(r *Record) (Seen, error)

// Held is the answer of a backend that knows only whether it has a job.
func Held(ok bool) Seen { return Seen{Held: ok} }

// Live reports whether r's wrapper (or its job, from before the wrapper
// recorded itself) still runs: by this machine's /proc when it runs here,
// else by what its backend says: another host's PIDs mean nothing here.
// A backend that cannot answer is taken to hold the job.
func Live(r *Record, probe Probe) bool {
	if r.Local() {
		return proc.Alive(r.WrapperPID, r.WrapperStart, r.BootID) || proc.Alive(pid(r.PID), r.PIDStart, r.BootID)
	}
	if probe == nil {
		return true
	}
	seen, err := probe(r)
	return err != nil || seen.Held
}

// WrapperLive reports whether r's wrapper has taken the job and still
// runs, judged as Live judges.
func WrapperLive(r *Record, probe Probe) bool {
	if r.WrapperPID <= 0 {
		return false
	}
	if r.Local() {
		return proc.Alive(r.WrapperPID, r.WrapperStart, r.BootID)
	}
	return Live(r, probe)
}

// Derive returns the job as it stands now: the record, corrected by what
// the processes, the output file and the backend say. It writes nothing,
// so anyone who may read the state dir may call it.
func (s *Store) Derive(r *Record, probe Probe) Job {
	j := s.derive(r, probe)
	if j.State != Queued {
		j.Progress = ReadProgress(s.ProgressPath(j.ID))
	}
	return j
}

func (s *Store) derive(r *Record, probe Probe) Job {
	j := r.Job
	j.Queue = j.QueueName()
	switch j.State {
	case Running, Waiting:
		if Live(r, probe) {
			return j
		}
		// Both gone. The wrapper may have written its end marker and died
		// before it could update the record; the record may also have been
		// updated since we read it.
		if fresh, err := s.Load(j.ID); err == nil && fresh.State != j.State {
			return s.derive(fresh, probe)
		}
		if m := s.findEnd(r); m != nil {
			ApplyEnd(&j, *m)
			return j
		}
		s.backendEnd(&j, r, probe)
	case Queued:
		// A wrapper that took the job holds it until its start time: the
		// backend may have let go of it (at's job ran, the spool's claim
		// is old).
		if WrapperLive(r, probe) {
			return j
		}
		if probe == nil {
			return j
		}
		seen, err := probe(r)
		if err != nil || seen.Held {
			if seen.Why != "" && j.Reason == nil {
				// Held back for what may never come: say so.
				j.Reason = Ptr(seen.Why)
			}
			return j
		}
		// Gone from the queue: either it started (re-read) or it never will.
		if fresh, err := s.Load(j.ID); err == nil && fresh.State != Queued {
			return s.derive(fresh, probe)
		}
		s.backendEnd(&j, r, probe)
	}
	return j
}

// backendEnd ends j, whose wrapper left no end marker, with what its
// backend saw of the end, else as lost.
func (s *Store) backendEnd(j *Job, r *Record, probe Probe) {
	j.State = Lost
	if probe == nil {
		return
	}
	seen, err := probe(r)
	if err != nil {
		return
	}
	if seen.End != nil {
		ApplyEnd(j, *seen.End)
	}
	if seen.Why != "" {
		j.Reason = Ptr(seen.Why)
	}
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
