package proc

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Detaching without a daemon: sh starts on the script in a session of its
// own, outside the caller's process group, and holds none of the caller's
// descriptors: Detach marks every inherited descriptor close-on-exec
// first, because a PHP-FPM worker hands its children its listening socket
// and the client's connection without that flag. sh execs the wrapper,
// which opens no terminal and starts the job in a further session of its
// own. When the caller exits (schedule does at once), init adopts sh; a
// caller that lives on (the spool worker) reaps it.

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
// group, and returns sh's PID, which becomes the wrapper's. It returns
// once sh has the whole script (it reads all of it, here-document
// included, before it execs the wrapper), without waiting for the job.
func Detach(script []byte) (int, error) { return DetachAs(script, nil) }

// DetachAs is Detach with sh (and so the script) running with cred's
// uid and gid, nil for the caller's own: a root reader that starts a
// job's hook starts it as the job's user.
func DetachAs(script []byte, cred *syscall.Credential) (int, error) {
	CloseInherited()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	pid, err := Spawn("/bin/sh", []string{"sh", "-s"},
		[]string{"PATH=" + CleanPath},
		"/", []*os.File{r, null, null}, &syscall.SysProcAttr{Setsid: true, Credential: cred})
	r.Close()
	if err != nil {
		w.Close()
		return 0, fmt.Errorf("detach: %v", err)
	}
	// A caller that lives on (the spool worker) must not collect zombies.
	go func() { _ = Wait(pid) }()
	_, err = w.Write(script)
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("detach: writing the script to sh: %v", err)
	}
	return pid, nil
}
