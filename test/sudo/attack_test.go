//go:build integration

// Issue 12: the attacks www-data can mount after a PHP compromise, through the real sudo rule
// and the real state dir, and the root-side gaps (audit fallback, control characters, root's
// job files). Each test here failed on the code the issue was filed against.

package sudo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lab is what the attack tests add to the world: a long-running profile, scratch dirs, files
// only cmesh-test may read, and the lock holder.
type lab struct {
	dir        string // root/lab, root's, 0755
	markers    string // root/markers, 0777: where an attacker's command would leave its trace
	secret     string // a string only cmesh-test's files hold
	secretConf string // a config-like file of cmesh-test's, 0600, naming the secret
	secretPool string // a php-fpm pool file of cmesh-test's, 0600, naming the secret
	holder     string // the lock holder binary, runnable by www-data
}

// buildArgv is what the build profile runs for org and name.
func buildArgv(org, name string) []string {
	return []string{"/bin/sh", "-c", "echo build $0 $1; id -un; env", org, name}
}

// attackConfig is the suite's config plus a profile whose job runs until it is stopped: a
// cancel of a running job, and a --unique schedule that must find the job still unfinished,
// need one. It sets neither timeout nor retries, so that the build profile's ceilings stay
// the only ones.
func (w *world) attackConfig() string {
	return w.config() + fmt.Sprintf(`
[profiles.sleep]
command = ["/bin/sh", "-c", "echo sleeping $0; exec /bin/sleep 300", "{tag}"]
args = { tag = %q }
name = "sleep-{tag}"
`, argPattern)
}

func installConfig(t *testing.T, text string) {
	t.Helper()
	tmp := confFile + ".test-tmp"
	must(t, writeSynced(tmp, []byte(text), 0o644))
	must(t, os.Chown(tmp, 0, 0))
	must(t, os.Chmod(tmp, 0o644))
	must(t, os.Rename(tmp, confFile))
}

func setupAttack(t *testing.T, w *world) *lab {
	l := &lab{dir: filepath.Join(w.root, "lab"), markers: filepath.Join(w.root, "markers"),
		secret: "topsecret-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	must(t, os.Mkdir(l.dir, 0o755))
	must(t, os.Mkdir(l.markers, 0o777))
	must(t, os.Chmod(l.markers, 0o777))
	installConfig(t, w.attackConfig())

	// Files of cmesh-test's that www-data cannot read: a file argument under sudo would
	// have cmesh-run read them for www-data.
	l.secretConf = filepath.Join(l.dir, "private.toml")
	l.secretPool = filepath.Join(l.dir, "private-pool.conf")
	for path, text := range map[string]string{
		l.secretConf: fmt.Sprintf("%s = %q\n", strings.ReplaceAll(l.secret, "-", "_"), l.secret),
		l.secretPool: fmt.Sprintf("[%s]\nuser = %s\nlisten = /run/%s.sock\n", l.secret, l.secret, l.secret),
	} {
		must(t, writeSynced(path, []byte(text), 0o600))
		must(t, os.Chown(path, w.runUID, w.runGID))
	}
	if r := w.pool.run(t, []string{"/bin/cat", l.secretConf}, nil, nil); r.Exit == 0 {
		t.Fatalf("www-data can read %s: the file-argument tests would prove nothing", l.secretConf)
	}

	l.holder = buildHolder(t, l.dir)

	// The new profile loads through sudo.
	r := w.pool.sudo(t, "config", "show")
	if r.Exit != 0 || !strings.Contains(r.Stdout, "sleep") {
		t.Fatalf("sudo cmesh-run config show after adding the sleep profile: exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
	}
	return l
}

// ---------------------------------------------------------------------------------------------
// 1. Commands that have no business under sudo

func testSudoInternals(t *testing.T, w *world, l *lab) {
	p := w.pool
	viaSudo := func(args ...string) []string {
		return append([]string{sudoBin, "-n", "-u", runAs, installed}, args...)
	}
	// worker would run until stopped, doctor runs a probe job: timeout bounds what a
	// command that is not refused costs (124 when it strikes), so that the page answers.
	within := func(secs int, argv []string) []string {
		return append([]string{"/usr/bin/timeout", "-k", "3", strconv.Itoa(secs)}, argv...)
	}
	marker := func(name string) string { return filepath.Join(l.markers, name) }
	cases := []struct {
		name   string
		argv   []string
		marker string // must not exist afterwards
		secret bool   // the output and the audit line must not show l.secret
	}{
		{name: "_exec", argv: viaSudo("_exec", "--workdir", "/", "--", "/bin/sh", "-c", "/usr/bin/touch "+marker("exec")), marker: marker("exec")},
		{name: "_man", argv: viaSudo("_man")},
		{name: "worker", argv: within(8, viaSudo("worker"))},
		{name: "drain", argv: within(15, viaSudo("drain"))},
		{name: "setup", argv: viaSudo("setup")},
		{name: "setup --write", argv: viaSudo("setup", "--write")},
		{name: "config check FILE of cmesh-test's", argv: viaSudo("config", "check", l.secretConf), secret: true},
		{name: "doctor --fpm-conf FILE of cmesh-test's", argv: within(15, viaSudo("doctor", "--fpm-conf", l.secretPool)), secret: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r pageResult
			a := expectDenied(t, w, webUser, false, func() result {
				r = p.run(t, c.argv, nil, nil)
				return r.result
			})
			oneErrorLine(t, r.Stderr)
			if c.marker != "" {
				if _, err := os.Lstat(c.marker); err == nil {
					t.Errorf("%s exists: the command www-data passed ran as %s", c.marker, runAs)
				}
			}
			if c.secret {
				if strings.Contains(r.Stdout+r.Stderr, l.secret) {
					t.Errorf("the output shows what only %s may read:\nstdout %q\nstderr %q", runAs, r.Stdout, r.Stderr)
				}
				if a != nil && strings.Contains(fmt.Sprint(a), l.secret) {
					t.Errorf("the audit line shows what only %s may read: %v", runAs, a)
				}
			}
		})
	}
	// A worker that was not refused must not stay behind to start the jobs of the next tests.
	noWorkerLeft(t, w)

	t.Run("usage error: exit 2 and one audit line", func(t *testing.T) {
		before := takeSnapshot(t, w)
		_, _, off := readAudit(t, w.audit, 0)
		r := p.sudo(t, "schedule", "--bogus-flag")
		if r.Exit != 2 {
			t.Errorf("sudo cmesh-run schedule --bogus-flag: exit %d, want 2; stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
		}
		lines, raw, _ := readAudit(t, w.audit, off)
		if len(lines) != 1 || lines[0].str("outcome") != "refused" || lines[0].str("requested_by") != webUser {
			t.Errorf("want exactly one audit line, outcome refused, requested_by %s; got %d:\n%s", webUser, len(lines), strings.Join(raw, "\n"))
		}
		nothingNew(t, before, takeSnapshot(t, w))
	})

	// _wrap with what an attacker has: a queued job, its nonce read from the record, the
	// profile's workdir, and an argv of its own.
	t.Run("_wrap of a queued job with its nonce", func(t *testing.T) {
		q := queuedJob(t, w, "wrapsudo")
		defer cancelJob(t, w, q.ID)
		recBefore := readFile(t, recordPath(w, q.ID))
		rec := recordAsWebUser(t, w, q.ID)
		m := marker("wrap-sudo")
		spec := specText(rec.Nonce, rec.Workdir, "PATH=/usr/bin:/bin")
		expectDenied(t, w, webUser, false, func() result {
			argv := append([]string{"/bin/sh", "-c", `printf '%s' "$SPEC" | exec "$@"`, "sh"},
				viaSudo("_wrap", "--state-dir", w.stateDir, "--id", q.ID, "--", "/bin/sh", "-c", "/usr/bin/touch "+m)...)
			r := p.run(t, argv, map[string]string{"SPEC": spec}, nil).result
			oneErrorLine(t, r.Stderr)
			return r
		})
		if _, err := os.Lstat(m); err == nil {
			t.Errorf("%s exists: _wrap under sudo ran www-data's argv as %s", m, runAs)
		}
		if after := readFile(t, recordPath(w, q.ID)); !bytes.Equal(after, recBefore) {
			t.Errorf("job %s's record changed:\nbefore %s\nafter  %s", q.ID, recBefore, after)
		}
	})
}

// oneErrorLine fails t unless stderr is what a refusal prints: one "cmesh-run: error:" line,
// perhaps a hint, and nothing else (no diagnostics of cmesh-run's own).
func oneErrorLine(t *testing.T, stderr string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "cmesh-run: error: "):
			n++
		case strings.HasPrefix(line, "hint: "), strings.HasPrefix(line, " "):
		default:
			t.Errorf("stderr has a line that is neither the error nor its hint: %q", line)
		}
	}
	if n != 1 {
		t.Errorf("stderr has %d \"cmesh-run: error:\" lines, want 1: %q", n, stderr)
	}
}

// noWorkerLeft fails t when a `cmesh-run worker` of cmesh-test's still runs, and stops it by
// its PID: only the worker case above can have started one.
func noWorkerLeft(t *testing.T, w *world) {
	t.Helper()
	find := func() []int {
		var pids []int
		for _, pid := range processesOf(w.runUID) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil && slices.Contains(strings.Split(string(b), "\x00"), "worker") {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	if ok, _ := eventually(5*time.Second, func() (bool, string) { return len(find()) == 0, "" }); !ok {
		for _, pid := range find() {
			t.Errorf("a cmesh-run worker of %s (pid %d) outlived its sudo call: SIGKILL", runAs, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// 2. The wrapper, called without sudo

func testForeignArgv(t *testing.T, w *world, l *lab) {
	q := queuedJob(t, w, "wrapdirect")
	defer cancelJob(t, w, q.ID)
	rec := recordAsWebUser(t, w, q.ID)
	if rec.SpecMAC == "" {
		t.Errorf("record of %s has no spec_mac", q.ID)
	}
	try := func(t *testing.T, spec string, argv []string, marker string) {
		before := readFile(t, recordPath(w, q.ID))
		r := runAsUser(t, runAs, spec, 30*time.Second,
			append([]string{installed, "_wrap", "--state-dir", w.stateDir, "--id", q.ID, "--"}, argv...)...)
		t.Logf("_wrap as %s without sudo: exit %d, stderr %q", runAs, r.Exit, strings.TrimSpace(r.Stderr))
		if marker != "" {
			if _, err := os.Lstat(marker); err == nil {
				t.Errorf("%s exists: the wrapper ran an argv the record does not have", marker)
			}
		}
		if r.Exit == 0 {
			t.Errorf("_wrap with a spec or argv other than the record's: exit 0, want non-zero")
		}
		if after := readFile(t, recordPath(w, q.ID)); !bytes.Equal(after, before) {
			t.Errorf("job %s's record changed:\nbefore %s\nafter  %s", q.ID, before, after)
		}
		j := sudoStatus(t, w, q.ID)
		if j.State != "queued" || !slices.Equal(j.Command, q.Command) {
			t.Errorf("after the forged _wrap, status says %s %q; want queued %q", j.State, j.Command, q.Command)
		}
	}
	t.Run("the attacker's argv", func(t *testing.T) {
		m := filepath.Join(l.markers, "wrap-direct")
		try(t, specText(rec.Nonce, rec.Workdir, "PATH=/usr/bin:/bin"), []string{"/bin/sh", "-c", "/usr/bin/touch " + m}, m)
	})
	t.Run("the record's argv with the attacker's environment", func(t *testing.T) {
		try(t, specText(rec.Nonce, rec.Workdir, "PATH=/usr/bin:/bin", "LD_PRELOAD=/tmp/evil.so"), q.Command, "")
	})
}

// ---------------------------------------------------------------------------------------------
// 3. Locks www-data can take

// holderSrc opens everything under a dir that its user can open, locks each as hard as it may
// (flock exclusive, else shared; an fcntl read lock on regular files), reports each, and
// holds them until it is killed.
const holderSrc = `package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	root := os.Args[1]
	var held []*os.File
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err != nil {
			fmt.Printf("skip %s: %v\n", rel, err)
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			fmt.Printf("noopen %s: %v\n", rel, err)
			return nil
		}
		got := ""
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			got += " flock-ex"
		} else if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) == nil {
			got += " flock-sh"
		}
		if d.Type().IsRegular() {
			lk := syscall.Flock_t{Type: syscall.F_RDLCK}
			if syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk) == nil {
				got += " fcntl-rd"
			}
		}
		held = append(held, f)
		fmt.Printf("held %s%s\n", rel, got)
		return nil
	})
	fmt.Printf("ready %d\n", len(held))
	for {
		time.Sleep(time.Hour)
	}
}
`

// buildHolder builds holderSrc into dir/holder (mode 0755: www-data runs it).
func buildHolder(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "holder-src")
	must(t, os.Mkdir(src, 0o755))
	must(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module holder\n\ngo 1.21\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "main.go"), []byte(holderSrc), 0o644))
	bin := filepath.Join(dir, "holder")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the lock holder: %v\n%s", err, out)
	}
	must(t, os.Chmod(bin, 0o755))
	return bin
}

// holder is a running lock holder.
type holder struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	once  sync.Once
}

// stop kills the holder by its PID and waits for it; the kernel drops its locks.
func (h *holder) stop() {
	h.once.Do(func() {
		h.cmd.Process.Kill()
		<-h.done
	})
}

func (h *holder) output() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.lines)
}

// startHolder runs the holder on dir as user name and waits until it holds everything it
// could take; cleanup kills it by its PID.
func startHolder(t *testing.T, bin, name, dir string) *holder {
	t.Helper()
	h := &holder{done: make(chan struct{})}
	h.cmd = exec.Command(bin, dir)
	h.cmd.Env = []string{"PATH=/usr/bin:/bin"}
	h.cmd.Dir = "/"
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credentialOf(t, name)}
	out, err := h.cmd.StdoutPipe()
	must(t, err)
	must(t, h.cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, sc.Text())
			h.mu.Unlock()
		}
		h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(h.stop)
	poll(t, 30*time.Second, "the lock holder to take its locks", func() (bool, string) {
		select {
		case <-h.done:
			t.Fatalf("the lock holder exited: %v\n%s", h.cmd.ProcessState, strings.Join(h.output(), "\n"))
		default:
		}
		lines := h.output()
		return len(lines) > 0 && strings.HasPrefix(lines[len(lines)-1], "ready "), fmt.Sprintf("%d lines", len(lines))
	})
	return h
}

func testLocksHeld(t *testing.T, w *world, l *lab) {
	const limit = 12 // seconds per call; the FPM request itself is cut at 20
	// drain and --unique create their lock files on first use: take them once before the
	// holder starts, so that it finds them.
	if r := runAsUser(t, runAs, "", 30*time.Second, installed, "drain"); r.Exit != 0 {
		t.Fatalf("drain as %s before the holder: exit %d, stderr %q", runAs, r.Exit, r.Stderr)
	}
	running := sudoSchedule(t, w, "--unique", "--profile", "sleep", "--arg", "tag=held")
	defer cancelJob(t, w, running.ID)
	waitState(t, w, running.ID, "running")
	queued := queuedJob(t, w, "lockqueued")
	defer cancelJob(t, w, queued.ID)
	drained := queuedJob(t, w, "lockdrain")
	defer cancelJob(t, w, drained.ID)

	h := startHolder(t, l.holder, webUser, w.stateDir)
	defer h.stop() // before the deferred cancels: they must not meet the held locks
	var held []string
	for _, line := range h.output() {
		if strings.HasPrefix(line, "held ") && strings.Contains(line, " flock-") {
			held = append(held, strings.TrimPrefix(line, "held "))
		}
	}
	t.Logf("www-data holds %d locks in the state dir:\n%s", len(held), strings.Join(held, "\n"))
	// The holder reaches what www-data can read, or this test would prove nothing.
	for _, id := range []string{running.ID, queued.ID} {
		if !slices.ContainsFunc(held, func(s string) bool { return strings.HasPrefix(s, "jobs/"+id+".out ") }) {
			t.Fatalf("the holder got no lock on jobs/%s.out (it can read it): its report:\n%s", id, strings.Join(h.output(), "\n"))
		}
	}

	call := func(t *testing.T, what string, args ...string) (pageResult, bool) {
		t0 := time.Now()
		r := sudoWithin(t, w.pool, limit, args...)
		t.Logf("%s: exit %d in %v", what, r.Exit, time.Since(t0).Round(time.Millisecond))
		if r.Exit == 124 || r.Exit == 137 {
			t.Errorf("%s did not finish within %ds while www-data holds the state dir's files (a lock of cmesh-run's among them)", what, limit)
			return r, false
		}
		if r.Exit != 0 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", what, r.Exit, r.Stdout, r.Stderr)
			return r, false
		}
		return r, true
	}
	scheduleUnique := func(t *testing.T, tag string) (job, bool) {
		r, ok := call(t, "schedule --unique sleep-"+tag, "schedule", "--json", "--unique", "--profile", "sleep", "--arg", "tag="+tag)
		var j job
		if ok && json.Unmarshal([]byte(lastLine(r.Stdout)), &j) != nil {
			t.Errorf("schedule --unique: stdout %q is not a job", r.Stdout)
			return j, false
		}
		return j, ok
	}

	t.Run("schedule --unique of a running job's name: reused", func(t *testing.T) {
		if j, ok := scheduleUnique(t, "held"); ok && (!j.Reused || j.ID != running.ID) {
			t.Errorf("got %v; want job %s with \"reused\": true", j, running.ID)
		}
	})
	t.Run("schedule --unique of a new name, then again: the second reused", func(t *testing.T) {
		first, ok := scheduleUnique(t, "fresh")
		if !ok {
			return
		}
		defer cancelJob(t, w, first.ID)
		if first.Reused {
			t.Errorf("the first schedule of sleep-fresh says reused: %v", first)
		}
		if second, ok := scheduleUnique(t, "fresh"); ok && (!second.Reused || second.ID != first.ID) {
			t.Errorf("second schedule --unique of sleep-fresh: %v; want job %s with \"reused\": true", second, first.ID)
		}
	})
	t.Run("cancel of a running job", func(t *testing.T) {
		if _, ok := call(t, "cancel running "+running.ID, "cancel", "--grace", "1s", "--json", running.ID); ok {
			if j := sudoStatus(t, w, running.ID); j.State != "canceled" {
				t.Errorf("after cancel: %v", j)
			}
		}
	})
	t.Run("cancel of a queued job", func(t *testing.T) {
		if _, ok := call(t, "cancel queued "+queued.ID, "cancel", "--json", queued.ID); ok {
			if j := sudoStatus(t, w, queued.ID); j.State != "canceled" {
				t.Errorf("after cancel: %v", j)
			}
		}
	})
	t.Run("drain starts a queued spool job", func(t *testing.T) {
		r := runAsUser(t, runAs, "", time.Duration(limit)*time.Second, installed, "drain")
		if r.Exit != 0 {
			t.Errorf("drain as %s: exit %d, stderr %q", runAs, r.Exit, r.Stderr)
		}
		ok, why := eventually(time.Duration(limit)*time.Second, func() (bool, string) {
			j := sudoStatus(t, w, drained.ID)
			return j.State != "queued", j.State
		})
		if !ok {
			t.Errorf("drain left job %s %s while www-data holds the state dir's files", drained.ID, why)
		}
	})

	// No lock file lives where the group may enter.
	filepath.WalkDir(w.stateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(w.stateDir, path)
		if d.IsDir() && rel == "private" {
			return fs.SkipDir
		}
		if !d.IsDir() && (d.Name() == "lock" || strings.HasSuffix(d.Name(), ".lock")) {
			t.Errorf("lock file %s is where www-data may open it", rel)
		}
		return nil
	})
}

// ---------------------------------------------------------------------------------------------
// 4. Profile values are ceilings

func testCeilings(t *testing.T, w *world) {
	prof := func(name string, extra ...string) []string {
		return append([]string{"schedule", "--json", "--profile", "build", "--arg", "org=mars", "--arg", "name=" + name}, extra...)
	}
	for _, c := range []struct{ name, flag, value string }{
		{"--timeout 0s lifts the profile's 1m", "--timeout", "0s"},
		{"--timeout 2m is above the profile's 1m", "--timeout", "2m"},
		{"--retries 3 is above the profile's (and config's) none", "--retries", "3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectDenied(t, w, webUser, true, func() result { return w.pool.sudo(t, prof("ceiling", c.flag, c.value)...).result })
		})
	}
	t.Run("--timeout 30s tightens it", func(t *testing.T) {
		j := sudoSchedule(t, w, prof("ceiling", "--timeout", "30s")[2:]...)
		if j.Timeout != "30s" {
			t.Errorf("schedule --timeout 30s: job timeout %q, want 30s", j.Timeout)
		}
		var rec struct {
			Timeout *string `json:"timeout"`
		}
		must(t, json.Unmarshal(readFile(t, recordPath(w, j.ID)), &rec))
		if rec.Timeout == nil || *rec.Timeout != "30s" {
			t.Errorf("record's timeout %v, want 30s", rec.Timeout)
		}
		waitFinished(t, w, j.ID)
	})
}

// ---------------------------------------------------------------------------------------------
// 5. Audit lines: cancel, size

const maxAuditLine = 4096

func testAuditCancelAndSize(t *testing.T, w *world) {
	p := w.pool
	t.Run("cancel of a running job: one line, outcome canceled", func(t *testing.T) {
		j := sudoSchedule(t, w, "--profile", "sleep", "--arg", "tag=audit")
		defer cancelJob(t, w, j.ID)
		waitState(t, w, j.ID, "running")
		_, _, off := readAudit(t, w.audit, 0)
		r := sudoWithin(t, p, 15, "cancel", "--grace", "1s", "--json", j.ID)
		if r.Exit != 0 {
			t.Fatalf("sudo cancel %s: exit %d, stdout %q, stderr %q", j.ID, r.Exit, r.Stdout, r.Stderr)
		}
		var lines []auditLine
		var raw []string
		// cancel returns once the job has ended; the wrapper may write the line as it ends.
		eventually(5*time.Second, func() (bool, string) {
			lines, raw, _ = readAudit(t, w.audit, off)
			return len(lines) > 0, ""
		})
		if len(lines) != 1 || lines[0].str("outcome") != "canceled" || lines[0].str("id") != j.ID {
			t.Errorf("want exactly one audit line, outcome canceled, id %s; got %d:\n%s", j.ID, len(lines), strings.Join(raw, "\n"))
		}
	})
	sizeCase := func(name string, args []string) {
		t.Run(name, func(t *testing.T) {
			_, _, off := readAudit(t, w.audit, 0)
			expectDenied(t, w, webUser, true, func() result { return p.sudo(t, args...).result })
			_, raw, _ := readAudit(t, w.audit, off)
			for _, l := range raw {
				if len(l) > maxAuditLine {
					t.Errorf("audit line of %d bytes, want at most %d: %.300s...", len(l), maxAuditLine, l)
				}
			}
		})
	}
	many := []string{"schedule", "--json", "--profile", "build", "--arg", "org=mars", "--arg", "name=mpvg"}
	for i := range 2000 {
		many = append(many, "--arg", fmt.Sprintf("k%04d=%s", i, strings.Repeat("x", 494)))
	}
	sizeCase("a refusal with 2000 --arg of 500 bytes", many)
	sizeCase("a refusal with one 120 KB --arg", []string{"schedule", "--json", "--profile", "build",
		"--arg", "org=" + strings.Repeat("m", 120<<10), "--arg", "name=mpvg"})
}

func testAuditLinesBounded(t *testing.T, w *world) {
	_, raw, _ := readAudit(t, w.audit, 0)
	for i, l := range raw {
		if len(l) > maxAuditLine {
			t.Errorf("%s line %d: %d bytes, want at most %d: %.200s...", w.audit, i+1, len(l), maxAuditLine, l)
		}
	}
	t.Logf("%d audit lines checked", len(raw))
}

// ---------------------------------------------------------------------------------------------
// 6. Audit without audit_log and syslog

// labConfig is a root-side config with no audit_log: root runs cmesh-run with it, not sudo.
func labConfig(t *testing.T, l *lab, name, extra string) (conf, stateDir string) {
	t.Helper()
	conf = filepath.Join(l.dir, name+".toml")
	stateDir = filepath.Join(l.dir, name+"-state")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf("backend = \"at\"\nstate_dir = %q\nallow_free_commands = true\n%s", stateDir, extra)), 0o644))
	return conf, stateDir
}

// hidingSyslog returns argv run where no syslog socket cmesh-run knows answers: each one
// that exists has /dev/null bound over it in a mount namespace of its own.
func hidingSyslog(t *testing.T, argv []string) []string {
	t.Helper()
	var script strings.Builder
	for _, s := range []string{"/dev/log", "/var/run/syslog", "/var/run/log"} {
		if fi, err := os.Stat(s); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			fmt.Fprintf(&script, "mount --bind /dev/null %s || exit 97; ", s)
		}
	}
	if script.Len() == 0 {
		t.Logf("no syslog socket on this machine: nothing to hide")
		return argv
	}
	script.WriteString(`exec "$@"`)
	return append([]string{"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script.String(), "sh"}, argv...)
}

func testAuditFallback(t *testing.T, w *world, l *lab) {
	conf, stateDir := labConfig(t, l, "noaudit", "")
	cli := func(args ...string) result {
		argv := hidingSyslog(t, append([]string{installed, "--config", conf}, args...))
		return runAsRoot(t, rootEnv(), argv[0], argv[1:]...)
	}

	r := cli("schedule", "--json", "--", "/bin/true")
	if r.Exit == 97 {
		t.Fatalf("could not hide the syslog socket: %s", r.Stderr)
	}
	var j job
	if r.Exit != 0 || json.Unmarshal([]byte(lastLine(r.Stdout)), &j) != nil {
		t.Fatalf("schedule as root without audit_log: exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
	}
	fallback := filepath.Join(stateDir, "private", "audit.log")
	if st, err := os.Lstat(fallback); err != nil {
		t.Errorf("no %s: the schedule's audit line went nowhere (%v)", fallback, err)
	} else {
		if !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want a regular file 0600", fallback, st.Mode())
		}
		lines, raw, _ := readAudit(t, fallback, 0)
		if len(lines) != 1 || lines[0].str("outcome") != "scheduled" || lines[0].str("id") != j.ID {
			t.Errorf("%s: want one line, outcome scheduled, id %s; got:\n%s", fallback, j.ID, strings.Join(raw, "\n"))
		}
	}

	d := cli("doctor", "--probe-timeout", "10s")
	found := false
	for _, line := range strings.Split(d.Stdout, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "WARN") && strings.Contains(line, "syslog") && strings.Contains(line, "audit_log") {
			found = true
			t.Logf("doctor: %s", line)
		}
	}
	if !found {
		t.Errorf("doctor with no syslog listening and no audit_log: no WARN line naming syslog and audit_log; exit %d:\n%s%s", d.Exit, d.Stdout, d.Stderr)
	}
}

// ---------------------------------------------------------------------------------------------
// 7. Patterns that let a value start with -

func testDashPatterns(t *testing.T, l *lab) {
	check := func(file, profile, pattern string) (result, []string) {
		path := filepath.Join(l.dir, file)
		must(t, os.WriteFile(path, []byte(fmt.Sprintf("[profiles.%s]\ncommand = [\"/bin/echo\", \"{target}\"]\nargs = { target = %q }\n", profile, pattern)), 0o644))
		r := runAsRoot(t, rootEnv(), installed, "config", "check", path)
		var naming []string
		for _, line := range strings.Split(r.Stdout+r.Stderr, "\n") {
			if strings.Contains(line, profile) && strings.Contains(line, "target") {
				naming = append(naming, line)
			}
		}
		return r, naming
	}
	t.Run("^[a-z0-9-]+$ is warned of", func(t *testing.T) {
		r, naming := check("dash1.toml", "dashy", "^[a-z0-9-]+$")
		if r.Exit == 2 {
			t.Errorf("config check refused the config (exit 2): %s", r.Stderr)
		}
		if len(naming) == 0 {
			t.Errorf("config check: no warning naming profile dashy and argument target; exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
		}
		t.Logf("exit %d: %s", r.Exit, strings.Join(naming, " | "))
	})
	t.Run("[a-z0-9][a-z0-9-]* is not", func(t *testing.T) {
		r, naming := check("dash2.toml", "safe", "[a-z0-9][a-z0-9-]*")
		if r.Exit != 0 || len(naming) > 0 || strings.Contains(strings.ToLower(r.Stdout+r.Stderr), "warn") {
			t.Errorf("config check: exit %d, stdout %q, stderr %q; want exit 0 and no warning", r.Exit, r.Stdout, r.Stderr)
		}
	})
}

// ---------------------------------------------------------------------------------------------
// 8. Values byte for byte

func testExactValues(t *testing.T, w *world) {
	t.Run("--arg org=mars\\n: refused by its pattern", func(t *testing.T) {
		expectDenied(t, w, webUser, true, func() result {
			return w.pool.sudo(t, "schedule", "--json", "--profile", "build", "--arg", "org=mars\n", "--arg", "name=nl").result
		})
	})
	t.Run("--env BUILD_FLAVOR='fast ' keeps its space", func(t *testing.T) {
		j := sudoSchedule(t, w, "--profile", "build", "--arg", "org=mars", "--arg", "name=space", "--env", "BUILD_FLAVOR=fast ")
		waitFinished(t, w, j.ID)
		lg := w.pool.sudo(t, "log", j.ID)
		if lg.Exit != 0 || !strings.Contains(lg.Stdout, "\nBUILD_FLAVOR=fast \n") {
			t.Errorf("the job's environment lacks \"BUILD_FLAVOR=fast \" (with its space): exit %d, BUILD_FLAVOR=%q\n%s", lg.Exit, envLines(lg.Stdout)["BUILD_FLAVOR"], lg.Stdout)
		}
	})
}

// ---------------------------------------------------------------------------------------------
// 9. Control characters in text output

func testControlChars(t *testing.T, w *world, l *lab) {
	conf, _ := labConfig(t, l, "ctl", "")
	cli := func(args ...string) result {
		return runAsRoot(t, rootEnv(), installed, append([]string{"--config", conf}, args...)...)
	}
	evil := "\x1b[31mred\nstate: succeeded"
	r := cli("schedule", "--json", "--", "/bin/echo", evil)
	var j job
	if r.Exit != 0 || json.Unmarshal([]byte(lastLine(r.Stdout)), &j) != nil {
		t.Fatalf("schedule as root: exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
	}
	poll(t, 30*time.Second, "job "+j.ID+" to finish", func() (bool, string) {
		var s job
		r := cli("status", "--json", j.ID)
		if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &s) != nil {
			t.Fatalf("status --json: exit %d %q %q", r.Exit, r.Stdout, r.Stderr)
		}
		return finished(s.State), s.State
	})
	var js job
	if r := cli("status", "--json", j.ID); json.Unmarshal([]byte(r.Stdout), &js) != nil || !slices.Equal(js.Command, []string{"/bin/echo", evil}) {
		t.Errorf("status --json: command %q, want the bytes given (JSON is unchanged): %q", js.Command, r.Stdout)
	}
	one := cli("status", j.ID)
	var states []string
	for _, line := range strings.Split(one.Stdout, "\n") {
		if strings.HasPrefix(line, "state:") {
			states = append(states, line)
		}
	}
	if len(states) != 1 {
		t.Errorf("status %s prints %d lines starting with \"state:\", want 1:\n%s", j.ID, len(states), one.Stdout)
	}
	for _, c := range []struct {
		name string
		r    result
	}{{"status ID", one}, {"status", cli("status")}, {"list", cli("list")}} {
		if c.r.Exit != 0 {
			t.Errorf("%s: exit %d, stderr %q", c.name, c.r.Exit, c.r.Stderr)
		}
		if strings.ContainsRune(c.r.Stdout, 0x1b) {
			t.Errorf("%s prints a raw ESC byte:\n%q", c.name, c.r.Stdout)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// 10. Root's jobs in a shared state dir

func testRootJobFiles(t *testing.T, w *world, l *lab) {
	check := func(t *testing.T, conf string, want os.FileMode) {
		r := runAsRoot(t, rootEnv(), installed, "--config", conf, "schedule", "--json", "--profile", "build", "--arg", "org=root", "--arg", "name=files")
		var j job
		if r.Exit != 0 || json.Unmarshal([]byte(lastLine(r.Stdout)), &j) != nil {
			t.Fatalf("schedule as root with %s: exit %d, stdout %q, stderr %q", conf, r.Exit, r.Stdout, r.Stderr)
		}
		poll(t, 30*time.Second, "root's job "+j.ID+" to finish", func() (bool, string) {
			var s job
			r := runAsRoot(t, rootEnv(), installed, "--config", conf, "status", "--json", j.ID)
			if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &s) != nil {
				t.Fatalf("status --json as root: exit %d %q %q", r.Exit, r.Stdout, r.Stderr)
			}
			return finished(s.State), s.State
		})
		for _, path := range []string{recordPath(w, j.ID), filepath.Join(w.stateDir, "jobs", j.ID+".out")} {
			st, o, _ := statOwner(t, path)
			if o != 0 || st.Mode().Perm() != want {
				t.Errorf("%s: %v owner %d, want %v root", path, st.Mode(), o, want)
			}
			rd := w.pool.run(t, []string{"/bin/cat", path}, nil, nil)
			if readable := rd.Exit == 0; readable != (want&0o040 != 0) {
				t.Errorf("www-data reading %s: exit %d (mode %v); want readable %v", path, rd.Exit, st.Mode(), want&0o040 != 0)
			}
		}
	}
	t.Run("default: 0600, www-data cannot read them", func(t *testing.T) { check(t, confFile, 0o600) })
	t.Run("root_jobs_readable = true: 0640", func(t *testing.T) {
		conf := filepath.Join(l.dir, "readable.toml")
		must(t, os.WriteFile(conf, []byte("root_jobs_readable = true\n"+w.attackConfig()), 0o644))
		check(t, conf, 0o640)
	})
}

// ---------------------------------------------------------------------------------------------
// Helpers

// record is what an attacker reads from a job's record.
type record struct {
	Nonce   string   `json:"nonce"`
	Workdir string   `json:"workdir"`
	Command []string `json:"command"`
	State   string   `json:"state"`
	SpecMAC string   `json:"spec_mac"`
}

func recordPath(w *world, id string) string { return filepath.Join(w.stateDir, "jobs", id+".json") }

// recordAsWebUser reads job id's record as the page can, without sudo.
func recordAsWebUser(t *testing.T, w *world, id string) record {
	t.Helper()
	r := w.pool.run(t, []string{"/bin/cat", recordPath(w, id)}, nil, nil)
	var rec record
	if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &rec) != nil || rec.Nonce == "" {
		t.Fatalf("www-data reading %s: exit %d, stdout %q, stderr %q", recordPath(w, id), r.Exit, r.Stdout, r.Stderr)
	}
	return rec
}

// specText is a wrapper spec as status/spec.go encodes it.
func specText(nonce, workdir string, env ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nonce %s\nworkdir %s\n", strconv.Quote(nonce), strconv.Quote(workdir))
	for _, e := range env {
		fmt.Fprintf(&b, "env %s\n", strconv.Quote(e))
	}
	return b.String()
}

// queuedJob schedules the build profile through sudo on the spool backend: no worker runs in
// this suite, so it stays queued until a drain or a cancel.
func queuedJob(t *testing.T, w *world, name string) job {
	t.Helper()
	j := sudoSchedule(t, w, "--backend", "spool", "--profile", "build", "--arg", "org=spool", "--arg", "name="+name)
	if s := sudoStatus(t, w, j.ID); s.State != "queued" {
		t.Fatalf("spool job %s is %s, want queued", j.ID, s.State)
	}
	if !slices.Equal(j.Command, buildArgv("spool", name)) {
		t.Fatalf("spool job %s: command %q", j.ID, j.Command)
	}
	return j
}

func sudoSchedule(t *testing.T, w *world, args ...string) job {
	t.Helper()
	r := w.pool.sudo(t, append([]string{"schedule", "--json"}, args...)...)
	var j job
	if r.Exit != 0 || json.Unmarshal([]byte(lastLine(r.Stdout)), &j) != nil || j.ID == "" {
		t.Fatalf("sudo cmesh-run schedule --json %q: exit %d, stdout %q, stderr %q", args, r.Exit, r.Stdout, r.Stderr)
	}
	return j
}

func sudoStatus(t *testing.T, w *world, id string) job {
	t.Helper()
	r := w.pool.sudo(t, "status", "--json", id)
	var j job
	if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &j) != nil {
		t.Fatalf("sudo cmesh-run status --json %s: exit %d, stdout %q, stderr %q", id, r.Exit, r.Stdout, r.Stderr)
	}
	return j
}

// sudoWithin is pool.sudo cut after secs seconds (exit 124), so that a call that hangs fails
// the test instead of the FPM request.
func sudoWithin(t *testing.T, p *pool, secs int, args ...string) pageResult {
	t.Helper()
	argv := append([]string{"/usr/bin/timeout", "-k", "3", strconv.Itoa(secs), sudoBin, "-n", "-u", runAs, installed}, args...)
	return p.run(t, argv, nil, nil)
}

func waitState(t *testing.T, w *world, id, state string) {
	t.Helper()
	poll(t, 30*time.Second, "job "+id+" to be "+state, func() (bool, string) {
		j := sudoStatus(t, w, id)
		if finished(j.State) && state != j.State {
			t.Fatalf("job %s ended %v while waiting for %s", id, j, state)
		}
		return j.State == state, j.State
	})
}

func waitFinished(t *testing.T, w *world, id string) job {
	t.Helper()
	var j job
	poll(t, 30*time.Second, "job "+id+" to finish", func() (bool, string) {
		j = sudoStatus(t, w, id)
		return finished(j.State), j.State
	})
	return j
}

// cancelJob ends a job a test left unfinished, through sudo as the page would; a job already
// finished is left alone.
func cancelJob(t *testing.T, w *world, id string) {
	t.Helper()
	if j := sudoStatus(t, w, id); finished(j.State) {
		return
	}
	if r := sudoWithin(t, w.pool, 15, "cancel", "--grace", "1s", id); r.Exit != 0 {
		t.Errorf("cleanup: sudo cancel %s: exit %d, stderr %q", id, r.Exit, r.Stderr)
	}
}

// eventually is a poll that reports instead of failing: the caller says what a timeout means.
func eventually(timeout time.Duration, check func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := check()
		if ok || time.Now().After(deadline) {
			return ok, why
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func credentialOf(t *testing.T, name string) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(name)
	must(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	gids, err := u.GroupIds()
	must(t, err)
	for _, g := range gids {
		n, _ := strconv.Atoi(g)
		c.Groups = append(c.Groups, uint32(n))
	}
	return c
}

// runAsUser runs argv as user name, not through sudo (real and effective uid are the user's,
// no SUDO_USER), with stdin, and kills it after timeout.
func runAsUser(t *testing.T, name, stdin string, timeout time.Duration, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + rootPath, "HOME=/", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credentialOf(t, name)}
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 2 * time.Second // a detached child may keep our pipes open
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := result{Stdout: o.String(), Stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Errorf("%q as %s did not finish within %v", argv, name, timeout)
		r.Exit = -1
	case err == nil, errors.Is(err, exec.ErrWaitDelay):
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		r.Exit = ee.ExitCode()
	default:
		t.Fatalf("run %q as %s: %v (stderr %q)", argv, name, err, e.String())
	}
	return r
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
