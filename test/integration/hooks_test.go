//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// Hooks and progress against the real atd: on_finish and on_failure run once per job after its
// end, as the job's user, with the job on stdin, never changing it; progress lines reach
// status and log --json.

// hookLab is a state dir whose config names hooks: hook.sh appends one line per run to runs
// ("ID STATE EXIT ARG"), keeps its stdin and environment, prints a line, and then does what
// $HOOK_MODE (from the config's argv) says.
type hookLab struct {
	*env
	dir, config, runs string
}

const hookScript = `#!/bin/sh
d=$(dirname "$0")
echo "$CMESH_RUN_JOB_ID $CMESH_RUN_JOB_STATE ${CMESH_RUN_JOB_EXIT_CODE:--} $1" >> "$d/runs"
cat > "$d/stdin.$CMESH_RUN_JOB_ID"
env | sort > "$d/env.$CMESH_RUN_JOB_ID"
echo "hook output for $CMESH_RUN_JOB_ID"
case "$2" in
fail) exit 7 ;;
hang) echo $$ > "$d/hang.pid"; exec sleep 300 ;;
fork) setsid sh -c 'echo $$ > "$1/child.pid"; exec sleep 300' sh "$d" & sleep 0.2; exit 0 ;;
slow) sleep 2 ;;
esac
exit 0
`

func newHookLab(t *testing.T, extra string) *hookLab {
	l := &hookLab{env: newEnv(t), dir: t.TempDir()}
	l.runs = filepath.Join(l.dir, "runs")
	hook := filepath.Join(l.dir, "hook.sh")
	itest.Must(t, os.WriteFile(hook, []byte(hookScript), 0o755))
	l.config = filepath.Join(l.dir, "config.toml")
	itest.Must(t, os.WriteFile(l.config, []byte(strings.ReplaceAll(extra, "HOOK", hook)), 0o644))
	return l
}

func (l *hookLab) run(args ...string) result {
	return l.runEnv([]string{"CMESH_RUN_CONFIG=" + l.config}, args...)
}

func (l *hookLab) must(args ...string) []byte {
	l.t.Helper()
	r := l.run(args...)
	if r.code != 0 {
		l.t.Fatalf("cmesh-run %q: exit %d: %s", args, r.code, r.stderr)
	}
	return r.stdout
}

func (l *hookLab) schedule(opts []string, argv ...string) string {
	l.t.Helper()
	return strings.TrimSpace(string(l.must(append(append([]string{"schedule"}, opts...), append([]string{"--"}, argv...)...)...)))
}

// hookJob is the job object with the fields of this issue.
type hookJob struct {
	job
	Reason *string `json:"reason"`
	Hook   *struct {
		Program    string     `json:"program"`
		ExitCode   *int       `json:"exit_code"`
		Signal     string     `json:"signal"`
		TimedOut   bool       `json:"timed_out"`
		StartedAt  time.Time  `json:"started_at"`
		FinishedAt *time.Time `json:"finished_at"`
	} `json:"hook"`
	Progress *struct {
		Done, Total int64
		Message     string
		UpdatedAt   time.Time `json:"updated_at"`
	} `json:"progress"`
}

func (l *hookLab) status(id string) hookJob {
	l.t.Helper()
	var j hookJob
	out := l.must("status", "--json", id)
	itest.Must(l.t, json.Unmarshal(out, &j))
	return j
}

// hookDone polls until job id's hook has finished, and returns the job.
func (l *hookLab) hookDone(id string, within time.Duration) hookJob {
	l.t.Helper()
	var j hookJob
	waitFor(l.t, within, "the hook of "+id+" to finish", func() bool {
		j = l.status(id)
		return j.Hook != nil && j.Hook.FinishedAt != nil
	})
	return j
}

// runsOf returns the hook's runs for job id, each "STATE EXIT ARG".
func (l *hookLab) runsOf(id string) []string {
	b, _ := os.ReadFile(l.runs)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, id+" "); ok {
			out = append(out, rest)
		}
	}
	return out
}

func (l *hookLab) wait(id string) int {
	l.t.Helper()
	return l.run("wait", "--timeout", "60s", id).code
}

const twoHooks = `on_finish = ["HOOK", "finish"]
on_failure = ["HOOK", "failure"]
hook_timeout = "2s"
`

func TestHooksRunOnceAfterTheEnd(t *testing.T) {
	l := newHookLab(t, twoHooks)
	ok := l.schedule([]string{"--env", "SECRET=hunter2"}, "sh", "-c", "echo job output")
	bad := l.schedule(nil, "sh", "-c", "exit 3")
	if code := l.wait(ok); code != 0 {
		t.Fatalf("wait %s: %d", ok, code)
	}
	if code := l.wait(bad); code != 3 {
		t.Fatalf("wait %s: %d", bad, code)
	}
	for id, want := range map[string]string{ok: "succeeded 0 finish", bad: "failed 3 failure"} {
		j := l.hookDone(id, 30*time.Second)
		if got := l.runsOf(id); !slices.Equal(got, []string{want}) {
			t.Errorf("job %s: hook runs %q, want [%q]", id, got, want)
		}
		if j.Hook.ExitCode == nil || *j.Hook.ExitCode != 0 || !strings.HasSuffix(j.Hook.Program, "hook.sh") || j.Hook.FinishedAt.Before(j.Hook.StartedAt) {
			t.Errorf("job %s: hook %+v, want program hook.sh, exit 0, finished after it started", id, *j.Hook)
		}
		var in map[string]any
		b, err := os.ReadFile(filepath.Join(l.dir, "stdin."+id))
		if err != nil || json.Unmarshal(b, &in) != nil || in["id"] != id || in["state"] != strings.Fields(want)[0] {
			t.Errorf("job %s: the hook's stdin %q is not the job object", id, b)
		}
		env, _ := os.ReadFile(filepath.Join(l.dir, "env."+id))
		for _, kv := range []string{"CMESH_RUN_JOB_ID=" + id, "CMESH_RUN_JOB_STATE=" + strings.Fields(want)[0], "CMESH_RUN_JOB_EXIT_CODE=" + strings.Fields(want)[1], "USER=root", "PATH="} {
			if !strings.Contains(string(env), kv) {
				t.Errorf("job %s: the hook's environment lacks %s:\n%s", id, kv, env)
			}
		}
		if strings.Contains(string(env), "hunter2") || strings.Contains(string(env), "CMESH_RUN_PROGRESS") {
			t.Errorf("job %s: the job's own variables reached the hook:\n%s", id, env)
		}
		if out := string(l.must("log", "--hook", id)); out != "hook output for "+id+"\n" {
			t.Errorf("log --hook %s: %q", id, out)
		}
	}
	// The hook's output is apart from the job's.
	if out := string(l.must("log", ok)); out != "job output\n" {
		t.Errorf("log %s: %q, want the job's bytes only", ok, out)
	}
	if r := l.run("log", "--hook", "--json", ok); r.code != 2 {
		t.Errorf("log --hook --json: exit %d, want 2", r.code)
	}
	// A job with no hook configured has none, and log --hook says so.
	plain := newEnv(t)
	id := plain.schedule(nil, "true")
	plain.waitDone(id, startDeadline)
	if r := plain.run("log", "--hook", id); r.code != 3 {
		t.Errorf("log --hook of a job without hooks: exit %d %s, want 3", r.code, r.stderr)
	}
}

func TestHookNeverHoldsTheJobBack(t *testing.T) {
	l := newHookLab(t, `on_finish = ["HOOK", "finish", "slow"]`+"\n")
	id := l.schedule(nil, "true")
	t0 := time.Now()
	if code := l.wait(id); code != 0 {
		t.Fatalf("wait: %d", code)
	}
	j := l.status(id)
	if j.State != "succeeded" || time.Since(t0) > 20*time.Second {
		t.Fatalf("job %v after wait", j.job)
	}
	// The hook (2 s) may still run: the job is finished all the same.
	if j.Hook != nil && j.Hook.FinishedAt == nil {
		t.Logf("status says succeeded while the hook runs, as it must")
	}
	j = l.hookDone(id, 30*time.Second)
	if j.State != "succeeded" || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Errorf("the hook changed the job: %v", j.job)
	}
}

func TestHookFailsHangsAndForks(t *testing.T) {
	l := newHookLab(t, `on_finish = ["HOOK", "finish", "fail"]
[profiles.hang]
command = ["/bin/true"]
on_finish = ["HOOK", "finish", "hang"]
hook_timeout = "1s"
[profiles.fork]
command = ["/bin/true"]
on_finish = ["HOOK", "finish", "fork"]
`)
	// A hook that fails: its exit code is kept, the job stays as it ended.
	id := l.schedule(nil, "true")
	j := l.hookDone(id, startDeadline)
	if j.State != "succeeded" || j.Hook.ExitCode == nil || *j.Hook.ExitCode != 7 {
		t.Errorf("a failing hook: job %s, hook %+v; want succeeded with hook exit 7", j.State, *j.Hook)
	}
	// A hook that hangs: killed at its timeout, its whole tree.
	id = l.schedule([]string{"--profile", "hang"})
	j = l.hookDone(id, startDeadline)
	if !j.Hook.TimedOut || j.Hook.ExitCode == nil || *j.Hook.ExitCode != 137 || j.Hook.FinishedAt.Sub(j.Hook.StartedAt) > 15*time.Second {
		t.Errorf("a hanging hook: %+v; want timed out, exit 137, about 1 s", *j.Hook)
	}
	if pid := readPID(t, filepath.Join(l.dir, "hang.pid")); itest.Alive(pid) {
		t.Errorf("the hung hook (pid %d) still runs", pid)
	}
	if !strings.Contains(string(l.must("log", "--hook", id)), "timeout") {
		t.Errorf("log --hook does not say the hook timed out")
	}
	// A hook whose child outlives it: the child is killed when the hook exits.
	id = l.schedule([]string{"--profile", "fork"})
	j = l.hookDone(id, startDeadline)
	if j.Hook.ExitCode == nil || *j.Hook.ExitCode != 0 {
		t.Errorf("the forking hook: %+v", *j.Hook)
	}
	pid := readPID(t, filepath.Join(l.dir, "child.pid"))
	waitFor(t, 10*time.Second, "the hook's child to be killed", func() bool { return !itest.Alive(pid) })
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, 10*time.Second, path, func() bool {
		b, _ := os.ReadFile(path)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	})
	return pid
}

func TestHookOfACanceledJob(t *testing.T) {
	l := newHookLab(t, `on_finish = ["HOOK", "finish", "slow"]`+"\n")
	id := l.schedule(nil, "sleep", "300")
	waitFor(t, startDeadline, "the job to run", func() bool { return l.status(id).State == "running" })
	l.must("cancel", "--grace", "1s", id)
	waitFor(t, 20*time.Second, "its hook to start", func() bool { return len(l.runsOf(id)) == 1 })
	// Canceled again while its hook runs: nothing changes, the hook goes on, once.
	if r := l.run("cancel", id); r.code != 0 {
		t.Errorf("cancel of a job whose hook runs: exit %d: %s", r.code, r.stderr)
	}
	j := l.hookDone(id, 30*time.Second)
	if j.State != "canceled" || j.Hook.ExitCode == nil || *j.Hook.ExitCode != 0 {
		t.Errorf("job %s hook %+v; want canceled, the hook's exit 0", j.State, *j.Hook)
	}
	if got := l.runsOf(id); len(got) != 1 || !strings.HasPrefix(got[0], "canceled ") || !strings.HasSuffix(got[0], " finish") {
		t.Errorf("hook runs %q, want one, for canceled", got)
	}
	// A queued job canceled before it started: its canceler starts the hook.
	q := l.schedule([]string{"--in", "1h"}, "true")
	l.must("cancel", q)
	l.hookDone(q, 30*time.Second)
	if got := l.runsOf(q); !slices.Equal(got, []string{"canceled - finish"}) {
		t.Errorf("queued job canceled: hook runs %q", got)
	}
}

func TestTwentyHooksAtOnce(t *testing.T) {
	l := newHookLab(t, twoHooks)
	start := time.Now().Add(3 * time.Second)
	var ids []string
	for i := 0; i < 20; i++ {
		// They all end together: each waits for the same moment.
		ids = append(ids, l.schedule(nil, "sh", "-c", fmt.Sprintf("while [ $(date +%%s) -lt %d ]; do sleep 0.05; done; exit %d", start.Unix(), i%2)))
	}
	for _, id := range ids {
		l.hookDone(id, 2*startDeadline)
	}
	b, _ := os.ReadFile(l.runs)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 20 {
		t.Errorf("%d hook runs for 20 jobs:\n%s", len(lines), b)
	}
	for i, id := range ids {
		want := "succeeded 0 finish"
		if i%2 == 1 {
			want = "failed 1 failure"
		}
		if got := l.runsOf(id); !slices.Equal(got, []string{want}) {
			t.Errorf("job %s: runs %q, want [%q]", id, got, want)
		}
	}
}

func TestHookOfALostJob(t *testing.T) {
	l := newHookLab(t, twoHooks)
	id := l.schedule(nil, "sleep", "300")
	var j hookJob
	waitFor(t, startDeadline, "the job to run", func() bool { j = l.status(id); return j.State == "running" })
	var rec struct {
		WrapperPID int `json:"wrapper_pid"`
	}
	b, _ := os.ReadFile(filepath.Join(l.state, "jobs", id+".json"))
	itest.Must(t, json.Unmarshal(b, &rec))
	// The wrapper and the job die without an end marker.
	_ = syscall.Kill(rec.WrapperPID, syscall.SIGKILL)
	_ = syscall.Kill(-*j.PID, syscall.SIGKILL)
	// Many readers at once find it lost: one of them runs the hook, once.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			args := [][]string{{"status", id}, {"list"}, {"status", "--json", id}, {"prune", "--older-than", "30d"}}[i%4]
			l.run(args...)
		}(i)
	}
	wg.Wait()
	j = l.hookDone(id, 30*time.Second)
	if j.State != "lost" {
		t.Errorf("state %s, want lost", j.State)
	}
	if got := l.runsOf(id); !slices.Equal(got, []string{"lost - failure"}) {
		t.Errorf("hook runs %q, want one on_failure for lost", got)
	}
	// Readers that come later run nothing more.
	for i := 0; i < 3; i++ {
		l.run("status", id)
		l.run("list")
	}
	if got := l.runsOf(id); len(got) != 1 {
		t.Errorf("hook runs %q after more readers", got)
	}
}

func TestProgress(t *testing.T) {
	e := newEnv(t)
	id := e.schedule(nil, "sh", "-c", `p=$CMESH_RUN_PROGRESS
echo "1/4 fetching" > "$p"; sleep 0.5
printf '2/4 building\nnot progress\n9/4 too far\n-1/4 no\n' >> "$p"; sleep 0.5
echo "3/4 deploying" >> "$p"; sleep 30`)
	var seen []string
	waitFor(t, startDeadline, "progress 3/4", func() bool {
		var j hookJob
		itest.Must(t, json.Unmarshal(e.must("status", "--json", id), &j))
		if j.Progress == nil {
			return false
		}
		got := fmt.Sprintf("%d/%d %s", j.Progress.Done, j.Progress.Total, j.Progress.Message)
		if len(seen) == 0 || seen[len(seen)-1] != got {
			seen = append(seen, got)
		}
		return got == "3/4 deploying"
	})
	for _, s := range seen {
		if !slices.Contains([]string{"1/4 fetching", "2/4 building", "3/4 deploying"}, s) {
			t.Errorf("progress %q: a malformed line was taken", s)
		}
	}
	var chunk struct {
		Progress *struct{ Done, Total int64 } `json:"progress"`
	}
	itest.Must(t, json.Unmarshal(e.must("log", "--json", id), &chunk))
	if chunk.Progress == nil || chunk.Progress.Done != 3 || chunk.Progress.Total != 4 {
		t.Errorf("log --json progress %+v, want 3/4", chunk.Progress)
	}
	if out := string(e.must("status", id)); !strings.Contains(out, "progress: 3/4 (75%) deploying") {
		t.Errorf("status text lacks the progress line:\n%s", out)
	}
	e.must("cancel", "--grace", "1s", id)
	// A progress file the job replaced by a link to a file it may not read: never followed.
	id = e.schedule(nil, "sh", "-c", `ln -sf /etc/shadow "$CMESH_RUN_PROGRESS"; sleep 30`)
	waitFor(t, startDeadline, "the link", func() bool {
		fi, err := os.Lstat(filepath.Join(e.state, "jobs", id+".progress"))
		return err == nil && fi.Mode()&os.ModeSymlink != 0
	})
	if out := e.must("status", "--json", id); strings.Contains(string(out), `"progress"`) {
		t.Errorf("a progress link was followed: %s", out)
	}
	e.must("cancel", "--grace", "1s", id)
}

// A wrapper killed while its job's hook runs: the hook is claimed, so nobody runs it again, and
// the record says it started and never said how it ended.
func TestHookNotRerunAfterItsWrapperDied(t *testing.T) {
	l := newHookLab(t, `on_finish = ["HOOK", "finish", "slow"]`+"\n")
	id := l.schedule(nil, "true")
	waitFor(t, startDeadline, "the hook to start", func() bool { return len(l.runsOf(id)) == 1 })
	var rec struct {
		WrapperPID int `json:"wrapper_pid"`
	}
	b, _ := os.ReadFile(filepath.Join(l.state, "jobs", id+".json"))
	itest.Must(t, json.Unmarshal(b, &rec))
	itest.Must(t, syscall.Kill(rec.WrapperPID, syscall.SIGKILL))
	waitFor(t, 10*time.Second, "the wrapper to die", func() bool { return !itest.Alive(rec.WrapperPID) })
	for i := 0; i < 3; i++ {
		l.run("status", id)
		l.run("list")
		l.run("prune", "--older-than", "30d")
	}
	j := l.status(id)
	if j.State != "succeeded" || j.Hook == nil || j.Hook.FinishedAt != nil {
		t.Errorf("job %s hook %+v: want succeeded, its hook started and never finished", j.State, j.Hook)
	}
	if got := l.runsOf(id); len(got) != 1 {
		t.Errorf("hook runs %q after its wrapper died: want the one run", got)
	}
}
