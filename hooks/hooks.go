// Package hooks runs a job's hook once the job has ended: on_finish, or
// on_failure after a failed, timed out or lost job, an argv from the
// config only. The hook gets the job object as JSON on its stdin and
// CMESH_RUN_JOB_ID, CMESH_RUN_JOB_STATE and CMESH_RUN_JOB_EXIT_CODE in a
// clean environment; its output goes to its own file; after its timeout
// its whole tree is killed. It is claimed in the record before it starts,
// so it never runs twice, and it never changes the job's state.
package hooks

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// For returns the hook that a job that ended in state gets: on_failure
// after a failure (failed, timed_out, lost) when there is one, else
// on_finish; nil for none. A job gets one hook at most.
func For(onFinish, onFailure []string, state status.State) []string {
	switch {
	case !state.Finished():
		return nil
	case len(onFailure) > 0 && (state == status.Failed || state == status.TimedOut || state == status.Lost):
		return onFailure
	}
	return onFinish
}

// Claim marks job id's hook as started, under the job's lock, and returns
// the record as saved; ok is false when a hook already started (it never
// runs twice, even when whoever ran it died on the way). The job must
// have ended: a hook never runs for a job that may still change.
func Claim(st *status.Store, id, program string) (rec *status.Record, ok bool, err error) {
	lock, err := st.Lock(id)
	if err != nil {
		return nil, false, err
	}
	defer status.Unlock(lock)
	rec, err = st.Load(id)
	if err != nil {
		return nil, false, err
	}
	if rec.Hook != nil || !rec.State.Finished() {
		return rec, false, nil
	}
	rec.Hook = &status.HookRun{Argv0: program, StartedAt: time.Now().UTC()}
	if err := st.Save(rec); err != nil {
		return nil, false, err
	}
	return rec, true, nil
}

// Env is a hook's environment: the clean basics of the job's (PATH, HOME,
// USER, LOGNAME, SHELL, LANG, the job's ID and name) from base, never
// the job's own --env values, plus the job's end.
func Env(base []string, j status.Job) []string {
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "CMESH_RUN_JOB_NAME":
			env = append(env, kv)
		}
	}
	exit := ""
	if j.ExitCode != nil {
		exit = strconv.Itoa(*j.ExitCode)
	}
	return append(env, "CMESH_RUN_JOB_ID="+j.ID, "CMESH_RUN_JOB_STATE="+string(j.State), "CMESH_RUN_JOB_EXIT_CODE="+exit)
}

// Exec runs argv as job j's hook, claimed before, and records how it
// ended. The hook runs in a session of its own, as whoever calls Exec (the
// job's user); the caller must be a child subreaper, so that a process the
// hook leaves behind, re-parented to it, is found and killed too: at the
// timeout, and when the hook itself has exited.
func Exec(st *status.Store, j status.Job, argv, env []string, timeout time.Duration) error {
	out, err := st.OpenHook(j.ID)
	if err != nil {
		return err
	}
	defer out.Close()
	in, err := json.Marshal(j)
	if err != nil {
		return err
	}
	self := os.Getpid()
	before := map[int]bool{}
	for _, p := range proc.Descendants(self) {
		before[p] = true
	}
	stdin, feed, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{
		Path: argv[0], Args: argv, Env: env, Dir: "/",
		Stdin: stdin, Stdout: out, Stderr: out,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	run := &status.HookRun{Argv0: argv[0], StartedAt: time.Now().UTC()}
	if err := cmd.Start(); err != nil {
		stdin.Close()
		feed.Close()
		fmt.Fprintf(out, "cmesh-run: cannot start the hook %s: %v\n", argv[0], err)
		run.ExitCode = status.Ptr(127)
		return record(st, j.ID, run)
	}
	stdin.Close()
	go func() {
		// A hook that does not read its stdin must not block us.
		_, _ = feed.Write(append(in, '\n'))
		feed.Close()
	}()
	done := make(chan *os.ProcessState, 1)
	go func() {
		ps, _ := cmd.Process.Wait()
		done <- ps
	}()
	// Everything the hook started, by now or later: below it, in its
	// session, or re-parented to us since it started.
	killAll := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		for _, p := range proc.Descendants(self) {
			if !before[p] {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
	var ps *os.ProcessState
	select {
	case ps = <-done:
	case <-time.After(timeout):
		run.TimedOut = true
		killAll()
		ps = <-done
		fmt.Fprintf(out, "cmesh-run: the hook ran past its timeout (%v): killed\n", timeout)
	}
	killAll()
	reapLeftovers(self, before)
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		name := unix.SignalName(ws.Signal())
		run.ExitCode = status.Ptr(128 + int(ws.Signal()))
		run.Signal = strings.TrimPrefix(name, "SIG")
	} else {
		run.ExitCode = status.Ptr(ps.ExitCode())
	}
	return record(st, j.ID, run)
}

// reapLeftovers collects what killAll killed that was re-parented to us,
// for a second at most: zombies of ours must not pile up in a wrapper or
// a worker that lives on.
func reapLeftovers(self int, before map[int]bool) {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		left := slices.DeleteFunc(proc.Descendants(self), func(p int) bool { return before[p] })
		if len(left) == 0 {
			return
		}
		for _, p := range left {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(p, &ws, syscall.WNOHANG, nil)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// record writes the hook's outcome into the record, under the job's lock;
// nothing else of the record changes.
func record(st *status.Store, id string, run *status.HookRun) error {
	lock, err := st.Lock(id)
	if err != nil {
		return err
	}
	defer status.Unlock(lock)
	rec, err := st.Load(id)
	if err != nil {
		return err
	}
	if rec.Hook != nil {
		run.StartedAt = rec.Hook.StartedAt
	}
	now := time.Now().UTC()
	run.FinishedAt = &now
	rec.Hook = run
	return st.Save(rec)
}
