package proc

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// CleanPath is the PATH of every program cmesh-run starts (at, sh,
// systemd-run) and, unless the config sets another, of every job: the
// caller's PATH (a web server's has none) never counts.
const CleanPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Spawn and RunInput start programs with syscall.ForkExec rather than
// os/exec: the first os/exec start in a process also starts and reaps a
// probe child (whether pidfds work), a process start on the way of
// schedule's caller (at, or sh for direct) and of every job's program
// (the wrapper's traced start).

// Spawn starts path with argv and env in dir, with files as its
// descriptors 0, 1, 2, and sys's attributes (a session of its own, being
// traced).
func Spawn(path string, argv, env []string, dir string, files []*os.File, sys *syscall.SysProcAttr) (int, error) {
	fds := make([]uintptr, len(files))
	for i, f := range files {
		fds[i] = f.Fd()
	}
	return syscall.ForkExec(path, argv, &syscall.ProcAttr{Dir: dir, Env: env, Files: fds, Sys: sys})
}

// Wait waits for child pid to end and returns an error like os/exec's
// when it did not exit 0.
func Wait(pid int) error {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	switch {
	case ws.Signaled():
		return fmt.Errorf("signal: %v", ws.Signal())
	case ws.ExitStatus() != 0:
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	}
	return nil
}

// RunInput runs path in / with stdin as its standard input and returns
// what it wrote to standard output and error together.
func RunInput(path string, argv, env []string, stdin []byte) ([]byte, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	pid, err := Spawn(path, argv, env, "/", []*os.File{inR, outW, outW}, nil)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	// A script larger than the pipe's buffer is written while the
	// program reads it. A failed write is an error even when the program
	// exits 0: at then queued a script cut short (or an empty one), which
	// the caller must take back.
	written := make(chan error, 1)
	go func() {
		_, err := inW.Write(stdin)
		if cerr := inW.Close(); err == nil {
			err = cerr
		}
		written <- err
	}()
	out, rerr := io.ReadAll(outR)
	outR.Close()
	werr := <-written
	if err := Wait(pid); err != nil {
		return out, err
	}
	if werr != nil {
		return out, fmt.Errorf("writing standard input of %s: %v", path, werr)
	}
	return out, rerr
}
