// Package wrapper is what runs inside the backend's job: it starts the
// job's argv in its own session, writes the start and end markers to the
// job's output file and keeps the record up to date.
//
// The job is started through a second, short-lived copy of cmesh-run
// (`_exec`) that waits on a pipe until the start marker is written, then
// replaces itself with the job's program. So the marker carries the job's
// real PID, and nothing the job prints can come before it.
package wrapper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/status"
)

// Run is `cmesh-run _wrap`: run job id of the store at stateDir, with its
// argv and the spec read from stdin. It returns the wrapper's exit status,
// which only the backend sees.
func Run(stateDir, id string, argv []string, stdin io.Reader) int {
	spec, err := status.DecodeSpec(stdin)
	if err != nil {
		return fail(err)
	}
	if err := nullStdin(); err != nil {
		return fail(err)
	}
	// The wrapper outlives terminals and request ends; only the job's end
	// (or a cancel, which signals the job itself) ends it.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)

	st, err := status.Open(stateDir, false)
	if err != nil {
		return fail(err)
	}
	w := &wrap{st: st, id: id, argv: argv, spec: spec}
	return w.run(terms)
}

type wrap struct {
	st   *status.Store
	id   string
	argv []string
	spec status.Spec
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: %v\n", err)
	return 1
}

func nullStdin() error {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Dup2(int(f.Fd()), 0)
}

func (w *wrap) run(terms chan os.Signal) int {
	lock, err := w.st.Lock(w.id)
	if err != nil {
		return fail(err)
	}
	rec, err := w.st.Load(w.id)
	if err != nil {
		status.Unlock(lock)
		return fail(err)
	}
	if rec.State != status.Queued || rec.Nonce != w.spec.Nonce {
		// Canceled before it started, or a stale script: nothing to run.
		status.Unlock(lock)
		return 0
	}
	out, err := w.st.OpenAppend(w.id)
	if err != nil {
		status.Unlock(lock)
		return fail(err)
	}
	defer out.Close()

	cmd, release, err := w.start(out)
	if err != nil {
		// Not even the helper could start: record that as the end.
		w.finishLocked(lock, rec, out, 0, endMarker(rec.Attempt, 126, ""))
		return fail(err)
	}
	offset, _ := out.Seek(0, io.SeekEnd)
	pid := cmd.Process.Pid
	now := time.Now().UTC()
	start := status.Marker{Kind: "start", Attempt: rec.Attempt, PID: pid, Time: now}
	if _, err := out.Write(start.Format(rec.Nonce)); err != nil {
		_ = cmd.Process.Kill()
		_ = release.Close()
		_ = cmd.Wait()
		status.Unlock(lock)
		return fail(err)
	}
	rec.State = status.Running
	rec.PID = status.Ptr(pid)
	rec.PIDStart, _ = status.ProcStart(pid)
	rec.WrapperPID = os.Getpid()
	rec.WrapperStart, _ = status.ProcStart(rec.WrapperPID)
	rec.BootID = status.BootID()
	rec.StartedAt = &now
	rec.StartOffset = offset
	saveErr := w.st.Save(rec)
	status.Unlock(lock)
	release.Close() // the job may exec now
	if saveErr != nil {
		fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: %v\n", saveErr)
	}

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	for loop := true; loop; {
		select {
		case waitErr = <-done:
			loop = false
		case <-terms:
			// Someone asked the wrapper to stop: pass it on to the job's
			// whole process group and keep waiting for its end.
			_ = syscall.Kill(-pid, syscall.SIGTERM)
		}
	}
	exit, sig := exitOf(cmd, waitErr)
	lock, err = w.st.Lock(w.id)
	if err != nil {
		return fail(err)
	}
	rec, err = w.st.Load(w.id)
	if err != nil {
		status.Unlock(lock)
		return fail(err)
	}
	w.finishLocked(lock, rec, out, offset, endMarker(rec.Attempt, exit, sig))
	return 0
}

// finishLocked writes the end marker, then the record, then releases the
// lock. The marker comes first: it is the durable truth that a reader
// finds even if the record write never happens.
func (w *wrap) finishLocked(lock *os.File, rec *status.Record, out *os.File, offset int64, m status.Marker) {
	defer status.Unlock(lock)
	if _, err := out.Write(m.Format(rec.Nonce)); err != nil {
		fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: %v\n", err)
	}
	status.ApplyEnd(&rec.Job, m)
	if rec.StartedAt == nil {
		rec.StartedAt = &m.Time
	}
	if err := w.st.Save(rec); err != nil {
		fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: %v\n", err)
		return
	}
	_ = w.st.SetActive(w.id, false)
}

func endMarker(attempt, exit int, sig string) status.Marker {
	return status.Marker{Kind: "end", Attempt: attempt, Exit: &exit, Signal: sig, Time: time.Now().UTC()}
}

// exitOf turns a wait result into the shell's convention: the exit status,
// or 128+N with the signal's name when signal N killed the job.
func exitOf(cmd *exec.Cmd, err error) (int, string) {
	ps := cmd.ProcessState
	if ps == nil {
		return 126, ""
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		name := unix.SignalName(ws.Signal())
		if len(name) > 3 {
			name = name[3:]
		}
		return 128 + int(ws.Signal()), name
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return 126, ""
	}
	return ps.ExitCode(), ""
}

// start launches `cmesh-run _exec`, held on a pipe until release is
// closed. It runs in a new session, so it has no controlling terminal and
// its process group is the job's whole tree for signals.
func (w *wrap) start(out *os.File) (*exec.Cmd, *os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	hold, release, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, nil, err
	}
	defer null.Close()
	args := append([]string{"cmesh-run", "_exec", "--workdir", w.spec.Workdir, "--"}, w.argv...)
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        args,
		Env:         w.spec.Env,
		Dir:         "/",
		Stdin:       null,
		Stdout:      out,
		Stderr:      out,
		ExtraFiles:  []*os.File{hold},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	hold.Close()
	if err != nil {
		release.Close()
		return nil, nil, err
	}
	return cmd, release, nil
}
