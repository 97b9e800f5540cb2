package wrapper

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/cmesh/cmesh-run/status"
)

// Exec is `cmesh-run _exec`: wait until the wrapper has written the start
// marker (it closes the pipe on fd 3), move to workdir, and become the
// job's program. It returns only when that fails, with the shell's
// statuses: 127 when the program is not found, 126 when it cannot run.
func Exec(workdir string, nice int, limits []status.Rlimit, argv []string) int {
	// Linux keeps the nice value per thread, and execve carries over the
	// calling thread's: set it and exec from one and the same thread.
	runtime.LockOSThread()
	hold := os.NewFile(3, "hold")
	_, _ = io.Copy(io.Discard, hold)
	hold.Close()
	if len(argv) == 0 {
		return cannot(126, "no command")
	}
	if nice != 0 {
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, nice); err != nil {
			return cannot(126, "nice %d: %v", nice, err)
		}
	}
	for _, l := range limits {
		res, ok := rlimits[l.Name]
		if !ok {
			return cannot(126, "unknown limit %q", l.Name)
		}
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: l.Value, Max: l.Value}); err != nil {
			return cannot(126, "limit %s=%d: %v", l.Name, l.Value, err)
		}
	}
	if err := os.Chdir(workdir); err != nil {
		return cannot(126, "workdir %s: %v", workdir, unwrap(err))
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, exec.ErrNotFound) {
			return cannot(127, "%s: command not found (PATH=%s)", argv[0], os.Getenv("PATH"))
		}
		return cannot(126, "%s: %v", argv[0], unwrap(err))
	}
	err = syscall.Exec(path, argv, revealSudo(os.Environ()))
	if errors.Is(err, syscall.ENOENT) {
		return cannot(127, "%s: %v", path, err)
	}
	return cannot(126, "%s: %v", path, err)
}

// rlimits are the limits --limit-* set, by the names the spec uses.
var rlimits = map[string]int{
	"cpu":    syscall.RLIMIT_CPU,
	"nofile": syscall.RLIMIT_NOFILE,
	"core":   syscall.RLIMIT_CORE,
}

// cannot reports a start failure where the job's own errors would go: its
// output file, so that log shows why the job failed.
func cannot(code int, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "cmesh-run: cannot start job: "+format+"\n", args...)
	return code
}

func unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}
