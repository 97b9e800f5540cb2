// Package spool is the queue backend: schedule drops the job's script
// into STATE_DIR/spool/queue, and a worker (`cmesh-run worker`, kept
// alive by supervisor or systemd) or a cron run of `cmesh-run drain`
// starts it detached.
//
//	spool/queue/ID.sh     waiting to be started (written atomically)
//	spool/claimed/ID.sh   taken by a worker or drain, being started
//	spool/incoming/*.json requests from callers that cannot exec
//	spool/results/*.json  what became of each request
//	spool/rejected/       requests refused, moved out of incoming once
//	spool/worker.pid      the worker at work: PID, start time, boot ID
//
// The one worker or drain at work holds STATE_DIR/private/worker.lock,
// which the web user cannot open (see status.Store.OpenPrivate); readers
// learn from worker.pid whether a worker is alive.
//
// A job is claimed by renaming it out of the queue, which only one process
// can do; and its wrapper starts it only if the record still says queued.
// So no job is started twice, even by a drain racing a restarted worker.
package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// Spool is the spool backend of one state dir.
type Spool struct {
	Dir string // STATE_DIR/spool
}

// New returns the spool of the state dir.
func New(stateDir string) *Spool { return &Spool{Dir: filepath.Join(stateDir, "spool")} }

// Name implements backend.Backend.
func (s *Spool) Name() string { return "spool" }

// Quotas implements backend.Backend.
func (s *Spool) Quotas() bool { return false }

func (s *Spool) path(parts ...string) string {
	return filepath.Join(append([]string{s.Dir}, parts...)...)
}

// Check implements backend.Backend: the spool must be writable, or
// creatable once the state dir exists (schedule creates that first).
func (s *Spool) Check() error {
	dir := s.Dir
	for {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if err := syscall.Access(dir, 2|1); err != nil { // W_OK|X_OK
		return errs.Errorf(errs.Unavailable, "spool %s: %s is not writable: %v", s.Dir, dir, err).
			WithHint("make the state dir writable for this user")
	}
	return nil
}

func (s *Spool) ensure() error {
	// incoming is where a web user without exec drops requests: writable
	// by the state dir's group (setup gives it the web user's group).
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.Dir, 0o750}, {s.path("queue"), 0o750}, {s.path("claimed"), 0o750}, {s.path("incoming"), 0o770}, {s.path("results"), 0o750}, {s.path("rejected"), 0o750}} {
		old := syscall.Umask(0o007)
		err := os.Mkdir(d.path, d.mode)
		syscall.Umask(old)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// Submit implements backend.Backend: the script lands in the queue whole
// (temp file, fsync, rename) or not at all.
func (s *Spool) Submit(j backend.Job) (string, error) {
	if err := s.ensure(); err != nil {
		return "", err
	}
	id := j.Record.ID
	if err := status.WriteFile(s.path("queue", id+".sh"), j.Script(), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

// Remove implements backend.Backend.
func (s *Spool) Remove(ref string) error {
	if status.CheckID(ref) != nil {
		return nil
	}
	err := os.Remove(s.path("queue", ref+".sh"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// claimGrace is how long a claimed job may take to record its start.
const claimGrace = time.Minute

// Probe implements backend.Backend: a queued job is pending while its
// script waits in the queue or was claimed a moment ago.
func (s *Spool) Probe() status.Probe {
	return func(r *status.Record) (status.Seen, error) {
		if _, err := os.Stat(s.path("queue", r.ID+".sh")); err == nil {
			return status.Held(true), nil
		}
		if st, err := os.Stat(s.path("claimed", r.ID+".sh")); err == nil {
			return status.Held(time.Since(st.ModTime()) < claimGrace), nil
		}
		return status.Held(time.Since(r.CreatedAt) < time.Second), nil
	}
}

// Queued lists the queued job IDs, oldest first.
func (s *Spool) Queued() ([]string, error) {
	entries, err := os.ReadDir(s.path("queue"))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".sh"); ok && status.CheckID(id) == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Lock takes the spool's worker lock without waiting; ok is false when
// another worker or drain holds it.
func (s *Spool) Lock() (f *os.File, ok bool, err error) {
	if err := s.ensure(); err != nil {
		return nil, false, err
	}
	return s.store().FlockPrivate("worker.lock", false)
}

func (s *Spool) store() *status.Store { return &status.Store{Dir: filepath.Dir(s.Dir)} }

// MarkWorker records that this process is the worker at work; a worker
// calls it once it holds the lock, and Unmark when it stops.
func (s *Spool) MarkWorker() error {
	pid := os.Getpid()
	start, ok := proc.ProcStart(pid)
	if !ok {
		return fmt.Errorf("cannot read /proc/%d/stat", pid)
	}
	line := fmt.Sprintf("%d %d %s\n", pid, start, proc.BootID())
	return status.WriteFile(s.path("worker.pid"), []byte(line), 0o640)
}

// UnmarkWorker removes what MarkWorker wrote.
func (s *Spool) UnmarkWorker() { _ = os.Remove(s.path("worker.pid")) }

// WorkerAlive reports whether the worker that worker.pid names still
// runs: the same PID with the same start time, since the same boot.
func (s *Spool) WorkerAlive() bool {
	data, err := os.ReadFile(s.path("worker.pid"))
	if err != nil {
		return false
	}
	var pid int
	var start uint64
	var boot string
	if n, _ := fmt.Sscanf(string(data), "%d %d %s", &pid, &start, &boot); n != 3 {
		return false
	}
	return proc.Alive(pid, start, boot)
}

// Reject moves entry name of incoming to rejected, where it stays until
// prune: renamed, so that whatever it is (a directory, a FIFO, a link) it
// is neither opened nor followed, and never looked at again. A name taken
// in rejected gets a number.
func (s *Spool) Reject(name string) error {
	from := s.path("incoming", name)
	for i := 0; i < 100; i++ {
		to := s.path("rejected", name)
		if i > 0 {
			to += "." + strconv.Itoa(i)
		}
		if _, err := os.Lstat(to); err == nil {
			continue
		}
		err := os.Rename(from, to)
		if err == nil {
			return nil
		}
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTDIR) {
			continue // taken since the Lstat
		}
		if !s.exists("incoming", name) {
			return nil // gone already
		}
		break
	}
	// A directory its writer keeps to itself (no write bit for us) cannot
	// move to another folder: rename must update its "..". A new name in
	// incoming itself needs no such thing, and names that start with a
	// dot are never read as requests.
	for i := 0; i < 100; i++ {
		// A random name: the web user, who may write incoming, cannot
		// take them all beforehand.
		to := s.path("incoming", ".rejected-"+status.NewNonce()[:16]+"-"+name)
		if _, err := os.Lstat(to); err == nil {
			continue
		}
		if err := os.Rename(from, to); err == nil {
			return nil
		}
		break
	}
	// No way to keep it: take it away all the same. RemoveAll follows no
	// link.
	return os.RemoveAll(from)
}

func (s *Spool) exists(parts ...string) bool {
	_, err := os.Lstat(s.path(parts...))
	return err == nil
}

// PruneRejected removes rejected requests older than age, and what of
// them stayed in incoming under a ".rejected-" name.
func (s *Spool) PruneRejected(age time.Duration) {
	entries, _ := os.ReadDir(s.path("rejected"))
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			_ = os.RemoveAll(s.path("rejected", e.Name()))
		}
	}
	entries, _ = os.ReadDir(s.path("incoming"))
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".rejected-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			_ = os.RemoveAll(s.path("incoming", e.Name()))
		}
	}
}

// Tidy looks at claimed jobs: one whose record is no longer queued has
// started and its claim goes; one still queued is put back in the queue
// when requeue is set (a worker starting after a crash between claim and
// start). A second start is harmless: the wrapper runs a job only while
// its record says queued.
func (s *Spool) Tidy(queued func(id string) bool, requeue bool) {
	entries, _ := os.ReadDir(s.path("claimed"))
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".sh")
		if !ok || status.CheckID(id) != nil {
			continue
		}
		switch {
		case !queued(id):
			_ = os.Remove(s.path("claimed", e.Name()))
		case requeue:
			_ = os.Rename(s.path("claimed", e.Name()), s.path("queue", e.Name()))
		}
	}
}

// Start claims queued job id and starts it detached, when its script is
// a regular file owned by uid. It reports false when someone else claimed
// it first. A script of anyone else's goes to rejected: it is never run.
func (s *Spool) Start(id string, uid int) (bool, error) {
	claimed := s.path("claimed", id+".sh")
	if err := os.Rename(s.path("queue", id+".sh"), claimed); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	// The claim's time is when it was taken: Probe gives a claimed job
	// claimGrace to record its start.
	now := time.Now()
	_ = os.Chtimes(claimed, now, now)
	f, err := os.OpenFile(claimed, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	if fi, err := f.Stat(); err != nil || !ownedRegular(fi, uid) {
		f.Close()
		_ = os.Rename(claimed, s.path("rejected", id+".sh"))
		return false, fmt.Errorf("%s: not a regular file of uid %d; moved to %s", claimed, uid, s.path("rejected"))
	}
	script, err := readAll(f)
	f.Close()
	if err != nil {
		return false, err
	}
	if _, err := proc.Detach(script); err != nil {
		_ = os.Rename(claimed, s.path("queue", id+".sh"))
		return false, err
	}
	// The claim stays until the record says the job started (Tidy): until
	// then it is what tells readers the job is still on its way.
	return true, nil
}

func ownedRegular(fi os.FileInfo, uid int) bool {
	sys, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode().IsRegular() && int(sys.Uid) == uid
}

func readAll(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	return b, err
}

func init() {
	backend.Register(backend.Entry{
		Name: "spool", Rank: 30,
		New: func(e backend.Env) backend.Backend { return New(e.StateDir) },
		Auto: func(be backend.Backend, _ string) (bool, string) {
			sp := be.(*Spool)
			if sp.WorkerAlive() {
				return true, "a spool worker runs (" + sp.path("worker.pid") + ")"
			}
			return false, "no spool worker runs"
		},
	})
}

// Unclaim removes job id's claim once its record says the job is its
// wrapper's: until then readers take the claim as "on its way". The
// wrapper calls it for every job; a job of another backend has none.
func Unclaim(stateDir, id string) {
	_ = os.Remove(New(stateDir).path("claimed", id+".sh"))
}

// Incoming lists the names of the requests waiting in incoming, in name
// order: entries of any kind (they are checked when taken), not the
// temporary ones (a leading dot).
func (s *Spool) Incoming() []string {
	entries, err := os.ReadDir(s.path("incoming"))
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names
}

// IncomingPath is where request name lies.
func (s *Spool) IncomingPath(name string) string { return s.path("incoming", name) }

// ResultPath is where the answer to request reqID goes.
func (s *Spool) ResultPath(reqID string) string { return s.path("results", reqID+".json") }

// WatchDirs are the folders whose arrivals wake a worker.
func (s *Spool) WatchDirs() []string { return []string{s.path("queue"), s.path("incoming")} }

// PruneResults removes answers older than age: a caller that has not read
// its answer by then has given up. Refused requests go too.
func (s *Spool) PruneResults(age time.Duration) {
	s.PruneRejected(age)
	entries, _ := os.ReadDir(s.path("results"))
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && time.Since(info.ModTime()) > age {
			_ = os.Remove(s.path("results", e.Name()))
		}
	}
}
