// Package wrapper is what runs inside the backend's job: it starts the
// job's argv in its own session, writes the start and end markers to the
// job's output file, keeps the record up to date, and carries out
// timeouts, retries, cancels and the max_running slots.
//
// The job's program starts held (held.go): as a traced child that the
// kernel stops at its exec, let go once the start marker is written; or,
// when it has a nice value or limits to set, is set-ID, cannot be found,
// or tracing is not allowed, through a short-lived copy of cmesh-run
// (`_exec`) that waits on a pipe for the marker, then becomes the program.
// Either way the marker carries the job's real PID, and nothing the job
// prints can come before it. The wrapper runs only the argv and spec that
// schedule recorded (the record's MAC, see matches).
//
// The wrapper is a child subreaper: a process of the job that detaches
// (double fork, setsid) is re-parented to the wrapper, not to init, so a
// cancel or a timeout finds and stops the job's whole tree.
package wrapper

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/hooks"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/spool"
	"github.com/cmesh/cmesh-run/status"
)

// Run is `cmesh-run _wrap`: run job id of the store at stateDir, with its
// argv and the spec read from stdin. It returns the wrapper's exit status,
// which only the backend sees.
func Run(stateDir, id string, argv []string, stdin io.Reader) int {
	// Whatever started the wrapper (atd, a worker, systemd) may have left
	// descriptors open that it inherited from its own starter; none of
	// them may reach the job.
	proc.CloseInheritedNow()
	spec, err := status.DecodeSpec(stdin)
	if err != nil {
		return fail(err)
	}
	if err := nullStdin(); err != nil {
		return fail(err)
	}
	// The wrapper outlives terminals and request ends; SIGTERM and SIGUSR1
	// (sent by cancel) stop the job, SIGCHLD reaps it.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1)
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

	st, err := status.Open(stateDir, false)
	if err != nil {
		return fail(err)
	}
	w := &wrap{st: st, id: id, argv: argv, spec: spec, sigs: sigs, chld: chld}
	code := w.run()
	// The queue's next job need not wait for this one's hook.
	status.Unlock(w.slot)
	w.slot = nil
	if w.endJob != nil {
		w.hook(*w.endJob)
	}
	return code
}

type wrap struct {
	st   *status.Store
	id   string
	argv []string
	spec status.Spec
	sigs chan os.Signal
	chld chan os.Signal
	out  *os.File
	slot *os.File // the queue's slot, held from the first attempt to the end
	// queued is the backends' probe of older queued jobs, made at queuedAt.
	queued   status.Probe
	queuedAt time.Time
	// endJob is the job as finish recorded it: its hook's input.
	endJob *status.Job
}

// relock takes the job's lock and reads its record under it.
func (w *wrap) relock() (*os.File, *status.Record, error) {
	lock, err := w.st.Lock(w.id)
	if err != nil {
		return nil, nil, err
	}
	rec, err := w.st.Load(w.id)
	if err != nil {
		status.Unlock(lock)
		return nil, nil, err
	}
	return lock, rec, nil
}

// unclaim removes a spool job's claim once the record says the job is
// the wrapper's: until then readers take the claim as "on its way".
func (w *wrap) unclaim() {
	spool.Unclaim(w.st.Dir, w.id)
}

// matches refuses an argv, workdir, environment or any other spec value
// that is not what schedule recorded. The nonce alone is no proof: anyone
// who may read the record reads it. The MAC's key is only in the script
// the backend runs, and the MAC covers the argv byte for byte (the
// record's JSON cannot: it replaces invalid UTF-8). Records from before
// the MAC are held to their argv, as JSON keeps it, and workdir.
func (w *wrap) matches(rec *status.Record) error {
	var ok bool
	if rec.SpecMAC != "" {
		ok = w.spec.MACMatches(w.argv, rec.SpecMAC)
	} else {
		var seen []string
		b, err := json.Marshal(w.argv)
		ok = err == nil && json.Unmarshal(b, &seen) == nil && slices.Equal(rec.Command, seen) && rec.Workdir == w.spec.Workdir
	}
	if !ok {
		return fmt.Errorf("job %s: the command or spec given is not the one recorded; refusing to run it", w.id)
	}
	return nil
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

// outcome is how an attempt ended.
type outcome struct {
	exit    *int
	signal  string
	reason  string // "", "canceled" or "timeout"
	started bool
}

func (w *wrap) run() int {
	lock, rec, err := w.relock()
	if err != nil {
		return fail(err)
	}
	if rec.State != status.Queued || rec.Nonce != w.spec.Nonce {
		// Canceled before it started, or a stale script: nothing to run.
		status.Unlock(lock)
		return 0
	}
	if err := w.matches(rec); err != nil {
		status.Unlock(lock)
		return fail(err)
	}
	if rec.WrapperPID > 0 && rec.WrapperPID != os.Getpid() && rec.Local() && proc.Alive(rec.WrapperPID, rec.WrapperStart, rec.BootID) {
		// Another wrapper holds the job until its start time (a spool
		// claim put back after a worker died): it will run it.
		status.Unlock(lock)
		return 0
	}
	if w.out, err = w.st.OpenAppend(w.id); err != nil {
		status.Unlock(lock)
		return fail(err)
	}
	defer w.out.Close()
	rec.WrapperPID = os.Getpid()
	rec.WrapperStart, _ = proc.ProcStart(rec.WrapperPID)
	rec.BootID = proc.BootID()
	rec.Host = status.Ptr(proc.Hostname())
	// The job's progress file, made as the job's user with its output's
	// mode, so that readers in the state dir's group can read it.
	_ = w.st.CreateProgress(w.id)

	// Before the job's first attempt: its start time, the jobs it waits
	// for, its queue (paused, or all slots taken). Each wait lets the
	// lock go and takes it again; done says the job ended on the way (a
	// cancel, a failed dependency) and the lock is gone.
	for _, wait := range []func(*os.File, *status.Record) (*os.File, *status.Record, bool){w.waitTime, w.waitAfter, w.waitQueue} {
		var done bool
		if lock, rec, done = wait(lock, rec); done {
			return 0
		}
	}

	for {
		oc := w.attempt(lock, rec)
		if lock, rec, err = w.relock(); err != nil {
			return fail(err)
		}
		retry := oc.reason == "" && oc.started && *oc.exit != 0 && rec.Attempt <= w.spec.Retries && rec.Cancel == nil
		if !retry {
			w.finish(lock, rec, oc)
			return 0
		}
		// This attempt failed and another is due: its end marker now, the
		// next attempt after the delay, unless a cancel comes first.
		w.mark(rec, oc)
		rec.Attempt++
		rec.PID, rec.PIDStart = nil, 0
		_ = w.st.Save(rec)
		status.Unlock(lock)
		canceled := w.pause(w.spec.RetryDelay)
		if lock, rec, err = w.relock(); err != nil {
			return fail(err)
		}
		if canceled || rec.Cancel != nil {
			w.finish(lock, rec, outcome{reason: "canceled"})
			return 0
		}
	}
}

// attempt starts the job under the held lock, releases it, and supervises
// the job until it has ended.
func (w *wrap) attempt(lock *os.File, rec *status.Record) outcome {
	job, err := w.startHeld()
	if err != nil {
		status.Unlock(lock)
		fmt.Fprintf(w.out, "cmesh-run: cannot start job: %v\n", err)
		return outcome{exit: status.Ptr(126), started: true}
	}
	offset, _ := w.out.Seek(0, io.SeekEnd)
	pid := job.pid
	now := time.Now().UTC()
	start := status.Marker{Kind: "start", Attempt: rec.Attempt, PID: pid, Host: proc.Hostname(), Time: now}
	err = status.WriteMarker(w.out, start, rec.Nonce)
	if err == nil && rec.Attempt > 1 {
		// A plain line, so that log shows where each attempt begins.
		_, err = fmt.Fprintf(w.out, "[cmesh-run: attempt %d of %d]\n", rec.Attempt, w.spec.Retries+1)
	}
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		job.release()
		status.Unlock(lock)
		w.reap(pid)
		return outcome{exit: status.Ptr(126), started: true}
	}
	rec.State = status.Running
	rec.PID = status.Ptr(pid)
	rec.PIDStart, _ = proc.ProcStart(pid)
	if rec.StartedAt == nil {
		rec.StartedAt = &now
	}
	rec.StartOffset = offset
	// The program may run once its marker is written; the running record
	// (an fsync) follows while it runs. The lock stays held until then, so
	// a cancel or a retry decision never reads the queued record.
	job.release()
	saveErr := w.st.Save(rec)
	w.unclaim()
	status.Unlock(lock)
	if saveErr != nil {
		fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: %v\n", saveErr)
	}
	return w.supervise(pid)
}

// supervise waits for the job's process to end, carrying out a timeout or
// a cancel on the way: SIGTERM to the whole tree, SIGKILL after the grace.
func (w *wrap) supervise(pid int) outcome {
	self := os.Getpid()
	var timeout, killAt <-chan time.Time
	if w.spec.Timeout > 0 {
		timeout = time.After(w.spec.Timeout)
	}
	oc := outcome{started: true}
	stop := func(reason string, grace time.Duration) {
		if oc.reason != "" {
			return
		}
		oc.reason = reason
		proc.SignalTree(self, pid, syscall.SIGTERM)
		killAt = time.After(grace)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	mainDone := false
	for {
		select {
		case <-w.chld:
		case <-tick.C:
		case s := <-w.sigs:
			if r, grace := w.cancelRequested(s); r {
				stop("canceled", grace)
			}
		case <-timeout:
			stop("timeout", w.grace())
		case <-killAt:
			proc.SignalTree(self, pid, syscall.SIGKILL)
		}
		for _, ex := range reapAll() {
			if ex.pid == pid {
				mainDone = true
				oc.exit, oc.signal = &ex.code, ex.signal
			}
		}
		// After a cancel or timeout the attempt ends when the whole tree
		// is gone; after a plain exit, when the job's process is.
		if mainDone && (oc.reason == "" || len(proc.Descendants(self)) == 0) {
			return oc
		}
	}
}

func (w *wrap) grace() time.Duration {
	if w.spec.Grace > 0 {
		return w.spec.Grace
	}
	return status.DefaultGrace
}

// cancelRequested tells whether signal s asks for the job to stop, and
// with which grace: SIGTERM always does (a cancel through the job's
// scheduler, scancel, comes as SIGTERM: its grace is the record's);
// SIGUSR1 when the record now holds a cancel request.
func (w *wrap) cancelRequested(s os.Signal) (bool, time.Duration) {
	rec, err := w.st.Load(w.id)
	if s == syscall.SIGTERM && (err != nil || rec.Cancel == nil) {
		return true, w.grace()
	}
	if err != nil || rec.Cancel == nil {
		return false, 0
	}
	if rec.Cancel.Grace > 0 {
		return true, rec.Cancel.Grace
	}
	return true, status.DefaultGrace
}

// pause waits d, or less if a cancel comes; it reports a cancel.
func (w *wrap) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return false
		case <-w.chld:
			reapAll()
		case s := <-w.sigs:
			if r, _ := w.cancelRequested(s); r {
				return true
			}
		}
	}
}

type exited struct {
	pid    int
	code   int
	signal string
}

// reapAll collects every child that has ended: the job, and orphans of
// the job re-parented to the wrapper.
func reapAll() []exited {
	var out []exited
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return out
		}
		out = append(out, exitOf(pid, ws))
	}
}

// reap waits for pid alone.
func (w *wrap) reap(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, 0, nil)
}

// exitOf turns a wait status into the shell's convention: the exit
// status, or 128+N with the signal's name when signal N killed the job.
func exitOf(pid int, ws syscall.WaitStatus) exited {
	if ws.Signaled() {
		name := unix.SignalName(ws.Signal())
		if len(name) > 3 {
			name = name[3:]
		}
		return exited{pid, 128 + int(ws.Signal()), name}
	}
	return exited{pid, ws.ExitStatus(), ""}
}

// mark appends the end marker of the current attempt.
func (w *wrap) mark(rec *status.Record, oc outcome) status.Marker {
	m := status.Marker{Kind: "end", Attempt: rec.Attempt, Exit: oc.exit, Signal: oc.signal, Reason: oc.reason, Time: time.Now().UTC()}
	if err := status.WriteMarker(w.out, m, rec.Nonce); err != nil {
		fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: %v\n", err)
	}
	return m
}

// finish writes the end marker, then the record, then releases the lock.
// The marker comes first: it is the durable truth that a reader finds
// even if the record write never happens.
func (w *wrap) finish(lock *os.File, rec *status.Record, oc outcome) {
	defer status.Unlock(lock)
	m := w.mark(rec, oc)
	status.ApplyEnd(&rec.Job, m)
	if err := w.st.Save(rec); err != nil {
		fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: %v\n", err)
		return
	}
	_ = w.st.SetActive(w.id, false)
	j := rec.Public()
	w.endJob = &j
}

// hook runs the job's hook, if the config gave it one, once: claimed in
// the record first, so that neither a wrapper killed on the way nor a
// reader that later finds the job ended runs it again.
func (w *wrap) hook(j status.Job) {
	argv := hooks.For(w.spec.OnFinish, w.spec.OnFailure, j.State)
	if len(argv) == 0 {
		return
	}
	rec, ok, err := hooks.Claim(w.st, w.id, argv[0])
	if err != nil || !ok {
		return
	}
	j = w.st.Derive(rec, nil)
	timeout := w.spec.HookTimeout
	if timeout <= 0 {
		timeout = status.DefaultHookTimeout
	}
	if err := hooks.Exec(w.st, j, argv, hooks.Env(w.spec.Env, j), timeout); err != nil {
		fmt.Fprintf(os.Stderr, "cmesh-run: wrapper: hook: %v\n", err)
	}
}

// startExec launches `cmesh-run _exec`, held on a pipe until release
// closes it; _exec then sets nice and limits, moves to the workdir, finds
// the program in the job's PATH and becomes it, or says why it cannot. It
// runs in a new session, so it has no controlling terminal and its process
// group is the job's for signals.
func (w *wrap) startExec() (heldJob, error) {
	exe, err := os.Executable()
	if err != nil {
		return heldJob{}, err
	}
	hold, release, err := os.Pipe()
	if err != nil {
		return heldJob{}, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return heldJob{}, err
	}
	defer null.Close()
	args := []string{"cmesh-run", "_exec", "--workdir", w.spec.Workdir}
	if w.spec.Nice != 0 {
		args = append(args, "--nice", strconv.Itoa(w.spec.Nice))
	}
	for _, l := range w.spec.Limits {
		args = append(args, "--rlimit", l.Name+"="+strconv.FormatUint(l.Value, 10))
	}
	args = append(append(args, "--"), w.argv...)
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        args,
		Env:         hideSudo(w.spec.Env),
		Dir:         "/",
		Stdin:       null,
		Stdout:      w.out,
		Stderr:      w.out,
		ExtraFiles:  []*os.File{hold},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	hold.Close()
	if err != nil {
		release.Close()
		return heldJob{}, err
	}
	return heldJob{pid: cmd.Process.Pid, release: func() { release.Close() }}, nil
}

// sudoHidden prefixes the SUDO_* variables of a job's environment (a job
// scheduled with --inherit-env from a shell sudo opened) on their way
// through _exec, which refuses to run under sudo and would take them for
// sudo's own; _exec puts them back before the job's program starts.
const sudoHidden = "CMESH_RUN_HIDDEN_"

func hideSudo(env []string) []string {
	out := make([]string, len(env))
	for i, kv := range env {
		if strings.HasPrefix(kv, "SUDO_") {
			kv = sudoHidden + kv
		}
		out[i] = kv
	}
	return out
}

// revealSudo undoes hideSudo.
func revealSudo(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if rest, ok := strings.CutPrefix(kv, sudoHidden); ok {
			kv = rest
		}
		out = append(out, kv)
	}
	return out
}
