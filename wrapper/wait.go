package wrapper

import (
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/status"
)

// depPoll is how often a job waiting for others looks at their records.
const depPoll = 200 * time.Millisecond

// leave records rec as the job's state while it waits, and lets the lock
// go; it reports false when the record could not be written (the wrapper
// has failed then, and said why).
func (w *wrap) leave(lock *os.File, rec *status.Record) bool {
	err := w.st.Save(rec)
	w.unclaim()
	status.Unlock(lock)
	if err != nil {
		fail(err)
		return false
	}
	return true
}

// back takes the lock again after a wait; a job canceled meanwhile ends
// here (done), its end marker written by whoever canceled it or now.
func (w *wrap) back(canceled bool) (*os.File, *status.Record, bool) {
	lock, rec, err := w.relock()
	if err != nil {
		fail(err)
		return nil, nil, true
	}
	switch {
	case rec.State.Finished():
		status.Unlock(lock) // cancel of a queued job wrote its end
		return nil, nil, true
	case canceled || rec.Cancel != nil:
		rec.Reason = nil
		w.finish(lock, rec, outcome{reason: "canceled"})
		return nil, nil, true
	}
	return lock, rec, false
}

// waitTime holds a job until its not_before: the record stays queued (a
// reader sees when it will start), the wrapper sleeps. at starts such a
// job in the minute before (it counts minutes); the other backends at
// once.
func (w *wrap) waitTime(lock *os.File, rec *status.Record) (*os.File, *status.Record, bool) {
	if !time.Now().Before(w.spec.NotBefore) {
		return lock, rec, false
	}
	rec.WaitingFor = "time"
	if !w.leave(lock, rec) {
		return nil, nil, true
	}
	t := time.NewTimer(time.Until(w.spec.NotBefore))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			lock, rec, done := w.back(false)
			if !done {
				rec.WaitingFor = ""
			}
			return lock, rec, done
		case <-w.chld:
			reapAll()
		case s := <-w.sigs:
			// cancel of a queued job ends it and signals the wrapper, so
			// that it does not sleep on for nothing.
			if r, _ := w.cancelRequested(s); r || w.ended() {
				return w.back(r)
			}
		}
	}
}

// ended tells whether the job's record says it has finished.
func (w *wrap) ended() bool {
	r, err := w.st.Load(w.id)
	return err == nil && r.State.Finished()
}

// waitAfter holds a job until every job it waits for has finished; unless
// after_any, one that did not succeed ends this one without running it:
// canceled, with the reason.
func (w *wrap) waitAfter(lock *os.File, rec *status.Record) (*os.File, *status.Record, bool) {
	if len(w.spec.After) == 0 {
		return lock, rec, false
	}
	rec.State = status.Waiting
	rec.WaitingFor = "after"
	rec.Reason = status.Ptr("waiting for " + strings.Join(w.spec.After, ", ") + " to finish")
	if !w.leave(lock, rec) {
		return nil, nil, true
	}
	probe, probed := w.probe(), time.Now()
	tick := time.NewTicker(depPoll)
	defer tick.Stop()
	for {
		// A probe caches what it asked its backend (atq, systemctl): a
		// fresh one now and then sees a dependency its backend lost.
		if time.Since(probed) > 2*time.Second {
			probe, probed = w.probe(), time.Now()
		}
		failed, pending := "", false
		for _, id := range w.spec.After {
			r, err := w.st.Load(id)
			if errs.KindOf(err) == errs.NotFound {
				// Pruned: what it ended as cannot be known.
				failed = id + " is gone"
				break
			}
			if err != nil {
				pending = true // unreadable for a moment: look again
				break
			}
			j := w.st.Derive(r, probe)
			if !j.State.Finished() {
				pending = true
				break
			}
			if j.State != status.Succeeded && failed == "" {
				failed = id + " " + string(j.State)
			}
		}
		if !pending {
			lock, rec, done := w.back(false)
			if done {
				return nil, nil, true
			}
			if failed != "" && !w.spec.AfterAny {
				rec.Reason = status.Ptr("dependency " + failed)
				w.finish(lock, rec, outcome{reason: "canceled"})
				return nil, nil, true
			}
			rec.Reason, rec.WaitingFor = nil, ""
			return lock, rec, false
		}
		select {
		case <-tick.C:
		case <-w.chld:
			reapAll()
		case s := <-w.sigs:
			if r, _ := w.cancelRequested(s); r {
				return w.back(true)
			}
		}
	}
}

// probe is the reader's check of queued jobs, through the backend that
// took each: a dependency its backend lost must end this job's wait.
func (w *wrap) probe() status.Probe {
	// The config is not the wrapper's to read; a wrapper that Slurm
	// started has the clients' slurm.conf from sbatch's environment.
	return backend.Probe(func() backend.Env {
		return backend.Env{User: w.user(), UID: os.Getuid(), StateDir: w.st.Dir, Slurm: backend.Cluster{Conf: os.Getenv("SLURM_CONF")}}
	})
}

// waitQueue holds a job while its queue is paused or all its slots are
// taken; it returns holding a slot (kept until the wrapper ends).
func (w *wrap) waitQueue(lock *os.File, rec *status.Record) (*os.File, *status.Record, bool) {
	queue := rec.QueueName()
	if w.spec.Slots == 0 && !w.st.Paused(queue) {
		return lock, rec, false
	}
	setReason := func(rec *status.Record, paused bool) {
		rec.State = status.Waiting
		if paused {
			rec.WaitingFor = "pause"
			rec.Reason = status.Ptr("queue " + queue + " is paused")
		} else {
			rec.WaitingFor = "slot"
			rec.Reason = status.Ptr("waiting for one of the " + strconv.Itoa(w.spec.Slots) + " slots of queue " + queue)
		}
	}
	paused := w.st.Paused(queue)
	setReason(rec, paused)
	if !w.leave(lock, rec) {
		return nil, nil, true
	}
	for {
		now := w.st.Paused(queue)
		if now != paused {
			// Say so in the record: a reader sees why the job waits.
			paused = now
			l, r, done := w.back(false)
			if done {
				return nil, nil, true
			}
			setReason(r, paused)
			if !w.leave(l, r) {
				return nil, nil, true
			}
		}
		if !paused && w.isOldestWaiting(queue) {
			if w.spec.Slots == 0 {
				break
			}
			if f := w.tryAnySlot(w.spec.Slots); f != nil {
				w.slot = f
				break
			}
		}
		select {
		case s := <-w.sigs:
			if r, _ := w.cancelRequested(s); r {
				return w.back(true)
			}
		case <-w.chld:
			reapAll()
		case <-time.After(slotPoll):
		}
	}
	lock, rec, done := w.back(false)
	if !done {
		rec.Reason, rec.WaitingFor = nil, ""
	}
	return lock, rec, done
}

// user is the name of the user the wrapper runs as.
func (w *wrap) user() string {
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		return strconv.Itoa(os.Getuid())
	}
	return u.Username
}
