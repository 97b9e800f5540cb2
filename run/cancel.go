package run

import (
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/status"
	"github.com/cmesh/cmesh-run/wrapper"
)

func (a *app) cancelCommand() *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "stop a job: take it out of its backend, or end its whole process tree",
		ArgsUsage: "ID",
		Description: "A queued job is removed from its backend. A waiting or running job's whole process tree\n" +
			"(grandchildren too, even those that called setsid) gets SIGTERM, then SIGKILL after --grace.\n" +
			"cancel returns once the job has ended; its state is then canceled. A finished job is left as\n" +
			"it is (exit 0).\n\n" +
			"EXAMPLE:\n   cmesh-run cancel ID\n   cmesh-run cancel --grace 30s --json ID",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "grace", Value: "10s", Usage: "`DUR` between SIGTERM and SIGKILL"},
			&cli.BoolFlag{Name: "json", Usage: "print the job object"},
		},
		Action: a.cancel,
	}
}

func (a *app) cancel(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return status.Errorf(status.Usage, "cancel takes exactly one job ID").
			WithHint("options go before the ID: cmesh-run cancel --grace 30s ID")
	}
	grace, err := parseDur("grace", c.String("grace"))
	if err != nil {
		return err
	}
	j, rec, err := a.jobRecord(c.Args().First())
	if err != nil {
		return err
	}
	if !j.State.Finished() {
		st, _ := a.store(false)
		if err := a.stop(st, rec, grace); err != nil {
			return err
		}
		if j, err = a.job(rec.ID); err != nil {
			return err
		}
	}
	if a.jsonOut {
		return printJSON(a.stdout, j)
	}
	return printJob(a.stdout, j)
}

// stop cancels one unfinished job and returns once it has ended.
func (a *app) stop(st *status.Store, rec *status.Record, grace time.Duration) error {
	lock, err := st.Lock(rec.ID)
	if err != nil {
		return err
	}
	if rec, err = st.Load(rec.ID); err != nil {
		status.Unlock(lock)
		return err
	}
	who := currentCaller().name
	switch {
	case rec.State.Finished():
		status.Unlock(lock)
		return nil
	case rec.State == status.Queued:
		// Out of the backend first; if atd had already started it, its
		// wrapper is waiting for this lock and will find it canceled.
		if rec.BackendRef != nil {
			if be, err := a.backendFor(rec.Backend, currentCaller()); err == nil {
				_ = be.Remove(*rec.BackendRef)
			}
		}
		err = a.endCanceled(st, rec, nil, "")
		status.Unlock(lock)
		return err
	case status.Alive(rec.WrapperPID, rec.WrapperStart, rec.BootID):
		rec.Cancel = &status.CancelRequest{At: time.Now().UTC(), By: who, Grace: grace}
		err := st.Save(rec)
		status.Unlock(lock)
		if err != nil {
			return err
		}
		if err := syscall.Kill(rec.WrapperPID, syscall.SIGUSR1); err != nil {
			return status.Errorf(status.Denied, "cannot signal job %s's wrapper (pid %d): %v", rec.ID, rec.WrapperPID, err).
				WithHint("cancel as the user the job runs as (%s), or as root", rec.User)
		}
		a.audit(rec, "canceled", nil)
		return a.awaitEnd(rec.ID, grace+10*time.Second)
	default:
		// The wrapper is gone (killed, or the machine restarted): stop what
		// is left of the job here and write its end.
		defer status.Unlock(lock)
		if p := rec.PID; p != nil && status.Alive(*p, rec.PIDStart, rec.BootID) {
			wrapper.KillTree(*p, grace)
		}
		return a.endCanceled(st, rec, nil, "")
	}
}

// endCanceled writes a canceled end marker and record for a job whose
// wrapper will not.
func (a *app) endCanceled(st *status.Store, rec *status.Record, exit *int, sig string) error {
	out, err := st.OpenAppend(rec.ID)
	if err != nil {
		return err
	}
	defer out.Close()
	m := status.Marker{Kind: "end", Attempt: rec.Attempt, Exit: exit, Signal: sig, Reason: "canceled", Time: time.Now().UTC()}
	if _, err := out.Write(m.Format(rec.Nonce)); err != nil {
		return err
	}
	status.ApplyEnd(&rec.Job, m)
	if err := st.Save(rec); err != nil {
		return err
	}
	a.audit(rec, "canceled", nil)
	return st.SetActive(rec.ID, false)
}

// awaitEnd polls until job id has finished.
func (a *app) awaitEnd(id string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		j, err := a.job(id)
		if err != nil {
			return err
		}
		if j.State.Finished() {
			return nil
		}
		if time.Now().After(deadline) {
			return status.Errorf(status.Internal, "job %s did not end within %v of the cancel", id, within).
				WithHint("see cmesh-run status %s; ps -s %d shows what is left", id, pid(j.PID))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pid(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}
