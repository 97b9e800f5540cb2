//go:build integration

package itest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// BuildTool builds source, a Go program in one file, into dir/name (dir 0755 and the program
// 0755: another user may run it) and returns its path.
func BuildTool(t *testing.T, dir, name, source string) string {
	t.Helper()
	src := filepath.Join(dir, name+".src")
	Must(t, os.MkdirAll(src, 0o755))
	Must(t, os.Chmod(dir, 0o755))
	Must(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module "+name+"\n\ngo 1.21\n"), 0o644))
	Must(t, os.WriteFile(filepath.Join(src, "main.go"), []byte(source), 0o644))
	exe := filepath.Join(dir, name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", exe, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	Must(t, os.Chmod(exe, 0o755))
	return exe
}

// lockerSource takes, as whoever runs it, every lock it can on every regular file and
// directory under its argument: flock LOCK_EX (LOCK_SH where that fails) and an fcntl lock on
// the whole file (a write lock where the file opens for writing, else a read lock). It looks
// again every 20 ms, so that files created later are held too; it prints "held PATH KINDS"
// for each (PATH relative to its argument), "noopen PATH: ERROR" for each it cannot open,
// "ready N" after its first pass, and holds everything until it is killed.
const lockerSource = `package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func lockAll(p string, dir bool) (string, error) {
	flags := syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	fd, err, rw := -1, error(nil), false
	if !dir {
		if fd, err = syscall.Open(p, syscall.O_RDWR|flags, 0); err == nil {
			rw = true
		}
	}
	if !rw {
		if dir {
			flags |= syscall.O_DIRECTORY
		}
		if fd, err = syscall.Open(p, syscall.O_RDONLY|flags, 0); err != nil {
			return "", err
		}
	}
	var got []string
	if syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		got = append(got, "flock-ex")
	} else if syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB) == nil {
		got = append(got, "flock-sh")
	}
	lk := syscall.Flock_t{Type: syscall.F_RDLCK}
	if rw {
		lk.Type = syscall.F_WRLCK
	}
	if syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk) == nil {
		got = append(got, map[bool]string{true: "fcntl-wr", false: "fcntl-rd"}[rw])
	} else if lk.Type = syscall.F_RDLCK; rw && syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk) == nil {
		got = append(got, "fcntl-rd")
	}
	if len(got) == 0 {
		got = append(got, "open")
	}
	return strings.Join(got, ","), nil
}

func main() {
	root := os.Args[1]
	held, failed := map[string]bool{}, map[string]bool{}
	for round := 0; ; round++ {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || held[p] || (!d.IsDir() && !d.Type().IsRegular()) {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			what, err := lockAll(p, d.IsDir())
			switch {
			case err == nil:
				held[p] = true
				fmt.Printf("held %s %s\n", rel, what)
			case !failed[p]:
				failed[p] = true
				fmt.Printf("noopen %s: %v\n", rel, err)
			}
			return nil
		})
		if round == 0 {
			fmt.Printf("ready %d\n", len(held))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
`

// BuildLocker builds the locker into dir and returns its path.
func BuildLocker(t *testing.T, dir string) string {
	t.Helper()
	return BuildTool(t, dir, "locker", lockerSource)
}

// Locker is a running locker: a user's attempt to block cmesh-run by holding every lock it
// can in a state dir. Stop kills it by its PID; the kernel then drops its locks.
type Locker struct {
	*Server
	mu    sync.Mutex
	lines []string
}

// Lock is a file or directory the locker holds: its path relative to the locker's directory,
// and the locks it got ("flock-ex,fcntl-wr"; "open" when none).
type Lock struct{ Path, Kinds string }

func (l Lock) String() string { return l.Path + " " + l.Kinds }

// StartLocker runs the locker bin on dir as a and returns once its first pass is done; it is
// stopped when t ends, if not before.
func StartLocker(t *testing.T, bin string, a Account, dir string) *Locker {
	t.Helper()
	r, w, err := os.Pipe()
	Must(t, err)
	cmd := Command(&a, []string{"PATH=/usr/bin:/bin"}, bin, dir)
	cmd.Stdout = w
	l := &Locker{}
	l.Server = Start(t, "the locker", cmd, "")
	w.Close()
	ready := make(chan struct{})
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.mu.Unlock()
			if strings.HasPrefix(sc.Text(), "ready ") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-l.Done():
		t.Fatalf("the locker exited: %v\n%s", cmd.ProcessState, strings.Join(l.Report(), "\n"))
	case <-time.After(30 * time.Second):
		t.Fatalf("the locker (pid %d) did not finish its first pass in 30 s:\n%s", l.PID, strings.Join(l.Report(), "\n"))
	}
	return l
}

// Report is every line the locker printed.
func (l *Locker) Report() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// Held is what the locker holds so far.
func (l *Locker) Held() []Lock {
	var held []Lock
	for _, line := range l.Report() {
		if rest, ok := strings.CutPrefix(line, "held "); ok {
			i := strings.LastIndexByte(rest, ' ')
			held = append(held, Lock{Path: rest[:i], Kinds: rest[i+1:]})
		}
	}
	return held
}
