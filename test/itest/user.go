//go:build integration

package itest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Account is a user the suites run programs as.
type Account struct {
	Name     string
	UID, GID int
	Groups   []uint32 // every group of the user's, as a login gives them
	Home     string
}

// LookupAccount looks name up, failing t when there is no such user.
func LookupAccount(t *testing.T, name string) Account {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	a := Account{Name: name, Home: u.HomeDir}
	a.UID, _ = strconv.Atoi(u.Uid)
	a.GID, _ = strconv.Atoi(u.Gid)
	gids, err := u.GroupIds()
	Must(t, err)
	for _, g := range gids {
		n, _ := strconv.Atoi(g)
		a.Groups = append(a.Groups, uint32(n))
	}
	return a
}

// Credential is what a process started as a gets.
func (a Account) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: uint32(a.UID), Gid: uint32(a.GID), Groups: a.Groups}
}

// Command is prog with args, run as a (nil: as the caller) in exactly env, in /.
func Command(a *Account, env []string, prog string, args ...string) *exec.Cmd {
	cmd := exec.Command(prog, args...)
	if a != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.Credential()}
	}
	cmd.Env, cmd.Dir = env, "/"
	return cmd
}

// Result is what a program printed and how it ended.
type Result struct {
	Stdout, Stderr string
	Exit           int // -1: killed by a signal
	Elapsed        time.Duration
}

// Run runs cmd to its end, capturing the streams the caller did not set. The error says cmd
// did not run to an exit status of its own: it could not start, or, with cmd.WaitDelay set,
// something it started kept its output open (exec.ErrWaitDelay, Exit 0).
func Run(cmd *exec.Cmd) (Result, error) {
	var o, e bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &o
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &e
	}
	start := time.Now()
	err := cmd.Run()
	r := Result{Stdout: o.String(), Stderr: e.String(), Elapsed: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Exit, err = ee.ExitCode(), nil
	}
	return r, err
}

// WebUserEnv is the whole environment of what the suites run as www-data outside a pool:
// next to nothing, as under a pool with clear_env.
var WebUserEnv = []string{"HOME=/var/www", "USER=" + WebUser, "LOGNAME=" + WebUser, "PATH=/usr/bin:/bin"}

// StatusJSON is `status --json ID` through cli, which runs cmesh-run with args and returns
// what it printed and its exit status; anything but a job object fails t.
func StatusJSON(t *testing.T, cli func(args ...string) (stdout, stderr string, exit int), id string) Job {
	t.Helper()
	out, errOut, code := cli("status", "--json", id)
	var j Job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil {
		t.Fatalf("cmesh-run status --json %s: exit %d, stdout %q, stderr %q", id, code, out, errOut)
	}
	return j
}
