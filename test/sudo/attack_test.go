//go:build integration

// Issue 12: the attacks www-data can mount after a PHP compromise, through the real sudo rule
// and the real state dir, and the root-side gaps (audit fallback, control characters, root's
// job files). Each test here failed on the code the issue was filed against.

package sudo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// lab is what the attack tests add to the world: a long-running profile, scratch dirs, files
// only cmesh-test may read, and the locker.
type lab struct {
	dir        string // root/lab, root's, 0755
	markers    string // root/markers, 0777: where an attacker's command would leave its trace
	secret     string // a string only cmesh-test's files hold
	secretConf string // a config-like file of cmesh-test's, 0600, naming the secret
	secretPool string // a php-fpm pool file of cmesh-test's, 0600, naming the secret
	locker     string // the locker (itest.BuildLocker), runnable by www-data
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
	itest.Must(t, itest.WriteSynced(tmp, []byte(text), 0o644))
	itest.Must(t, os.Chown(tmp, 0, 0))
	itest.Must(t, os.Chmod(tmp, 0o644))
	itest.Must(t, os.Rename(tmp, confFile))
}

func setupAttack(t *testing.T, w *world) *lab {
	l := &lab{dir: filepath.Join(w.root, "lab"), markers: filepath.Join(w.root, "markers"),
		secret: "topsecret-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	itest.Must(t, os.Mkdir(l.dir, 0o755))
	itest.Must(t, os.Mkdir(l.markers, 0o777))
	itest.Must(t, os.Chmod(l.markers, 0o777))
	installConfig(t, w.attackConfig())

	// Files of cmesh-test's that www-data cannot read: a file argument under sudo would
	// have cmesh-run read them for www-data.
	l.secretConf = filepath.Join(l.dir, "private.toml")
	l.secretPool = filepath.Join(l.dir, "private-pool.conf")
	for path, text := range map[string]string{
		l.secretConf: fmt.Sprintf("%s = %q\n", strings.ReplaceAll(l.secret, "-", "_"), l.secret),
		l.secretPool: fmt.Sprintf("[%s]\nuser = %s\nlisten = /run/%s.sock\n", l.secret, l.secret, l.secret),
	} {
		itest.Must(t, itest.WriteSynced(path, []byte(text), 0o600))
		itest.Must(t, os.Chown(path, w.runUID, w.runGID))
	}
	if r := w.pool.run(t, []string{"/bin/cat", l.secretConf}, nil, nil); r.Exit == 0 {
		t.Fatalf("www-data can read %s: the file-argument tests would prove nothing", l.secretConf)
	}

	l.locker = itest.BuildLocker(t, l.dir)

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
			a := expectDenied(t, w, itest.WebUser, false, func() result {
				r = p.run(t, c.argv, nil, nil)
				return r.result
			})
			itest.OneErrorLine(t, c.name, r.Stderr)
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
		if len(lines) != 1 || lines[0].str("outcome") != "refused" || lines[0].str("requested_by") != itest.WebUser {
			t.Errorf("want exactly one audit line, outcome refused, requested_by %s; got %d:\n%s", itest.WebUser, len(lines), strings.Join(raw, "\n"))
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
		expectDenied(t, w, itest.WebUser, false, func() result {
			argv := append([]string{"/bin/sh", "-c", `printf '%s' "$SPEC" | exec "$@"`, "sh"},
				viaSudo("_wrap", "--state-dir", w.stateDir, "--id", q.ID, "--", "/bin/sh", "-c", "/usr/bin/touch "+m)...)
			r := p.run(t, argv, map[string]string{"SPEC": spec}, nil).result
			itest.OneErrorLine(t, "_wrap under sudo", r.Stderr)
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

// noWorkerLeft fails t when a `cmesh-run worker` of cmesh-test's still runs, and stops it by
// its PID: only the worker case above can have started one.
func noWorkerLeft(t *testing.T, w *world) {
	t.Helper()
	find := func() []int {
		var pids []int
		for _, pid := range itest.ProcessesOf(w.runUID) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil && slices.Contains(strings.Split(string(b), "\x00"), "worker") {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	if !itest.Eventually(5*time.Second, func() bool { return len(find()) == 0 }) {
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

func testLocksHeld(t *testing.T, w *world, l *lab) {
	const limit = 12 // seconds per call; the FPM request itself is cut at 20
	// drain and --unique create their lock files on first use: take them once before the
	// locker starts, so that it finds them.
	if r := runAsUser(t, runAs, "", 30*time.Second, installed, "drain"); r.Exit != 0 {
		t.Fatalf("drain as %s before the locker: exit %d, stderr %q", runAs, r.Exit, r.Stderr)
	}
	running := sudoSchedule(t, w, "--unique", "--profile", "sleep", "--arg", "tag=held")
	defer cancelJob(t, w, running.ID)
	waitState(t, w, running.ID, "running")
	queued := queuedJob(t, w, "lockqueued")
	defer cancelJob(t, w, queued.ID)
	drained := queuedJob(t, w, "lockdrain")
	defer cancelJob(t, w, drained.ID)

	h := itest.StartLocker(t, l.locker, itest.LookupAccount(t, itest.WebUser), w.stateDir)
	defer h.Stop() // before the deferred cancels: they must not meet the held locks
	var held []string
	for _, lk := range h.Held() {
		if strings.Contains(lk.Kinds, "flock-") {
			held = append(held, lk.String())
		}
	}
	t.Logf("www-data holds %d locks in the state dir:\n%s", len(held), strings.Join(held, "\n"))
	// The locker reaches what www-data can read, or this test would prove nothing.
	for _, id := range []string{running.ID, queued.ID} {
		if !slices.ContainsFunc(held, func(s string) bool { return strings.HasPrefix(s, "jobs/"+id+".out ") }) {
			t.Fatalf("the locker got no lock on jobs/%s.out (it can read it): its report:\n%s", id, strings.Join(h.Report(), "\n"))
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
		var state string
		if !itest.Eventually(time.Duration(limit)*time.Second, func() bool {
			state = sudoStatus(t, w, drained.ID).State
			return state != "queued"
		}) {
			t.Errorf("drain left job %s %s while www-data holds the state dir's files", drained.ID, state)
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
			expectDenied(t, w, itest.WebUser, true, func() result { return w.pool.sudo(t, prof("ceiling", c.flag, c.value)...).result })
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
		itest.Must(t, json.Unmarshal(readFile(t, recordPath(w, j.ID)), &rec))
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
		itest.Eventually(5*time.Second, func() bool {
			lines, raw, _ = readAudit(t, w.audit, off)
			return len(lines) > 0
		})
		if len(lines) != 1 || lines[0].str("outcome") != "canceled" || lines[0].str("id") != j.ID {
			t.Errorf("want exactly one audit line, outcome canceled, id %s; got %d:\n%s", j.ID, len(lines), strings.Join(raw, "\n"))
		}
	})
	sizeCase := func(name string, args []string) {
		t.Run(name, func(t *testing.T) {
			_, _, off := readAudit(t, w.audit, 0)
			expectDenied(t, w, itest.WebUser, true, func() result { return p.sudo(t, args...).result })
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
	itest.Must(t, os.WriteFile(conf, []byte(fmt.Sprintf("backend = \"at\"\nstate_dir = %q\nallow_free_commands = true\n%s", stateDir, extra)), 0o644))
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
		itest.Must(t, os.WriteFile(path, []byte(fmt.Sprintf("[profiles.%s]\ncommand = [\"/bin/echo\", \"{target}\"]\nargs = { target = %q }\n", profile, pattern)), 0o644))
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
		expectDenied(t, w, itest.WebUser, true, func() result {
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
	itest.Poll(t, 30*time.Second, "job "+j.ID+" to finish", func() (bool, string) {
		var s job
		r := cli("status", "--json", j.ID)
		if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &s) != nil {
			t.Fatalf("status --json: exit %d %q %q", r.Exit, r.Stdout, r.Stderr)
		}
		return itest.Finished(s.State), s.State
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
		itest.Poll(t, 30*time.Second, "root's job "+j.ID+" to finish", func() (bool, string) {
			var s job
			r := runAsRoot(t, rootEnv(), installed, "--config", conf, "status", "--json", j.ID)
			if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &s) != nil {
				t.Fatalf("status --json as root: exit %d %q %q", r.Exit, r.Stdout, r.Stderr)
			}
			return itest.Finished(s.State), s.State
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
		itest.Must(t, os.WriteFile(conf, []byte("root_jobs_readable = true\n"+w.attackConfig()), 0o644))
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
	itest.Poll(t, 30*time.Second, "job "+id+" to be "+state, func() (bool, string) {
		j := sudoStatus(t, w, id)
		if itest.Finished(j.State) && state != j.State {
			t.Fatalf("job %s ended %v while waiting for %s", id, j, state)
		}
		return j.State == state, j.State
	})
}

func waitFinished(t *testing.T, w *world, id string) job {
	t.Helper()
	var j job
	itest.Poll(t, 30*time.Second, "job "+id+" to finish", func() (bool, string) {
		j = sudoStatus(t, w, id)
		return itest.Finished(j.State), j.State
	})
	return j
}

// cancelJob ends a job a test left unfinished, through sudo as the page would; a job already
// finished is left alone.
func cancelJob(t *testing.T, w *world, id string) {
	t.Helper()
	if j := sudoStatus(t, w, id); itest.Finished(j.State) {
		return
	}
	if r := sudoWithin(t, w.pool, 15, "cancel", "--grace", "1s", id); r.Exit != 0 {
		t.Errorf("cleanup: sudo cancel %s: exit %d, stderr %q", id, r.Exit, r.Stderr)
	}
}

// runAsUser runs argv as user name, not through sudo (real and effective uid are the user's,
// no SUDO_USER), with stdin, and kills it after timeout.
func runAsUser(t *testing.T, name, stdin string, timeout time.Duration, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + itest.StdPath, "HOME=/", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: itest.LookupAccount(t, name).Credential()}
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 2 * time.Second // a detached child may keep our pipes open
	r, err := itest.Run(cmd)
	switch {
	case ctx.Err() != nil:
		t.Errorf("%q as %s did not finish within %v", argv, name, timeout)
		r.Exit = -1
	case err == nil && r.Exit >= 0, errors.Is(err, exec.ErrWaitDelay):
	default:
		t.Fatalf("run %q as %s: %v, exit %d (stderr %q)", argv, name, err, r.Exit, r.Stderr)
	}
	return result{Exit: r.Exit, Stdout: r.Stdout, Stderr: r.Stderr}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
