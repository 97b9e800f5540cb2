//go:build integration

package itest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------------------------
// /proc

// PIDs lists the processes in /proc.
func PIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Alive reports whether process pid exists. EPERM counts as alive: the process is there, it
// only belongs to a user the caller may not signal.
func Alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// statFields returns the fields of /proc/PID/stat after the command name (fields[0] is the
// state) and the command name. The name is cut at the last ")": it may hold spaces and ")".
func statFields(pid int) ([]string, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, "", err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return nil, "", fmt.Errorf("odd /proc/%d/stat %q", pid, s)
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 20 {
		return nil, "", fmt.Errorf("odd /proc/%d/stat %q", pid, s)
	}
	return fields, s[open+1 : end], nil
}

// ProcStat returns a process's command name and parent PID.
func ProcStat(pid int) (comm string, ppid int, err error) {
	fields, comm, err := statFields(pid)
	if err != nil {
		return "", 0, err
	}
	ppid, err = strconv.Atoi(fields[1])
	return comm, ppid, err
}

// ProcStart is the process's start time in clock ticks since boot, 0 when it is gone: with the
// PID it names one process, whatever PIDs are reused later (cmesh-run's records keep it for
// the same reason).
func ProcStart(pid int) uint64 {
	f, _, err := statFields(pid)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// ProcState is the process's state letter ("R", "S", "Z", ...), "" when it is gone.
func ProcState(pid int) string {
	f, _, err := statFields(pid)
	if err != nil {
		return ""
	}
	return f[0]
}

// StatusField returns a field of /proc/PID/status ("PPid", "NSpid", ...), "" when the process
// or the field is not there.
func StatusField(pid int, key string) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Ancestors returns the parents of pid, nearest first, up to but not including PID 1 and the
// first process named stop ("": none), which a job's processes end at (atd, for one).
func Ancestors(pid int, stop string) []int {
	var out []int
	for p := pid; ; {
		_, ppid, err := ProcStat(p)
		if err != nil || ppid <= 1 {
			return out
		}
		if comm, _, err := ProcStat(ppid); err != nil || (stop != "" && comm == stop) {
			return out
		}
		out = append(out, ppid)
		p = ppid
	}
}

// Descendants returns every process below pid, nearest first.
func Descendants(pid int) []int {
	children := map[int][]int{}
	for _, p := range PIDs() {
		if _, ppid, err := ProcStat(p); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// GroupMembers returns the processes of process group pgid. No system call lists a group, so
// it asks every process in /proc for its group.
func GroupMembers(pgid int) []int {
	var pids []int
	for _, p := range PIDs() {
		if g, err := syscall.Getpgid(p); err == nil && g == pgid {
			pids = append(pids, p)
		}
	}
	return pids
}

// ProcessesOf lists the processes whose real or effective uid is uid.
func ProcessesOf(uid int) []int {
	var pids []int
	for _, pid := range PIDs() {
		if f := strings.Fields(StatusField(pid, "Uid")); len(f) >= 2 && (f[0] == strconv.Itoa(uid) || f[1] == strconv.Itoa(uid)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ProcessesWith returns the live processes, this one aside, whose command line contains s.
func ProcessesWith(s string) []int {
	var pids []int
	for _, pid := range PIDs() {
		if pid == os.Getpid() || ProcState(pid) == "Z" {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ---------------------------------------------------------------------------------------------
// Descriptors

// FDLinks maps a process's descriptors to their /proc link targets ("socket:[123]", ...). A
// target names the kernel object itself, so the same socket or pipe held by two processes has
// the same target in both.
func FDLinks(pid int) map[string]string {
	links := map[string]string{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(dir)
	for _, ent := range entries {
		if target, err := os.Readlink(filepath.Join(dir, ent.Name())); err == nil {
			links[ent.Name()] = target
		}
	}
	return links
}

// HoldsFile reports whether process pid has path open (a worker keeps its lock file open).
func HoldsFile(pid int, path string) bool {
	for _, target := range FDLinks(pid) {
		if target == path {
			return true
		}
	}
	return false
}

// SharedKind reports whether a descriptor target is a socket or a pipe: objects a process can
// only hold by inheriting them (or being passed them), so that one a job shares with PHP-FPM
// shows the job inherited it.
func SharedKind(target string) bool {
	return strings.HasPrefix(target, "socket:[") || strings.HasPrefix(target, "pipe:[")
}

// ---------------------------------------------------------------------------------------------
// Waiting for processes

// WaitGone waits until pid no longer exists, failing t after timeout.
func WaitGone(t *testing.T, pid int, what string, timeout time.Duration) {
	t.Helper()
	PollEvery(t, 100*time.Millisecond, timeout, fmt.Sprintf("%s (pid %d) to be gone", what, pid), func() (bool, string) {
		return !Alive(pid), ""
	})
}

// WaitOrKill waits until the process is gone (a zombie counts as gone) and kills it by PID
// with SIGKILL when it is still there after timeout. A PID reused by another process
// meanwhile is left alone.
func WaitOrKill(t *testing.T, pid int, timeout time.Duration) {
	start := ProcStart(pid)
	if start == 0 {
		return
	}
	gone := func() bool {
		s := ProcStart(pid)
		return s == 0 || s != start || ProcState(pid) == "Z"
	}
	if Eventually(timeout, gone) {
		return
	}
	comm, _, _ := ProcStat(pid)
	t.Logf("cleanup: %s (pid %d) still alive after %v: SIGKILL", comm, pid, timeout)
	syscall.Kill(pid, syscall.SIGKILL)
	Eventually(5*time.Second, gone)
}

// ---------------------------------------------------------------------------------------------
// Servers: processes a test starts and stops

// Server is a process a test started in a process group of its own (no terminal signal
// reaches it, and whatever it leaves in its group can be killed with it).
type Server struct {
	Name string
	Cmd  *exec.Cmd
	PID  int // also the process group's ID

	// Grace is how long Stop waits after each of its signals (5 s unless set).
	Grace time.Duration

	stop []syscall.Signal
	done chan struct{}
	once sync.Once
}

// Launch starts cmd in a process group of its own, its stdout and stderr appended to log
// unless the caller set them ("" with neither set: to /dev/null). Without an environment of
// its own cmd gets PATH and LANG only, and / as its directory. Stop ends it with the signals
// stop, in turn, then SIGKILL.
func Launch(name string, cmd *exec.Cmd, log string, stop ...syscall.Signal) (*Server, error) {
	if log != "" && cmd.Stdout == nil && cmd.Stderr == nil {
		f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if cmd.Env == nil {
		cmd.Env = []string{"PATH=" + StdPath, "LANG=C.UTF-8"}
	}
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &Server{Name: name, Cmd: cmd, PID: cmd.Process.Pid, Grace: 5 * time.Second, stop: stop, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	return s, nil
}

// Start is Launch for t: t fails when cmd cannot start, and stops it when it ends.
func Start(t *testing.T, name string, cmd *exec.Cmd, log string, stop ...syscall.Signal) *Server {
	t.Helper()
	s, err := Launch(name, cmd, log, stop...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Done is closed once the process has exited and been waited for.
func (s *Server) Done() <-chan struct{} { return s.done }

// Exited reports whether the process has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Stop ends the process by its PID (its signals in turn, each given Grace, then SIGKILL), then
// kills whatever is left in its process group, and waits for it. Stopping twice is stopping
// once.
func (s *Server) Stop() {
	s.once.Do(func() {
		for _, sig := range append(append([]syscall.Signal{}, s.stop...), syscall.SIGKILL) {
			if s.Exited() {
				break
			}
			syscall.Kill(s.PID, sig)
			select {
			case <-s.done:
			case <-time.After(s.Grace):
			}
		}
		<-s.done
		if syscall.Kill(-s.PID, 0) == nil {
			syscall.Kill(-s.PID, syscall.SIGKILL)
		}
	})
}

// WaitExit waits for the process to exit and then for its whole process group to be gone.
func (s *Server) WaitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	PollEvery(t, 100*time.Millisecond, timeout, s.Name+" and its process group to exit", func() (bool, string) {
		if !s.Exited() {
			return false, s.Name + " still running"
		}
		if err := syscall.Kill(-s.PID, 0); err == nil {
			return false, fmt.Sprintf("process group %d not empty: %v", s.PID, GroupMembers(s.PID))
		}
		return true, ""
	})
}

// JobProcesses returns pid, its ancestors (as Ancestors gives them) and its descendants: the
// processes a job's PID leads to.
func JobProcesses(pid int, stop string) []int {
	return append(append([]int{pid}, Ancestors(pid, stop)...), Descendants(pid)...)
}
