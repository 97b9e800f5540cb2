package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/cmesh/cmesh-run/errs"
	"golang.org/x/sys/unix"
)

// Store is a state directory:
//
//	DIR/jobs/ID.json   the job's record, replaced atomically
//	DIR/jobs/ID.out    the job's output with the wrapper's markers
//	DIR/private/       the locks, for the owner alone (see lock.go)
//	DIR/active/ID      present while the job is not finished, so that an
//	                   overview never has to read every record
//	DIR/recent/ID      present for about the newest recentKeep jobs, so
//	                   that a listing never has to read every name in jobs/
//	DIR/entry          empty; the names in active/ and recent/ are hard
//	                   links to it
type Store struct {
	Dir string
}

const (
	dirMode  = 0o750
	fileMode = 0o640
)

// Open returns the store at dir, creating its folders when create is set.
func Open(dir string, create bool) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{Dir: abs}
	for _, d := range []string{abs, s.jobsDir(), s.activeDir(), s.recentDir(), s.PrivateDir()} {
		st, err := os.Lstat(d)
		switch {
		case err == nil && d != abs && !st.IsDir():
			return nil, errs.Errorf(errs.Internal, "%s is not a directory", d).
				WithHint("something replaced a folder of the state dir; move it away and retry")
		case err == nil:
		case errors.Is(err, fs.ErrNotExist) && d == s.PrivateDir():
			// Made by whoever needs a lock first, with its owner's mode.
			if create {
				if err := s.makePrivate(); err != nil {
					return nil, stateDirError(abs, err)
				}
			}
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := mkdir(d); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, stateDirError(abs, err)
			}
		case errors.Is(err, fs.ErrNotExist) && d == s.recentDir():
			// A state dir from before the recent index: readers walk jobs/.
		case errors.Is(err, fs.ErrNotExist):
			return nil, errs.Errorf(errs.NotFound, "no state dir at %s", abs).
				WithHint("schedule a job first, or pass the right --state-dir")
		default:
			return nil, stateDirError(abs, err)
		}
	}
	return s, nil
}

// mkdir makes a folder of mode 0750 whatever the umask, without a chmod:
// in a setgid state dir (setup makes one with the web user's group) the
// new folder inherits the group and the setgid bit, and a chmod by a user
// outside that group would drop the bit again.
func mkdir(d string) error {
	old := syscall.Umask(0o027)
	defer syscall.Umask(old)
	return os.Mkdir(d, dirMode)
}

func stateDirError(dir string, err error) error {
	return &errs.Error{Kind: errs.Internal, Msg: fmt.Sprintf("state dir %s: %v", dir, unwrapPath(err)), Err: err,
		Hint: "pass a writable --state-dir, or create it: install -d -m 0750 -o USER " + dir}
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (s *Store) jobsDir() string   { return filepath.Join(s.Dir, "jobs") }
func (s *Store) activeDir() string { return filepath.Join(s.Dir, "active") }

// RecordPath is where the record of job id lives.
func (s *Store) RecordPath(id string) string { return filepath.Join(s.jobsDir(), id+".json") }

// OutputPath is where the output of job id lives.
func (s *Store) OutputPath(id string) string { return filepath.Join(s.jobsDir(), id+".out") }

func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
}

// CreateOutput creates the empty output file of a new job and returns
// the job's lock (see Lock), taken before the file exists: it fails when
// the ID is taken, so two schedulers can never share a job, and no wrapper
// can act on the job before its creator lets go. The file gets mode
// (fileMode when 0), which every later record of the job keeps.
func (s *Store) CreateOutput(id string, mode os.FileMode) (*os.File, error) {
	if mode == 0 {
		mode = fileMode
	}
	lock, err := s.lockJob(id)
	if err != nil {
		return nil, err
	}
	f, err := openNoFollow(s.OutputPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		Unlock(lock)
		return nil, err
	}
	err = f.Chmod(mode)
	f.Close()
	if err != nil {
		os.Remove(s.OutputPath(id))
		Unlock(lock)
		return nil, err
	}
	return lock, nil
}

// OpenAppend opens the output of job id for appending, as the wrapper and
// the job itself write it.
func (s *Store) OpenAppend(id string) (*os.File, error) {
	return openNoFollow(s.OutputPath(id), os.O_WRONLY|os.O_APPEND, 0)
}

// OpenHook opens the output file of job id's hook for appending, made
// with the mode of the job's output when it is new.
func (s *Store) OpenHook(id string) (*os.File, error) {
	mode := s.outputMode(id)
	f, err := openNoFollow(s.HookPath(id), os.O_WRONLY|os.O_APPEND|os.O_CREATE, mode)
	if err == nil {
		_ = f.Chmod(mode) // past the umask, as the output's
	}
	return f, err
}

// CreateProgress makes job id's progress file, empty, with the mode of its
// output, for the job to write; one that exists is left as it is.
func (s *Store) CreateProgress(id string) error {
	mode := s.outputMode(id)
	f, err := openNoFollow(s.ProgressPath(id), os.O_WRONLY|os.O_CREATE|syscall.O_NONBLOCK, mode)
	if err != nil {
		return err
	}
	_ = f.Chmod(mode)
	return f.Close()
}

func (s *Store) outputMode(id string) os.FileMode {
	if st, err := os.Lstat(s.OutputPath(id)); err == nil {
		return st.Mode().Perm()
	}
	return fileMode
}

func notFound(id string) error {
	return errs.Errorf(errs.NotFound, "no job %s", id).WithHint("list the jobs with: cmesh-run list")
}

// Load reads the record of job id.
func (s *Store) Load(id string) (*Record, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	f, err := openNoFollow(s.RecordPath(id), os.O_RDONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notFound(id)
		}
		return nil, err
	}
	defer f.Close()
	var r Record
	dec := json.NewDecoder(f)
	if err := dec.Decode(&r); err != nil {
		return nil, &errs.Error{Kind: errs.Internal, Msg: fmt.Sprintf("corrupt record %s: %v", s.RecordPath(id), err), Err: err,
			Hint: "move the file away; the job's output is still in " + s.OutputPath(id)}
	}
	if r.ID != id {
		return nil, errs.Errorf(errs.Internal, "corrupt record %s: it names job %q", s.RecordPath(id), r.ID)
	}
	return &r, nil
}

// Save writes r atomically: a temp file in the same folder, fsync, rename.
// Readers see the old record or the new one, never half of one. The
// record gets the mode of the job's output file, so that a job whose
// files the group may not read (root's) stays so whoever writes it.
func (s *Store) Save(r *Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	data = append(data, '\n')
	mode := os.FileMode(fileMode)
	if st, err := os.Lstat(s.OutputPath(r.ID)); err == nil && st.Mode().IsRegular() {
		mode = st.Mode().Perm()
	}
	return WriteFile(s.RecordPath(r.ID), data, mode)
}

// WriteFile writes path atomically: a temp file in the same folder (its
// name starts with a dot), fsync, rename. Readers see the old file or the
// new one, never half of one.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return writeFile(path, data, mode, true)
}

// WriteFileUnsynced is WriteFile without the fsync: readers still never
// see half a file, but a crash may lose it. For answers whose loss costs
// only a retry.
func WriteFileUnsynced(path string, data []byte, mode os.FileMode) error {
	return writeFile(path, data, mode, false)
}

func writeFile(path string, data []byte, mode os.FileMode, sync bool) error {
	dir, base := filepath.Split(path)
	tmp, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil && sync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, path)
	}
	if err != nil {
		os.Remove(name)
	}
	return err
}

// SetActive marks job id as not finished (on) or finished (off).
func (s *Store) SetActive(id string, on bool) error {
	p := filepath.Join(s.activeDir(), id)
	if !on {
		err := os.Remove(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return s.mark(s.activeDir(), id)
}

// entryName is an empty file that every name in active/ and recent/ is a
// hard link to. A link costs a directory entry; an empty file of its own
// costs an inode to allocate and, when the job ends, to free, which on
// some file systems is most of what marking a job costs. Where a link is
// refused (an entry owned by another user under fs.protected_hardlinks,
// the file system's limit of links), the name gets an empty file.
const entryName = "entry"

// mark enters name in dir, an index folder of the state dir, through no
// symlink: neither the folder nor the new name is followed.
func (s *Store) mark(dir, name string) error {
	d, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(d)
	entry := filepath.Join(s.Dir, entryName)
	for made := false; ; made = true {
		err := unix.Linkat(unix.AT_FDCWD, entry, d, name, 0)
		if err == nil || err == unix.EEXIST {
			return nil
		}
		if err != unix.ENOENT || made {
			break
		}
		// The state dir's first job: make the entry, then link again.
		if f, err := unix.Open(entry, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode); err == nil {
			unix.Close(f)
		}
	}
	f, err := unix.Openat(d, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return &fs.PathError{Op: "open", Path: filepath.Join(dir, name), Err: err}
	}
	return unix.Close(f)
}

// HookPath is where the output of job id's hook goes, apart from the job's.
func (s *Store) HookPath(id string) string { return filepath.Join(s.jobsDir(), id+".hook") }

// ProgressPath is the file job id may report its progress in
// ($CMESH_RUN_PROGRESS).
func (s *Store) ProgressPath(id string) string { return filepath.Join(s.jobsDir(), id+".progress") }

// Remove deletes every file of job id.
func (s *Store) Remove(id string) error {
	var first error
	for _, p := range []string{s.RecordPath(id), s.OutputPath(id), filepath.Join(s.activeDir(), id), filepath.Join(s.recentDir(), id), s.rerunEnvPath(id), s.HookPath(id), s.ProgressPath(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = err
		}
	}
	return first
}

// IDs returns the IDs of every job that has a record, newest first.
func (s *Store) IDs() ([]string, error) {
	return s.names(s.jobsDir(), ".json")
}

// recentKeep is how many of the newest jobs the recent index holds: what
// list and the status overview usually need, found without reading a jobs
// folder that grows with every build.
const recentKeep = 1000

func (s *Store) recentDir() string { return filepath.Join(s.Dir, "recent") }

// AddRecent enters a new job in the recent index, before its record
// exists: every job newer than the index's oldest entry is in the index.
// One call in 16 (the ID's random last digit) trims the index back to the
// newest recentKeep; trimming only ever drops the oldest entries, so that
// rule holds whoever trims at the same time.
func (s *Store) AddRecent(id string) error {
	if err := s.mark(s.recentDir(), id); err != nil {
		return err
	}
	if strings.HasSuffix(id, "0") {
		if ids, err := s.names(s.recentDir(), ""); err == nil && len(ids) > recentKeep {
			for _, old := range ids[recentKeep:] {
				_ = os.Remove(filepath.Join(s.recentDir(), old))
			}
		}
	}
	return nil
}

// Newest calls visit with job IDs, newest first, until it returns false.
// It walks the recent index first, and reads the whole jobs folder only
// when the walk goes past the index's oldest entry. An ID may have no
// record (pruned, or still being scheduled): visit decides.
func (s *Store) Newest(visit func(id string) bool) error {
	// No index (a state dir from before it, or one replaced by something
	// else): the whole folder is read.
	recent, _ := s.names(s.recentDir(), "")
	oldest := ""
	for _, id := range recent {
		if !visit(id) {
			return nil
		}
		oldest = id
	}
	all, err := s.IDs()
	if err != nil {
		return err
	}
	for _, id := range all {
		if oldest != "" && id >= oldest {
			continue
		}
		if !visit(id) {
			return nil
		}
	}
	return nil
}

// ActiveIDs returns the IDs of jobs marked not finished, newest first.
func (s *Store) ActiveIDs() ([]string, error) {
	return s.names(s.activeDir(), "")
}

func (s *Store) names(dir, suffix string) ([]string, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	ids := names[:0]
	for _, n := range names {
		id, ok := strings.CutSuffix(n, suffix)
		if ok && CheckID(id) == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids, nil
}

// A paused queue is a file, STATE_DIR/queues/NAME.paused, so that a pause
// outlives every process and a reboot.
func (s *Store) pausePath(queue string) string {
	return filepath.Join(s.Dir, "queues", queue+".paused")
}

// Paused tells whether queue is paused.
func (s *Store) Paused(queue string) bool {
	_, err := os.Lstat(s.pausePath(queue))
	return err == nil
}

// SetPaused pauses (on) or resumes queue.
func (s *Store) SetPaused(queue string, on bool) error {
	p := s.pausePath(queue)
	if !on {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := mkdir(filepath.Dir(p)); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return WriteFile(p, nil, fileMode)
}

// The --env pairs of a job, kept for rerun where only the state dir's
// owner may read them: STATE_DIR/private/ID.env, one JSON array.
func (s *Store) rerunEnvPath(id string) string { return filepath.Join(s.PrivateDir(), id+".env") }

// SaveRerunEnv keeps job id's --env pairs for rerun.
func (s *Store) SaveRerunEnv(id string, env []string) error {
	if len(env) == 0 {
		return nil
	}
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	if err := s.makePrivate(); err != nil {
		return err
	}
	return WriteFile(s.rerunEnvPath(id), data, 0o600)
}

// RerunEnv returns what SaveRerunEnv kept, nil for none.
func (s *Store) RerunEnv(id string) ([]string, error) {
	f, err := openNoFollow(s.rerunEnvPath(id), os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var env []string
	return env, json.NewDecoder(f).Decode(&env)
}
