package jobs

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/spool"
	"github.com/cmesh/cmesh-run/status"
)

// Spool is the state dir's spool, held by this worker or drain.
type Spool struct {
	*spool.Spool
	st   *status.Store
	lock *os.File
}

// Close lets the spool's lock go.
func (p *Spool) Close() { status.Unlock(p.lock) }

// TakeSpool opens the spool and takes its lock; it returns nil, nil when
// another worker or drain holds it. With the lock held, claims left by a
// worker that died are put back in the queue.
func (s *Service) TakeSpool() (*Spool, error) {
	// Whose state dir it is, before anything is made in it.
	if uid, _, err := ownerOf(s.AbsStateDir()); err == nil {
		name := strconv.Itoa(uid)
		if u, err := user.LookupId(name); err == nil {
			name = u.Username
		}
		if err := policy.CheckWorkerStateDir(s.AbsStateDir(), os.Geteuid(), uid, name); err != nil {
			return nil, err
		}
	}
	st, err := s.Store(true)
	if err != nil {
		return nil, err
	}
	sp := spool.New(st.Dir)
	lock, ok, err := sp.Lock()
	if err != nil || !ok {
		return nil, err
	}
	sp.Tidy(queuedIn(st), true)
	return &Spool{Spool: sp, st: st, lock: lock}, nil
}

// Work is the worker: it starts what the spool holds, then again whenever
// something arrives (inotify) or poll has passed, until stop.
func (s *Service) Work(p *Spool, stop <-chan os.Signal, poll time.Duration) {
	if err := p.MarkWorker(); err != nil {
		s.Log.Warnf("worker: %v; auto cannot tell that a worker runs", err)
	}
	defer p.UnmarkWorker()
	wake := watch(p.WatchDirs()...)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	s.Log.WithField("spool", p.Dir).Info("worker started")
	var swept time.Time
	for {
		if err := s.DrainOnce(p); err != nil {
			s.Log.Warnf("worker: %v", err)
		}
		if time.Since(swept) > sweepEvery {
			s.SweepEnded()
			swept = time.Now()
		}
		select {
		case <-stop:
			s.Log.Info("worker stopping; running jobs go on")
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// sweepEvery is how often the worker looks at the unfinished jobs for one
// that ended without its wrapper (lost), whose hook it then starts.
const sweepEvery = 5 * time.Second

// SweepEnded derives every unfinished job once, as status would: the
// hooks of those found lost start (endedHook). Without hooks it reads
// nothing.
func (s *Service) SweepEnded() {
	if !s.hasHooks() {
		return
	}
	st, err := s.Store(false)
	if err != nil {
		return
	}
	ids, err := st.ActiveIDs()
	if err != nil {
		return
	}
	probe := s.Probe()
	for _, id := range ids {
		s.load(st, id, probe)
	}
}

// watch returns a channel that gets a value when something arrives in
// one of dirs; without inotify it never fires and the poll does the work.
func watch(dirs ...string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return ch
	}
	for _, d := range dirs {
		_, _ = unix.InotifyAddWatch(fd, d, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := unix.Read(fd, buf); err != nil && err != unix.EINTR {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch
}

// DrainOnce turns incoming requests into queued jobs, then starts every
// queued job, oldest first.
func (s *Service) DrainOnce(p *Spool) error {
	p.Tidy(queuedIn(p.st), false)
	s.TakeRequests(p.Spool)
	ids, err := p.Queued()
	if err != nil {
		return err
	}
	uid := os.Geteuid()
	for _, id := range ids {
		// Only a job of this state dir, queued for the spool by this
		// user: a script without such a record (planted, left over) is
		// never run.
		r, err := p.st.Load(id)
		if err != nil || r.State != status.Queued || r.Backend != "spool" || !ownedBy(p.st.RecordPath(id), uid) {
			continue
		}
		started, err := p.Start(id, uid)
		if err != nil {
			s.Log.Warnf("start %s: %v", id, err)
			continue
		}
		if started {
			s.Log.WithField("id", id).Info("started")
		}
	}
	return nil
}

// WorkerBusy is the error of a worker that finds another at work.
func WorkerBusy(st string) error {
	return errs.Errorf(errs.Unavailable, "another worker or drain holds %s/worker.lock", st).
		WithHint("one worker per state dir is enough; stop the other one first")
}

func ownerOf(path string) (uid, gid int, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, 0, err
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("%s: no owner", path)
	}
	return int(sys.Uid), int(sys.Gid), nil
}

func ownedBy(path string, uid int) bool {
	u, _, err := ownerOf(path)
	return err == nil && u == uid
}

// queuedIn tells whether job id's record still says queued.
func queuedIn(st *status.Store) func(string) bool {
	return func(id string) bool {
		r, err := st.Load(id)
		return err == nil && r.State == status.Queued
	}
}
