package wrapper

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/cmesh/cmesh-run/proc"
	"golang.org/x/sys/unix"
)

// A job's process starts held: not one instruction of the program may run
// before the start marker is in the output file, so that nothing the job
// prints comes before it, and the marker can name the job's PID.
type heldJob struct {
	pid int
	// release lets the program run.
	release func()
}

// startHeld starts the job's program held. The kernel holds it when it
// can: a child that asked to be traced stops at its exec, before the
// program's first instruction, and detaching lets it go. That is the
// program itself, one process start less than `cmesh-run _exec`, which a
// job takes otherwise: when it has a nice value or limits to set (_exec
// sets them from inside the job, where nice applies to the right thread),
// when the workdir or the program cannot be found (_exec says why, as the
// job's first line), when the program is set-user-ID, set-group-ID or has
// file capabilities (the kernel does not grant them to a traced exec), or
// when this system does not allow tracing.
func (w *wrap) startHeld() (heldJob, error) {
	if w.spec.Nice == 0 && len(w.spec.Limits) == 0 {
		if path, ok := lookJobPath(w.argv, w.spec.Env, w.spec.Workdir); ok && !privileged(path) {
			if job, ok := w.startTraced(path); ok {
				return job, nil
			}
		}
	}
	return w.startExec()
}

// startTraced starts path stopped at its exec; ok is false when it could
// not, and nothing was started.
func (w *wrap) startTraced(path string) (heldJob, bool) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return heldJob{}, false
	}
	defer null.Close()
	// Every ptrace request must come from the thread that started the
	// child: this goroutine keeps it until release.
	runtime.LockOSThread()
	pid, err := proc.Spawn(path, w.argv, w.spec.Env, w.spec.Workdir, []*os.File{null, w.out, w.out},
		&syscall.SysProcAttr{Setsid: true, Ptrace: true})
	if err != nil {
		runtime.UnlockOSThread()
		return heldJob{}, false
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, syscall.WALL, nil)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil || !ws.Stopped() {
		// Gone before its first instruction: nothing of the program ran.
		runtime.UnlockOSThread()
		if err == nil && !ws.Exited() && !ws.Signaled() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			w.reap(pid)
		}
		return heldJob{}, false
	}
	return heldJob{pid: pid, release: func() {
		_ = syscall.PtraceDetach(pid)
		runtime.UnlockOSThread()
	}}, true
}

// lookJobPath finds the program as the job's own exec would: argv[0] with
// a slash is taken as is (relative to the workdir), otherwise it is looked
// up in the PATH of the job's environment. ok is false when the workdir or
// the program is not there or not runnable.
func lookJobPath(argv, env []string, workdir string) (string, bool) {
	if len(argv) == 0 || argv[0] == "" {
		return "", false
	}
	if fi, err := os.Stat(workdir); err != nil || !fi.IsDir() || unix.Access(workdir, unix.X_OK) != nil {
		return "", false
	}
	runnable := func(p string) bool {
		fi, err := os.Stat(p)
		return err == nil && fi.Mode().IsRegular() && unix.Access(p, unix.X_OK) == nil
	}
	name := argv[0]
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(workdir, p)
		}
		return p, runnable(p)
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			// A relative PATH entry means the workdir for the job's
			// own lookup; _exec handles that rare case as it always has.
			return "", false
		}
		if p := filepath.Join(dir, name); runnable(p) {
			return p, true
		}
	}
	return "", false
}

// privileged reports whether exec of path would raise privileges: its
// set-user-ID or set-group-ID bit, or file capabilities.
func privileged(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
		return true
	}
	_, err = unix.Getxattr(path, "security.capability", nil)
	return err == nil
}
