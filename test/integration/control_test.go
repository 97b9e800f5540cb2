//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// jobProcs returns the processes that carry job id in their environment:
// every process of the job, detached ones included.
func jobProcs(id string) []int {
	var out []int
	needle := []byte("CMESH_RUN_JOB_ID=" + id + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(d + "/environ")
		if err != nil || !bytes.Contains(env, needle) {
			continue
		}
		stat, _ := os.ReadFile(d + "/stat")
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		out = append(out, pid)
	}
	return out
}

func killJobProcs(id string) {
	for _, p := range jobProcs(id) {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

func (e *env) raw(id string) string { return string(e.log(id, "--raw")) }

func endMarkers(raw string) int { return strings.Count(raw, " end attempt=") }

// record reads fields that only the record on disk has.
func (e *env) record(id string) map[string]any {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.state, "jobs", id+".json"))
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]any{}
	json.Unmarshal(b, &m)
	return m
}

func (e *env) waitState(id, state string, within time.Duration) {
	e.t.Helper()
	waitFor(e.t, within, "job "+id+" to be "+state, func() bool { return e.status(id).State == state })
}

func TestCancelRunningTree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, script := range []string{
		"sleep 1000 & sleep 1000",
		// a grandchild that escapes into its own session and ignores TERM
		`setsid sh -c 'trap "" TERM; while :; do sleep 1; done' & trap "" TERM; sleep 1000`,
	} {
		id := e.schedule(nil, "sh", "-c", script)
		e.waitState(id, "running", startDeadline)
		waitFor(t, startDeadline, "the job's tree", func() bool { return len(jobProcs(id)) >= 2 })
		r := e.run("cancel", "--grace", "1s", "--json", id)
		if r.code != 0 {
			t.Fatalf("cancel: exit %d %s", r.code, r.stderr)
		}
		var j job
		json.Unmarshal(r.stdout, &j)
		if j.State != "canceled" {
			t.Errorf("%q: cancel printed state %s", script, j.State)
		}
		if left := jobProcs(id); len(left) > 0 {
			t.Errorf("%q: processes left after cancel: %v", script, left)
			killJobProcs(id)
		}
		raw := e.raw(id)
		if endMarkers(raw) != 1 || !strings.Contains(raw, "reason=canceled") {
			t.Errorf("%q: want one end marker with reason=canceled:\n%s", script, raw)
		}
		if code := e.run("wait", id).code; code != 125 {
			t.Errorf("wait on a canceled job: %d, want 125", code)
		}
		// A finished job is left as it is.
		if r := e.run("cancel", id); r.code != 0 || e.status(id).State != "canceled" || endMarkers(e.raw(id)) != 1 {
			t.Errorf("second cancel: exit %d, state %s", r.code, e.status(id).State)
		}
	}
}

func TestCancelFinishedJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "true")
	e.waitDone(id, 30*time.Second)
	r := e.run("cancel", id)
	if r.code != 0 || e.status(id).State != "succeeded" || endMarkers(e.raw(id)) != 1 {
		t.Errorf("cancel of a finished job: exit %d state %s", r.code, e.status(id).State)
	}
}

// Cancel and the job's own exit race: exactly one end marker, and the
// state says what it says.
func TestCancelRacingExit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := e.schedule(nil, "sh", "-c", fmt.Sprintf("sleep 0.%d", 1+i%5))
			waitFor(t, startDeadline, "start", func() bool { return e.status(id).State != "queued" })
			time.Sleep(time.Duration(100+i*10) * time.Millisecond) // aim at the exit
			if r := e.run("cancel", "--grace", "1s", id); r.code != 0 {
				t.Errorf("cancel: %s", r.stderr)
			}
			j := e.waitDone(id, 30*time.Second)
			raw := e.raw(id)
			if endMarkers(raw) != 1 {
				t.Errorf("%s: %d end markers:\n%s", id, endMarkers(raw), raw)
			}
			canceled := strings.Contains(raw, "reason=canceled")
			if (j.State == "canceled") != canceled || (j.State != "canceled" && j.State != "succeeded") {
				t.Errorf("%s: state %s, marker canceled=%v", id, j.State, canceled)
			}
		}(i)
	}
	wg.Wait()
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule([]string{"--timeout", "1s", "--retries", "2"}, "sh", "-c", "sleep 1000 & sleep 1000")
	j := e.waitDone(id, 30*time.Second)
	if j.State != "timed_out" || j.ExitCode == nil || *j.ExitCode != 143 || j.Signal != "TERM" || j.Attempt != 1 {
		t.Errorf("state %s exit %v signal %s attempt %d; want timed_out 143 TERM 1 (no retry after a timeout)", j.State, j.ExitCode, j.Signal, j.Attempt)
	}
	if left := jobProcs(id); len(left) > 0 {
		t.Errorf("left after timeout: %v", left)
		killJobProcs(id)
	}
	// A job that ignores SIGTERM gets SIGKILL after the grace.
	id = e.schedule([]string{"--timeout", "500ms", "--grace", "500ms"}, "sh", "-c", `trap "" TERM; sleep 1000 & wait; wait`)
	j = e.waitDone(id, 30*time.Second)
	if j.State != "timed_out" || *j.ExitCode != 137 || j.Signal != "KILL" {
		t.Errorf("TERM ignored: state %s exit %v signal %s; want timed_out 137 KILL", j.State, j.ExitCode, j.Signal)
	}
	if left := jobProcs(id); len(left) > 0 {
		t.Errorf("left after timeout: %v", left)
		killJobProcs(id)
	}
}

func TestRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule([]string{"--retries", "2", "--retry-delay", "100ms"}, "sh", "-c", "echo try $CMESH_RUN_JOB_ID; exit 4")
	if code := e.run("wait", "--timeout", "30s", id).code; code != 4 {
		t.Errorf("wait: %d, want 4", code)
	}
	j := e.status(id)
	if j.State != "failed" || j.Attempt != 3 {
		t.Errorf("state %s attempt %d; want failed 3", j.State, j.Attempt)
	}
	want := fmt.Sprintf("try %s\n[cmesh-run: attempt 2 of 3]\ntry %s\n[cmesh-run: attempt 3 of 3]\ntry %s\n", id, id, id)
	if got := string(e.log(id)); got != want {
		t.Errorf("log %q, want %q", got, want)
	}
	if n := strings.Count(e.raw(id), " start attempt="); n != 3 {
		t.Errorf("%d start markers, want 3", n)
	}
	// Success on the second attempt ends the retries.
	wd := t.TempDir()
	id = e.schedule([]string{"--workdir", wd, "--retries", "5", "--retry-delay", "50ms"}, "sh", "-c", "if [ -e seen ]; then echo second; else touch seen; exit 1; fi")
	j = e.waitDone(id, 30*time.Second)
	if j.State != "succeeded" || j.Attempt != 2 {
		t.Errorf("state %s attempt %d; want succeeded 2", j.State, j.Attempt)
	}
	// A cancel during the retry delay ends it, without another attempt.
	id = e.schedule([]string{"--retries", "5", "--retry-delay", "30s"}, "false")
	waitFor(t, startDeadline, "attempt 2 to be due", func() bool { return e.status(id).Attempt == 2 })
	if r := e.run("cancel", id); r.code != 0 {
		t.Fatal(string(r.stderr))
	}
	if j := e.status(id); j.State != "canceled" || j.Attempt != 2 || strings.Count(e.raw(id), " start attempt=") != 1 {
		t.Errorf("canceled between attempts: state %s attempt %d", j.State, j.Attempt)
	}
}

func TestUniqueIsAtomic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	type res struct {
		ID     string `json:"id"`
		Reused bool   `json:"reused"`
	}
	results := make([]res, 50)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := e.run("schedule", "--json", "--unique", "--name", "same", "--", "sleep", "3")
			if r.code != 0 || json.Unmarshal(r.stdout, &results[i]) != nil {
				t.Errorf("schedule: %d %s %s", r.code, r.stdout, r.stderr)
			}
		}(i)
	}
	wg.Wait()
	started, ids := 0, map[string]bool{}
	for _, r := range results {
		ids[r.ID] = true
		if !r.Reused {
			started++
		}
	}
	if started != 1 || len(ids) != 1 {
		t.Fatalf("%d started, %d distinct IDs; want 1 and 1", started, len(ids))
	}
	var first string
	for id := range ids {
		first = id
	}
	e.waitDone(first, 30*time.Second)
	// A finished job of that name blocks nothing.
	out := e.must("schedule", "--json", "--unique", "--name", "same", "--", "true")
	var r res
	json.Unmarshal(out, &r)
	if r.Reused || r.ID == first {
		t.Errorf("after the first finished: %+v", r)
	}
	if c := e.run("schedule", "--unique", "--", "true"); c.code != 2 {
		t.Errorf("--unique without --name: exit %d, want 2", c.code)
	}
}

func writeConfig(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// 20 one-second jobs with max_running = 3: never more than 3 at once,
// judged from the jobs' own clocks, started in creation order (judged from
// the start markers), all succeed.
func TestMaxRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := writeConfig(t, "max_running = 3\n")
	var ids []string
	for i := 0; i < 20; i++ {
		r := e.runEnv([]string{"CMESH_RUN_CONFIG=" + cfg}, "schedule", "--", "sh", "-c",
			`echo "$(date +%s%N) start"; sleep 1; echo "$(date +%s%N) end"`)
		if r.code != 0 {
			t.Fatalf("schedule: %s", r.stderr)
		}
		ids = append(ids, strings.TrimSpace(string(r.stdout)))
	}
	sawWaiting := false
	waitFor(t, 90*time.Second, "20 jobs", func() bool {
		var jobs []job
		json.Unmarshal(e.must("list", "--json", "--limit", "0"), &jobs)
		done := 0
		for _, j := range jobs {
			sawWaiting = sawWaiting || j.State == "waiting"
			if itest.Finished(j.State) {
				done++
			}
		}
		return done == 20
	})
	if !sawWaiting {
		t.Error("no job was ever seen waiting")
	}
	type ev struct {
		t     int64
		delta int
	}
	var evs []ev
	for _, id := range ids {
		if j := e.status(id); j.State != "succeeded" {
			t.Errorf("%s: %s", id, j.State)
		}
		var s, f int64
		fmt.Sscanf(string(e.log(id)), "%d start\n%d end", &s, &f)
		if s == 0 || f == 0 {
			t.Fatalf("%s: no times in %q", id, e.log(id))
		}
		evs = append(evs, ev{s, +1}, ev{f, -1})
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].t < evs[j].t || evs[i].t == evs[j].t && evs[i].delta < evs[j].delta })
	running, peak := 0, 0
	for _, x := range evs {
		running += x.delta
		peak = max(peak, running)
	}
	if peak > 3 {
		t.Errorf("%d jobs ran at once, max_running is 3", peak)
	}
	if peak < 3 {
		t.Errorf("only %d ran at once: slots went unused", peak)
	}
	// Creation order: a job never takes a slot before an older one did.
	// The wrapper's start marker says when it started the job (the job's
	// own first line may come later on a loaded machine). The one allowed
	// exception is the backend's: an older job still in at's queue holds
	// younger ones back for 10 s at most (queuedGrace), then they go.
	type times struct{ created, started time.Time }
	jobs := make([]times, len(ids))
	for i, id := range ids {
		jobs[i] = times{e.status(id).CreatedAt, startMarkerTime(t, e.raw(id))}
	}
	for i, older := range jobs {
		for j := i + 1; j < len(jobs); j++ {
			younger := jobs[j]
			if younger.started.Before(older.started) && younger.started.Before(older.created.Add(10*time.Second)) {
				t.Errorf("job %d started %s before job %d", j, older.started.Sub(younger.started), i)
			}
		}
	}
}

// startMarkerTime is the time in a job's first start marker.
func startMarkerTime(t *testing.T, raw string) time.Time {
	t.Helper()
	_, rest, ok := strings.Cut(raw, " start attempt=")
	if ok {
		_, rest, ok = strings.Cut(rest, " time=")
	}
	if ok {
		rest, _, ok = strings.Cut(rest, "]")
	}
	at, err := time.Parse(time.RFC3339Nano, rest)
	if !ok || err != nil {
		t.Fatalf("no start marker time in %q", raw)
	}
	return at
}

// A slot is a kernel lock: a wrapper killed with -9 frees its slot.
func TestSlotFreedByKill(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := writeConfig(t, "max_running = 1\n")
	sched := func(argv ...string) string {
		r := e.runEnv([]string{"CMESH_RUN_CONFIG=" + cfg}, append([]string{"schedule", "--"}, argv...)...)
		if r.code != 0 {
			t.Fatalf("schedule: %s", r.stderr)
		}
		return strings.TrimSpace(string(r.stdout))
	}
	first := sched("sleep", "1000")
	e.waitState(first, "running", startDeadline)
	second := sched("echo", "ran")
	e.waitState(second, "waiting", startDeadline)
	wpid := int(e.record(first)["wrapper_pid"].(float64))
	syscall.Kill(wpid, syscall.SIGKILL)
	j := e.waitDone(second, 30*time.Second)
	if j.State != "succeeded" {
		t.Errorf("second job: %s", j.State)
	}
	killJobProcs(first)
	if j := e.waitDone(first, 10*time.Second); j.State != "lost" {
		t.Errorf("first job after its wrapper and process died: %s, want lost", j.State)
	}
}

// Lost: the wrapper killed mid-run (the job runs on, then ends), the job
// killed while its wrapper is gone, and everything killed at once.
func TestLostJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "sleep", "1000")
	e.waitState(id, "running", 10*time.Second)
	wpid := int(e.record(id)["wrapper_pid"].(float64))
	syscall.Kill(wpid, syscall.SIGKILL)
	waitFor(t, 5*time.Second, "the wrapper to die", func() bool { return syscall.Kill(wpid, 0) != nil })
	if j := e.status(id); j.State != "running" {
		t.Errorf("wrapper gone, job alive: %s, want running", j.State)
	}
	killJobProcs(id)
	if j := e.waitDone(id, 10*time.Second); j.State != "lost" {
		t.Errorf("job killed while its wrapper is gone: %s, want lost", j.State)
	}

	id = e.schedule(nil, "sh", "-c", "sleep 1000 & sleep 1000")
	e.waitState(id, "running", 10*time.Second)
	wpid = int(e.record(id)["wrapper_pid"].(float64))
	syscall.Kill(wpid, syscall.SIGKILL)
	killJobProcs(id)
	if j := e.waitDone(id, 10*time.Second); j.State != "lost" {
		t.Errorf("everything killed: %s, want lost", j.State)
	}
	// A lost job can still be canceled: nothing to stop, it stays lost.
	if r := e.run("cancel", id); r.code != 0 {
		t.Errorf("cancel of a lost job: %d", r.code)
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var done []string
	for i := 0; i < 4; i++ {
		id := e.schedule(nil, "true")
		e.waitDone(id, 30*time.Second)
		done = append(done, id)
	}
	running := e.schedule(nil, "sleep", "1000")
	defer killJobProcs(running)
	e.waitState(running, "running", 10*time.Second)

	out := e.must("prune", "--keep", "1", "--dry-run", "--json")
	var r struct {
		DryRun  bool  `json:"dry_run"`
		Removed []job `json:"removed"`
	}
	json.Unmarshal(out, &r)
	if !r.DryRun || len(r.Removed) != 3 {
		t.Fatalf("dry run: %s", out)
	}
	if _, err := os.Stat(filepath.Join(e.state, "jobs", done[0]+".json")); err != nil {
		t.Fatal("the dry run removed something")
	}
	e.must("prune", "--keep", "1")
	for i, id := range done {
		_, errJ := os.Stat(filepath.Join(e.state, "jobs", id+".json"))
		_, errO := os.Stat(filepath.Join(e.state, "jobs", id+".out"))
		if gone := errJ != nil && errO != nil; gone != (i < 3) {
			t.Errorf("job %d: removed=%v", i, gone)
		}
	}
	if e.run("status", done[0]).code != 3 {
		t.Error("a pruned job is still found")
	}
	e.must("prune", "--older-than", "0s")
	if e.status(running).State != "running" {
		t.Error("prune touched a running job")
	}
	if e.run("status", done[3]).code != 3 {
		t.Error("--older-than 0s kept a finished job")
	}
	if e.run("prune").code != 2 {
		t.Error("prune without a rule: want exit 2")
	}
}

func TestRetainRule(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := writeConfig(t, "[retain]\nmax_jobs = 3\n")
	for i := 0; i < 8; i++ {
		r := e.runEnv([]string{"CMESH_RUN_CONFIG=" + cfg}, "schedule", "--", "true")
		id := strings.TrimSpace(string(r.stdout))
		e.waitDone(id, 30*time.Second)
	}
	records, _ := filepath.Glob(filepath.Join(e.state, "jobs", "*.json"))
	if len(records) > 4 {
		t.Errorf("%d records with max_jobs = 3", len(records))
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule([]string{"--nice", "7", "--limit-nofile", "64", "--limit-core", "0"},
		"sh", "-c", `echo "nice $(cut -d' ' -f19 /proc/$$/stat) nofile $(ulimit -n) core $(ulimit -c)"`)
	e.waitDone(id, 30*time.Second)
	if got := string(e.log(id)); got != "nice 7 nofile 64 core 0\n" {
		t.Errorf("limits: %q", got)
	}
	id = e.schedule([]string{"--limit-cpu", "1"}, "sh", "-c", "while :; do :; done")
	j := e.waitDone(id, 30*time.Second)
	if j.State != "failed" || j.Signal != "XCPU" && j.Signal != "KILL" {
		t.Errorf("CPU limit: state %s signal %q", j.State, j.Signal)
	}
	for _, q := range []string{"--memory-max", "--cpu-quota"} {
		r := e.run("schedule", q, "1", "--", "true")
		if r.code != 2 || !strings.Contains(string(r.stderr), "cannot enforce") {
			t.Errorf("%s on at: exit %d %s", q, r.code, r.stderr)
		}
	}
}

// Cancel of a queued job: atd is held (SIGSTOP) so the job stays in at's
// queue; cancel takes it out, and it never runs. Sequential: it stops atd.
func TestCancelQueued(t *testing.T) {
	e := newEnv(t)
	pid, _ := itest.AtdPID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	wd := t.TempDir()
	id := e.schedule([]string{"--workdir", wd}, "touch", "ran")
	j := e.status(id)
	if j.State != "queued" || j.BackendRef == nil || !atQueue(t)[*j.BackendRef] {
		t.Fatalf("not queued in at: %+v", j)
	}
	if r := e.run("cancel", id); r.code != 0 {
		t.Fatalf("cancel: %s", r.stderr)
	}
	if atQueue(t)[*j.BackendRef] {
		t.Errorf("at job %s still queued", *j.BackendRef)
	}
	syscall.Kill(pid, syscall.SIGCONT)
	if j := e.status(id); j.State != "canceled" || j.ExitCode != nil {
		t.Errorf("after cancel: %+v", j)
	}
	// Give atd every chance to (wrongly) run it: a later job runs, this not.
	later := e.schedule(nil, "true")
	e.waitDone(later, 30*time.Second)
	if _, err := os.Stat(filepath.Join(wd, "ran")); err == nil {
		t.Error("the canceled job ran")
	}
	if raw := e.raw(id); strings.Contains(raw, " start attempt=") || endMarkers(raw) != 1 {
		t.Errorf("markers: %q", raw)
	}
}
