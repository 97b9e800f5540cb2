//go:build integration

package spool

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
