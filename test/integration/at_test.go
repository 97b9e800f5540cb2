//go:build integration

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cmesh/cmesh-run/test/itest"
)

func TestJobSucceeds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule([]string{"--name", "ok-job"}, "sh", "-c", "echo hello; echo to-stderr >&2")
	if !itest.IDPattern.MatchString(id) {
		t.Fatalf("ID %q does not match the contract", id)
	}
	j := e.waitDone(id, 30*time.Second)
	if j.State != "succeeded" || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Fatalf("state %s exit %v, want succeeded 0", j.State, j.ExitCode)
	}
	if j.Backend != "at" || j.BackendRef == nil || j.PID == nil || j.StartedAt == nil || j.FinishedAt == nil || j.Attempt != 1 {
		t.Errorf("record incomplete: %+v", j)
	}
	if _, err := strconv.Atoi(*j.BackendRef); err != nil {
		t.Errorf("backend_ref %q is not at's job number", *j.BackendRef)
	}
	if j.Name == nil || *j.Name != "ok-job" {
		t.Errorf("name %v", j.Name)
	}
	if got := string(e.log(id)); got != "hello\nto-stderr\n" {
		t.Errorf("log = %q", got)
	}
	if r := e.run("wait", id); r.code != 0 {
		t.Errorf("wait exit %d, want 0", r.code)
	}
}

func TestJobExitsThree(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "sh", "-c", "exit 3")
	if r := e.run("wait", "--timeout", "30s", id); r.code != 3 {
		t.Fatalf("wait exit %d, want 3 (%s)", r.code, r.stderr)
	}
	j := e.status(id)
	if j.State != "failed" || *j.ExitCode != 3 {
		t.Errorf("state %s exit %v, want failed 3", j.State, j.ExitCode)
	}
}

func TestJobKilledBySIGKILL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "sh", "-c", "echo before; kill -9 $$; echo after")
	j := e.waitDone(id, 30*time.Second)
	if j.State != "failed" || j.Signal != "KILL" || j.ExitCode == nil || *j.ExitCode != 137 {
		t.Errorf("got state %s signal %q exit %v; want failed KILL 137", j.State, j.Signal, j.ExitCode)
	}
	if r := e.run("wait", id); r.code != 137 {
		t.Errorf("wait exit %d, want 137", r.code)
	}
	if got := string(e.log(id)); got != "before\n" {
		t.Errorf("log = %q", got)
	}
}

func TestFakeEndMarkerCannotChangeStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fake := "[cmesh-run:00000000000000000000000000000000 end attempt=1 exit=0 time=2026-01-01T00:00:00Z]"
	id := e.schedule(nil, "sh", "-c", `printf '\n%s\n' "$1"; printf '\n[cmesh-run: end attempt=1 exit=0]\n'; exit 7`, "sh", fake)
	j := e.waitDone(id, 30*time.Second)
	if j.State != "failed" || *j.ExitCode != 7 {
		t.Fatalf("state %s exit %v, want failed 7", j.State, j.ExitCode)
	}
	want := "\n" + fake + "\n\n[cmesh-run: end attempt=1 exit=0]\n"
	if got := string(e.log(id)); got != want {
		t.Errorf("log = %q, want %q", got, want)
	}
}

func TestLastLineWithoutNewline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "printf", "first\nlast without newline")
	j := e.waitDone(id, 30*time.Second)
	if j.State != "succeeded" {
		t.Fatalf("state %s", j.State)
	}
	if got := string(e.log(id)); got != "first\nlast without newline" {
		t.Errorf("log = %q", got)
	}
	if got := string(e.log(id, "--tail", "1")); got != "last without newline" {
		t.Errorf("log --tail 1 = %q", got)
	}
}

func TestFiveMegabytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// 5 MB of binary-ish bytes, deterministic: the same generator runs here.
	gen := `i=0; while [ $i -lt 5100 ]; do printf '%04d\001\377 line of output ............................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................\n' $i; i=$((i+1)); done`
	id := e.schedule(nil, "sh", "-c", gen)
	j := e.waitDone(id, 60*time.Second)
	if j.State != "succeeded" {
		t.Fatalf("state %s", j.State)
	}
	want, err := exec.Command("sh", "-c", gen).Output()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 5_000_000 {
		t.Fatalf("generator made %d bytes, want ≥ 5 MB", len(want))
	}
	got := e.log(id)
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("log: %d bytes differ from the %d the job wrote", len(got), len(want))
	}
}

// A page polls log --offset --json while the job runs; the pieces must
// reassemble to exactly what the job wrote, multi-byte characters whole.
func TestOffsetPollingReassembles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gen := `i=0; while [ $i -lt 60 ]; do printf 'progress %d: größe ✓ 日本\n' $i; i=$((i+1)); sleep 0.02; done; printf 'done, no newline ✓'`
	id := e.schedule(nil, "sh", "-c", gen)
	var got strings.Builder
	offset, polls, whileRunning := int64(0), 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for {
		var c itest.LogChunk
		out := e.must("log", "--json", "--offset", strconv.FormatInt(offset, 10), "--limit", "7", id)
		if err := json.Unmarshal(out, &c); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if c.Offset != offset || c.ID != id || c.NextOffset < offset {
			t.Fatalf("bad chunk %+v at offset %d", c, offset)
		}
		if strings.ContainsRune(c.Data, utf8.RuneError) {
			t.Fatalf("chunk at %d cut a character: %q", offset, c.Data)
		}
		if c.State == "running" && c.Data != "" {
			whileRunning++
		}
		got.WriteString(c.Data)
		offset = c.NextOffset
		polls++
		if c.Done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done after %d polls", polls)
		}
	}
	want, _ := exec.Command("sh", "-c", gen).Output()
	if got.String() != string(want) {
		t.Errorf("reassembled %q\nwant %q", got.String(), want)
	}
	if whileRunning == 0 {
		t.Errorf("no data arrived while the job ran")
	}
}

// Every nasty argv reaches the program exactly, through at's spool and sh.
func TestArgvExact(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	argv := []string{"printf", `%s\0`, "", "a b", "it's", "#x", "FOO=bar", "line1\nline2", "$(id)", "`id`",
		`"`, `\`, "\xff\xfe invalid", "~", "a=~/x", "*", strings.Repeat("x", 100<<10)}
	id := e.schedule(nil, argv...)
	if j := e.waitDone(id, 30*time.Second); j.State != "succeeded" {
		t.Fatalf("state %s: %s", j.State, e.log(id))
	}
	want := strings.Join(argv[2:], "\x00") + "\x00"
	if got := string(e.log(id)); got != want {
		t.Errorf("argv changed on the way:\n got %q\nwant %q", trunc(got), trunc(want))
	}
	// --command splits as sh would and expands nothing.
	out := e.must("schedule", "--command", `printf '%s|' "a b" 'c d' $HOME '$(id)' e\ f`)
	id = strings.TrimSpace(string(out))
	e.waitDone(id, 30*time.Second)
	if got := string(e.log(id)); got != "a b|c d|$HOME|$(id)|e f|" {
		t.Errorf("--command: got %q", got)
	}
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// The job runs in its workdir, in a session of its own, with stdin from
// /dev/null and only the clean environment; nothing of the caller's lands
// in the job or in at's spool file.
func TestCleanEnvironmentAndIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wd := t.TempDir()
	secret := "caller-secret-" + strconv.Itoa(os.Getpid())
	r := e.runEnv([]string{"DB_PASSWORD=" + secret, "HTTP_X_SECRET=" + secret},
		"schedule", "--workdir", wd, "--name", "iso", "--env", "EXTRA=x y", "--",
		"sh", "-c", `sleep 1; pwd; env | sort; read line && echo "stdin gave $line" || echo "stdin empty"; ps -o pid=,sid=,pgid= -p $$`)
	if r.code != 0 {
		t.Fatalf("schedule: %s", r.stderr)
	}
	id := strings.TrimSpace(string(r.stdout))
	// While it runs, at's spool holds its script: no caller variable there.
	waitFor(t, startDeadline, "the job to start", func() bool { return e.status(id).State == "running" })
	spool, _ := filepath.Glob("/var/spool/cron/atjobs/*")
	found := false
	for _, f := range spool {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte(id)) {
			continue
		}
		found = true
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("the caller's secret is in at's spool file %s", f)
		}
	}
	if !found {
		t.Errorf("no spool file holds job %s", id)
	}
	j := e.waitDone(id, 30*time.Second)
	out := string(e.log(id))
	if j.State != "succeeded" {
		t.Fatalf("state %s: %s", j.State, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != wd {
		t.Errorf("pwd = %q, want %q", lines[0], wd)
	}
	var keys []string
	for _, l := range lines[1:] {
		if k, _, ok := strings.Cut(l, "="); ok && !strings.Contains(k, " ") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	// sh adds PWD itself; everything else comes from cmesh-run.
	wantKeys := []string{"CMESH_RUN_JOB_ID", "CMESH_RUN_JOB_NAME", "CMESH_RUN_PROGRESS", "EXTRA", "HOME", "LANG", "LOGNAME", "PATH", "PWD", "SHELL", "USER"}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("job environment keys %v, want %v", keys, wantKeys)
	}
	for _, want := range []string{"CMESH_RUN_JOB_ID=" + id, "CMESH_RUN_JOB_NAME=iso", "EXTRA=x y", "LANG=C.UTF-8",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "stdin empty"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Errorf("the caller's secret reached the job")
	}
	f := strings.Fields(lines[len(lines)-1])
	if len(f) != 3 || f[0] != f[1] || f[0] != f[2] || f[0] != strconv.Itoa(*j.PID) {
		t.Errorf("pid/sid/pgid = %v, want the job's own session led by pid %d", f, *j.PID)
	}
	for _, p := range []string{e.state + "/jobs/" + id + ".json", e.state + "/jobs/" + id + ".out"} {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("the caller's secret is in %s", p)
		}
	}

	// --inherit-env passes the caller's environment on, under the clean one.
	r = e.runEnv([]string{"DB_PASSWORD=" + secret}, "schedule", "--inherit-env", "--", "sh", "-c", "echo $DB_PASSWORD; echo $LANG")
	id = strings.TrimSpace(string(r.stdout))
	e.waitDone(id, 30*time.Second)
	if got := string(e.log(id)); got != secret+"\nC.UTF-8\n" {
		t.Errorf("--inherit-env: %q", got)
	}
}

func TestProgramNotFoundAndBadWorkdir(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "no-such-program-xyz", "arg")
	j := e.waitDone(id, 30*time.Second)
	if j.State != "failed" || *j.ExitCode != 127 {
		t.Errorf("missing program: state %s exit %v, want failed 127", j.State, j.ExitCode)
	}
	if got := string(e.log(id)); !strings.Contains(got, "no-such-program-xyz: command not found") {
		t.Errorf("log = %q", got)
	}
	wd := t.TempDir()
	id = e.schedule([]string{"--workdir", wd}, "pwd")
	// The workdir vanishes between schedule and start (possible with a
	// queue): the job fails with 126 and says why.
	os.Remove(wd)
	j = e.waitDone(id, 30*time.Second)
	if j.State == "failed" {
		if *j.ExitCode != 126 || !strings.Contains(string(e.log(id)), "workdir") {
			t.Errorf("vanished workdir: exit %v log %q", j.ExitCode, e.log(id))
		}
	}
}

// 200 jobs from 16 parallel callers: 200 distinct IDs, all finish, every
// record is valid.
func TestBurst(t *testing.T) {
	e := newEnv(t)
	const callers, each = 16, 200 / 16
	total := callers * each
	if total < 192 {
		t.Fatal("bad arithmetic")
	}
	extra := 200 - total
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		n := each
		if c < extra {
			n++
		}
		wg.Add(1)
		go func(c, n int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				r := e.run("schedule", "--", "sh", "-c", fmt.Sprintf("echo caller %d job %d", c, i))
				mu.Lock()
				if r.code != 0 {
					t.Errorf("schedule: exit %d: %s", r.code, r.stderr)
				} else {
					ids = append(ids, strings.TrimSpace(string(r.stdout)))
				}
				mu.Unlock()
			}
		}(c, n)
	}
	wg.Wait()
	if len(ids) != 200 {
		t.Fatalf("%d IDs, want 200", len(ids))
	}
	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	if len(distinct) != 200 {
		t.Fatalf("%d distinct IDs of 200", len(distinct))
	}
	waitFor(t, 120*time.Second, "200 jobs to finish", func() bool {
		var jobs []job
		if err := json.Unmarshal(e.must("list", "--json", "--limit", "0"), &jobs); err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, j := range jobs {
			if itest.Finished(j.State) {
				done++
			}
		}
		return len(jobs) == 200 && done == 200
	})
	for _, id := range ids {
		b, err := os.ReadFile(filepath.Join(e.state, "jobs", id+".json"))
		var j job
		if err != nil || json.Unmarshal(b, &j) != nil || j.ID != id {
			t.Fatalf("record of %s invalid: %v %s", id, err, b)
		}
		if j.State != "succeeded" {
			t.Errorf("job %s: %s", id, j.State)
		}
	}
	if act, _ := os.ReadDir(filepath.Join(e.state, "active")); len(act) != 0 {
		t.Errorf("%d jobs still marked active", len(act))
	}
}

// A user that at.deny lists gets exit 4, a message naming the file and
// line, and nothing queued.
func TestDeniedUser(t *testing.T) {
	needAtd(t)
	line := 0
	data, _ := os.ReadFile("/etc/at.deny")
	for i, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == "nobody" {
			line = i + 1
		}
	}
	if _, err := os.Stat("/etc/at.allow"); err == nil || line == 0 {
		t.Skip("this machine's at.allow/at.deny do not deny nobody")
	}
	before := atQueue(t)
	// nobody must be able to reach the binary and the state dir.
	state, err := os.MkdirTemp("/tmp", "cmesh-run-denied")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	os.Chmod(state, 0o777)
	nbin := filepath.Join(state, "cmesh-run")
	if b, err := os.ReadFile(bin); err != nil || os.WriteFile(nbin, b, 0o755) != nil {
		t.Fatalf("copy binary: %v", err)
	}
	cmd := exec.Command(nbin, "--state-dir", state+"/s", "schedule", "--json", "--", "true")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "CMESH_RUN_CONFIG=" + emptyConfig}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 4 {
		t.Fatalf("exit %v, want 4; stderr %s", err, se.String())
	}
	// nobody cannot read /etc/at.deny (root:daemon 0640 on Debian): the
	// message names the file and the line's content, and the sed that
	// deletes it.
	if !strings.Contains(se.String(), "may not use at: /etc/at.deny lists it, or at cannot read it") ||
		!strings.Contains(se.String(), `sed -i '/^nobody$/d' /etc/at.deny`) {
		t.Errorf("message does not name the file and line: %s", se.String())
	}
	if !strings.Contains(so.String(), `"code":"backend_unavailable"`) {
		t.Errorf("--json error object missing: %s", so.String())
	}
	if after := atQueue(t); len(after) > len(before) {
		t.Errorf("something was queued: %v -> %v", before, after)
	}
	if _, err := os.Stat(state + "/s/jobs"); err == nil {
		entries, _ := os.ReadDir(state + "/s/jobs")
		if len(entries) > 0 {
			t.Errorf("a refused schedule left files: %v", entries)
		}
	}
}

// With atd stopped, schedule exits 4 with the fix and queues nothing.
// Runs last and alone: it stops and restarts the machine's atd.
func TestZAtdDown(t *testing.T) {
	needAtd(t)
	e := newEnv(t)
	pid, _ := itest.AtdPID()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("stop atd: %v", err)
	}
	restarted := false
	defer func() {
		if !restarted {
			exec.Command("/usr/sbin/atd").Run()
		}
	}()
	waitFor(t, 10*time.Second, "atd to stop", func() bool { _, ok := itest.AtdPID(); return !ok })
	before := atQueue(t)
	r := e.run("schedule", "--", "true")
	if r.code != 4 || !strings.Contains(string(r.stderr), "atd is not running") || !strings.Contains(string(r.stderr), "hint: start it") {
		t.Errorf("exit %d, stderr %s; want 4 with the fix", r.code, r.stderr)
	}
	if after := atQueue(t); len(after) != len(before) {
		t.Errorf("queue changed with atd down: %v -> %v", before, after)
	}
	if _, err := os.Stat(e.state + "/jobs"); err == nil {
		if entries, _ := os.ReadDir(e.state + "/jobs"); len(entries) > 0 {
			t.Errorf("a refused schedule left files: %v", entries)
		}
	}
	// doctor sees it too, with the fix.
	rep, code := doctor(t, 0, e.state, "--fpm-conf", "/nonexistent/*.conf")
	c := find(t, rep, "atd running")
	if code != 1 || c.Status != "fail" || !strings.Contains(c.Fix, "systemctl enable --now atd") {
		t.Errorf("doctor with atd down: exit %d, %+v", code, c)
	}
	if c := find(t, rep, "probe job"); c.Status == "ok" {
		t.Errorf("probe job ok with atd down")
	}
	if err := exec.Command("/usr/sbin/atd").Run(); err != nil {
		t.Fatalf("restart atd: %v", err)
	}
	restarted = true
	waitFor(t, 10*time.Second, "atd to run again", func() bool { _, ok := itest.AtdPID(); return ok })
}

// log --follow streams while the job runs and exits 0 once it finished,
// having printed exactly the job's bytes.
func TestFollow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "sh", "-c", `for i in 1 2 3 4 5 6 7 8 9 10; do echo "tick $i"; sleep 0.1; done; printf end`)
	r := e.run("log", "--follow", id)
	if r.code != 0 {
		t.Fatalf("log --follow: exit %d %s", r.code, r.stderr)
	}
	want := "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\ntick 6\ntick 7\ntick 8\ntick 9\ntick 10\nend"
	if string(r.stdout) != want {
		t.Errorf("followed %q, want %q", r.stdout, want)
	}
	if j := e.status(id); j.State != "succeeded" {
		t.Errorf("follow returned while the job is %s", j.State)
	}
}

func TestWaitTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.schedule(nil, "sleep", "3")
	if r := e.run("wait", "--timeout", "100ms", id); r.code != 124 {
		t.Errorf("wait --timeout before the end: exit %d, want 124", r.code)
	}
	if r := e.run("wait", "--timeout", "30s", id); r.code != 0 {
		t.Errorf("wait: exit %d, want 0", r.code)
	}
}

// Diagnostics go to stderr only: stdout stays the ID or the JSON.
func TestDiagnosticsNeverOnStdout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.run("--log-level", "debug", "schedule", "--", "true")
	if r.code != 0 || !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\n$`).Match(r.stdout) {
		t.Fatalf("stdout %q (exit %d)", r.stdout, r.code)
	}
	if !bytes.Contains(r.stderr, []byte("job scheduled")) {
		t.Errorf("debug diagnostics missing from stderr: %s", r.stderr)
	}
	r = e.run("--log-level", "debug", "--log-format", "json", "status", "--json", strings.TrimSpace(string(r.stdout)))
	var j job
	if err := json.Unmarshal(r.stdout, &j); err != nil {
		t.Errorf("status --json stdout is not one JSON object: %q", r.stdout)
	}
}

// A state dir on a tiny tmpfs that is full: schedule fails with a clear
// error, leaves no half-written record and queues nothing.
func TestFullDisk(t *testing.T) {
	needAtd(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	e := &env{t: t, state: filepath.Join(mnt, "state")}
	defer e.settle()              // before the umount: no wrapper may write there after
	id := e.schedule(nil, "true") // the state dir exists, one job fits
	e.waitDone(id, 30*time.Second)
	// Fill the disk.
	f, _ := os.Create(filepath.Join(mnt, "filler"))
	f.Write(make([]byte, 64<<10))
	f.Close()
	before := atQueue(t)
	var lastErr string
	succeeded := 0
	accepted := map[string]bool{}
	for i := 0; i < 5; i++ {
		r := e.run("schedule", "--json", "--", "sleep", "30")
		if r.code == 0 {
			// A job's files may still fit in what is left; try again.
			succeeded++
			var j job
			json.Unmarshal(r.stdout, &j)
			if j.BackendRef != nil {
				accepted[*j.BackendRef] = true
			}
			continue
		}
		lastErr = string(r.stderr)
		if r.code != 1 || !strings.Contains(lastErr, "no space left on device") || !strings.Contains(lastErr, "hint: free space") {
			t.Errorf("exit %d: %s", r.code, lastErr)
		}
		if !strings.Contains(string(r.stdout), `"code":"internal"`) {
			t.Errorf("--json error object missing: %s", r.stdout)
		}
	}
	if lastErr == "" {
		t.Fatal("every schedule succeeded on a full disk")
	}
	// A refused schedule must not have left an at job behind.
	for ref := range atQueue(t) {
		if !before[ref] && !accepted[ref] {
			t.Errorf("at job %s appeared, but no schedule was accepted for it", ref)
		}
	}

	entries, _ := os.ReadDir(filepath.Join(e.state, "jobs"))
	for _, en := range entries {
		b, _ := os.ReadFile(filepath.Join(e.state, "jobs", en.Name()))
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("temp file left: %s", en.Name())
		}
		if strings.HasSuffix(en.Name(), ".json") && !json.Valid(b) {
			t.Errorf("half-written record %s: %q", en.Name(), b)
		}
	}
	// Records that exist are whole, and list still works.
	t.Logf("%d of 5 schedules fit on the full disk", succeeded)
	if r := e.run("list", "--json"); r.code != 0 {
		t.Errorf("list on a full disk: %s", r.stderr)
	}
	os.Remove(filepath.Join(mnt, "filler")) // room for the accepted jobs' ends
}
