//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/backend/backendtest"
	"github.com/cmesh/cmesh-run/test/itest"
)

// The conformance suite every backend passes, through the real atd.
func TestConformanceAt(t *testing.T) {
	e := newEnv(t)
	backendtest.Run(t, backendtest.Harness{
		Backend: "at", StateDir: e.state, StartTimeout: startDeadline,
		CLI: func(t *testing.T, args ...string) (int, string, string) {
			r := e.run(args...)
			return r.code, string(r.stdout), string(r.stderr)
		},
	})
}

// sysJob is the job object with the job system's fields.
type sysJob struct {
	ID        string     `json:"id"`
	State     string     `json:"state"`
	ExitCode  *int       `json:"exit_code"`
	Command   []string   `json:"command"`
	Workdir   string     `json:"workdir"`
	Name      *string    `json:"name"`
	Queue     string     `json:"queue"`
	After     []string   `json:"after"`
	NotBefore *time.Time `json:"not_before"`
	RerunOf   *string    `json:"rerun_of"`
	Reason    *string    `json:"reason"`
	Timeout   *string    `json:"timeout"`
	Retries   int        `json:"retries"`
	CreatedAt time.Time  `json:"created_at"`
	Reused    *bool      `json:"reused"`
}

// sysEnv is an env with a config of queues.
type sysEnv struct {
	*env
	config string
}

func newSysEnv(t *testing.T, config string) *sysEnv {
	e := &sysEnv{env: newEnv(t), config: filepath.Join(t.TempDir(), "config.toml")}
	itest.Must(t, os.WriteFile(e.config, []byte(config), 0o644))
	return e
}

func (e *sysEnv) cli(args ...string) result {
	e.t.Helper()
	return e.runEnv([]string{"CMESH_RUN_CONFIG=" + e.config}, args...)
}

func (e *sysEnv) sched(opts []string, argv ...string) string {
	e.t.Helper()
	r := e.cli(append(append([]string{"schedule"}, opts...), append([]string{"--"}, argv...)...)...)
	if r.code != 0 {
		e.t.Fatalf("schedule %q %q: exit %d: %s", opts, argv, r.code, r.stderr)
	}
	return strings.TrimSpace(string(r.stdout))
}

func (e *sysEnv) get(id string) sysJob {
	e.t.Helper()
	r := e.cli("status", "--json", id)
	var j sysJob
	if r.code != 0 || json.Unmarshal(r.stdout, &j) != nil {
		e.t.Fatalf("status %s: exit %d: %s%s", id, r.code, r.stdout, r.stderr)
	}
	return j
}

func (e *sysEnv) finish(id string) sysJob {
	e.t.Helper()
	if r := e.cli("wait", "--timeout", (startDeadline + 30*time.Second).String(), id); r.code == 124 {
		e.t.Fatalf("job %s did not finish: %+v\n%s", id, e.get(id), atdState())
	}
	return e.get(id)
}

// span is when one job ran, from its markers.
type span struct{ start, end time.Time }

func (e *sysEnv) span(id string) span {
	e.t.Helper()
	return span{backendtest.Start(e.t, e.state, id), backendtest.End(e.t, e.state, id)}
}

// most returns the largest number of spans that overlap at one moment.
func most(spans []span) int {
	peak := 0
	for _, s := range spans {
		n := 0
		for _, o := range spans {
			if !o.start.After(s.start) && o.end.After(s.start) {
				n++
			}
		}
		peak = max(peak, n)
	}
	return peak
}

const queuesConfig = `
[queues.build]
max_running = 2
[queues.deploy]
max_running = 1
`

// Queue build has 2 slots, deploy 1: twelve short jobs of both, judged by
// their own markers, never run more than that at once; each queue starts
// its jobs in creation order; neither holds the other up.
func TestQueuesSlotsAndOrder(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, queuesConfig)
	var ids []string
	queueOf := map[string]string{}
	for i := range 12 {
		q := "build"
		if i%3 == 2 {
			q = "deploy"
		}
		id := e.sched([]string{"--queue", q}, "sleep", "0.4")
		ids = append(ids, id)
		queueOf[id] = q
	}
	spans := map[string][]span{}
	var order = map[string][]time.Time{}
	for _, id := range ids {
		j := e.finish(id)
		if j.State != "succeeded" || j.Queue != queueOf[id] {
			t.Fatalf("job %s: %+v, want succeeded in queue %s", id, j, queueOf[id])
		}
		s := e.span(id)
		spans[j.Queue] = append(spans[j.Queue], s)
		order[j.Queue] = append(order[j.Queue], s.start)
	}
	if n := most(spans["build"]); n > 2 {
		t.Errorf("%d build jobs ran at once, want at most 2", n)
	}
	if n := most(spans["deploy"]); n > 1 {
		t.Errorf("%d deploy jobs ran at once, want at most 1", n)
	}
	for q, starts := range order {
		if !slices.IsSortedFunc(starts, func(a, b time.Time) int { return a.Compare(b) }) {
			t.Errorf("queue %s started its jobs out of creation order: %v", q, starts)
		}
	}
	// deploy's first job was created third: with build's slots taken it
	// must still start before build's last job does.
	if d, b := order["deploy"][0], order["build"][len(order["build"])-1]; !d.Before(b) {
		t.Errorf("deploy's first job started at %v, after build's last at %v: build held deploy up", d, b)
	}
}

// A wrapper killed with -9 frees its slot: the next job of the queue starts.
func TestQueueSlotFreedByKill(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, queuesConfig)
	first := e.sched([]string{"--queue", "deploy"}, "sleep", "60")
	waitFor(t, startDeadline, "the first deploy job to run", func() bool { return e.get(first).State == "running" })
	second := e.sched([]string{"--queue", "deploy"}, "true")
	waitFor(t, startDeadline, "the second to wait for the slot", func() bool {
		j := e.get(second)
		return j.State == "waiting" && j.Reason != nil && strings.Contains(*j.Reason, "slots of queue deploy")
	})
	rec := readRecord(t, e.state, first)
	itest.Must(t, syscall.Kill(rec.WrapperPID, syscall.SIGKILL))
	if rec.PID > 0 {
		_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
	}
	if j := e.finish(second); j.State != "succeeded" {
		t.Errorf("after the holder of deploy's slot was killed: %+v, want the next job to run", j)
	}
}

// A paused queue starts nothing new, its running job goes on, its waiting
// job says why; the pause is a file, so it holds for every new process;
// resume lets the job run.
func TestQueuePause(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, queuesConfig)
	running := e.sched([]string{"--queue", "build"}, "sleep", "1")
	waitFor(t, startDeadline, "the build job to run", func() bool { return e.get(running).State == "running" })
	if r := e.cli("queue", "pause", "build"); r.code != 0 {
		t.Fatalf("queue pause: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.state, "queues", "build.paused")); err != nil {
		t.Errorf("the pause is not a file in the state dir: %v", err)
	}
	held := e.sched([]string{"--queue", "build"}, "true")
	other := e.sched([]string{"--queue", "deploy"}, "true")
	if j := e.finish(other); j.State != "succeeded" {
		t.Errorf("a job of another queue while build is paused: %+v", j)
	}
	if j := e.finish(running); j.State != "succeeded" {
		t.Errorf("the job running when build was paused: %+v, want it to go on", j)
	}
	waitFor(t, startDeadline, "the held job to say the queue is paused", func() bool {
		j := e.get(held)
		return j.State == "waiting" && j.Reason != nil && *j.Reason == "queue build is paused"
	})
	var qs []struct {
		Name       string `json:"name"`
		MaxRunning int    `json:"max_running"`
		Waiting    int    `json:"waiting"`
		Paused     bool   `json:"paused"`
	}
	r := e.cli("queue", "list", "--json")
	if r.code != 0 || json.Unmarshal(r.stdout, &qs) != nil {
		t.Fatalf("queue list --json: exit %d: %s", r.code, r.stdout)
	}
	i := slices.IndexFunc(qs, func(q struct {
		Name       string `json:"name"`
		MaxRunning int    `json:"max_running"`
		Waiting    int    `json:"waiting"`
		Paused     bool   `json:"paused"`
	}) bool {
		return q.Name == "build"
	})
	if i < 0 || !qs[i].Paused || qs[i].Waiting != 1 || qs[i].MaxRunning != 2 {
		t.Errorf("queue list: %s, want build paused, 2 slots, 1 waiting", r.stdout)
	}
	if j := e.get(held); j.State != "waiting" {
		t.Errorf("the held job %s while paused, want waiting", j.State)
	}
	if r := e.cli("queue", "resume", "build"); r.code != 0 {
		t.Fatalf("queue resume: exit %d: %s", r.code, r.stderr)
	}
	if j := e.finish(held); j.State != "succeeded" {
		t.Errorf("after resume: %+v", j)
	}
	if r := e.cli("queue", "pause", "nosuch"); r.code != 2 {
		t.Errorf("pause of an unknown queue: exit %d, want 2", r.code)
	}
}

// A chain of 5 runs in order; a fan-in of 3 starts the last one after all;
// a failure ends what waits for it, canceled with the reason; --after-any
// runs anyway; a canceled job others wait for cancels nothing else but ends
// them; an unknown ID queues nothing (exit 3).
func TestDependencies(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, "")
	var chain []string
	for i := range 5 {
		var opts []string
		if i > 0 {
			opts = []string{"--after", chain[i-1]}
		}
		chain = append(chain, e.sched(opts, "sleep", "0.2"))
	}
	for i, id := range chain {
		if j := e.finish(id); j.State != "succeeded" {
			t.Fatalf("chain job %d: %+v", i, j)
		}
		if i > 0 && e.span(id).start.Before(e.span(chain[i-1]).end) {
			t.Errorf("chain job %d started before job %d ended", i, i-1)
		}
	}

	fan := []string{e.sched(nil, "sleep", "0.2"), e.sched(nil, "sleep", "0.6"), e.sched(nil, "sleep", "0.4")}
	last := e.sched([]string{"--after", strings.Join(fan, ",")}, "true")
	if j := e.get(last); len(j.After) != 3 {
		t.Errorf("after: %v, want the 3 jobs", j.After)
	}
	if j := e.finish(last); j.State != "succeeded" {
		t.Fatalf("fan-in: %+v", j)
	}
	for _, id := range fan {
		if e.span(last).start.Before(e.span(id).end) {
			t.Errorf("the fan-in job started before %s ended", id)
		}
	}

	bad := e.sched(nil, "sh", "-c", "exit 1")
	never := e.sched([]string{"--after", bad}, "touch", filepath.Join(t.TempDir(), "ran"))
	anyway := e.sched([]string{"--after", bad, "--after-any"}, "true")
	j := e.finish(never)
	if j.State != "canceled" || j.Reason == nil || *j.Reason != "dependency "+bad+" failed" {
		t.Errorf("after a failed job: %+v, want canceled, reason \"dependency %s failed\"", j, bad)
	}
	if r := e.cli("wait", never); r.code != 125 {
		t.Errorf("wait for a job whose dependency failed: exit %d, want 125", r.code)
	}
	if j := e.finish(anyway); j.State != "succeeded" {
		t.Errorf("--after-any after a failed job: %+v", j)
	}

	long := e.sched(nil, "sleep", "60")
	waiter := e.sched([]string{"--after", long}, "true")
	waitFor(t, startDeadline, "the dependent job to wait", func() bool { return e.get(waiter).State == "waiting" })
	if r := e.cli("cancel", "--grace", "1s", long); r.code != 0 {
		t.Fatalf("cancel: %s", r.stderr)
	}
	if j := e.finish(waiter); j.State != "canceled" || j.Reason == nil || *j.Reason != "dependency "+long+" canceled" {
		t.Errorf("after its dependency was canceled: %+v", j)
	}

	before := len(listIDs(t, e))
	if r := e.cli("schedule", "--after", "20991231-000000.000000-ffffff", "--", "true"); r.code != 3 {
		t.Errorf("--after an unknown job: exit %d, want 3: %s", r.code, r.stderr)
	}
	if n := len(listIDs(t, e)); n != before {
		t.Errorf("a refused --after left a job (%d jobs, were %d)", n, before)
	}
}

// A job --in 3s starts no earlier than 3 s after it was scheduled, and
// within 2 s after that; meanwhile it is queued with not_before. Cancel
// takes it away, its waiting wrapper too.
func TestDelayedStart(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, "")
	id := e.sched([]string{"--in", "3s"}, "true")
	j := e.get(id)
	if j.State != "queued" || j.NotBefore == nil {
		t.Fatalf("a job --in 3s: %+v, want queued with not_before", j)
	}
	if d := j.NotBefore.Sub(j.CreatedAt); d < 3*time.Second || d > 3*time.Second+time.Second {
		t.Errorf("not_before %v is %v after created_at, want 3 s", j.NotBefore, d)
	}
	if r := e.cli("status", id); !strings.Contains(string(r.stdout), "not_before: ") || !strings.Contains(string(r.stdout), "starts in") {
		t.Errorf("status does not say when the job starts:\n%s", r.stdout)
	}
	e.finish(id)
	start := e.span(id).start
	if start.Before(j.CreatedAt.Add(3*time.Second)) || start.After(j.NotBefore.Add(2*time.Second)) {
		t.Errorf("started at %v, created at %v: want 3 s to 5 s after", start, j.CreatedAt)
	}

	gone := e.sched([]string{"--in", "1h"}, "true")
	if r := e.cli("cancel", gone); r.code != 0 {
		t.Fatalf("cancel: %s", r.stderr)
	}
	if j := e.get(gone); j.State != "canceled" {
		t.Errorf("a delayed job after cancel: %+v", j)
	}
	if ref := e.status(gone).BackendRef; ref != nil && atQueue(t)[*ref] {
		t.Errorf("at still holds the canceled job (at job %s)", *ref)
	}
}

// at counts minutes: a start time in the next minute goes to at as that
// minute, and the wrapper waits for the seconds left.
func TestDelayedStartNextMinute(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, "")
	now := time.Now()
	at := now.Truncate(time.Minute).Add(time.Minute + 2*time.Second)
	id := e.sched([]string{"--at", at.UTC().Format(time.RFC3339)}, "true")
	e.finish(id)
	if start := e.span(id).start; start.Before(at) || start.After(at.Add(2*time.Second)) {
		t.Errorf("--at %v started at %v: want within 2 s after", at, start)
	}
}

// rerun schedules the recorded argv, workdir, name, queue, timeout,
// retries and --env again, never the caller's environment, and says which
// job it reruns; --unique still holds.
func TestRerun(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, queuesConfig)
	opts := []string{"--name", "mars-build", "--queue", "build", "--timeout", "30s", "--retries", "1", "--env", "FLAVOR=fast", "--workdir", "/tmp"}
	first := e.sched(opts, "sh", "-c", `echo "$FLAVOR ${CALLER_SECRET:-none} $(pwd)"`)
	e.finish(first)
	r := e.runEnv([]string{"CMESH_RUN_CONFIG=" + e.config, "CALLER_SECRET=leaked"}, "rerun", first)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d: %s", r.code, r.stderr)
	}
	again := strings.TrimSpace(string(r.stdout))
	a, b := e.get(first), e.finish(again)
	if b.State != "succeeded" || b.RerunOf == nil || *b.RerunOf != first {
		t.Fatalf("the rerun: %+v, want succeeded with rerun_of %s", b, first)
	}
	if !slices.Equal(a.Command, b.Command) || a.Workdir != b.Workdir || *a.Name != *b.Name || a.Queue != b.Queue ||
		*a.Timeout != *b.Timeout || a.Retries != b.Retries {
		t.Errorf("the rerun differs:\n was %+v\n now %+v", a, b)
	}
	if got := strings.TrimSpace(string(e.log(again))); got != "fast none /tmp" {
		t.Errorf("the rerun printed %q, want the recorded --env and workdir and nothing of the caller's", got)
	}

	unique := e.sched([]string{"--name", "once", "--unique"}, "sleep", "30")
	waitFor(t, startDeadline, "the unique job to run", func() bool { return e.get(unique).State == "running" })
	r = e.cli("rerun", "--json", unique)
	var j sysJob
	if r.code != 0 || json.Unmarshal(r.stdout, &j) != nil || j.ID != unique || j.Reused == nil || !*j.Reused {
		t.Errorf("rerun of a running --unique job: exit %d: %s, want that job, reused", r.code, r.stdout)
	}
	if r := e.cli("rerun", "20991231-000000.000000-ffffff"); r.code != 3 {
		t.Errorf("rerun of an unknown job: exit %d, want 3", r.code)
	}
	if r := e.cli("list", "--queue", "build", "--json"); !strings.Contains(string(r.stdout), first) || strings.Contains(string(r.stdout), unique) {
		t.Errorf("list --queue build: %s", r.stdout)
	}
}

// A dependency on a job the caller may not read is refused: root's job in
// a state dir that nobody owns.
func TestAfterUnreadableJob(t *testing.T) {
	t.Parallel()
	e := newSysEnv(t, "")
	nobody := itest.LookupAccount(t, "nobody")
	rootJob := e.sched([]string{"--backend", "direct"}, "true")
	e.finish(rootJob)
	for _, d := range []string{e.state, filepath.Join(e.state, "jobs"), filepath.Join(e.state, "active"), filepath.Join(e.state, "recent"), filepath.Join(e.state, "private")} {
		itest.Must(t, os.Chown(d, nobody.UID, nobody.GID))
	}
	// The test's temp dirs are root's 0700: nobody must reach the state
	// dir and the config through them.
	for _, d := range []string{filepath.Dir(e.state), filepath.Dir(e.config), filepath.Dir(filepath.Dir(e.config))} {
		itest.Must(t, os.Chmod(d, 0o755))
	}
	cmd := exec.Command("runuser", "-u", "nobody", "--", bin, "--state-dir", e.state, "--config", e.config,
		"schedule", "--backend", "direct", "--after", rootJob, "--", "true")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Dir = "/" // the job's workdir: nobody may not enter the test's
	r, err := itest.Run(cmd)
	itest.Must(t, err)
	if r.Exit != 5 || !strings.Contains(r.Stderr, "may not read") {
		t.Errorf("--after root's 0600 job as nobody: exit %d, stderr %q; want 5, may not read", r.Exit, r.Stderr)
	}
}

func listIDs(t *testing.T, e *sysEnv) []string {
	t.Helper()
	r := e.cli("list", "--limit", "0", "--json")
	var js []sysJob
	itest.Must(t, json.Unmarshal(r.stdout, &js))
	var ids []string
	for _, j := range js {
		ids = append(ids, j.ID)
	}
	return ids
}

// readRecord reads what only the state dir's owner needs of a record.
func readRecord(t *testing.T, state, id string) struct{ WrapperPID, PID int } {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "jobs", id+".json"))
	itest.Must(t, err)
	var r struct {
		WrapperPID int  `json:"wrapper_pid"`
		PID        *int `json:"pid"`
	}
	itest.Must(t, json.Unmarshal(b, &r))
	out := struct{ WrapperPID, PID int }{WrapperPID: r.WrapperPID}
	if r.PID != nil {
		out.PID = *r.PID
	}
	return out
}

// A caller that closes its end of stderr cannot kill cmesh-run between
// handing a job over and writing its audit line (SIGPIPE).
func TestAuditSurvivesAClosedStderr(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	config := filepath.Join(dir, "config.toml")
	itest.Must(t, os.WriteFile(config, []byte("audit_log = \""+audit+"\"\n"), 0o644))
	r, w, err := os.Pipe()
	itest.Must(t, err)
	r.Close() // every write to stderr now fails with EPIPE
	cmd := exec.Command(bin, "--state-dir", e.state, "--config", config, "--log-level", "debug", "schedule", "--backend", "direct", "--", "true")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stderr = w
	out, err := cmd.Output()
	w.Close()
	if err != nil {
		t.Fatalf("schedule with a closed stderr: %v (stdout %q)", err, out)
	}
	id := strings.TrimSpace(string(out))
	b, err := os.ReadFile(audit)
	itest.Must(t, err)
	if !strings.Contains(string(b), id) || !strings.Contains(string(b), `"outcome":"scheduled"`) {
		t.Errorf("no audit line for %s: %q", id, b)
	}
}
