package wrapper

import (
	"os"
	"time"

	"github.com/cmesh/cmesh-run/status"
)

// A slot is byte N of STATE_DIR/private/slots.lock, locked by the wrapper
// while its job runs (status.TrySlot): the kernel releases it when the
// wrapper ends, however it ends, so a slot can never leak. Waiting jobs take free slots oldest first:
// only the oldest live waiting job may try.

const slotPoll = 50 * time.Millisecond

func (w *wrap) tryAnySlot(n int) *os.File {
	for i := range n {
		if f, ok, err := w.st.TrySlot(w.spec.Queue, i); err == nil && ok {
			return f
		}
	}
	return nil
}

// queuedGrace is how long an older job still queued in its backend holds
// back younger ones: the backend starts jobs in its own order, usually
// within milliseconds; one that does not start by then must not block
// the rest.
const queuedGrace = 10 * time.Second

// isOldestWaiting reports whether no older job of the queue is waiting
// for it with a live wrapper, or about to: creation order decides who runs
// next. An older job still queued holds its place while it is young, or
// while its backend still has it (a spool job a cron drain starts a
// minute later). A job that waits for other jobs, or for its start time,
// holds no place: it may wait for long, and the queue goes on without it.
func (w *wrap) isOldestWaiting(queue string) bool {
	ids, err := w.st.ActiveIDs()
	if err != nil {
		return true
	}
	for _, id := range ids { // newest first
		if id >= w.id {
			continue
		}
		r, err := w.st.Load(id)
		if err != nil || r.QueueName() != queue {
			continue
		}
		if r.State == status.Waiting && (r.WaitingFor == "" || r.WaitingFor == "slot" || r.WaitingFor == "pause") &&
			status.WrapperLive(r, w.queuedProbe()) {
			return false
		}
		if r.State == status.Queued && r.Cancel == nil && r.WaitingFor == "" && len(r.After) == 0 &&
			(r.NotBefore == nil || !r.NotBefore.After(time.Now())) && (time.Since(r.CreatedAt) < queuedGrace || w.stillQueued(r)) {
			return false
		}
	}
	return true
}

// stillQueued asks r's backend whether it still has the job, through a
// probe renewed every second (at's asks atq once).
func (w *wrap) stillQueued(r *status.Record) bool {
	seen, err := w.queuedProbe()(r)
	return err == nil && seen.Held
}

// queuedProbe is the backends' probe, renewed every second.
func (w *wrap) queuedProbe() status.Probe {
	if w.queued == nil || time.Since(w.queuedAt) > time.Second {
		w.queued, w.queuedAt = w.probe(), time.Now()
	}
	return w.queued
}
