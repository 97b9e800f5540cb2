//go:build integration

// Package itest holds helpers shared by the integration suites under test/. Like them, it is
// built only with the integration tag.
package itest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------------------------
// Tests

// Must fails t when err is not nil, reported at the caller's line, so that a step whose failure
// leaves nothing to test takes one line.
func Must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Poll calls check every 50 ms until it returns true, failing t after timeout with the last
// reason check gave, so that a timeout says what was still wrong and not only that time ran
// out.
func Poll(t *testing.T, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	PollEvery(t, 50*time.Millisecond, timeout, what, check)
}

// PollEvery is Poll with check called every interval.
func PollEvery(t *testing.T, interval, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(interval)
	}
}

// Job is SPEC.md's job object, as status, list and schedule print it with --json, with the
// record's retries and timeout. A field a suite does not read costs it nothing; a time that is
// not RFC 3339 fails the decoding. Written from SPEC.md, not taken from status.Job: a renamed
// JSON field in the code must fail these suites, not follow along.
type Job struct {
	ID          string     `json:"id"`
	Name        *string    `json:"name"`
	State       string     `json:"state"`
	ExitCode    *int       `json:"exit_code"`
	Signal      string     `json:"signal"`
	Command     []string   `json:"command"`
	Workdir     string     `json:"workdir"`
	Backend     string     `json:"backend"`
	BackendRef  *string    `json:"backend_ref"`
	User        string     `json:"user"`
	RequestedBy string     `json:"requested_by"`
	PID         *int       `json:"pid"`
	Attempt     int        `json:"attempt"`
	Retries     int        `json:"retries"`
	Timeout     string     `json:"timeout"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	OutputPath  string     `json:"output_path"`
	Reused      bool       `json:"reused"`
}

// Finished reports whether nothing more will happen to a job in state (SPEC.md's final
// states). The suites test cmesh-run from outside, so they spell the states out rather than
// import its status package.
func Finished(state string) bool {
	switch state {
	case "succeeded", "failed", "canceled", "timed_out", "lost":
		return true
	}
	return false
}

// ---------------------------------------------------------------------------------------------
// Processes and descriptors

// Alive reports whether process pid exists. EPERM counts as alive: the process is there, it
// only belongs to a user the caller may not signal.
func Alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// AtdPID returns the PID in /run/atd.pid and whether that PID is a running atd: the file
// outlives an atd that was killed, and its PID may since have gone to another process.
func AtdPID() (int, bool) {
	b, err := os.ReadFile("/run/atd.pid")
	if err != nil {
		return 0, false
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return pid, strings.TrimSpace(string(comm)) == "atd"
}

// GroupMembers returns the processes of process group pgid. No system call lists a group, so
// it asks every process in /proc for its group.
func GroupMembers(pgid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(p); err == nil && g == pgid {
			pids = append(pids, p)
		}
	}
	return pids
}

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

// SharedKind reports whether a descriptor target is a socket or a pipe: objects a process can
// only hold by inheriting them (or being passed them), so that one a job shares with PHP-FPM
// shows the job inherited it.
func SharedKind(target string) bool {
	return strings.HasPrefix(target, "socket:[") || strings.HasPrefix(target, "pipe:[")
}

// ---------------------------------------------------------------------------------------------
// Files

// CopyFile copies src to dst with exactly mode: os.WriteFile's mode is filtered by the umask
// and leaves an existing file's mode alone, hence the Chmod.
func CopyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	Must(t, err)
	Must(t, os.WriteFile(dst, data, mode))
	Must(t, os.Chmod(dst, mode))
}

// WriteInPlace rewrites an existing file's bytes through its own inode, so that its owner,
// mode and links stay those the machine gave it (the suites rewrite /etc/at.deny this way),
// and syncs them before it returns.
func WriteInPlace(path string, data []byte) error {
	return syncedWrite(path, os.O_WRONLY|os.O_TRUNC, 0, data)
}

// WriteSynced creates or truncates path with mode and syncs data before it returns: the
// suites write this way the backups and manifests a later run repairs the machine from when
// this one is killed, and files they then rename into place.
func WriteSynced(path string, data []byte, mode os.FileMode) error {
	return syncedWrite(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode, data)
}

func syncedWrite(path string, flag int, perm os.FileMode, data []byte) error {
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ---------------------------------------------------------------------------------------------
// PHP

// PHPString returns s as a PHP single-quoted string, for putting Go values into generated PHP
// source: between single quotes PHP interpolates nothing, and only \ and ' need escaping.
func PHPString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
