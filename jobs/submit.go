package jobs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

// Submit records the job sub describes and hands it to its backend. With
// sub.Unique and an unfinished job of that name, it starts nothing and
// returns that job, reused. On any error it leaves nothing behind: no
// record, no output, nothing queued; the outcome is audited either way.
func (s *Service) Submit(sub policy.Submission) (*status.Record, bool, error) {
	who := CurrentCaller()
	workdir, err := s.workdir(sub.Workdir)
	if err != nil {
		return nil, false, err
	}
	be, err := s.Backend(sub.Backend, who)
	if err != nil {
		return nil, false, err
	}
	if (sub.Control.MemoryMax != "" || sub.Control.CPUQuota != "") && !be.Quotas() {
		return nil, false, errs.Errorf(errs.Usage, "the %s backend cannot enforce --memory-max or --cpu-quota", be.Name()).
			WithHint("use --backend systemd, or drop them; --limit-cpu, --limit-nofile, --limit-core and --nice work everywhere")
	}
	if err := be.Check(); err != nil {
		return nil, false, err
	}
	st, err := s.Store(true)
	if err != nil {
		return nil, false, err
	}
	if err := checkAfter(st, sub.After); err != nil {
		return nil, false, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, false, err
	}
	if sub.Unique {
		// The state dir's lock makes "is one running? if not, start one"
		// a single step: of racing callers exactly one starts the job.
		all, err := st.LockAll()
		if err != nil {
			return nil, false, err
		}
		defer status.Unlock(all)
		if r := s.unfinishedNamed(st, *sub.Name); r != nil {
			s.Audit.Job(r, "reused", nil)
			return r, true, nil
		}
	}

	id, lock, err := newJobFiles(st, s.jobFileMode())
	if err != nil {
		return nil, false, err
	}
	defer func() { status.Unlock(lock) }()
	asker := sub.Asker
	if asker == "" {
		asker = RequestedBy(who)
	}
	rec := &status.Record{
		Job: status.Job{
			ID: id, Name: sub.Name, State: status.Queued, Command: sub.Argv, Workdir: workdir,
			Backend: be.Name(), User: who.Name, RequestedBy: asker,
			Attempt: 1, CreatedAt: time.Now().UTC(), OutputPath: st.OutputPath(id),
			Retries: sub.Control.Retries, Profile: sub.Profile,
			Queue: sub.Queue, After: sub.After, AfterAny: sub.AfterAny, NotBefore: sub.NotBefore,
		},
		Nonce:       status.NewNonce(),
		ProfileName: sub.ProfileName, ProfileArgs: sub.ProfileArgs, Unique: sub.Unique,
	}
	if sub.RerunOf != "" {
		rec.RerunOf = &sub.RerunOf
	}
	if sub.In != nil {
		t := rec.CreatedAt.Add(*sub.In)
		rec.NotBefore = &t
	}
	if sub.Control.Timeout > 0 {
		rec.Timeout = status.Ptr(sub.Control.Timeout.String())
	}
	spec := sub.Control
	hooks := s.Cfg.HooksFor(sub.ProfileName)
	if len(hooks.OnFinish) > 0 || len(hooks.OnFailure) > 0 {
		spec.OnFinish, spec.OnFailure, spec.HookTimeout = hooks.OnFinish, hooks.OnFailure, hooks.Timeout
	}
	if rec.NotBefore != nil {
		spec.NotBefore = *rec.NotBefore
	}
	spec.Nonce, spec.Workdir, spec.Env = rec.Nonce, workdir, s.jobEnv(rec, who, sub.Env, sub.Inherit)
	spec.Key = status.NewNonce()
	rec.SpecMAC = spec.MAC(sub.Argv)
	job := backend.Job{Record: rec, Argv: sub.Argv, Spec: spec, Exe: exe, StateDir: st.Dir}
	undo := func(err error) (*status.Record, bool, error) {
		_ = st.Remove(id)
		s.Audit.Job(rec, "refused", err)
		return nil, false, err
	}
	stateErr := func(err error) error {
		return &errs.Error{Kind: errs.Internal, Err: err,
			Msg:  fmt.Sprintf("cannot record the job in %s: %v", st.Dir, err),
			Hint: fmt.Sprintf("free space or inodes on its disk (df -h %s; df -i %s), or fix its permissions; nothing was queued", st.Dir, st.Dir)}
	}
	// The indexes are written while the backend takes the job (at needs
	// a few milliseconds), and the record once, after it: one fsync on the
	// caller's path. The job's lock, held until then, keeps the wrapper
	// from reading a record not yet there; readers skip an indexed job
	// without a record. Should this process die before the record is
	// written, the wrapper finds none and runs nothing.
	indexed := make(chan error, 1)
	go func() {
		err := st.SetActive(id, true)
		if err == nil {
			err = st.AddRecent(id)
		}
		indexed <- err
	}()
	ref, err := be.Submit(job)
	ierr := <-indexed
	if err != nil {
		return undo(err)
	}
	if ierr != nil {
		_ = be.Remove(ref)
		return undo(stateErr(ierr))
	}
	rec.BackendRef = &ref
	if err := st.SaveRerunEnv(id, sub.CallerEnv); err != nil {
		_ = be.Remove(ref)
		return undo(stateErr(err))
	}
	if err := st.Save(rec); err != nil {
		// The backend has the job; without a record nobody could follow it.
		_ = be.Remove(ref)
		return undo(stateErr(err))
	}
	// The wrapper may go now; the audit line and the retain rule need
	// not hold the job back.
	status.Unlock(lock)
	lock = nil
	s.Audit.Job(rec, "scheduled", nil)
	s.Retain(st)
	return rec, false, nil
}

// checkAfter makes sure every job to wait for exists, and that the caller
// may read it: its outcome decides whether the new job runs.
func checkAfter(st *status.Store, after []string) error {
	for _, id := range after {
		if _, err := st.Load(id); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return policy.Deny("--after %s: you may not read that job", id).WithHint("wait only for jobs you can see with cmesh-run status")
			}
			if errs.KindOf(err) == errs.NotFound {
				return errs.Errorf(errs.NotFound, "--after %s: no such job", id).WithHint("list the jobs with: cmesh-run list")
			}
			return err
		}
	}
	return nil
}

// unfinishedNamed returns the newest job called name that is queued,
// waiting or running, if any. The active index keeps this cheap.
func (s *Service) unfinishedNamed(st *status.Store, name string) *status.Record {
	ids, err := st.ActiveIDs()
	if err != nil {
		return nil
	}
	probe := s.Probe()
	for _, id := range ids {
		r, err := st.Load(id)
		if err != nil || r.NameOrEmpty() != name {
			continue
		}
		if j := st.Derive(r, probe); !j.State.Finished() {
			r.Job = j
			return r
		}
	}
	return nil
}

// workdir resolves the job's working directory: dir, else the config's,
// else the caller's current one; it must exist.
func (s *Service) workdir(dir string) (string, error) {
	if dir == "" {
		dir = s.Cfg.Workdir
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", errs.Errorf(errs.Usage, "cannot tell the current directory: %v", err).
				WithHint("pass --workdir DIR")
		}
		dir = wd
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil || !st.IsDir() {
		reason := "not a directory"
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			reason = err.Error()
		}
		return "", errs.Errorf(errs.Usage, "--workdir %s: %s", abs, reason).
			WithHint("pass an existing directory")
	}
	return abs, nil
}

// jobEnv builds the job's environment as SPEC.md orders it: the caller's
// (only with --inherit-env), then the clean base, the config's [env], then
// --env; a later one wins.
func (s *Service) jobEnv(r *status.Record, who Caller, extra []string, inherit bool) []string {
	var keys []string
	vals := map[string]string{}
	set := func(kv string) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	if inherit {
		for _, kv := range os.Environ() {
			set(kv)
		}
	}
	set("PATH=" + s.Cfg.Path)
	set("HOME=" + who.Home)
	set("USER=" + who.Name)
	set("LOGNAME=" + who.Name)
	set("SHELL=" + who.Shell)
	set("LANG=" + s.Cfg.Lang)
	set("CMESH_RUN_JOB_ID=" + r.ID)
	set("CMESH_RUN_JOB_NAME=" + r.NameOrEmpty())
	if s.st != nil {
		set("CMESH_RUN_PROGRESS=" + s.st.ProgressPath(r.ID))
	}
	cfgKeys := make([]string, 0, len(s.Cfg.Env))
	for k := range s.Cfg.Env {
		cfgKeys = append(cfgKeys, k)
	}
	slices.Sort(cfgKeys)
	for _, k := range cfgKeys {
		set(k + "=" + s.Cfg.Env[k])
	}
	for _, kv := range extra {
		set(kv)
	}
	env := make([]string, len(keys))
	for i, k := range keys {
		env[i] = k + "=" + vals[k]
	}
	return env
}

// newJobFiles picks a fresh ID and claims it by creating its output file;
// it returns the job's lock, held.
func newJobFiles(st *status.Store, mode os.FileMode) (string, *os.File, error) {
	for range 10 {
		id := status.NewID(time.Now())
		lock, err := st.CreateOutput(id, mode)
		if err == nil {
			return id, lock, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", nil, errs.Errorf(errs.Internal, "cannot create a job in %s: %v", st.Dir, err).
				WithHint("check that the state dir is writable and its disk not full")
		}
	}
	return "", nil, errs.Errorf(errs.Internal, "no free job ID in %s", st.Dir)
}

// jobFileMode is the mode of a new job's output and records: a job root
// schedules may run anything and print secrets, so the state dir's group
// (the web user's) may not read it unless the config says so.
func (s *Service) jobFileMode() os.FileMode {
	if os.Geteuid() == 0 && !s.Cfg.RootJobsReadable {
		return 0o600
	}
	return 0o640
}

// ParseStartTime reads a --at TIME: RFC 3339, or HH:MM in local time, the
// next such moment after now (today's, else tomorrow's: "03:00" at 04:00
// is tomorrow night).
func ParseStartTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if hm, err := time.ParseInLocation("15:04", s, time.Local); err == nil {
		y, m, d := now.Date()
		t := time.Date(y, m, d, hm.Hour(), hm.Minute(), 0, 0, time.Local)
		if !t.After(now) {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	return time.Time{}, errs.Errorf(errs.Usage, "--at %q: want RFC 3339 (2026-12-24T03:00:00Z) or HH:MM", s).
		WithHint("e.g. --at 03:00, or --in 15m")
}
