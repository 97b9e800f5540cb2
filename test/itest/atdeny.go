//go:build integration

package itest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const (
	AtBin      = "/usr/bin/at"
	AtqBin     = "/usr/bin/atq"
	AtdBin     = "/usr/sbin/atd"
	AtdPIDFile = "/run/atd.pid"

	// The files at reads to decide who may use it: at.allow alone where it exists, else
	// at.deny.
	AtDeny  = "/etc/at.deny"
	AtAllow = "/etc/at.allow"
)

// AtdPID returns the PID in /run/atd.pid and whether that PID is a running atd: the file
// outlives an atd that was killed, and its PID may since have gone to another process.
func AtdPID() (int, bool) {
	b, err := os.ReadFile(AtdPIDFile)
	if err != nil {
		return 0, false
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return pid, pid > 0 && strings.TrimSpace(string(comm)) == "atd"
}

// AtJobs returns the numbers of user's at jobs ("": everyone's) as root's atq shows them,
// lowest first, as strings: what an at job's backend_ref holds.
func AtJobs(user string) ([]string, error) {
	cmd := exec.Command(AtqBin)
	cmd.Env = []string{"PATH=" + StdPath, "LANG=C.UTF-8"}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("atq: %v", err)
	}
	var nums []int
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || user != "" && f[len(f)-1] != user {
			continue
		}
		if n, err := strconv.Atoi(f[0]); err == nil {
			nums = append(nums, n)
		}
	}
	sort.Ints(nums)
	jobs := make([]string, len(nums))
	for i, n := range nums {
		jobs[i] = strconv.Itoa(n)
	}
	return jobs, nil
}

// atDenyMu keeps a suite's parallel tests from editing /etc/at.deny at once.
var atDenyMu sync.Mutex

// atDenyBackup holds suite's original /etc/at.deny while a test has changed it, so that a run
// killed halfway is repaired by the next one.
func atDenyBackup(suite string) string {
	return "/var/tmp/cmesh-run-" + suite + "-test.at.deny.orig"
}

// CheckAtFiles says why editing /etc/at.deny would not decide whether user may use at: an
// /etc/at.allow, which at then reads alone, that does not list user, or (deny: the suite also
// denies user through at.deny) one at all; or an at.deny that cannot be read.
func CheckAtFiles(user string, deny bool) error {
	if data, err := os.ReadFile(AtAllow); err == nil {
		switch {
		case deny:
			return fmt.Errorf("%s exists, so at ignores %s, the only file the suite manages", AtAllow, AtDeny)
		case LineOf(data, user) == 0:
			return fmt.Errorf("%s exists and does not list %s: the suite only manages %s", AtAllow, user, AtDeny)
		}
	}
	_, err := os.Stat(AtDeny)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist) && !deny:
		return nil
	case deny:
		return fmt.Errorf("%s: %v (the suite edits it to deny %s at)", AtDeny, err, user)
	}
	return fmt.Errorf("%s: %v", AtDeny, err)
}

// restoreCrashedAtDeny puts back the original /etc/at.deny left in suite's backup by a run
// that died before its cleanup.
func restoreCrashedAtDeny(t *testing.T, suite string) {
	t.Helper()
	backup := atDenyBackup(suite)
	orig, err := os.ReadFile(backup)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatalf("read %s: %v", backup, err)
	}
	t.Logf("restoring %s from %s, left by an interrupted run", AtDeny, backup)
	if err := WriteInPlace(AtDeny, orig); err != nil {
		t.Fatalf("restore %s: %v", AtDeny, err)
	}
	Must(t, os.Remove(backup))
}

// SetAtDeny gives /etc/at.deny the content edit makes of it until t ends, then puts back the
// exact original bytes through the same inode (so owner and mode stay) and checks them. What
// edit leaves as it is is not written at all. A backup that a killed run of suite left is put
// back first.
func SetAtDeny(t *testing.T, suite string, edit func(orig []byte) []byte) {
	t.Helper()
	atDenyMu.Lock()
	defer atDenyMu.Unlock()
	restoreCrashedAtDeny(t, suite)
	orig, err := os.ReadFile(AtDeny)
	Must(t, err)
	want := edit(orig)
	if bytes.Equal(want, orig) {
		return
	}
	fi, err := os.Stat(AtDeny)
	Must(t, err)
	mode, uid, gid := ownerOf(fi)
	backup := atDenyBackup(suite)
	if err := WriteSynced(backup, orig, 0o600); err != nil {
		t.Fatalf("back up %s: %v", AtDeny, err)
	}
	t.Cleanup(func() {
		atDenyMu.Lock()
		defer atDenyMu.Unlock()
		if err := WriteInPlace(AtDeny, orig); err != nil {
			t.Errorf("RESTORE %s BY HAND from %s: %v", AtDeny, backup, err)
			return
		}
		now, err := os.ReadFile(AtDeny)
		fi, serr := os.Stat(AtDeny)
		switch {
		case err != nil || serr != nil:
			t.Errorf("check %s: %v %v (backup kept in %s)", AtDeny, err, serr, backup)
		case !bytes.Equal(now, orig):
			t.Errorf("%s differs from its original after restore (backup kept in %s)", AtDeny, backup)
		default:
			if m, u, g := ownerOf(fi); m != mode || u != uid || g != gid {
				t.Errorf("%s: %v %d:%d after restore, was %v %d:%d (backup kept in %s)", AtDeny, m, u, g, mode, uid, gid, backup)
				return
			}
			if err := os.Remove(backup); err != nil {
				t.Error(err)
			}
		}
	})
	if err := WriteInPlace(AtDeny, want); err != nil {
		t.Fatalf("write %s: %v", AtDeny, err)
	}
	t.Logf("%s changed for the test; its original waits in %s", AtDeny, backup)
}

func ownerOf(fi fs.FileInfo) (fs.FileMode, int, int) {
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), int(st.Uid), int(st.Gid)
}

// AllowAt lets user use at for the rest of t: its line leaves /etc/at.deny (where there is no
// at.deny, nobody is denied).
func AllowAt(t *testing.T, suite, user string) {
	t.Helper()
	if _, err := os.Stat(AtDeny); errors.Is(err, fs.ErrNotExist) {
		return
	}
	SetAtDeny(t, suite, func(orig []byte) []byte {
		var out []byte
		for _, line := range bytes.SplitAfter(orig, []byte("\n")) {
			if string(bytes.TrimSpace(line)) != user {
				out = append(out, line...)
			}
		}
		return out
	})
}

// DenyAt makes sure /etc/at.deny lists user for the rest of t (Debian's default for
// www-data) and returns the number of its line.
func DenyAt(t *testing.T, suite, user string) int {
	t.Helper()
	SetAtDeny(t, suite, func(orig []byte) []byte {
		if LineOf(orig, user) > 0 {
			return orig
		}
		out := append([]byte{}, orig...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		return append(out, user+"\n"...)
	})
	content, err := os.ReadFile(AtDeny)
	Must(t, err)
	return LineOf(content, user)
}

// LineOf returns the number of the first line of content that is line (give or take white
// space), 0 when there is none.
func LineOf(content []byte, line string) int {
	for i, l := range strings.Split(string(content), "\n") {
		if strings.TrimSpace(l) == line {
			return i + 1
		}
	}
	return 0
}
