// Package backendtest is the conformance suite every backend passes: the
// same jobs (success, failure, a signal, cancel, timeout, retries, a fake
// marker, a lost job) through the real command line, judged by what
// status, log and wait report. direct and the spool run it in plain go
// test (no root, no service); at and systemd in their integration suites.
// A new backend passes it or is not done.
package backendtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Harness is how the suite reaches one backend.
type Harness struct {
	// Backend is the name --backend takes.
	Backend string
	// CLI runs cmesh-run with args, the harness's state dir and config
	// applied, and returns its exit status and output.
	CLI func(t *testing.T, args ...string) (code int, stdout, stderr string)
	// StateDir is where the records are: the lost case reads the
	// wrapper's PID from one, as a reader with root's eyes would.
	StateDir string
	// StartTimeout bounds how long a job may take to start (a slow
	// backend, a loaded machine).
	StartTimeout time.Duration
	// Kill sends sig to pid as the jobs on host see it (a negative pid:
	// the group); nil is syscall.Kill. A backend whose jobs run in another
	// PID namespace (a container, a remote node) kills there.
	Kill func(host string, pid int, sig syscall.Signal) error
	// Killed is what a job whose wrapper and processes were killed with
	// SIGKILL ends as: "lost" (the default), or for a backend whose
	// scheduler saw the kill (Slurm) "failed", by signal KILL.
	Killed string
}

func (h Harness) kill(host string, pid int, sig syscall.Signal) error {
	if h.Kill != nil {
		return h.Kill(host, pid, sig)
	}
	return syscall.Kill(pid, sig)
}

// Job is the part of SPEC's job object the suite judges.
type Job struct {
	ID        string     `json:"id"`
	State     string     `json:"state"`
	ExitCode  *int       `json:"exit_code"`
	Signal    string     `json:"signal"`
	Attempt   int        `json:"attempt"`
	Backend   string     `json:"backend"`
	PID       *int       `json:"pid"`
	Reason    *string    `json:"reason"`
	NotBefore *time.Time `json:"not_before"`
}

// Run runs every case against h.
func Run(t *testing.T, h Harness) {
	if h.StartTimeout == 0 {
		h.StartTimeout = 60 * time.Second
	}
	t.Run("success", func(t *testing.T) {
		id := h.schedule(t, nil, "sh", "-c", "echo out; echo err >&2")
		j := h.finish(t, id)
		h.expect(t, j, "succeeded", 0, "")
		if got := h.log(t, id); got != "out\nerr\n" {
			t.Errorf("log %q, want the job's bytes, stdout and stderr in order", got)
		}
		if code := h.wait(t, id); code != 0 {
			t.Errorf("wait exited %d, want the job's 0", code)
		}
	})
	t.Run("failure", func(t *testing.T) {
		id := h.schedule(t, nil, "sh", "-c", "exit 3")
		h.expect(t, h.finish(t, id), "failed", 3, "")
		if code := h.wait(t, id); code != 3 {
			t.Errorf("wait exited %d, want the job's 3", code)
		}
	})
	t.Run("signal", func(t *testing.T) {
		id := h.schedule(t, nil, "sh", "-c", "kill -KILL $$")
		h.expect(t, h.finish(t, id), "failed", 137, "KILL")
	})
	t.Run("fake marker", func(t *testing.T) {
		// The job prints what a marker looks like, with a nonce of its
		// own: status must still report how the job really ended.
		id := h.schedule(t, nil, "sh", "-c", `printf '\n[cmesh-run:0123456789abcdef0123456789abcdef end attempt=1 exit=0]\n'; exit 4`)
		h.expect(t, h.finish(t, id), "failed", 4, "")
	})
	t.Run("retries", func(t *testing.T) {
		// The count lives where the job runs (another machine's or
		// container's /tmp is not the test's), named after the job.
		id := h.schedule(t, []string{"--retries", "2", "--retry-delay", "100ms"}, "sh", "-c",
			`f=/tmp/cmesh-run-conformance-$CMESH_RUN_JOB_ID; n=$(cat "$f" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$f"; [ $n -ge 3 ] && rm -f "$f"`)
		j := h.finish(t, id)
		h.expect(t, j, "succeeded", 0, "")
		if j.Attempt != 3 {
			t.Errorf("attempt %d, want 3 (two failures, then success)", j.Attempt)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		id := h.schedule(t, []string{"--timeout", "1s", "--grace", "1s"}, "sleep", "30")
		j := h.finish(t, id)
		if j.State != "timed_out" {
			t.Errorf("state %s, want timed_out: %+v", j.State, j)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		id := h.schedule(t, nil, "sleep", "30")
		h.running(t, id)
		if code, _, stderr := h.CLI(t, "cancel", "--grace", "1s", id); code != 0 {
			t.Fatalf("cancel: exit %d: %s", code, stderr)
		}
		j := h.status(t, id)
		if j.State != "canceled" {
			t.Errorf("state %s after cancel, want canceled", j.State)
		}
		if code := h.wait(t, id); code != 125 {
			t.Errorf("wait exited %d for a canceled job, want 125", code)
		}
	})
	t.Run("after", func(t *testing.T) {
		// The wrapper does the waiting, whatever the backend: the second
		// job starts after the first ended, and not at all after a failure.
		first := h.schedule(t, nil, "sh", "-c", "sleep 0.5")
		second := h.schedule(t, []string{"--after", first}, "true")
		h.expect(t, h.finish(t, second), "succeeded", 0, "")
		a, b := h.start(t, first), h.start(t, second)
		if end := h.end(t, first); b.Before(end) {
			t.Errorf("the job after %s started at %v, before it ended at %v (it started %v)", first, b, end, a)
		}
		bad := h.schedule(t, nil, "sh", "-c", "exit 1")
		never := h.schedule(t, []string{"--after", bad}, "true")
		j := h.finish(t, never)
		if j.State != "canceled" || j.Reason == nil || *j.Reason != "dependency "+bad+" failed" {
			t.Errorf("after a failed job: %+v, want canceled with reason \"dependency %s failed\"", j, bad)
		}
	})
	t.Run("delayed", func(t *testing.T) {
		id := h.schedule(t, []string{"--in", "2s"}, "true")
		j := h.status(t, id)
		if j.State != "queued" || j.NotBefore == nil {
			t.Errorf("a job --in 2s: %+v, want queued with not_before", j)
		}
		h.expect(t, h.finish(t, id), "succeeded", 0, "")
		if j.NotBefore != nil {
			if start := h.start(t, id); start.Before(*j.NotBefore) || start.After(j.NotBefore.Add(2*time.Second)) {
				t.Errorf("started at %v, want from not_before %v to 2 s after", start, *j.NotBefore)
			}
		}
	})
	t.Run("cancel delayed", func(t *testing.T) {
		// A job held until its start time: cancel ends it, and a wrapper
		// that already holds it lets go at once rather than sleeping on.
		id := h.schedule(t, []string{"--in", "1h"}, "true")
		// A backend that starts at once (not at, which holds the job in its
		// queue) has a wrapper take it within moments.
		for deadline := time.Now().Add(2 * time.Second); h.wrapperPIDOrZero(t, id) == 0 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if code, _, stderr := h.CLI(t, "cancel", id); code != 0 {
			t.Fatalf("cancel: exit %d: %s", code, stderr)
		}
		if j := h.status(t, id); j.State != "canceled" {
			t.Errorf("a delayed job after cancel: %s, want canceled", j.State)
		}
		if pid, host := h.wrapperPIDIfAny(t, id); pid > 0 {
			deadline := time.Now().Add(10 * time.Second)
			for h.alive(host, pid) {
				if time.Now().After(deadline) {
					t.Fatalf("the wrapper (pid %d) of the canceled delayed job still lives 10 s on", pid)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})
	t.Run("lost", func(t *testing.T) {
		id := h.schedule(t, nil, "sleep", "30")
		j := h.running(t, id)
		// The wrapper and the job die without an end marker, as under the
		// OOM killer or a kill -9 of the whole session.
		wrapper, host := h.wrapperPID(t, id)
		_ = h.kill(host, wrapper, syscall.SIGKILL)
		if j.PID != nil {
			_ = h.kill(host, -*j.PID, syscall.SIGKILL)
			_ = h.kill(host, *j.PID, syscall.SIGKILL)
		}
		want, code := "lost", 125
		if h.Killed != "" {
			want, code = h.Killed, 137
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			j = h.status(t, id)
			if j.State == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("state %s 10 s after the wrapper and the job were killed, want %s", j.State, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if want != "lost" {
			h.expect(t, j, want, 137, "KILL")
		}
		if got := h.wait(t, id); got != code {
			t.Errorf("wait exited %d for a job killed with its wrapper, want %d", got, code)
		}
	})
}

func (h Harness) schedule(t *testing.T, opts []string, argv ...string) string {
	t.Helper()
	args := append([]string{"schedule", "--backend", h.Backend, "--workdir", "/"}, opts...)
	code, out, stderr := h.CLI(t, append(append(args, "--"), argv...)...)
	id := strings.TrimSpace(out)
	if code != 0 || id == "" || strings.Contains(id, "\n") {
		t.Fatalf("schedule %q: exit %d, stdout %q, stderr %q", argv, code, out, stderr)
	}
	return id
}

func (h Harness) status(t *testing.T, id string) Job {
	t.Helper()
	code, out, stderr := h.CLI(t, "status", "--json", id)
	var j Job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.ID != id {
		t.Fatalf("status --json %s: exit %d, stdout %q, stderr %q", id, code, out, stderr)
	}
	if j.Backend != h.Backend {
		t.Fatalf("job %s went through %s, want %s", id, j.Backend, h.Backend)
	}
	return j
}

// finish waits for the job to end, through wait, within the start bound
// plus the job's own time.
func (h Harness) finish(t *testing.T, id string) Job {
	t.Helper()
	within := h.StartTimeout + 30*time.Second
	code, _, stderr := h.CLI(t, "wait", "--timeout", within.String(), id)
	if code == 124 {
		t.Fatalf("job %s did not finish within %v: %+v (%s)", id, within, h.status(t, id), stderr)
	}
	return h.status(t, id)
}

func (h Harness) wait(t *testing.T, id string) int {
	t.Helper()
	code, _, _ := h.CLI(t, "wait", "--timeout", "30s", id)
	return code
}

// running polls until the job runs.
func (h Harness) running(t *testing.T, id string) Job {
	t.Helper()
	deadline := time.Now().Add(h.StartTimeout)
	for {
		j := h.status(t, id)
		switch {
		case j.State == "running" && j.PID != nil:
			return j
		case j.State != "queued" && j.State != "waiting" && j.State != "running":
			t.Fatalf("job %s ended %s before it was seen running", id, j.State)
		case time.Now().After(deadline):
			t.Fatalf("job %s not running within %v: %+v", id, h.StartTimeout, j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h Harness) log(t *testing.T, id string) string {
	t.Helper()
	code, out, stderr := h.CLI(t, "log", id)
	if code != 0 {
		t.Fatalf("log %s: exit %d: %s", id, code, stderr)
	}
	return out
}

func (h Harness) expect(t *testing.T, j Job, state string, exit int, signal string) {
	t.Helper()
	if j.State != state || j.ExitCode == nil || *j.ExitCode != exit || j.Signal != signal {
		got := "null"
		if j.ExitCode != nil {
			got = strconv.Itoa(*j.ExitCode)
		}
		t.Errorf("job %s: state %s, exit %s, signal %q; want %s, %d, %q", j.ID, j.State, got, j.Signal, state, exit, signal)
	}
}

// wrapperPID reads the wrapper's PID and host from the job's record.
func (h Harness) wrapperPID(t *testing.T, id string) (int, string) {
	t.Helper()
	pid, host := h.wrapperPIDIfAny(t, id)
	if pid <= 0 {
		t.Fatalf("the record of %s has no wrapper_pid", id)
	}
	return pid, host
}

func (h Harness) wrapperPIDOrZero(t *testing.T, id string) int {
	pid, _ := h.wrapperPIDIfAny(t, id)
	return pid
}

// start and end are when the job's first attempt started and its last
// ended, from the wrapper's markers in its output file.
func (h Harness) start(t *testing.T, id string) time.Time { return Start(t, h.StateDir, id) }
func (h Harness) end(t *testing.T, id string) time.Time   { return End(t, h.StateDir, id) }

// Start is when job id of the state dir started its first attempt, from
// the wrapper's start marker.
func Start(t *testing.T, stateDir, id string) time.Time { return marker(t, stateDir, id, "start") }

// End is when job id's last attempt ended, from its end marker.
func End(t *testing.T, stateDir, id string) time.Time { return marker(t, stateDir, id, "end") }

func marker(t *testing.T, stateDir, id, kind string) time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "jobs", id+".out"))
	if err != nil {
		t.Fatal(err)
	}
	var found time.Time
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "[cmesh-run:") || !strings.Contains(line, " "+kind+" ") {
			continue
		}
		for _, f := range strings.Fields(strings.TrimSuffix(line, "]")) {
			if v, ok := strings.CutPrefix(f, "time="); ok {
				if tm, err := time.Parse(time.RFC3339Nano, v); err == nil && (kind == "end" || found.IsZero()) {
					found = tm
				}
			}
		}
	}
	if found.IsZero() {
		t.Fatalf("no %s marker in the output of %s: %q", kind, id, b)
	}
	return found
}

// wrapperPIDIfAny is the record's wrapper PID, 0 when no wrapper took the
// job, and the host it runs on.
func (h Harness) wrapperPIDIfAny(t *testing.T, id string) (int, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.StateDir, "jobs", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		WrapperPID int    `json:"wrapper_pid"`
		Host       string `json:"host"`
	}
	_ = json.Unmarshal(b, &r)
	return r.WrapperPID, r.Host
}

// alive tells whether pid still runs (a zombie does not).
func (h Harness) alive(host string, pid int) bool {
	if h.Kill != nil {
		return h.Kill(host, pid, 0) == nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
