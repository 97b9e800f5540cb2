package wrapper

import (
	"os"
	"time"

	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// A slot is byte N of STATE_DIR/private/slots.lock, locked by the wrapper
// while its job runs (status.TrySlot): the kernel releases it when the
// wrapper ends, however it ends, so a slot can never leak. Waiting jobs take free slots oldest first:
// only the oldest live waiting job may try.

const slotPoll = 50 * time.Millisecond

// waitForSlot blocks until this job holds one of n slots, or a cancel
// comes (then it reports true and holds nothing).
func (w *wrap) waitForSlot(n int) (*os.File, bool) {
	for {
		if w.isOldestWaiting() {
			if f := w.tryAnySlot(n); f != nil {
				return f, false
			}
		}
		select {
		case s := <-w.sigs:
			if r, _ := w.cancelRequested(s); r {
				return nil, true
			}
		case <-w.chld:
			reapAll()
		case <-time.After(slotPoll):
		}
	}
}

func (w *wrap) tryAnySlot(n int) *os.File {
	for i := range n {
		if f, ok, err := w.st.TrySlot(i); err == nil && ok {
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

// isOldestWaiting reports whether no older job of the state dir is
// waiting with a live wrapper, or about to: creation order decides who
// runs next.
func (w *wrap) isOldestWaiting() bool {
	ids, err := w.st.ActiveIDs()
	if err != nil {
		return true
	}
	for _, id := range ids { // newest first
		if id >= w.id {
			continue
		}
		r, err := w.st.Load(id)
		if err != nil {
			continue
		}
		if r.State == status.Waiting && proc.Alive(r.WrapperPID, r.WrapperStart, r.BootID) {
			return false
		}
		if r.State == status.Queued && r.Cancel == nil && time.Since(r.CreatedAt) < queuedGrace {
			return false
		}
	}
	return true
}
