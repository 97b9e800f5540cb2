//go:build integration

package spool

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/backend/backendtest"
	"github.com/cmesh/cmesh-run/test/itest"
)

// Spool requests take the job system's fields, and may ask for a rerun,
// under the rules of sudo mode: a profile job is rerun (checked again), a
// free command is not; the PHP client's spool mode does both.
func TestSpoolJobSystem(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	w.attackSite("[queues.build]\nmax_running = 1\n")
	drain := func() {
		t.Helper()
		if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
			t.Fatalf("drain: %v (killed: %v)", r, late)
		}
	}
	first := newRequestID()
	w.putRequest(first, map[string]any{"profile": "quick", "args": map[string]string{"word": "one"}, "queue": "default"})
	drain()
	a := w.answer(nil, first, 5*time.Second)
	if a.Error != nil {
		t.Fatalf("a profile request: %+v", a.Error)
	}
	later := newRequestID()
	w.putRequest(later, map[string]any{"profile": "quick", "args": map[string]string{"word": "two"}, "after": []string{a.ID}, "in": "1s"})
	drain()
	b := w.answer(nil, later, 5*time.Second)
	if b.Error != nil {
		t.Fatalf("a request with after and in: %+v", b.Error)
	}
	drain()
	if j := w.waitFinished(nil, b.ID, 30*time.Second); j.State != "succeeded" {
		t.Errorf("the job after %s, in 1s: %v", a.ID, j)
	}
	var rec struct {
		After     []string   `json:"after"`
		NotBefore *time.Time `json:"not_before"`
	}
	raw, err := os.ReadFile(filepath.Join(w.stateDir, "jobs", b.ID+".json"))
	itest.Must(t, err)
	itest.Must(t, json.Unmarshal(raw, &rec))
	if len(rec.After) != 1 || rec.After[0] != a.ID || rec.NotBefore == nil {
		t.Errorf("the record: after %v, not_before %v", rec.After, rec.NotBefore)
	}

	again := newRequestID()
	w.putRequest(again, map[string]any{"rerun": a.ID})
	drain()
	r := w.answer(nil, again, 5*time.Second)
	if r.Error != nil || r.ID == a.ID {
		t.Fatalf("a rerun request: %+v", r)
	}
	var rerunOf struct {
		RerunOf *string `json:"rerun_of"`
	}
	raw, err = os.ReadFile(filepath.Join(w.stateDir, "jobs", r.ID+".json"))
	itest.Must(t, err)
	itest.Must(t, json.Unmarshal(raw, &rerunOf))
	if rerunOf.RerunOf == nil || *rerunOf.RerunOf != a.ID {
		t.Errorf("the rerun's rerun_of: %v, want %s", rerunOf.RerunOf, a.ID)
	}
	mixed := newRequestID()
	w.putRequest(mixed, map[string]any{"rerun": a.ID, "argv": []string{"/bin/sh", "-c", "id"}})
	drain()
	if m := w.answer(nil, mixed, 5*time.Second); m.Error == nil || m.Error.Code != "usage" {
		t.Errorf("a rerun with a command beside it: %+v, want a usage error", m)
	}
}

// A queue's jobs start in creation order even when their backend starts
// them late: spool jobs a drain takes well past the first seconds (as a
// cron drain would, a minute on) still run oldest first.
func TestSpoolQueueOrderAfterLateDrain(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	w.attackSite("[queues.build]\nmax_running = 1\n")
	var ids []string
	for range 4 {
		r := w.cli(&w.worker, "schedule", "--backend", "spool", "--queue", "build", "--profile", "nap", "--arg", "secs=1")
		if r.exit != 0 {
			t.Fatalf("schedule: %v", r)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	// Past the grace in which any young queued job holds its place: only
	// the backend's word keeps the order now.
	last := w.status(nil, ids[len(ids)-1]).CreatedAt
	itest.Poll(t, 30*time.Second, "11 s since the last job was made", func() (bool, string) {
		return time.Since(last) > 11*time.Second, ""
	})
	if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
		t.Fatalf("drain: %v (killed: %v)", r, late)
	}
	var starts []time.Time
	for _, id := range ids {
		if j := w.waitFinished(nil, id, 60*time.Second); j.State != "succeeded" {
			t.Fatalf("job %s: %v", id, j)
		}
		starts = append(starts, backendtest.Start(t, w.stateDir, id))
	}
	if !slices.IsSortedFunc(starts, func(a, b time.Time) int { return a.Compare(b) }) {
		t.Errorf("the queue started its jobs out of creation order: %v", starts)
	}
}

// Hooks come from the worker's config alone: a request that names one is refused and runs
// nothing; a spool job that the worker finds lost (its wrapper and job killed) gets its
// on_failure hook from the worker, once, with no status call from anyone.
func TestSpoolHooks(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	hook := filepath.Join(w.root, "hook.sh")
	itest.Must(t, os.WriteFile(hook, []byte("#!/bin/sh\necho \"$CMESH_RUN_JOB_ID $CMESH_RUN_JOB_STATE $(id -un)\" >> \"$(dirname \"$0\")/markers/hooks\"\n"), 0o755))
	site := w.attackSite(fmt.Sprintf("on_failure = [%q]", hook))
	marks := filepath.Join(site.markers, "hooks")

	named := newRequestID()
	w.putRequest(named, map[string]any{"profile": "quick", "args": map[string]string{"word": "x"},
		"on_finish": []string{"/bin/sh", "-c", "touch " + filepath.Join(site.markers, "planted")}})
	if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
		t.Fatalf("drain: %v", r)
	}
	if a := w.answer(nil, named, 5*time.Second); a.Error == nil || a.Error.Code != "usage" || a.ID != "" {
		t.Errorf("a request naming a hook: %+v, want a usage error and no job", a)
	}

	wp := w.startWorkerAs(&w.worker, "100ms")
	nap := newRequestID()
	w.putRequest(nap, map[string]any{"profile": "nap", "args": map[string]string{"secs": "300"}})
	a := w.answered(wp, nap, 10*time.Second)
	var rec struct {
		State      string `json:"state"`
		WrapperPID int    `json:"wrapper_pid"`
		PID        *int   `json:"pid"`
	}
	itest.Poll(t, 30*time.Second, "the nap job to run", func() (bool, string) {
		raw, _ := os.ReadFile(filepath.Join(w.stateDir, "jobs", a.ID+".json"))
		_ = json.Unmarshal(raw, &rec)
		return rec.State == "running" && rec.PID != nil, rec.State
	})
	_ = syscall.Kill(rec.WrapperPID, syscall.SIGKILL)
	_ = syscall.Kill(-*rec.PID, syscall.SIGKILL)
	// Nobody asks: the worker's sweep (every 5 s) finds it lost and starts the hook.
	itest.Poll(t, 30*time.Second, "the worker to run the lost job's hook", func() (bool, string) {
		b, _ := os.ReadFile(marks)
		return strings.Contains(string(b), a.ID+" lost "+w.worker.Name), string(b)
	})
	if _, err := os.Stat(filepath.Join(site.markers, "planted")); err == nil {
		t.Errorf("the hook a request named ran")
	}
	// The sweeps that follow (one every 5 s) find its hook claimed: watched for 6 s, it ran once.
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		b, _ := os.ReadFile(marks)
		if n := strings.Count(string(b), a.ID+" "); n != 1 {
			t.Fatalf("the lost job's hook ran %d times:\n%s", n, b)
		}
	}
}
