//go:build integration

// Package integration runs cmesh-run against the real atd: the scripts
// (make test) install at and start atd; these tests only check for them.
package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

var (
	bin         string // the cmesh-run under test
	emptyConfig string // CMESH_RUN_CONFIG for every run unless a test sets its own
)

func TestMain(m *testing.M) {
	// What this process inherited (a CI runner's descriptors) must not
	// reach the atd that TestZAtdDown restarts, nor anything else started.
	if entries, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range entries {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				syscall.CloseOnExec(fd)
			}
		}
	}
	bin = os.Getenv("CMESH_RUN_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "cmesh-run-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin = filepath.Join(dir, "cmesh-run")
		build := exec.Command("go", "build", "-o", bin, "../..")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
	}
	// The machine's /etc/cmesh-run/config.toml, if any, must not steer
	// these tests: every run gets an empty config of its own.
	f, err := os.CreateTemp("", "cmesh-run-empty-config")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f.Close()
	os.Chmod(f.Name(), 0o644)
	emptyConfig = f.Name()
	code := m.Run()
	os.Remove(f.Name())
	os.Exit(code)
}

// needAtd skips (loudly) or, when integration is required, fails a test
// that needs a running atd.
func needAtd(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/usr/bin/at"); err != nil {
		why = "/usr/bin/at missing"
	} else if _, ok := itest.AtdPID(); !ok {
		why = "atd is not running"
	}
	if why == "" {
		return
	}
	if os.Getenv("CMESH_RUN_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("integration required but %s", why)
	}
	t.Skipf("SKIP (integration): %s; run make test as root", why)
}

// env is one isolated state dir.
type env struct {
	t     *testing.T
	state string
}

func newEnv(t *testing.T) *env {
	needAtd(t)
	e := &env{t: t, state: filepath.Join(t.TempDir(), "state")}
	// Runs before the temp dir's removal: no wrapper may still be writing.
	t.Cleanup(e.settle)
	return e
}

// settle cancels what is left of the env's jobs and waits until none is
// unfinished, so that no wrapper writes into a state dir being removed.
func (e *env) settle() {
	cmd := exec.Command(bin, "--state-dir", e.state, "list", "--json", "--limit", "0")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "CMESH_RUN_CONFIG=" + emptyConfig}
	out, err := cmd.Output()
	if err != nil {
		return
	}
	var jobs []job
	json.Unmarshal(out, &jobs)
	for _, j := range jobs {
		if finished[j.State] {
			continue
		}
		c := exec.Command(bin, "--state-dir", e.state, "cancel", "--grace", "1s", j.ID)
		c.Env = cmd.Env
		c.Run()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			c := exec.Command(bin, "--state-dir", e.state, "status", "--json", j.ID)
			c.Env = cmd.Env
			out, _ := c.Output()
			var now job
			if json.Unmarshal(out, &now) != nil || finished[now.State] {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

type result struct {
	stdout, stderr []byte
	code           int
}

// run runs cmesh-run with the env's state dir and a minimal environment.
func (e *env) run(args ...string) result {
	return e.runEnv(nil, args...)
}

func (e *env) runEnv(extra []string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(bin, append([]string{"--state-dir", e.state}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "CMESH_RUN_CONFIG=" + emptyConfig}, extra...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			e.t.Fatalf("cmesh-run %q: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return result{so.Bytes(), se.Bytes(), code}
}

func (e *env) must(args ...string) []byte {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("cmesh-run %q: exit %d: %s", args, r.code, r.stderr)
	}
	return r.stdout
}

// schedule schedules argv and returns the job ID.
func (e *env) schedule(opts []string, argv ...string) string {
	e.t.Helper()
	out := e.must(append(append([]string{"schedule"}, opts...), append([]string{"--"}, argv...)...)...)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 {
		e.t.Fatalf("schedule printed %q, want the ID alone on one line", out)
	}
	return lines[0]
}

// job is SPEC.md's job object.
type job = itest.Job

func (e *env) status(id string) job {
	e.t.Helper()
	var j job
	out := e.must("status", "--json", id)
	if err := json.Unmarshal(out, &j); err != nil {
		e.t.Fatalf("status --json: %v: %s", err, out)
	}
	return j
}

var finished = map[string]bool{"succeeded": true, "failed": true, "canceled": true, "timed_out": true, "lost": true}

// waitDone polls status until the job has finished or the deadline passes.
func (e *env) waitDone(id string, within time.Duration) job {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := e.status(id)
		if finished[j.State] {
			return j
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s still %s after %v\n%s", id, j.State, within, atdState())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDeadline bounds how long a test waits for a job to start. atd
// starts jobs within milliseconds; a busy CI machine can take seconds, and
// start latency is not what those tests are about (the bench measures it).
const startDeadline = 60 * time.Second

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s\n%s", within, what, atdState())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) log(id string, args ...string) []byte {
	e.t.Helper()
	return e.must(append(append([]string{"log"}, args...), id)...)
}

// atQueue returns atq's job numbers.
func atQueue(t *testing.T) map[string]bool {
	out, err := exec.Command("/usr/bin/atq").Output()
	if err != nil {
		t.Fatalf("atq: %v", err)
	}
	q := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			q[f[0]] = true
		}
	}
	return q
}

// atdState describes atd and its spool, for a test that timed out
// waiting on a job: what atd was doing tells a stalled daemon from a
// stalled wrapper.
func atdState() string {
	var b strings.Builder
	if pid, ok := itest.AtdPID(); ok {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		fmt.Fprintf(&b, "atd pid %d: %s wchan=%s\n", pid, strings.TrimSpace(string(st)), wchan)
	} else {
		b.WriteString("atd: not running\n")
	}
	q, _ := exec.Command("/usr/bin/atq").CombinedOutput()
	fmt.Fprintf(&b, "atq:\n%s", q)
	ls, _ := exec.Command("ls", "-la", "--time-style=full-iso", "/var/spool/cron/atjobs").CombinedOutput()
	fmt.Fprintf(&b, "spool:\n%s", ls)
	return b.String()
}
