package jobs

import (
	"strconv"
	"strings"
	"time"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

// ProbeJob runs a harmless job through backend (the config's when "") and
// waits for its end marker; it removes the job's files afterwards. It is
// doctor's round trip.
func (s *Service) ProbeJob(backend string, timeout time.Duration) error {
	name := "cmesh-run-doctor"
	rec, _, err := s.Submit(policy.Submission{Argv: []string{"true"}, Name: &name, Workdir: "/", Backend: backend})
	if err != nil {
		return err
	}
	st, err := s.Store(false)
	if err != nil {
		return err
	}
	defer st.Remove(rec.ID)
	deadline := time.Now().Add(timeout)
	for {
		r, err := st.Load(rec.ID)
		if err != nil {
			return err
		}
		j := st.Derive(r, nil)
		switch {
		case j.State == status.Succeeded:
			return nil
		case j.State.Finished():
			exit := "-"
			if j.ExitCode != nil {
				exit = strconv.Itoa(*j.ExitCode)
			}
			return errs.Errorf(errs.Internal, "the probe job ended %s (exit %s): %s", j.State, exit, tailOf(st, r)).
				WithHint("read the job's output above; run cmesh-run doctor as the user PHP runs as")
		case time.Now().After(deadline):
			ref := "-"
			if j.BackendRef != nil {
				ref = *j.BackendRef
			}
			verb := "end"
			if j.State == status.Queued {
				verb = "start"
			}
			return errs.Errorf(errs.Unavailable, "the probe job (%s job %s) did not %s within %v", j.Backend, ref, verb, timeout).
				WithHint("check the backend: for at, is atd running and reading /var/spool/cron/atjobs? (journalctl -u atd, atq)")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tailOf(st *status.Store, r *status.Record) string {
	o, err := status.OpenOutput(st.OutputPath(r.ID), r.Nonce)
	if err != nil {
		return err.Error()
	}
	defer o.Close()
	b, _ := o.Tail(3, false)
	return strings.TrimSpace(string(b))
}
