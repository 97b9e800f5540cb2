package backend

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Detaching without a daemon: `cmesh-run _detach` starts in a session of
// its own, starts sh on the script, prints sh's PID and exits. sh is thus
// re-parented to init, is not a session leader (so it can never gain a
// controlling terminal), and holds none of the caller's descriptors:
// Detach marks every inherited descriptor close-on-exec first, because a
// PHP-FPM worker hands its children its listening socket and the client's
// connection without that flag.

// CloseInherited marks every descriptor above 2 close-on-exec.
func CloseInherited() {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

// CloseInheritedNow closes every descriptor above 2 that this process
// inherited. Go opens all of its own with O_CLOEXEC, so a descriptor
// without that flag came from whoever started us (atd, a worker, a web
// server): the wrapper drops them before the job can see them.
func CloseInheritedNow() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
}

// Detach runs script under sh outside the caller's session and process
// tree, and returns sh's PID, which becomes the wrapper's.
func Detach(exe string, script []byte) (int, error) {
	CloseInherited()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        []string{"cmesh-run", "_detach"},
		Env:         []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Dir:         "/",
		Stdin:       bytes.NewReader(script),
		Stderr:      null,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("detach: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("detach: no pid in %q", out)
	}
	return pid, nil
}

// RunDetach is `cmesh-run _detach`: it starts sh on the script read from
// stdin, feeds it, prints sh's PID and returns without waiting.
func RunDetach(stdin io.Reader, stdout io.Writer) error {
	CloseInheritedNow()
	script, err := io.ReadAll(bufio.NewReader(stdin))
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	cmd := &exec.Cmd{
		Path:   "/bin/sh",
		Args:   []string{"sh", "-s"},
		Env:    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Dir:    "/",
		Stdin:  r,
		Stdout: null,
		Stderr: null,
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.Close()
	// sh reads the whole script, here-document included, before it execs
	// the wrapper, so this write finishes once sh has it all.
	_, werr := w.Write(script)
	w.Close()
	if werr != nil {
		return werr
	}
	_, err = fmt.Fprintln(stdout, cmd.Process.Pid)
	return err
}
