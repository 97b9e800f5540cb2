//go:build integration

package spool

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// (a) A pool that cannot exec at all: a page requests a build through the spool, the worker
// (under real supervisord, as nobody) runs it, later pages read its status and log directly
// until done. Refused requests get an answer, never silence.
func TestSpoolFromLockedDownPool(t *testing.T) {
	bin := requireIntegration(t, needFPM|needSupervisor)
	w := newWorld(t, bin)
	site := w.spoolSite()
	itest.WriteAPIConfig(t, w.www, map[string]any{"mode": "spool", "state_dir": w.stateDir, "spool_timeout": 10})
	p := w.newPool("locked", disabled)
	p.Start(t)

	// exec() does not exist in this pool, nor do the other five.
	r := p.Request(t, "exec.php", nil, 10*time.Second)
	fpmLog, _ := os.ReadFile(p.Log)
	everything := string(r.Body) + r.Stderr + string(fpmLog)
	if r.Status != 500 || !strings.Contains(everything, "Call to undefined function exec()") {
		t.Fatalf("exec.php should die with \"Call to undefined function exec()\" (HTTP 500): status %d, err %v, body %q, stderr %q",
			r.Status, r.Err, r.Body, r.Stderr)
	}
	t.Logf("exec.php: HTTP %d, %q", r.Status, strings.TrimSpace(r.Stderr))
	probe := p.Call(t, map[string]any{"op": "probe"}, nil)
	for _, f := range strings.Split(disabled, ",") {
		if !probe.Disabled[f] {
			t.Errorf("%s() exists in the locked-down pool: %s", f, probe.Raw)
		}
	}

	// Before any worker ran there is no spool: the client says what to do.
	build := map[string]any{"profile": "build", "args": map[string]string{"target": "web-1"}, "env": map[string]string{"BUILD_MODE": "release"}}
	a := p.API(t, map[string]any{"op": "schedule", "options": build})
	if a.OK || a.Error == nil || a.Error.Code != "backend_unavailable" || !strings.Contains(a.Error.Message, "no spool") {
		t.Fatalf("schedule before any worker ran: %s, want backend_unavailable saying there is no spool", a.Raw)
	}

	sup := w.startSupervisor(site.config)

	// The build.
	var j job
	a = p.Call(t, map[string]any{"op": "schedule", "options": build}, &j)
	t.Logf("schedule through the spool answered in %v (PHP side %.3fs): %v", a.Elapsed, a.Seconds, j)
	if !itest.IDPattern.MatchString(j.ID) || j.Backend != "spool" || j.User != workerUser || j.RequestedBy != "spool:"+itest.WebUser ||
		j.Name == nil || *j.Name != "build-web-1" || j.RequestID == "" || j.Workdir != site.workDir ||
		!reflect.DeepEqual(j.Command, []string{"/bin/sh", site.script, "web-1"}) {
		t.Errorf("job object does not reflect the request: %v", j)
	}
	if a.Elapsed > 3*time.Second {
		t.Errorf("a worker under supervisor should answer within about a second; took %v", a.Elapsed)
	}
	got, final, states := p.Collect(t, j.ID, 13, 3*13, 60*time.Second) // U+FFFD is 3 bytes for 1
	t.Logf("states seen by the pages: %v", states)
	if final.State != "succeeded" || final.ExitCode == nil || *final.ExitCode != 0 {
		t.Errorf("final state %v, want succeeded with exit code 0", final)
	}
	if want := buildOutput("web-1", "release"); got != want {
		t.Errorf("log reassembled by the pages differs from the job's output:\n got %q\nwant %q", itest.Clip(got), itest.Clip(want))
	}
	if !slices.Contains(states, "running") {
		t.Errorf("a 2.5 s build was never seen running by the pages: %v", states)
	}
	w.checkOneStart(j.ID)
	// The page's status() is what `cmesh-run status --json` says.
	var fromPHP, fromCLI map[string]any
	p.Call(t, map[string]any{"op": "status", "id": j.ID}, &fromPHP)
	itest.Must(t, json.Unmarshal([]byte(w.cli(&w.web, "status", "--json", j.ID).stdout), &fromCLI))
	if !reflect.DeepEqual(fromPHP, fromCLI) {
		t.Errorf("status from PHP and from cmesh-run differ:\n php %v\n cli %v", fromPHP, fromCLI)
	}
	var code int
	p.Call(t, map[string]any{"op": "wait", "id": j.ID, "timeout": 2}, &code)
	if code != 0 {
		t.Errorf("wait on the succeeded build: %d", code)
	}
	a = p.API(t, map[string]any{"op": "cancel", "id": j.ID})
	if a.OK || a.Error == nil || a.Error.Code != "usage" || !strings.Contains(a.Error.Message, "not possible") {
		t.Errorf("cancel in spool mode: %s, want code usage saying it is not possible", a.Raw)
	}

	// Refusals: each gets its answer, shown by the page; nothing runs.
	jobsBefore := countFiles(t, filepath.Join(w.stateDir, "jobs", "*.json"))
	refused := []struct {
		what    string
		req     map[string]any
		message string
	}{
		{"an --arg failing its pattern", map[string]any{"options": map[string]any{"profile": "build", "args": map[string]string{"target": "web-1; rm -rf /"}}}, "does not match"},
		{"a free command", map[string]any{"argv": []string{"/bin/echo", "free"}}, "only profiles"},
		{"--env the profile does not allow", map[string]any{"options": map[string]any{"profile": "build", "args": map[string]string{"target": "x"}, "env": map[string]string{"LD_PRELOAD": "/tmp/x.so"}}}, "LD_PRELOAD"},
		{"an unknown profile", map[string]any{"options": map[string]any{"profile": "deploy"}}, "no profile"},
	}
	for _, tc := range refused {
		req := map[string]any{"op": "schedule"}
		for k, v := range tc.req {
			req[k] = v
		}
		a := p.API(t, req)
		if a.Error != nil {
			t.Logf("refused %s: the page shows %s: %s (hint: %s)", tc.what, a.Error.Code, a.Error.Message, a.Error.Hint)
		}
		if a.OK || a.Error == nil || a.Error.Code != "denied" || a.Error.ExitStatus != 5 || !strings.Contains(a.Error.Message, tc.message) {
			t.Errorf("%s: page shows %s, want code denied (5) with %q", tc.what, a.Raw, tc.message)
		}
	}
	if n := countFiles(t, filepath.Join(w.stateDir, "jobs", "*.json")); n != jobsBefore {
		t.Errorf("refused requests created %d jobs", n-jobsBefore)
	}
	if n := countFiles(t, filepath.Join(w.stateDir, "spool", "incoming", "*")); n != 0 {
		t.Errorf("spool/incoming still holds %d files", n)
	}
	audit, _ := os.ReadFile(site.auditLog)
	if n := strings.Count(string(audit), `"outcome":"refused"`); n < len(refused) {
		t.Errorf("audit log has %d refusals, want %d:\n%s", n, len(refused), audit)
	}

	// A request while the worker is stopped: schedule gives up after spool_timeout, the request
	// stays, and the worker takes it when it is back.
	if r := sup.ctl("stop", "cmesh-run-worker"); r.exit != 0 {
		t.Fatalf("supervisorctl stop: %v", r)
	}
	reqID := "offline-" + fmt.Sprint(time.Now().UnixNano())
	offline := map[string]any{"profile": "build", "args": map[string]string{"target": "web-2"}, "request_id": reqID}
	a = p.API(t, map[string]any{"op": "schedule", "options": offline, "spool_timeout": 0.5})
	if a.OK || a.Error == nil || a.Error.Code != "backend_unavailable" || !strings.Contains(a.Error.Message, reqID) {
		t.Fatalf("schedule with the worker stopped: %s, want backend_unavailable naming %s", a.Raw, reqID)
	}
	if _, err := os.Stat(filepath.Join(w.stateDir, "spool", "incoming", reqID+".json")); err != nil {
		t.Fatalf("the unanswered request is not in the spool: %v", err)
	}
	if r := sup.ctl("start", "cmesh-run-worker"); r.exit != 0 {
		t.Fatalf("supervisorctl start: %v", r)
	}
	var late job
	itest.Poll(t, 10*time.Second, "the restarted worker to answer "+reqID, func() (bool, string) {
		a := p.Call(t, map[string]any{"op": "result", "request_id": reqID}, nil)
		if string(a.Result) == "null" {
			return false, "no answer yet"
		}
		itest.Must(t, json.Unmarshal(a.Result, &late))
		return true, ""
	})
	got, final, _ = p.Collect(t, late.ID, 1<<20, 3<<20, 30*time.Second)
	if final.State != "succeeded" || got != buildOutput("web-2", "none") {
		t.Errorf("the late request's job: %v, output %q", final, itest.Clip(got))
	}
}

// (b) Without a worker a spool job stays queued; the next drain starts it. Three drains at once
// never start a job twice.
func TestDrain(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	t.Cleanup(w.killLeftovers)
	// schedule --backend spool cannot create a state dir (reported): at and direct can.
	w.mkdir(w.stateDir, 0o750, 0, 0)

	j := w.schedule(nil, "--backend", "spool", "--name", "offline", "--", "sh", "-c", `echo "drained $CMESH_RUN_JOB_ID"`)
	if j.State != "queued" || j.Backend != "spool" {
		t.Fatalf("schedule --backend spool: %v, want queued", j)
	}
	// Stays queued: watched for 1.5 s, past the second in which any fresh job counts as queued.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if s := w.status(nil, j.ID); s.State != "queued" {
			t.Fatalf("with no worker the job should stay queued: %v", s)
		}
	}
	var fromPHP job
	itest.Must(t, json.Unmarshal(w.php(`return $c->status($args);`, j.ID), &fromPHP))
	if fromPHP.State != "queued" {
		t.Errorf("PHP's status of the queued job: %v", fromPHP)
	}
	if r := w.cli(nil, "drain"); r.exit != 0 {
		t.Fatalf("drain: %v", r)
	}
	if final := w.waitFinished(nil, j.ID, 10*time.Second); final.State != "succeeded" {
		t.Errorf("drained job: %v", final)
	}
	if got := w.log(j.ID); got != "drained "+j.ID+"\n" {
		t.Errorf("drained job's output: %q", got)
	}
	w.checkOneStart(j.ID)

	// Ten queued jobs, three drains started at the same moment.
	var ids []string
	for i := 0; i < 10; i++ {
		j := w.schedule(nil, "--backend", "spool", "--", "sh", "-c", `echo "ran $CMESH_RUN_JOB_ID"; sleep 0.3`)
		ids = append(ids, j.ID)
	}
	var wg sync.WaitGroup
	results := make([]result, 3)
	errs := make([]error, 3)
	gate := make(chan struct{})
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-gate
			results[i], errs[i] = runQuiet(w.bin, "--config", w.config, "--state-dir", w.stateDir, "--log-level", "info", "drain")
		}(i)
	}
	close(gate)
	wg.Wait()
	idle := 0
	for i, r := range results {
		if errs[i] != nil || r.exit != 0 {
			t.Errorf("drain %d: %v %v", i, errs[i], r)
		}
		if strings.Contains(r.stderr, "nothing to do") {
			idle++
		}
	}
	t.Logf("3 concurrent drains: %d found the lock taken and did nothing", idle)
	for _, id := range ids {
		final := w.waitFinished(nil, id, 20*time.Second)
		if final.State != "succeeded" {
			t.Errorf("job %s: %v", id, final)
		}
		if got := w.log(id); got != "ran "+id+"\n" {
			t.Errorf("job %s output %q, want it once", id, got)
		}
		w.checkOneStart(id)
	}
	for _, d := range []string{"queue", "claimed", "incoming"} {
		if n := countFiles(t, filepath.Join(w.stateDir, "spool", d, "*")); n != 0 {
			t.Errorf("spool/%s still holds %d files", d, n)
		}
	}
}

// A spool job queued over a second ago must never be reported lost while a drain starts it:
// lost is final (wait exits 125, a page stops polling). The claim stays in spool/claimed
// until the record says the job started, so readers always find it on its way.
func TestSpoolJobNeverLostWhileStarting(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	t.Cleanup(w.killLeftovers)
	w.mkdir(w.stateDir, 0o750, 0, 0)
	for round := 0; round < 5; round++ {
		j := w.schedule(nil, "--backend", "spool", "--", "sh", "-c", "echo hi")
		itest.Poll(t, 5*time.Second, "the job to be over a second old", func() (bool, string) {
			return time.Since(j.CreatedAt) > 1100*time.Millisecond, ""
		})
		done := make(chan result, 1)
		go func() {
			r, _ := runQuiet(w.bin, "--config", w.config, "--state-dir", w.stateDir, "drain")
			done <- r
		}()
		var seen []string
		for i := 0; i < 40; i++ {
			s := w.status(nil, j.ID).State
			if len(seen) == 0 || seen[len(seen)-1] != s {
				seen = append(seen, s)
			}
			if s == "succeeded" {
				break
			}
		}
		<-done
		if slices.Contains(seen, "lost") {
			t.Errorf("round %d: job %s went through states %v", round, j.ID, seen)
		}
	}
}

// (c) The worker under real supervisord is killed with SIGKILL while a job runs and more are
// queued: supervisord restarts it, no job is lost, none runs twice, the running job goes on.
func TestWorkerKilledUnderSupervisor(t *testing.T) {
	bin := requireIntegration(t, needSupervisor)
	w := newWorld(t, bin)
	site := w.spoolSite()
	sup := w.startSupervisor(site.config)
	pid1 := sup.workerPID()

	// Jobs are queued by the worker's user (nobody): the spool runs them as that user.
	spoolJob := func(script string) job {
		return w.schedule(&w.worker, "--backend", "spool", "--workdir", site.workDir, "--", "sh", "-c", script)
	}
	long := spoolJob(`echo "long $CMESH_RUN_JOB_ID begins"; sleep 4; echo "long $CMESH_RUN_JOB_ID ends"`)
	var running job
	itest.Poll(t, 10*time.Second, "the long job to run", func() (bool, string) {
		running = w.status(nil, long.ID)
		return running.State == "running" && running.PID != nil && itest.Alive(*running.PID), running.String()
	})
	var short []job
	for i := 0; i < 6; i++ {
		short = append(short, spoolJob(`echo "short $CMESH_RUN_JOB_ID"; sleep 0.5`))
	}
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the worker %d: %v", pid1, err)
	}
	if !itest.Alive(*running.PID) {
		t.Fatalf("the long job's process %d died with the worker", *running.PID)
	}
	pid2 := sup.waitWorker(pid1, 20*time.Second)
	t.Logf("worker %d killed with SIGKILL; supervisord started %d", pid1, pid2)
	if !itest.Alive(*running.PID) {
		t.Errorf("the long job's process %d is gone after the worker's restart", *running.PID)
	}
	for i := 0; i < 3; i++ {
		short = append(short, spoolJob(`echo "short $CMESH_RUN_JOB_ID"; sleep 0.5`))
	}

	for _, j := range append([]job{long}, short...) {
		final := w.waitFinished(nil, j.ID, 30*time.Second)
		if final.State != "succeeded" {
			t.Errorf("job %s: %v, want succeeded", j.ID, final)
		}
		w.checkOneStart(j.ID)
		if j.ID == long.ID {
			if final.PID == nil || *final.PID != *running.PID {
				t.Errorf("the long job's pid changed from %d: %v", *running.PID, final)
			}
			want := "long " + j.ID + " begins\nlong " + j.ID + " ends\n"
			if got := w.log(j.ID); got != want {
				t.Errorf("long job output %q, want %q", got, want)
			}
		} else if got := w.log(j.ID); got != "short "+j.ID+"\n" {
			t.Errorf("job %s output %q, want one run", j.ID, got)
		}
	}
	if pid := sup.workerPID(); pid != pid2 {
		t.Errorf("worker pid %d, want %d: it restarted again", pid, pid2)
	}
}

// (d) The direct backend from a pool that may exec: the job outlives the FPM master's QUIT
// and holds none of FPM's descriptors.
func TestDirectBackendSurvivesFPM(t *testing.T) {
	bin := requireIntegration(t, needFPM)
	w := newWorld(t, bin)
	w.mkdir(w.stateDir, 0o750, w.web.UID, w.web.GID)
	t.Cleanup(w.killLeftovers)
	itest.WriteAPIConfig(t, w.www, map[string]any{"mode": "exec", "binary": w.bin, "state_dir": w.stateDir, "env": map[string]string{"CMESH_RUN_CONFIG": w.config}})
	p := w.newPool("exec", "")
	fpm := p.Start(t)

	script := `i=0; while [ $i -lt 50 ]; do echo "direct $i"; i=$((i+1)); sleep 0.1; done`
	var want strings.Builder
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&want, "direct %d\n", i)
	}
	var j job
	a := p.Call(t, map[string]any{"op": "schedule", "argv": []string{"sh", "-c", script}, "options": map[string]any{"backend": "direct"}}, &j)
	t.Logf("scheduled %s with --backend direct in %v", j.ID, a.Elapsed)
	if j.Backend != "direct" || j.User != itest.WebUser {
		t.Errorf("job object: %v", j)
	}

	// Every socket and pipe of FPM's: the page's during the request, the master's and workers'.
	fpmFDs := itest.SharedDescriptors(a.PID, a.FDs, fpm.PID)
	if len(fpmFDs) == 0 {
		t.Fatal("found no socket of FPM's to compare with")
	}
	var running job
	itest.Poll(t, 10*time.Second, "the job to run", func() (bool, string) {
		running = w.status(&w.web, j.ID)
		return running.State == "running" && running.PID != nil && itest.Alive(*running.PID), running.String()
	})
	procs := itest.JobProcesses(*running.PID, "")
	for _, pid := range procs {
		comm, _, _ := itest.ProcStat(pid)
		for fd, target := range itest.FDLinks(pid) {
			if from, ok := fpmFDs[target]; ok {
				t.Errorf("job process %d (%s) fd %s is %s, inherited from %s", pid, comm, fd, target, from)
			}
		}
		if g, _ := syscall.Getpgid(pid); g == fpm.PID {
			t.Errorf("job process %d (%s) is in FPM's process group", pid, comm)
		}
	}
	t.Logf("job processes %v hold none of FPM's %d sockets and pipes", procs, len(fpmFDs))

	itest.Must(t, syscall.Kill(fpm.PID, syscall.SIGQUIT))
	fpm.WaitExit(t, 15*time.Second)
	s := w.status(&w.web, j.ID)
	if s.State != "running" || !itest.Alive(*running.PID) {
		t.Fatalf("with FPM gone the job should still run: %v", s)
	}
	final := w.waitFinished(&w.web, j.ID, 30*time.Second)
	if final.State != "succeeded" || final.ExitCode == nil || *final.ExitCode != 0 {
		t.Errorf("final: %v, want succeeded", final)
	}
	if got := w.cli(&w.web, "log", j.ID).stdout; got != want.String() {
		t.Errorf("output after FPM's QUIT:\n got %q\nwant %q", itest.Clip(got), itest.Clip(want.String()))
	}
}

// (e) How long `schedule` takes with each backend, side by side (root, from the shell), and
// how long until the job started. The spool has a worker running, so its jobs start too.
func TestScheduleLatency(t *testing.T) {
	bin := requireIntegration(t, needAt)
	w := newWorld(t, bin)
	t.Cleanup(w.killLeftovers)
	startWorker(t, w)

	const rounds = 20
	backends := []string{"at", "spool", "direct"}
	took := map[string][]time.Duration{}
	ids := map[string][]string{}
	for i := 0; i < rounds; i++ {
		for _, b := range backends {
			r := w.cli(nil, "schedule", "--backend", b, "--", "true")
			id := strings.TrimSpace(r.stdout)
			if r.exit != 0 || !itest.IDPattern.MatchString(id) {
				t.Fatalf("schedule --backend %s: %v", b, r)
			}
			took[b] = append(took[b], r.elapsed)
			ids[b] = append(ids[b], id)
		}
	}
	startDelay := map[string][]time.Duration{}
	for _, b := range backends {
		for _, id := range ids[b] {
			j := w.waitFinished(nil, id, 30*time.Second)
			if j.State != "succeeded" || j.StartedAt == nil {
				t.Errorf("%s job %s: %v", b, id, j)
				continue
			}
			startDelay[b] = append(startDelay[b], j.StartedAt.Sub(j.CreatedAt))
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "schedule latency, %d runs each, interleaved, as root from the shell:\n", rounds)
	fmt.Fprintf(&table, "%-8s %18s %10s %10s %22s\n", "backend", "schedule median", "min", "max", "created->started med")
	for _, b := range backends {
		mn, mx := took[b][0], took[b][0]
		for _, d := range took[b] {
			mn, mx = min(mn, d), max(mx, d)
		}
		fmt.Fprintf(&table, "%-8s %18s %10s %10s %22s\n", b, ms(itest.Median(took[b])), ms(mn), ms(mx), ms(itest.Median(startDelay[b])))
	}
	t.Logf("\n%s", table.String())
}

// (f) The PHP client's direct reads give what cmesh-run gives: log chunks at every limit
// (markers removed, a retry's markers, characters split by the limit, invalid UTF-8, fake
// markers), and status for succeeded, failed and lost jobs.
func TestPHPReaderMatchesCLI(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	t.Cleanup(w.killLeftovers)

	script := `if [ -e "$MARK" ]; then n=2; else n=1; fi
printf 'attempt %s: caf\303\251 \342\234\223 \360\237\230\200\n' "$n";
printf 'bad bytes: \377\376\375 end\n[cmesh-run:0123456789abcdef0123456789abcdef start attempt=1 pid=1 time=2026-01-01T00:00:00Z]\n';
printf 'split \303'; sleep 0.2; printf '\251 done';
[ -e "$MARK" ] && exit 0; touch "$MARK"; exit 3`
	mark := filepath.Join(w.root, "mark")
	j := w.schedule(nil, "--backend", "direct", "--retries", "1", "--retry-delay", "200ms", "--env", "MARK="+mark, "--", "sh", "-c", script)
	final := w.waitFinished(nil, j.ID, 20*time.Second)
	if final.State != "succeeded" || final.Attempt != 2 {
		t.Fatalf("retried job: %v, want succeeded at attempt 2", final)
	}
	failed := w.schedule(nil, "--backend", "direct", "--", "sh", "-c", "echo failing; exit 7")
	w.waitFinished(nil, failed.ID, 10*time.Second)
	lost := w.schedule(nil, "--backend", "direct", "--", "sh", "-c", "echo doomed; sleep 30")
	var lr job
	itest.Poll(t, 10*time.Second, "the doomed job to run", func() (bool, string) {
		lr = w.status(nil, lost.ID)
		return lr.State == "running" && lr.PID != nil, lr.String()
	})
	var raw struct {
		WrapperPID int `json:"wrapper_pid"`
	}
	b, _ := os.ReadFile(filepath.Join(w.stateDir, "jobs", lost.ID+".json"))
	itest.Must(t, json.Unmarshal(b, &raw))
	syscall.Kill(raw.WrapperPID, syscall.SIGKILL)
	syscall.Kill(-*lr.PID, syscall.SIGKILL)
	itest.Poll(t, 10*time.Second, "the doomed job to be lost", func() (bool, string) {
		s := w.status(nil, lost.ID)
		return s.State == "lost", s.String()
	})

	// A job that reported its progress (malformed lines after the good one).
	prog := w.schedule(nil, "--backend", "direct", "--", "sh", "-c", `printf '1/5 start\n2/5 half way \303\251\nnoise\n7/5 no\n' > "$CMESH_RUN_PROGRESS"; echo x`)
	w.waitFinished(nil, prog.ID, 10*time.Second)
	var pchunk, cchunk map[string]any
	itest.Must(t, json.Unmarshal(w.php(`return $c->log($args, 0, 1048576);`, prog.ID), &pchunk))
	itest.Must(t, json.Unmarshal([]byte(w.cli(nil, "log", "--json", prog.ID).stdout), &cchunk))
	if !reflect.DeepEqual(pchunk, cchunk) || cchunk["progress"] == nil {
		t.Errorf("log of a job with progress:\n php %v\n cli %v", pchunk, cchunk)
	}

	for _, id := range []string{j.ID, failed.ID, lost.ID, prog.ID} {
		var php, cli map[string]any
		itest.Must(t, json.Unmarshal(w.php(`return $c->status($args);`, id), &php))
		itest.Must(t, json.Unmarshal([]byte(w.cli(nil, "status", "--json", id).stdout), &cli))
		if !reflect.DeepEqual(php, cli) {
			t.Errorf("status %s:\n php %v\n cli %v", id, php, cli)
		}
	}

	// Log chunks: PHP follows next_offset from 0 at each limit; cmesh-run must answer each of
	// the same (offset, limit) the same way.
	size := fileSize(t, filepath.Join(w.stateDir, "jobs", j.ID+".out"))
	for _, limit := range []int64{1, 3, 7, 64, 1 << 20} {
		var chunks []itest.LogChunk
		itest.Must(t, json.Unmarshal(w.php(`
$out = []; $off = 0;
for ($i = 0; $i < 5000; $i++) {
    $r = $c->log($args['id'], $off, $args['limit']);
    $out[] = $r;
    if ($r['done'] || $r['next_offset'] === $off) { break; }
    $off = $r['next_offset'];
}
return $out;`, map[string]any{"id": j.ID, "limit": limit}), &chunks))
		last := chunks[len(chunks)-1]
		if !last.Done {
			t.Errorf("limit %d: PHP's chunks stop at %v without done", limit, last)
		}
		var php strings.Builder
		for _, c := range chunks {
			php.WriteString(c.Data)
		}
		w.compareLog(j.ID, limit, chunks)
		t.Logf("limit %d: %d chunks over %d bytes agree", limit, len(chunks), size)
		// With room for a whole character, no character is ever cut: the chunks add up to the
		// output with invalid bytes replaced as one read replaces them.
		if want := strings.ToValidUTF8(w.log(j.ID), "\uFFFD"); limit >= 4 && php.String() != want {
			t.Errorf("limit %d: PHP's chunks make %q, want %q", limit, php.String(), want)
		}
	}
	// Offsets a page could not have been given (inside markers, past the end) too.
	var odd []itest.LogChunk
	itest.Must(t, json.Unmarshal(w.php(`
$out = [];
for ($off = 0; $off <= $args['size'] + 3; $off += 7) { $out[] = $c->log($args['id'], $off, 9); }
return $out;`, map[string]any{"id": j.ID, "size": size}), &odd))
	w.compareLog(j.ID, 9, odd)
}

// compareLog asks cmesh-run log --json for each chunk's offset and limit, a few at a time,
// and fails t where its answer differs from the chunk PHP returned.
func (w *world) compareLog(id string, limit int64, chunks []itest.LogChunk) {
	w.t.Helper()
	type answer struct {
		r   result
		err error
	}
	answers := make([]answer, len(chunks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, c := range chunks {
		wg.Add(1)
		go func(i int, c itest.LogChunk) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r, err := runQuiet(w.bin, "--config", w.config, "--state-dir", w.stateDir, "log", "--json", "--offset", fmt.Sprint(c.Offset), "--limit", fmt.Sprint(limit), id)
			answers[i] = answer{r, err}
		}(i, c)
	}
	wg.Wait()
	for i, c := range chunks {
		var cli itest.LogChunk
		if a := answers[i]; a.err != nil || a.r.exit != 0 || json.Unmarshal([]byte(a.r.stdout), &cli) != nil {
			w.t.Fatalf("log --json --offset %d: %v %v", c.Offset, a.err, a.r)
		}
		if cli != c {
			w.t.Errorf("limit %d offset %d:\n php %+v\n cli %+v", limit, c.Offset, c, cli)
		}
	}
}

// ---------------------------------------------------------------------------------------------

// startWorker runs `cmesh-run worker` as root for the test's state dir (no supervisor), and
// stops it by PID at cleanup.
func startWorker(t *testing.T, w *world) int {
	t.Helper()
	r := w.cli(nil, "drain") // creates the spool
	if r.exit != 0 {
		t.Fatalf("drain: %v", r)
	}
	wp := w.startWorkerAs(nil, "")
	itest.Poll(t, 10*time.Second, "the worker to hold the spool's lock", func() (bool, string) {
		return itest.HoldsFile(wp.PID, filepath.Join(w.stateDir, "private", "worker.lock")), ""
	})
	return wp.PID
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

func countFiles(t *testing.T, glob string) int {
	t.Helper()
	m, err := filepath.Glob(glob) // "*" matches names starting with "." too
	itest.Must(t, err)
	return len(m)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	itest.Must(t, err)
	return st.Size()
}
