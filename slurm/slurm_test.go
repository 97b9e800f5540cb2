package slurm

import (
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/status"
)

func TestParseJobID(t *testing.T) {
	for out, want := range map[string]string{
		"12\n":                      "12",
		"12;cmtest\n":               "12",
		"sbatch: warning: x\n345\n": "345",
		"sbatch: error: Batch job submission failed: Unable to contact slurm controller\n": "",
		"":        "",
		"12abc\n": "",
		"-1\n":    "",
	} {
		got, ok := ParseJobID([]byte(out))
		if got != want || ok != (want != "") {
			t.Errorf("ParseJobID(%q) = %q, %v; want %q", out, got, ok, want)
		}
	}
}

func TestParseRef(t *testing.T) {
	if r, ok := ParseRef("12@main"); !ok || r.JobID != "12" || r.Cluster != "main" || r.String() != "12@main" {
		t.Errorf("12@main: %+v %v", r, ok)
	}
	for _, bad := range []string{"", "@main", "x@main", "1;2@x", "1234567890123@x"} {
		if _, ok := ParseRef(bad); ok {
			t.Errorf("ParseRef(%q) took it", bad)
		}
	}
}

func TestParseQueueAndShow(t *testing.T) {
	q := ParseQueue([]byte("3|FAILED|NonZeroExitCode|n1|cmesh-run:a\n5|RUNNING|None|n2|cmesh-run:b\nbad line\n"))
	if len(q) != 2 || q["3"].State != "FAILED" || q["5"].Comment != "cmesh-run:b" || q["5"].Nodes != "n2" {
		t.Errorf("ParseQueue: %+v", q)
	}
	j := ParseShow([]byte("JobId=4 JobName=k9 UserId=root(0) JobState=FAILED Reason=JobLaunchFailure Dependency=(null) ExitCode=0:9 NodeList=n1 BatchHost=n1 Comment=cmesh-run:k9  StdErr=/x SubmitTime=2026-12-04T20:44:24\n"))
	if j.ID != "4" || j.State != "FAILED" || j.ExitCode != "0:9" || j.Nodes != "n1" || j.Comment != "cmesh-run:k9" || j.Submit.IsZero() {
		t.Errorf("ParseShow: %+v", j)
	}
}

func TestSeenEnd(t *testing.T) {
	running := &status.Record{Job: status.Job{ID: "a", State: status.Running, Attempt: 2}}
	queued := &status.Record{Job: status.Job{ID: "a", State: status.Queued, Attempt: 1}}
	canceling := &status.Record{Job: status.Job{ID: "a", State: status.Running, Attempt: 1}, Cancel: &status.CancelRequest{}}
	for _, c := range []struct {
		r            *status.Record
		j            Job
		end          bool
		exit         int
		signal, mark string
	}{
		{running, Job{State: "FAILED", ExitCode: "0:9", Reason: "JobLaunchFailure"}, true, 137, "KILL", ""},
		{running, Job{State: "OUT_OF_MEMORY", ExitCode: "0:125"}, true, 128 + 125, "125", ""},
		{running, Job{State: "FAILED", ExitCode: "3:0"}, true, 3, "", ""},
		{running, Job{State: "TIMEOUT", ExitCode: "0:0"}, true, 0, "", "timeout"},
		{running, Job{State: "CANCELLED", ExitCode: "0:15"}, true, 0, "", "canceled"},
		{canceling, Job{State: "FAILED", ExitCode: "0:9"}, true, 0, "", "canceled"},
		{running, Job{State: "NODE_FAIL", ExitCode: "0:0"}, false, 0, "", ""},
		{running, Job{State: "COMPLETED", ExitCode: "0:0"}, false, 0, "", ""},
		{queued, Job{State: "FAILED", ExitCode: "0:0", Reason: "JobLaunchFailure"}, false, 0, "", ""},
		{queued, Job{State: "CANCELLED"}, true, 0, "", "canceled"},
	} {
		seen := SeenEnd(c.r, c.j)
		if seen.Held || seen.Why == "" {
			t.Errorf("%+v: %+v, want an end with Slurm's word", c.j, seen)
		}
		if (seen.End != nil) != c.end {
			t.Errorf("%+v of a %s job: end %+v, want an end: %v", c.j, c.r.State, seen.End, c.end)
			continue
		}
		if !c.end {
			continue
		}
		if seen.End.Attempt != c.r.Attempt || seen.End.Reason != c.mark || seen.End.Signal != c.signal ||
			(c.mark == "" && (seen.End.Exit == nil || *seen.End.Exit != c.exit)) {
			t.Errorf("%+v: end %+v, want exit %d signal %q reason %q", c.j, *seen.End, c.exit, c.signal, c.mark)
		}
	}
	why := SeenEnd(running, Job{State: "FAILED", ExitCode: "0:9", Reason: "JobLaunchFailure", Nodes: "n2"}).Why
	if why != "slurm: FAILED 0:9 on n2" {
		t.Errorf("why %q: a started job's kill is no launch failure", why)
	}
}

func TestTimeLimit(t *testing.T) {
	for _, c := range []struct {
		spec status.Spec
		want int
	}{
		{status.Spec{}, 0},
		{status.Spec{Timeout: time.Second, Grace: time.Second}, 1},
		{status.Spec{Timeout: 50 * time.Second, Grace: 5 * time.Second}, 2},
		{status.Spec{Timeout: 10 * time.Minute, Retries: 2, RetryDelay: time.Minute}, 33}, // 3*(10m+10s)+2m+30s
		{status.Spec{Timeout: time.Minute, Slots: 1}, 0},
		{status.Spec{Timeout: time.Minute, After: []string{"x"}}, 0},
	} {
		if got := TimeLimit(c.spec, time.Now()); got != c.want {
			t.Errorf("TimeLimit(%+v) = %d, want %d", c.spec, got, c.want)
		}
	}
}

// A delayed job waits on its node for up to BeginAhead: its limit counts that wait.
func TestTimeLimitOfADelayedJob(t *testing.T) {
	now := time.Now()
	spec := status.Spec{Timeout: time.Minute, Grace: 10 * time.Second, NotBefore: now.Add(80 * time.Second)}
	// 80 s on the node, a scheduler pass of 60 s, 60 s + 10 s, 30 s margin: 4 min.
	if got := TimeLimit(spec, now); got != 4 {
		t.Errorf("--in 80s --timeout 60s: %d minutes, want 4", got)
	}
	spec.NotBefore = now.Add(time.Hour) // held by Slurm until 90 s before
	if got := TimeLimit(spec, now); got != 5 {
		t.Errorf("--in 1h --timeout 60s: %d minutes, want 5 (90 s on the node at most)", got)
	}
}

func TestMemoryArg(t *testing.T) {
	for in, want := range map[string]string{"64M": "65536K", "1g": "1048576K", "1000": "1K", "1": "1K", "2T": "2147483648K"} {
		if got, ok := MemoryArg(in); !ok || got != want {
			t.Errorf("MemoryArg(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "0", "20%", "1.5G", "infinity", "99999999999999999999", "16777216T"} {
		if got, ok := MemoryArg(bad); ok {
			t.Errorf("MemoryArg(%q) = %q: took it", bad, got)
		}
	}
	if !EnforcesMemory(map[string]string{"JobAcctGatherParams": "OverMemoryKill"}) || !EnforcesMemory(map[string]string{"TaskPlugin": "task/affinity,task/cgroup", "ConstrainRAMSpace": "yes"}) ||
		EnforcesMemory(map[string]string{"TaskPlugin": "task/cgroup", "ConstrainRAMSpace": "no"}) ||
		EnforcesMemory(map[string]string{"TaskPlugin": "task/none", "JobAcctGatherParams": "(null)"}) {
		t.Error("EnforcesMemory")
	}
}

func TestEnded(t *testing.T) {
	for _, s := range []string{"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "RUNNING+", "EXPEDITING", "LAUNCH_FAILED", "UPDATE_DB", "SOMETHING_NEW"} {
		if Ended(s) {
			t.Errorf("%s: ended", s)
		}
	}
	for _, s := range []string{"COMPLETED", "FAILED", "CANCELLED", "CANCELLED+", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"} {
		if !Ended(s) {
			t.Errorf("%s: not ended", s)
		}
	}
}
