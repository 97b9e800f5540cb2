package status

import (
	"errors"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Every lock of a state dir lives in STATE_DIR/private, a folder of mode
// 0700 that only the state dir's owner (and root) may enter. flock and
// fcntl locks need nothing but a descriptor, and the web user may open
// everything else (it reads records and outputs): a lock it could open,
// it could hold, and hang whoever waits for it.
//
//	private/lock        the state dir's lock (--unique decisions)
//	private/jobs.lock   one byte-range lock per job (see Lock)
//	private/slots.lock  one byte-range lock per max_running slot
//	private/worker.lock the spool worker's (or drain's) lock
//	private/audit.log   audit lines neither audit_log nor syslog took
const privateName = "private"

// PrivateDir is the state dir's folder that only its owner may enter.
func (s *Store) PrivateDir() string { return filepath.Join(s.Dir, privateName) }

// OpenPrivate opens (creating when missing) file name of the state dir's
// private folder, itself created on first use: state dirs made before it
// existed get it from whoever needs a lock first. Files root creates
// there are given to the state dir's owner, whose jobs must open them.
func (s *Store) OpenPrivate(name string, flag int) (*os.File, error) {
	p := filepath.Join(s.PrivateDir(), name)
	f, err := openNoFollow(p, flag|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.makePrivate(); err != nil {
			return nil, err
		}
		f, err = openNoFollow(p, flag|os.O_CREATE, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if uid, gid, ok := s.owner(); ok && uid != 0 {
			if st, err := f.Stat(); err == nil {
				if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid == 0 {
					_ = f.Chown(uid, gid)
				}
			}
		}
	}
	return f, nil
}

func (s *Store) owner() (uid, gid int, ok bool) {
	st, err := os.Stat(s.Dir)
	if err != nil {
		return 0, 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(sys.Uid), int(sys.Gid), true
}

func (s *Store) makePrivate() error {
	d := s.PrivateDir()
	old := syscall.Umask(0o077)
	err := os.Mkdir(d, 0o700)
	syscall.Umask(old)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err == nil {
		// A setgid state dir hands its group and the setgid bit down;
		// the group has no access here anyway.
		_ = os.Chmod(d, 0o700)
		if os.Geteuid() == 0 {
			if uid, gid, ok := s.owner(); ok && uid != 0 {
				_ = os.Lchown(d, uid, gid)
			}
		}
	}
	return nil
}

// Lock takes the job's lock, which serialises every read-modify-write of
// its record (schedule, wrapper, cancel). Release it with Unlock.
//
// A job's lock is one byte of private/jobs.lock, at an offset hashed from
// its ID, held as an open file description lock (F_OFD_SETLKW): like
// flock it belongs to the descriptor and the kernel drops it when the
// holder dies, and one file serves every job, so no job costs an inode
// for its lock. Two IDs that hash alike only wait for each other; no code
// path holds two jobs' locks at once.
func (s *Store) Lock(id string) (*os.File, error) {
	if _, err := os.Lstat(s.OutputPath(id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notFound(id)
		}
		return nil, err
	}
	return s.lockJob(id)
}

func (s *Store) lockJob(id string) (*os.File, error) {
	f, err := s.OpenPrivate("jobs.lock", os.O_RDWR)
	if err != nil {
		return nil, err
	}
	if err := rangeLock(f, jobOffset(id), true); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// jobOffset is where job id's byte lies in private/jobs.lock.
func jobOffset(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return int64(h.Sum64() >> 2) // below 2^62: start plus length never overflow off_t
}

// TrySlot takes slot i of queue's max_running slots without waiting; ok
// is false when another wrapper holds it. The slot is held until f is
// closed or its holder dies. The default queue's slots are bytes 0, 1, ...
// (as before queues); another queue's lie at an offset hashed from its
// name, with room for 2^20 slots.
func (s *Store) TrySlot(queue string, i int) (f *os.File, ok bool, err error) {
	f, err = s.OpenPrivate("slots.lock", os.O_RDWR)
	if err != nil {
		return nil, false, err
	}
	if err := rangeLock(f, queueOffset(queue)+int64(i), false); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}

func queueOffset(queue string) int64 {
	if queue == "" || queue == "default" {
		return 0
	}
	return jobOffset("queue:"+queue) &^ (1<<20 - 1)
}

// rangeLock takes a write lock on byte off of f.
func rangeLock(f *os.File, off int64, wait bool) error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	for {
		err := unix.FcntlFlock(f.Fd(), cmd, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}

// LockAll takes the state dir's own lock, for decisions that span jobs
// (--unique). Release it with Unlock.
func (s *Store) LockAll() (*os.File, error) {
	f, _, err := s.FlockPrivate("lock", true)
	return f, err
}

// FlockPrivate takes an flock on file name of the private folder; without
// wait, ok is false when someone else holds it.
func (s *Store) FlockPrivate(name string, wait bool) (f *os.File, ok bool, err error) {
	f, err = s.OpenPrivate(name, os.O_RDONLY)
	if err != nil {
		return nil, false, err
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		err = syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}

// Unlock releases a lock taken by Lock, LockAll, TrySlot or FlockPrivate.
func Unlock(f *os.File) {
	if f != nil {
		f.Close()
	}
}
