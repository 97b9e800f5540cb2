package jobs

import (
	"syscall"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// Cancel stops job id and returns it as it ended: a queued job leaves its
// backend; a waiting or running one's whole process tree gets SIGTERM,
// then SIGKILL after grace. A finished job is returned as it is.
func (s *Service) Cancel(id string, grace time.Duration) (status.Job, error) {
	j, rec, err := s.Get(id)
	if err != nil || j.State.Finished() {
		return j, err
	}
	st, err := s.Store(false)
	if err != nil {
		return j, err
	}
	if err := s.stop(st, rec, grace); err != nil {
		return j, err
	}
	j, _, err = s.Get(rec.ID)
	return j, err
}

// stop cancels one unfinished job and returns once it has ended.
func (s *Service) stop(st *status.Store, rec *status.Record, grace time.Duration) error {
	lock, err := st.Lock(rec.ID)
	if err != nil {
		return err
	}
	if rec, err = st.Load(rec.ID); err != nil {
		status.Unlock(lock)
		return err
	}
	who := CurrentCaller()
	switch {
	case rec.State.Finished():
		status.Unlock(lock)
		return nil
	case rec.State == status.Queued:
		// Out of the backend first; if atd had already started it, its
		// wrapper is waiting for this lock and will find it canceled.
		if rec.BackendRef != nil {
			if be, err := s.Backend(rec.Backend, who); err == nil {
				_ = be.Remove(*rec.BackendRef)
			}
		}
		err = s.endCanceled(st, rec)
		status.Unlock(lock)
		if err == nil && rec.WrapperPID > 0 && rec.Local() && proc.Alive(rec.WrapperPID, rec.WrapperStart, rec.BootID) {
			// A wrapper holding the job until its start time: let it go.
			_ = syscall.Kill(rec.WrapperPID, syscall.SIGUSR1)
		}
		if err == nil {
			// No wrapper will end it: its hook is the canceler's to start.
			s.endedHook(st, rec.ID)
		}
		return err
	case status.WrapperLive(rec, s.Probe()):
		rec.Cancel = &status.CancelRequest{At: time.Now().UTC(), By: who.Name, Grace: grace}
		err := st.Save(rec)
		status.Unlock(lock)
		if err != nil {
			return err
		}
		if !rec.Local() {
			return s.stopRemote(rec, who, grace)
		}
		if err := syscall.Kill(rec.WrapperPID, syscall.SIGUSR1); err != nil {
			return errs.Errorf(errs.Denied, "cannot signal job %s's wrapper (pid %d): %v", rec.ID, rec.WrapperPID, err).
				WithHint("cancel as the user the job runs as (%s), or as root", rec.User)
		}
		s.Audit.Job(rec, "canceled", nil)
		return s.awaitEnd(rec.ID, grace+10*time.Second)
	default:
		// The wrapper is gone (killed, or the machine restarted): stop what
		// is left of the job here, or through its scheduler when it ran on
		// another host, and write its end.
		if !rec.Local() {
			if sb, ok := s.stopper(rec, who); ok {
				_ = sb.Kill(*rec.BackendRef)
			}
		} else if p := rec.PID; p != nil && proc.Alive(*p, rec.PIDStart, rec.BootID) {
			proc.KillTree(*p, grace)
		}
		err := s.endCanceled(st, rec)
		status.Unlock(lock)
		if err == nil {
			s.endedHook(st, rec.ID)
		}
		return err
	}
}

// stopper is rec's backend when it can stop jobs on other hosts.
func (s *Service) stopper(rec *status.Record, who Caller) (backend.Stopper, bool) {
	if rec.BackendRef == nil {
		return nil, false
	}
	be, err := s.Backend(rec.Backend, who)
	if err != nil {
		return nil, false
	}
	sb, ok := be.(backend.Stopper)
	return sb, ok
}

// stopRemote cancels a job whose wrapper runs on another host, through its
// scheduler: SIGTERM to the whole job (the wrapper kills the job's tree
// after the grace and writes the end), SIGKILL when it has not ended by
// then and a margin.
func (s *Service) stopRemote(rec *status.Record, who Caller, grace time.Duration) error {
	sb, ok := s.stopper(rec, who)
	if !ok {
		return errs.Errorf(errs.Unavailable, "job %s runs on %s, and its backend %s cannot reach it from here", rec.ID, *rec.Host, rec.Backend).
			WithHint("cancel it on %s", *rec.Host)
	}
	if err := sb.Stop(*rec.BackendRef); err != nil {
		// Nothing was asked of the job: the request goes, so that it can be
		// tried again and a later end is not taken for this cancel.
		if st, serr := s.Store(false); serr == nil {
			if lock, lerr := st.Lock(rec.ID); lerr == nil {
				if fresh, ferr := st.Load(rec.ID); ferr == nil && !fresh.State.Finished() {
					fresh.Cancel = nil
					_ = st.Save(fresh)
				}
				status.Unlock(lock)
			}
		}
		return errs.Errorf(errs.Unavailable, "cannot stop job %s through %s: %v", rec.ID, rec.Backend, err).
			WithHint("check the cluster (scontrol ping), or cancel as the user the job runs as (%s), or as root", rec.User)
	}
	s.Audit.Job(rec, "canceled", nil)
	if err := s.awaitEnd(rec.ID, grace+10*time.Second); err == nil {
		return nil
	}
	_ = sb.Kill(*rec.BackendRef)
	return s.awaitEnd(rec.ID, 30*time.Second)
}

// endCanceled writes a canceled end marker and record for a job whose
// wrapper will not.
func (s *Service) endCanceled(st *status.Store, rec *status.Record) error {
	m := status.Marker{Kind: "end", Attempt: rec.Attempt, Reason: "canceled", Time: time.Now().UTC()}
	if err := st.AppendMarker(rec, m); err != nil {
		return err
	}
	status.ApplyEnd(&rec.Job, m)
	if err := st.Save(rec); err != nil {
		return err
	}
	s.Audit.Job(rec, "canceled", nil)
	return st.SetActive(rec.ID, false)
}

// awaitEnd polls until job id has finished: every 20 ms, every 500 ms for
// a job on another host (each look asks its cluster's controller).
func (s *Service) awaitEnd(id string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		j, rec, err := s.Get(id)
		if err != nil {
			return err
		}
		if j.State.Finished() {
			return nil
		}
		if time.Now().After(deadline) {
			pid := 0
			if j.PID != nil {
				pid = *j.PID
			}
			return errs.Errorf(errs.Internal, "job %s did not end within %v of the cancel", id, within).
				WithHint("see cmesh-run status %s; ps -s %d shows what is left", id, pid)
		}
		if rec != nil && !rec.Local() {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		time.Sleep(20 * time.Millisecond)
	}
}
