package jobs

import (
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/hooks"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// endedHook settles a job that ended without a wrapper to say so: lost
// (the first reader that finds it so: status, list, prune, the worker),
// ended as only its backend saw (Slurm's record of it, which Slurm forgets
// after a while), or canceled before it started. Under the job's lock it
// records the end, claims the hook if the config names one, then starts
// `cmesh-run _hook` detached, as the job's user: the reader returns at
// once, and no other reader runs it again. Only the record's owner, or
// root, may: these are writes.
func (s *Service) endedHook(st *status.Store, id string) {
	fi, err := os.Stat(st.RecordPath(id))
	if err != nil {
		return
	}
	owner := int(fi.Sys().(*syscall.Stat_t).Uid)
	if euid := os.Geteuid(); euid != 0 && euid != owner {
		return
	}
	lock, err := st.Lock(id)
	if err != nil {
		return
	}
	rec, err := st.Load(id)
	if err != nil || rec.Hook != nil {
		status.Unlock(lock)
		return
	}
	h := s.Cfg.HooksFor(rec.ProfileName)
	j := st.Derive(rec, s.Probe())
	argv := hooks.For(h.OnFinish, h.OnFailure, j.State)
	if !j.State.Finished() || (len(argv) == 0 && !remote(rec.Backend)) || (len(argv) == 0 && rec.State.Finished()) {
		status.Unlock(lock)
		return
	}
	if rec.State != j.State {
		// What the reader derived becomes the record: the hook reports it,
		// and nothing can change it any more.
		j.Progress = nil
		if j.FinishedAt == nil {
			j.FinishedAt = status.Ptr(time.Now().UTC())
		}
		rec.Job = j
	}
	if len(argv) > 0 {
		rec.Hook = &status.HookRun{Argv0: argv[0], StartedAt: time.Now().UTC()}
	}
	err = st.Save(rec)
	status.Unlock(lock)
	if err != nil {
		return
	}
	_ = st.SetActive(id, false)
	if len(argv) == 0 {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	args := []string{exe, "_hook", "--state-dir", st.Dir, "--id", id, "--timeout", h.Timeout.String(),
		"--path", s.Cfg.Path, "--lang", s.Cfg.Lang, "--"}
	script := []byte("exec " + backend.Quote(append(args, argv...)...) + "\n")
	var cred *syscall.Credential
	if os.Geteuid() == 0 && owner != 0 {
		gid := uint32(owner)
		if u, err := user.LookupId(strconv.Itoa(owner)); err == nil {
			if g, err := strconv.Atoi(u.Gid); err == nil {
				gid = uint32(g)
			}
		}
		cred = &syscall.Credential{Uid: uint32(owner), Gid: gid, NoSetGroups: true}
	}
	if _, err := proc.DetachAs(script, cred); err != nil {
		s.Log.Warnf("job %s: cannot start its hook: %v", id, err)
	}
}

// RunHook is `cmesh-run _hook`: run argv as the claimed hook of job id,
// in the environment the hook gets, built for the user it runs as.
func RunHook(stateDir, id string, argv []string, timeout time.Duration, path, lang string) error {
	proc.CloseInheritedNow()
	// The reaper of what the hook leaves behind, so that Exec finds it.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	st, err := status.Open(stateDir, false)
	if err != nil {
		return err
	}
	rec, err := st.Load(id)
	if err != nil {
		return err
	}
	who := CurrentCaller()
	base := []string{"PATH=" + path, "HOME=" + who.Home, "USER=" + who.Name, "LOGNAME=" + who.Name,
		"SHELL=" + who.Shell, "LANG=" + lang, "CMESH_RUN_JOB_NAME=" + rec.NameOrEmpty()}
	j := st.Derive(rec, nil)
	return hooks.Exec(st, j, argv, hooks.Env(base, j), timeout)
}

// hasHooks tells whether the config names any hook: readers pay for
// nothing else when it does not.
func (s *Service) hasHooks() bool {
	if len(s.Cfg.OnFinish) > 0 || len(s.Cfg.OnFailure) > 0 {
		return true
	}
	for _, p := range s.Cfg.Profiles {
		if len(p.OnFinish) > 0 || len(p.OnFailure) > 0 {
			return true
		}
	}
	return false
}

// derive is st.Derive for the readers: a job found ended that its record
// does not say ended (lost, or ended as only a cluster's scheduler saw)
// is settled: its end recorded where only the scheduler knew it, its
// hook started.
func (s *Service) derive(st *status.Store, rec *status.Record, probe status.Probe) status.Job {
	j := st.Derive(rec, probe)
	if j.State.Finished() && !rec.State.Finished() && rec.Hook == nil && (s.hasHooks() || remote(rec.Backend)) {
		s.endedHook(st, rec.ID)
	}
	return j
}

// remote tells whether backend name runs jobs on other hosts, whose end
// its scheduler may forget.
func remote(name string) bool {
	e, ok := backend.Lookup(name)
	return ok && e.Remote
}
