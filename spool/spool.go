// Package spool is the queue backend: schedule drops the job's script
// into STATE_DIR/spool/queue, and a worker (`cmesh-run worker`, kept
// alive by supervisor or systemd) or a cron run of `cmesh-run drain`
// starts it detached.
//
//	spool/queue/ID.sh     waiting to be started (written atomically)
//	spool/claimed/ID.sh   taken by a worker or drain, being started
//	spool/incoming/*.json requests from callers that cannot exec
//	spool/results/*.json  what became of each request
//	spool/worker.lock     held (flock) by the one worker or drain at work
//
// A job is claimed by renaming it out of the queue, which only one process
// can do; and its wrapper starts it only if the record still says queued.
// So no job is started twice, even by a drain racing a restarted worker.
package spool

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cmesh/cmesh-run/backend"
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
		return status.Errorf(status.Unavailable, "spool %s: %s is not writable: %v", s.Dir, dir, err).
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
	}{{s.Dir, 0o750}, {s.path("queue"), 0o750}, {s.path("claimed"), 0o750}, {s.path("incoming"), 0o770}, {s.path("results"), 0o750}} {
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
	return func(r *status.Record) (bool, error) {
		if _, err := os.Stat(s.path("queue", r.ID+".sh")); err == nil {
			return true, nil
		}
		if st, err := os.Stat(s.path("claimed", r.ID+".sh")); err == nil {
			return time.Since(st.ModTime()) < claimGrace, nil
		}
		return time.Since(r.CreatedAt) < time.Second, nil
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
	f, err = os.OpenFile(s.path("worker.lock"), os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}

// WorkerAlive reports whether a worker holds the spool's lock now.
func (s *Spool) WorkerAlive() bool {
	f, err := os.OpenFile(s.path("worker.lock"), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	return false
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

// Start claims queued job id and starts it detached. It reports false
// when someone else claimed it first.
func (s *Spool) Start(id string) (bool, error) {
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
	f, err := os.OpenFile(claimed, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, err
	}
	script, err := readAll(f)
	f.Close()
	if err != nil {
		return false, err
	}
	if _, err := backend.Detach(script); err != nil {
		_ = os.Rename(claimed, s.path("queue", id+".sh"))
		return false, err
	}
	// The claim stays until the record says the job started (Tidy): until
	// then it is what tells readers the job is still on its way.
	return true, nil
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
