//go:build integration

// Package integration runs cmesh-run against the real atd: the scripts
// (make test) install at and start atd; these tests only check for them.
package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

var (
	bin         string // the cmesh-run under test
	emptyConfig string // CMESH_RUN_CONFIG for every run unless a test sets its own
)

func TestMain(m *testing.M) {
	itest.Main(m, &bin, &emptyConfig)
}

// needAtd skips (loudly) or, when integration is required, fails a test
// that needs a running atd.
func needAtd(t *testing.T) {
	t.Helper()
	itest.Require(t, "at", itest.Needs{Tools: []string{itest.AtBin}, Install: "at", Atd: true})
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
	itest.Settle(e.t, func(args ...string) ([]byte, bool) {
		r := e.run(args...)
		return r.stdout, r.code == 0
	})
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
	r, err := itest.Run(cmd)
	if err != nil {
		e.t.Fatalf("cmesh-run %q: %v", args, err)
	}
	return result{[]byte(r.Stdout), []byte(r.Stderr), r.Exit}
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

// waitDone polls status until the job has finished or the deadline passes.
func (e *env) waitDone(id string, within time.Duration) job {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := e.status(id)
		if itest.Finished(j.State) {
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
	if !itest.EventuallyEvery(20*time.Millisecond, within, cond) {
		t.Fatalf("timed out after %v waiting for %s\n%s", within, what, atdState())
	}
}

func (e *env) log(id string, args ...string) []byte {
	e.t.Helper()
	return e.must(append(append([]string{"log"}, args...), id)...)
}

// atQueue returns atq's job numbers.
func atQueue(t *testing.T) map[string]bool {
	jobs, err := itest.AtJobs("")
	if err != nil {
		t.Fatal(err)
	}
	q := map[string]bool{}
	for _, n := range jobs {
		q[n] = true
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
	q, _ := exec.Command(itest.AtqBin).CombinedOutput()
	fmt.Fprintf(&b, "atq:\n%s", q)
	ls, _ := exec.Command("ls", "-la", "--time-style=full-iso", "/var/spool/cron/atjobs").CombinedOutput()
	fmt.Fprintf(&b, "spool:\n%s", ls)
	return b.String()
}
