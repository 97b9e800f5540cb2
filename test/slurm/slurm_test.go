//go:build integration

// Package slurm proves the slurm backend against a real two-node cluster that the harness
// starts from Debian's packages (itest.StartCluster): munged, slurmctld and two slurmd, each
// node in a PID and UTS namespace of its own, every address on loopback. The submit side (this
// test, cmesh-run status, log, wait, cancel) never sees a node's processes under their own
// PIDs, as with a real remote node.
//
//	CMESH_RUN_BIN=/work/main/cmesh-run go test -tags integration -count=1 -v ./test/slurm/
//
// Needs root and munge, slurmctld, slurmd, slurm-client; without them it skips loudly, and
// fails with CMESH_RUN_REQUIRE_INTEGRATION=1.
package slurm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/backend/backendtest"
	"github.com/cmesh/cmesh-run/test/itest"
)

var bin, emptyConfig string

func TestMain(m *testing.M) { itest.Main(m, &bin, &emptyConfig) }

var needs = itest.Needs{
	Binary:  true,
	Root:    "starts munged, slurmctld and slurmd",
	Tools:   itest.SlurmTools,
	Install: strings.Join(itest.SlurmPackages, " "),
}

// job is the part of the job object this suite reads.
type job struct {
	itest.Job
	Host   *string `json:"host"`
	Reason *string `json:"reason"`
}

// lab is one cluster and a state dir beside it: on one machine, "shared" by every node.
type lab struct {
	c      *itest.Cluster
	state  string
	config string
}

func (l *lab) cli(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(bin, append([]string{"--state-dir", l.state, "--config", l.config}, args...)...)
	cmd.Env = []string{"PATH=" + itest.StdPath, "HOME=/root"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		return "", err.Error(), -1
	}
	return out.String(), errb.String(), 0
}

func (l *lab) schedule(t *testing.T, opts []string, argv ...string) string {
	t.Helper()
	args := append(append([]string{"schedule", "--backend", "slurm", "--workdir", "/"}, opts...), "--")
	out, stderr, code := l.cli(append(args, argv...)...)
	id := strings.TrimSpace(out)
	if code != 0 || !itest.IDPattern.MatchString(id) {
		t.Fatalf("schedule %q: exit %d, stdout %q, stderr %q", argv, code, out, stderr)
	}
	return id
}

func (l *lab) status(t *testing.T, id string) job {
	t.Helper()
	out, stderr, code := l.cli("status", "--json", id)
	var j job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil {
		t.Fatalf("status --json %s: exit %d, %q %q", id, code, out, stderr)
	}
	return j
}

func (l *lab) finish(t *testing.T, id string, within time.Duration) job {
	t.Helper()
	if _, stderr, code := l.cli("wait", "--timeout", within.String(), id); code == 124 {
		t.Fatalf("job %s not finished within %v: %v %s", id, within, l.status(t, id), stderr)
	}
	return l.status(t, id)
}

func (l *lab) running(t *testing.T, id string) job {
	t.Helper()
	var j job
	itest.Poll(t, 60*time.Second, "job "+id+" running", func() (bool, string) {
		j = l.status(t, id)
		if itest.Finished(j.State) {
			t.Fatalf("job %s ended before it was seen running: %v", id, j)
		}
		return j.State == "running" && j.Host != nil && j.PID != nil, j.State
	})
	return j
}

func (l *lab) log(t *testing.T, id string) string {
	t.Helper()
	out, stderr, code := l.cli("log", id)
	if code != 0 {
		t.Fatalf("log %s: exit %d: %s", id, code, stderr)
	}
	return out
}

// scontrol returns one field of `scontrol show job` for the job's backend_ref.
func (l *lab) scontrol(t *testing.T, j job, key string) string {
	t.Helper()
	id, _, _ := strings.Cut(*j.BackendRef, "@")
	out, err := l.c.Client("/usr/bin/scontrol", "--oneliner", "show", "job", id)
	if err != nil {
		t.Fatalf("scontrol show job %s: %v: %s", id, err, out)
	}
	for _, w := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(w, key+"="); ok {
			return v
		}
	}
	return ""
}

func expect(t *testing.T, j job, state string, exit int, signal string) {
	t.Helper()
	if j.State != state || j.ExitCode == nil || *j.ExitCode != exit || j.Signal != signal {
		t.Errorf("job %s: %v; want %s, exit %d, signal %q", j.ID, j, state, exit, signal)
	}
}

func TestSlurmBackend(t *testing.T) {
	itest.Require(t, "slurm", needs)
	t0 := time.Now()
	c := itest.StartCluster(t)
	t.Logf("cluster up in %v: %s", time.Since(t0).Round(time.Millisecond), c.Dir)
	l := &lab{c: c, state: filepath.Join(c.Dir, "state"), config: filepath.Join(c.Dir, "cmesh-run.toml")}
	itest.Must(t, os.WriteFile(l.config, []byte(fmt.Sprintf("[slurm]\nconf = %q\n", c.Conf)), 0o644))
	t.Cleanup(func() {
		itest.Settle(t, func(args ...string) ([]byte, bool) {
			out, _, code := l.cli(args...)
			return []byte(out), code == 0
		})
	})

	t.Run("conformance", func(t *testing.T) {
		backendtest.Run(t, backendtest.Harness{
			Backend: "slurm", StateDir: l.state, StartTimeout: 60 * time.Second,
			CLI: func(t *testing.T, args ...string) (int, string, string) {
				out, stderr, code := l.cli(args...)
				return code, out, stderr
			},
			Kill: c.Kill,
			// Slurm saw the batch script die of SIGKILL, and says so.
			Killed: "failed",
		})
	})

	t.Run("what sbatch got", func(t *testing.T) { testSbatch(t, l) })
	t.Run("jobs land on both nodes, host from the start marker", func(t *testing.T) { testBothNodes(t, l) })
	t.Run("a node's PIDs are never judged by this machine's /proc", func(t *testing.T) { testRemoteLiveness(t, l) })
	t.Run("memory limit enforced, cpu quota refused", func(t *testing.T) { testLimits(t, l) })
	t.Run("cancel of a running job: its setsid grandchild too", func(t *testing.T) { testCancel(t, l) })
	t.Run("a 5 MB output, and offset polling while it runs", func(t *testing.T) { testOutput(t, l) })
	t.Run("a queue's max_running holds across the nodes", func(t *testing.T) { testQueueAcrossNodes(t, l) })
	t.Run("50 jobs from 8 callers, all accounted for", func(t *testing.T) { testMany(t, l) })
	t.Run("doctor checks the cluster", func(t *testing.T) { testDoctor(t, l) })
	// Last: it kills a node.
	t.Run("a node that dies mid-job: the job ends lost within the bound", func(t *testing.T) { testNodeDies(t, l) })
}

func testSbatch(t *testing.T, l *lab) {
	release, wait := gate(t, l, "sbatch-args")
	id := l.schedule(t, []string{"--name", "sbatch-args", "--timeout", "50s", "--grace", "5s"}, "sh", "-c", wait)
	j := l.running(t, id)
	ref := *j.BackendRef
	if !strings.HasSuffix(ref, "@"+l.c.Name) {
		t.Errorf("backend_ref %q: want JOBID@%s", ref, l.c.Name)
	}
	for key, want := range map[string]string{
		"JobName":   "sbatch-args",
		"Comment":   "cmesh-run:" + id,
		"StdOut":    j.OutputPath,
		"Requeue":   "0",
		"WorkDir":   "/",
		"TimeLimit": "00:02:00", // 50 s + 5 s grace + 30 s margin, in whole minutes
	} {
		if got := l.scontrol(t, j, key); got != want {
			t.Errorf("scontrol show job: %s=%q, want %q", key, got, want)
		}
	}
	openGate(t, release)
	l.finish(t, id, time.Minute)
	// The job's environment is SPEC's, none of Slurm's SLURM_* variables.
	id = l.schedule(t, nil, "env")
	expect(t, l.finish(t, id, time.Minute), "succeeded", 0, "")
	for _, line := range strings.Split(l.log(t, id), "\n") {
		if strings.HasPrefix(line, "SLURM") || strings.HasPrefix(line, "HOSTNAME=") {
			t.Errorf("the job's environment has %q: Slurm's variables must not reach it", line)
		}
	}
}

// gate is a file the jobs of a test wait for, so that they run at the same time however slow
// the machine is; the test creates it to let them end.
func gate(t *testing.T, l *lab, name string) (path, script string) {
	path = filepath.Join(l.c.Dir, name)
	return path, `while [ ! -e ` + path + ` ]; do sleep 0.05; done`
}

func openGate(t *testing.T, path string) { itest.Must(t, os.WriteFile(path, nil, 0o644)) }

func testBothNodes(t *testing.T, l *lab) {
	release, wait := gate(t, l, "both-nodes")
	var ids []string
	for i := 0; i < 8; i++ {
		ids = append(ids, l.schedule(t, nil, "sh", "-c", "hostname; "+wait))
	}
	// All eight run at once: the least loaded node takes each.
	for _, id := range ids {
		l.running(t, id)
	}
	openGate(t, release)
	hosts := map[string]int{}
	for _, id := range ids {
		j := l.finish(t, id, 2*time.Minute)
		expect(t, j, "succeeded", 0, "")
		if j.Host == nil {
			t.Fatalf("job %s has no host", id)
		}
		if got := strings.TrimSpace(l.log(t, id)); got != *j.Host {
			t.Errorf("job %s printed hostname %q, its host is %q", id, got, *j.Host)
		}
		hosts[*j.Host]++
	}
	if hosts["c1"] == 0 || hosts["c2"] == 0 {
		t.Errorf("jobs by host %v: want some on each node (c1, c2)", hosts)
	}
	t.Logf("8 jobs by host: %v", hosts)
}

// testRemoteLiveness: the record's PIDs are the node's. Here the same numbers name other
// processes or none, and the job is still running as long as Slurm runs it.
func testRemoteLiveness(t *testing.T, l *lab) {
	release, wait := gate(t, l, "liveness")
	id := l.schedule(t, nil, "sh", "-c", wait)
	j := l.running(t, id)
	var rec struct {
		WrapperPID int `json:"wrapper_pid"`
	}
	b, err := os.ReadFile(filepath.Join(l.state, "jobs", id+".json"))
	itest.Must(t, err)
	itest.Must(t, json.Unmarshal(b, &rec))
	hostPID := l.c.HostPID(*j.Host, rec.WrapperPID)
	if hostPID == 0 || hostPID == rec.WrapperPID {
		t.Fatalf("wrapper pid %d on %s is %d here: the node's PID namespace is not its own", rec.WrapperPID, *j.Host, hostPID)
	}
	if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rec.WrapperPID)); bytes.Contains(cmd, []byte(id)) {
		t.Fatalf("pid %d on this machine is the wrapper itself: the test proves nothing", rec.WrapperPID)
	}
	for i := 0; i < 5; i++ {
		if j := l.status(t, id); j.State != "running" {
			t.Fatalf("status while Slurm runs the job: %s, want running", j.State)
		}
	}
	openGate(t, release)
	expect(t, l.finish(t, id, time.Minute), "succeeded", 0, "")
}

func testLimits(t *testing.T, l *lab) {
	// 300 MB in a shell variable, 64 MB allowed: Slurm's OverMemoryKill ends the whole job.
	id := l.schedule(t, []string{"--memory-max", "64M"}, "sh", "-c", `x=$(head -c 300000000 /dev/zero | tr '\0' a); sleep 20`)
	// Slurm keeps an ended job's details for MinJobAge (60 s here).
	j := l.finish(t, id, time.Minute)
	if got := l.scontrol(t, j, "MinMemoryNode"); got != "64M" {
		t.Errorf("--memory-max 64M reached Slurm as MinMemoryNode=%q, want 64M", got)
	}
	if j.State != "failed" || j.Signal != "KILL" || j.Reason == nil || !strings.Contains(*j.Reason, "slurm") {
		t.Errorf("a job over its memory limit: %v, reason %v; want failed by KILL with Slurm's reason", j, j.Reason)
	}
	// Slurm forgets the job after MinJobAge: the first reader recorded the end it saw.
	var rec struct{ State string }
	b, err := os.ReadFile(filepath.Join(l.state, "jobs", id+".json"))
	itest.Must(t, err)
	if json.Unmarshal(b, &rec) != nil || rec.State != "failed" {
		t.Errorf("the record of the job Slurm killed says %q, want failed (written by the reader that saw it end)", rec.State)
	}
	// A CPU quota Slurm cannot enforce: refused, nothing queued.
	out, stderr, code := l.cli("schedule", "--backend", "slurm", "--cpu-quota", "50%", "--", "true")
	if code != 2 || out != "" || !strings.Contains(stderr, "cpu-quota") {
		t.Errorf("--cpu-quota: exit %d, stdout %q, stderr %q; want exit 2 naming it", code, out, stderr)
	}
	itest.OneErrorLine(t, "--cpu-quota", stderr)
	// A timeout the wrapper enforces: timed_out, with Slurm's limit behind it.
	id = l.schedule(t, []string{"--timeout", "1s", "--grace", "1s"}, "sleep", "30")
	if j := l.finish(t, id, time.Minute); j.State != "timed_out" {
		t.Errorf("--timeout 1s: %v, want timed_out", j)
	}
}

func testCancel(t *testing.T, l *lab) {
	// The grandchild leaves the job's session and is re-parented: to the wrapper (a subreaper),
	// which finds it on the node.
	pidFile := filepath.Join(l.c.Dir, "grandchild.pid")
	id := l.schedule(t, nil, "sh", "-c", `setsid -f sh -c 'echo $$ > `+pidFile+`; exec sleep 300'; trap "" TERM; sleep 300`)
	j := l.running(t, id)
	var gc int
	itest.Poll(t, 10*time.Second, "the grandchild's pid", func() (bool, string) {
		b, _ := os.ReadFile(pidFile)
		gc, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return gc > 0 && l.c.HostPID(*j.Host, gc) > 0, string(b)
	})
	t0 := time.Now()
	if _, stderr, code := l.cli("cancel", "--grace", "2s", id); code != 0 {
		t.Fatalf("cancel: exit %d: %s", code, stderr)
	}
	took := time.Since(t0)
	j = l.status(t, id)
	if j.State != "canceled" {
		t.Errorf("after cancel: %v, want canceled", j)
	}
	if took < 2*time.Second || took > 20*time.Second {
		t.Errorf("cancel took %v: want the 2 s grace (the job ignores SIGTERM), and not much more", took)
	}
	if p := l.c.HostPID(*j.Host, gc); p > 0 && itest.ProcState(p) != "Z" {
		t.Errorf("the setsid grandchild (pid %d on %s, %d here) outlived the cancel", gc, *j.Host, p)
	}
	if _, _, code := l.cli("wait", id); code != 125 {
		t.Errorf("wait on a canceled job exited %d, want 125", code)
	}
	itest.Poll(t, 30*time.Second, "Slurm to see the job end", func() (bool, string) {
		s := l.scontrol(t, j, "JobState")
		return s == "COMPLETED" || s == "CANCELLED", s
	})
	// A queued one (held until its start time by Slurm itself) leaves Slurm's queue.
	id = l.schedule(t, []string{"--in", "1h"}, "true")
	q := l.status(t, id)
	if got := l.scontrol(t, q, "JobState"); got != "PENDING" {
		t.Errorf("a job --in 1h is %s in Slurm, want PENDING (held by --begin)", got)
	}
	if _, stderr, code := l.cli("cancel", id); code != 0 {
		t.Fatalf("cancel of a queued job: exit %d: %s", code, stderr)
	}
	if j := l.status(t, id); j.State != "canceled" {
		t.Errorf("a queued job after cancel: %s", j.State)
	}
	if got := l.scontrol(t, q, "JobState"); got != "CANCELLED" {
		t.Errorf("Slurm says %s of the canceled queued job, want CANCELLED", got)
	}
}

func testOutput(t *testing.T, l *lab) {
	// 5 MB in about two seconds, a line at a time, while we poll by offset.
	id := l.schedule(t, nil, "awk", `BEGIN { for (i = 0; i < 50000; i++) { printf "%09d %090d\n", i, i; if (i % 5000 == 0) system("sleep 0.2") } }`)
	var got bytes.Buffer
	var offset int64
	polls := 0
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, stderr, code := l.cli("log", "--json", "--offset", strconv.FormatInt(offset, 10), "--limit", "262144", id)
		if code != 0 {
			t.Fatalf("log --json --offset %d: exit %d: %s", offset, code, stderr)
		}
		var c itest.LogChunk
		itest.Must(t, json.Unmarshal([]byte(out), &c))
		if c.Offset != offset || c.NextOffset < offset {
			t.Fatalf("chunk at %d: offset %d next %d", offset, c.Offset, c.NextOffset)
		}
		got.WriteString(c.Data)
		offset = c.NextOffset
		polls++
		if c.Done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log not done after 2 min: state %s", c.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var want bytes.Buffer
	for i := 0; i < 50000; i++ {
		fmt.Fprintf(&want, "%09d %090d\n", i, i)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("polled %d bytes in %d polls, want the job's %d bytes exactly", got.Len(), polls, want.Len())
	}
	if whole := l.log(t, id); whole != want.String() {
		t.Errorf("log: %d bytes, want %d", len(whole), want.Len())
	}
	expect(t, l.status(t, id), "succeeded", 0, "")
	t.Logf("%d bytes from a node in %d polls", got.Len(), polls)
}

func testQueueAcrossNodes(t *testing.T, l *lab) {
	// The slot locks are byte-range locks in the shared state dir: they hold for wrappers on
	// any node (on NFS, through its lock manager).
	conf := filepath.Join(l.c.Dir, "queue.toml")
	itest.Must(t, os.WriteFile(conf, []byte(fmt.Sprintf("[slurm]\nconf = %q\n[queues.one]\nmax_running = 1\n", l.c.Conf)), 0o644))
	ql := &lab{c: l.c, state: l.state, config: conf}
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, ql.schedule(t, []string{"--queue", "one"}, "sh", "-c", "hostname; sleep 1"))
	}
	type span struct{ start, end time.Time }
	var spans []span
	hosts := map[string]bool{}
	for _, id := range ids {
		j := ql.finish(t, id, 2*time.Minute)
		expect(t, j, "succeeded", 0, "")
		hosts[*j.Host] = true
		spans = append(spans, span{backendtest.Start(t, l.state, id), backendtest.End(t, l.state, id)})
	}
	for i := range spans {
		for k := range spans {
			if i < k && spans[i].start.Before(spans[k].end) && spans[k].start.Before(spans[i].end) {
				t.Errorf("jobs %s and %s of a max_running=1 queue overlapped: %v and %v", ids[i], ids[k], spans[i], spans[k])
			}
		}
	}
	t.Logf("queue one ran on %v", hosts)
}

func testMany(t *testing.T, l *lab) {
	const callers, each = 8, 7 // 56 jobs
	var mu sync.Mutex
	want := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan string, callers*each)
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				code := (c + i) % 4
				out, stderr, rc := l.cli("schedule", "--backend", "slurm", "--workdir", "/", "--",
					"sh", "-c", `echo "ran $CMESH_RUN_JOB_ID"; exit `+strconv.Itoa(code))
				id := strings.TrimSpace(out)
				if rc != 0 || !itest.IDPattern.MatchString(id) {
					errs <- fmt.Sprintf("caller %d: exit %d %q %q", c, rc, out, stderr)
					continue
				}
				mu.Lock()
				want[id] = code
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if len(want) != callers*each {
		t.Fatalf("%d distinct IDs for %d schedules", len(want), callers*each)
	}
	hosts := map[string]int{}
	for id, code := range want {
		j := l.finish(t, id, 3*time.Minute)
		state := "succeeded"
		if code != 0 {
			state = "failed"
		}
		expect(t, j, state, code, "")
		if got := l.log(t, id); got != "ran "+id+"\n" {
			t.Errorf("job %s: output %q, want one line: it ran once", id, got)
		}
		if j.Host != nil {
			hosts[*j.Host]++
		}
	}
	out, _, code := l.cli("list", "--json", "--limit", "0")
	var all []job
	if code != 0 || json.Unmarshal([]byte(out), &all) != nil {
		t.Fatalf("list: exit %d %q", code, out)
	}
	seen := 0
	for _, j := range all {
		if _, ok := want[j.ID]; ok {
			seen++
		}
	}
	if seen != len(want) {
		t.Errorf("list shows %d of the %d jobs", seen, len(want))
	}
	t.Logf("%d jobs from %d callers, by host %v", len(want), callers, hosts)
}

func testDoctor(t *testing.T, l *lab) {
	conf := filepath.Join(l.c.Dir, "doctor.toml")
	itest.Must(t, os.WriteFile(conf, []byte(fmt.Sprintf("backend = \"slurm\"\n[slurm]\nconf = %q\npartition = \"main\"\n", l.c.Conf)), 0o644))
	dl := &lab{c: l.c, state: l.state, config: conf}
	out, stderr, _ := dl.cli("doctor", "--json", "--fpm-conf", "/nonexistent", "--probe-timeout", "60s")
	var res struct {
		Checks []struct{ Name, Status, Message string } `json:"checks"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("doctor --json: %v: %q %q", err, out, stderr)
	}
	got := map[string]string{}
	for _, c := range res.Checks {
		got[c.Name] = c.Status
	}
	for name, want := range map[string]string{
		"backend slurm": "ok", "slurm controller": "ok", "munge": "ok", "slurm partition": "ok",
		// The state dir is on this machine's own disk: a real remote node could not see it.
		"state dir shared": "warn",
		"probe job":        "ok",
	} {
		if got[name] != want {
			t.Errorf("doctor: %q is %q, want %q (%s)", name, got[name], want, out)
		}
	}
	// A partition that does not exist fails, with the fix.
	itest.Must(t, os.WriteFile(conf, []byte(fmt.Sprintf("backend = \"slurm\"\n[slurm]\nconf = %q\npartition = \"nosuch\"\n", l.c.Conf)), 0o644))
	out, _, code := dl.cli("doctor", "--fpm-conf", "/nonexistent")
	if code != 1 || !strings.Contains(out, "FAIL  slurm partition") {
		t.Errorf("doctor with partition nosuch: exit %d:\n%s", code, out)
	}
}

func testNodeDies(t *testing.T, l *lab) {
	id := l.schedule(t, nil, "sleep", "300")
	j := l.running(t, id)
	n := l.c.Node(*j.Host)
	t0 := time.Now()
	l.c.KillNode(n)
	// SlurmdTimeout is 10 s: the controller marks the node down and the job NODE_FAIL within
	// two of its ping rounds; 90 s is the bound.
	var final job
	itest.PollEvery(t, 250*time.Millisecond, 90*time.Second, "the job of the dead node to end", func() (bool, string) {
		final = l.status(t, id)
		return itest.Finished(final.State), final.State
	})
	t.Logf("node %s killed; job %s %s after %v", n.Name, id, final.State, time.Since(t0).Round(time.Second))
	if final.State != "lost" || final.Reason == nil || !strings.Contains(*final.Reason, "NODE_FAIL") {
		t.Errorf("a job whose node died: %v reason %v, want lost with Slurm's NODE_FAIL", final, final.Reason)
	}
	if _, _, code := l.cli("wait", id); code != 125 {
		t.Errorf("wait on a lost job exited %d, want 125", code)
	}
	// The node comes back (ReturnToService=2) and takes jobs again.
	l.c.StartNode(n)
	l.c.WaitIdle(60 * time.Second)
	if !slices.ContainsFunc(l.c.Nodes, func(x *itest.Node) bool { return x == n }) {
		t.Fatal("node list changed")
	}
	id = l.schedule(t, nil, "true")
	expect(t, l.finish(t, id, time.Minute), "succeeded", 0, "")
}
