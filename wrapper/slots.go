package wrapper

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cmesh/cmesh-run/status"
)

// A slot is an flock on STATE_DIR/slots/N, held by the wrapper while its
// job runs: the kernel releases it when the wrapper ends, however it ends,
// so a slot can never leak. Waiting jobs take free slots oldest first:
// only the oldest live waiting job may try.

const slotPoll = 50 * time.Millisecond

// waitForSlot blocks until this job holds one of n slots, or a cancel
// comes (then it reports true and holds nothing).
func (w *wrap) waitForSlot(n int) (*os.File, bool) {
	dir := filepath.Join(w.st.Dir, "slots")
	_ = os.Mkdir(dir, 0o750)
	for {
		if w.isOldestWaiting() {
			if f := tryAnySlot(dir, n); f != nil {
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

func tryAnySlot(dir string, n int) *os.File {
	for i := range n {
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(i)), os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
		if err != nil {
			continue
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f
		}
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			continue
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
		if r.State == status.Waiting && status.Alive(r.WrapperPID, r.WrapperStart, r.BootID) {
			return false
		}
		if r.State == status.Queued && r.Cancel == nil && time.Since(r.CreatedAt) < queuedGrace {
			return false
		}
	}
	return true
}
