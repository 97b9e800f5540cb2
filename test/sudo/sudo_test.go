//go:build integration

package sudo

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// world is what the test set up: paths, ids and the pool.
type world struct {
	bin      string
	root     string // /var/tmp/cmesh-sudo-test-XXXX, 0755
	stateDir string // root/state: made by setup --write
	auditDir string // root/audit: made by root, owned by cmesh-test
	audit    string // root/audit/audit.log
	evil     string // root/evil: www-data's own dir
	webUID   int
	webGID   int
	runUID   int
	runGID   int
	pool     *pool
}

const sudoersWant = "www-data ALL=(cmesh-test) NOPASSWD: /usr/local/bin/cmesh-run\n"

// argPattern bounds the length too, so that a 10 KB value fails its pattern.
const argPattern = "[a-z0-9][a-z0-9-]{0,63}"

func (w *world) config() string {
	return fmt.Sprintf(`# written by test/sudo: replaces setup's sample for the duration of the test
backend = "at"
state_dir = %q
allow_free_commands = false
audit_log = %q

[profiles.build]
command = ["/bin/sh", "-c", "echo build $0 $1; id -un; env", "{org}", "{name}"]
args = { org = %q, name = %q }
name = "{org}-{name}"
allow_env = ["BUILD_FLAVOR"]
timeout = "1m"
`, w.stateDir, w.audit, argPattern, argPattern)
}

// TestRunAsAndLockDown is the whole story, in order: setup, config, a job from PHP-FPM through
// sudo, then every refusal. Each step needs the previous ones, so a failed step ends the test
// (cleanup still restores the machine).
func TestRunAsAndLockDown(t *testing.T) {
	bin := itest.Require(t, "sudo", needs)
	start := time.Now()
	lockSuite(t)
	repairCrashedRun(t)
	if _, err := user.Lookup(runAs); err == nil {
		t.Fatalf("user %s exists and this suite did not leave it (no %s): remove it by hand (userdel %s) if it is a leftover", runAs, manifestF, runAs)
	}

	root, err := os.MkdirTemp("/var/tmp", "cmesh-sudo-test-")
	itest.Must(t, err)
	var m *manifest
	t.Cleanup(func() {
		if m == nil { // saveMachine failed: nothing was changed but the temp tree
			os.RemoveAll(root)
		}
	})
	m = saveMachine(t, root)
	t.Cleanup(func() {
		t0 := time.Now()
		if errs := restoreMachine(t.Logf, m); len(errs) > 0 {
			t.Errorf("MACHINE NOT FULLY RESTORED (backups in %s, the next run repairs): %v", backupDir, errs)
			return
		}
		t.Logf("machine restored in %v (user %s gone, %s, %s, %s, %s, %s as they were)",
			time.Since(t0).Round(time.Millisecond), runAs, sudoers, confFile, installed, itest.AtDeny, itest.AtAllow)
	})
	itest.Must(t, os.Chmod(root, 0o755))

	w := &world{bin: bin, root: root, stateDir: filepath.Join(root, "state"), auditDir: filepath.Join(root, "audit"), evil: filepath.Join(root, "evil")}
	w.audit = filepath.Join(w.auditDir, "audit.log")
	web := itest.LookupAccount(t, itest.WebUser)
	w.webUID, w.webGID = web.UID, web.GID

	if !t.Run("setup installs the run-as user, binary, sudo rule, at permission, state dir, config", func(t *testing.T) { testSetup(t, w) }) {
		return
	}
	run := itest.LookupAccount(t, runAs)
	w.runUID, w.runGID = run.UID, run.GID

	if !t.Run("the test's config replaces the sample", func(t *testing.T) { writeConfig(t, w) }) {
		return
	}

	w.pool = writePool(t, root)
	w.pool.Start(t)

	var first job
	if !t.Run("a profile job from PHP-FPM runs as cmesh-test", func(t *testing.T) { first = testProfileJob(t, w) }) {
		return
	}
	t.Run("--env the profile allows reaches the job", func(t *testing.T) { testAllowedEnv(t, w) })
	t.Run("refused with exit 5, nothing run, audited", func(t *testing.T) { testRefusals(t, w, first) })
	t.Run("CMESH_RUN_* variables never reach cmesh-run through www-data's sudo", func(t *testing.T) { testEnvOverrides(t, w, first) })
	t.Run("a config others may write refuses every sudo call", func(t *testing.T) { testConfigCheck(t, w, first) })
	t.Run("state dir: 2750 dirs, 0640 files, group www-data, nothing for others", func(t *testing.T) { checkStateModes(t, w) })

	// Issue 12's attacks. After the modes check: the spool backend and root's jobs leave
	// files of other modes in the state dir.
	var l *lab
	if !t.Run("attacks: a long-running profile, files of cmesh-test's, the lock holder", func(t *testing.T) { l = setupAttack(t, w) }) {
		return
	}
	t.Run("commands with no business under sudo: exit 5, audited, nothing run", func(t *testing.T) { testSudoInternals(t, w, l) })
	t.Run("the wrapper runs only the recorded argv and spec, without sudo too", func(t *testing.T) { testForeignArgv(t, w, l) })
	t.Run("locks www-data takes in the state dir block nothing", func(t *testing.T) { testLocksHeld(t, w, l) })
	t.Run("a profile's timeout and retries are ceilings", func(t *testing.T) { testCeilings(t, w) })
	t.Run("audit: a cancel of a running job, bounded lines", func(t *testing.T) { testAuditCancelAndSize(t, w) })
	t.Run("audit: no audit_log, no syslog: STATE_DIR/private/audit.log, doctor warns", func(t *testing.T) { testAuditFallback(t, w, l) })
	t.Run("config check warns of patterns that let a value start with -", func(t *testing.T) { testDashPatterns(t, l) })
	t.Run("--arg and --env values byte for byte", func(t *testing.T) { testExactValues(t, w) })
	t.Run("status and list escape control characters", func(t *testing.T) { testControlChars(t, w, l) })
	t.Run("root's jobs: 0600 unless root_jobs_readable", func(t *testing.T) { testRootJobFiles(t, w, l) })
	t.Run("rerun and queue control under sudo", func(t *testing.T) { testJobSystemUnderSudo(t, w, first) })
	t.Run("a Slurm job from PHP-FPM through sudo with a profile", func(t *testing.T) { testSlurmUnderSudo(t, w) })
	t.Run("every audit line is at most 4096 bytes", func(t *testing.T) { testAuditLinesBounded(t, w) })
	t.Logf("test body took %v", time.Since(start).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------------------------

func rootEnv() []string { return []string{"PATH=" + itest.StdPath, "HOME=/root", "LANG=C.UTF-8"} }

func testSetup(t *testing.T, w *world) {
	// A clean slate for what setup installs: a file someone left at one of these paths is
	// saved in the backup and comes back at cleanup.
	for _, p := range []string{sudoers, confFile, installed} {
		if err := os.Remove(p); err == nil {
			t.Logf("moved %s out of the way for the test (restored at cleanup)", p)
		}
	}
	// A site that denies at to system users: setup must notice and fix it for cmesh-test.
	orig, err := os.ReadFile(itest.AtDeny)
	itest.Must(t, err)
	denyBefore, denyUID, denyGID := statOwner(t, itest.AtDeny)
	if _, err := os.Stat(itest.AtAllow); err != nil {
		itest.Must(t, putBack(saved{Path: itest.AtDeny, Mode: uint32(denyBefore.Mode()), UID: denyUID, GID: denyGID},
			append(withNL(orig), []byte(runAs+"\n")...)))
	}

	args := []string{"--state-dir", w.stateDir, "setup", "--web-user", itest.WebUser, "--run-as", runAs, "--binary", installed}
	plan := runAsRoot(t, rootEnv(), w.bin, args...)
	if plan.Exit != 0 {
		t.Fatalf("setup (plan): exit %d: %s%s", plan.Exit, plan.Stdout, plan.Stderr)
	}
	t.Logf("setup plan:\n%s", plan.Stdout)
	for _, want := range []string{"useradd --system", installed, "visudo -cf", "install -d -m 2750", confFile} {
		if !strings.Contains(plan.Stdout, want) {
			t.Errorf("setup's plan does not mention %q", want)
		}
	}
	if _, err := user.Lookup(runAs); err == nil {
		t.Fatalf("setup without --write created the user")
	}

	t0 := time.Now()
	wr := runAsRoot(t, rootEnv(), w.bin, append(args, "--write")...)
	t.Logf("setup --write (%v): exit %d\n%s%s", time.Since(t0).Round(time.Millisecond), wr.Exit, wr.Stdout, wr.Stderr)
	if wr.Exit != 0 {
		t.Fatalf("setup --write failed")
	}

	// The user: a system user with no login shell.
	u, err := user.Lookup(runAs)
	if err != nil {
		t.Fatalf("setup --write did not create %s: %v", runAs, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if uid >= 1000 || uid == 0 {
		t.Errorf("%s has uid %d: not a system user", runAs, uid)
	}
	if sh := passwdField(t, runAs, 6); sh != "/usr/sbin/nologin" {
		t.Errorf("%s's shell is %q, want /usr/sbin/nologin", runAs, sh)
	}

	// The binary.
	st, o, g := statOwner(t, installed)
	if !st.Mode().IsRegular() || st.Mode().Perm() != 0o755 || o != 0 || g != 0 {
		t.Errorf("%s: %v %d:%d, want a regular file 0755 root:root", installed, st.Mode(), o, g)
	}
	if a, b := readFile(t, installed), readFile(t, w.bin); string(a) != string(b) {
		t.Errorf("%s is not a copy of %s", installed, w.bin)
	}

	// The sudo rule: exactly one line, 0440 root:root, accepted by visudo, seen by sudo.
	st, o, g = statOwner(t, sudoers)
	if st.Mode().Perm() != 0o440 || o != 0 || g != 0 {
		t.Errorf("%s: %v %d:%d, want 0440 root:root", sudoers, st.Mode(), o, g)
	}
	if got := string(readFile(t, sudoers)); got != sudoersWant {
		t.Errorf("%s = %q, want %q", sudoers, got, sudoersWant)
	}
	if out, err := rootCommand(10*time.Second, visudoBin, "-cf", sudoers); err != nil {
		t.Errorf("visudo -cf %s: %v %s", sudoers, err, out)
	}
	if out, err := rootCommand(10*time.Second, sudoBin, "-n", "-l", "-U", itest.WebUser); err != nil ||
		!strings.Contains(out, "("+runAs+") NOPASSWD: "+installed) {
		t.Errorf("sudo -l -U %s does not show the rule: %v\n%s", itest.WebUser, err, out)
	}
	if _, err := os.Stat(sudoers + ".tmp"); err == nil {
		t.Errorf("setup left %s.tmp behind", sudoers)
	}

	// at: cmesh-test no longer denied; the rest of at.deny, its owner and mode untouched.
	deny := readFile(t, itest.AtDeny)
	if lineIs(deny, runAs) {
		t.Errorf("%s still lists %s after setup --write:\n%s", itest.AtDeny, runAs, deny)
	}
	if string(withNL(deny)) != string(withNL(orig)) {
		t.Errorf("setup changed other lines of %s:\n%q\nwas\n%q", itest.AtDeny, deny, orig)
	}
	st, o, g = statOwner(t, itest.AtDeny)
	if st.Mode() != denyBefore.Mode() || o != denyUID || g != denyGID {
		t.Errorf("%s is now %v %d:%d, was %v %d:%d (at refuses everyone when its owner changes)", itest.AtDeny, st.Mode(), o, g, denyBefore.Mode(), denyUID, denyGID)
	}
	if allow, err := os.ReadFile(itest.AtAllow); err == nil && !lineIs(allow, runAs) {
		t.Errorf("%s exists and does not list %s after setup --write", itest.AtAllow, runAs)
	}
	if out, err := rootCommand(10*time.Second, "/usr/sbin/runuser", "-u", runAs, "--", itest.AtqBin); err != nil {
		t.Errorf("%s may not use at after setup: atq: %v %s", runAs, err, out)
	}

	// The state dir: 2750 cmesh-test:www-data.
	webGID := itest.LookupAccount(t, itest.WebUser).GID
	st, o, g = statOwner(t, w.stateDir)
	if !st.IsDir() || st.Mode()&fs.ModeSetgid == 0 || st.Mode().Perm() != 0o750 || o != uid || g != webGID {
		t.Errorf("%s: %v %d:%d, want drwxr-s--- %s:%s (%d:%d)", w.stateDir, st.Mode(), o, g, runAs, itest.WebUser, uid, webGID)
	}

	// The sample config.
	st, o, g = statOwner(t, confFile)
	if !st.Mode().IsRegular() || st.Mode().Perm() != 0o644 || o != 0 || g != 0 {
		t.Errorf("%s: %v %d:%d, want 0644 root:root", confFile, st.Mode(), o, g)
	}
	sample := string(readFile(t, confFile))
	for _, want := range []string{fmt.Sprintf("state_dir = %q", w.stateDir), "allow_free_commands = false", "[profiles."} {
		if !strings.Contains(sample, want) {
			t.Errorf("sample config lacks %q:\n%s", want, sample)
		}
	}

	// Run again: nothing left to do.
	again := runAsRoot(t, rootEnv(), w.bin, args...)
	if again.Exit != 0 || !strings.Contains(again.Stdout, "nothing to do") {
		t.Errorf("second setup: exit %d, stdout %q, stderr %q; want \"nothing to do\"", again.Exit, again.Stdout, again.Stderr)
	}
}

func writeConfig(t *testing.T, w *world) {
	// The audit log's dir: made by root, writable by cmesh-test only.
	itest.Must(t, os.Mkdir(w.auditDir, 0o750))
	itest.Must(t, os.Chown(w.auditDir, w.runUID, w.runGID))
	itest.Must(t, itest.WriteSynced(w.audit, nil, 0o640))
	itest.Must(t, os.Chown(w.audit, w.runUID, w.runGID))
	// www-data's own dir, where it may write whatever it likes; anyone may create in it, so
	// that a --state-dir or CMESH_RUN_STATE_DIR pointing below it that were obeyed would show.
	itest.Must(t, os.Mkdir(w.evil, 0o777))
	itest.Must(t, os.Chown(w.evil, w.webUID, w.webGID))
	itest.Must(t, os.Chmod(w.evil, 0o777))

	tmp := confFile + ".test-tmp"
	itest.Must(t, itest.WriteSynced(tmp, []byte(w.config()), 0o644))
	itest.Must(t, os.Chown(tmp, 0, 0))
	itest.Must(t, os.Chmod(tmp, 0o644))
	itest.Must(t, os.Rename(tmp, confFile))

	// The config must load: www-data (no sudo, so no root-owned file lands in the state dir)
	// lists the still empty state dir the config names.
	r := runAsRoot(t, rootEnv(), "/usr/sbin/runuser", "-u", itest.WebUser, "--", installed, "status", "--json")
	if r.Exit != 0 || strings.TrimSpace(r.Stdout) != "[]" {
		t.Fatalf("cmesh-run status --json with the new config, as www-data: exit %d: %q %q", r.Exit, r.Stdout, r.Stderr)
	}
}

// testProfileJob schedules the build profile through the PHP client with sudoUser, follows it
// to the end, and reads it back through sudo and directly as www-data.
func testProfileJob(t *testing.T, w *world) job {
	p := w.pool
	_, _, auditOff := readAudit(t, w.audit, 0)

	t0 := time.Now()
	var j job
	r := p.client(t, map[string]any{"op": "schedule", "options": map[string]any{
		"profile": "build", "args": map[string]string{"org": "mars", "name": "mpvg"},
	}}, &j)
	if !r.OK {
		t.Fatalf("schedule --profile build through sudo failed: %+v", r.Error)
	}
	t.Logf("scheduled %s through PHP-FPM + sudo in %v: %v", j.ID, time.Since(t0).Round(time.Millisecond), j)
	if !itest.IDPattern.MatchString(j.ID) {
		t.Fatalf("bad job id %q", j.ID)
	}
	wantArgv := []string{"/bin/sh", "-c", "echo build $0 $1; id -un; env", "mars", "mpvg"}
	if !slices.Equal(j.Command, wantArgv) {
		t.Errorf("command %q, want %q", j.Command, wantArgv)
	}
	if j.Name == nil || *j.Name != "mars-mpvg" {
		t.Errorf("name %v, want mars-mpvg", j.Name)
	}
	if j.User != runAs || j.RequestedBy != itest.WebUser {
		t.Errorf("user %q requested_by %q, want %s and %s", j.User, j.RequestedBy, runAs, itest.WebUser)
	}
	if j.Backend != "at" || j.BackendRef == nil || *j.BackendRef == "" {
		t.Errorf("backend %q ref %v: want an at job", j.Backend, j.BackendRef)
	}

	// Follow it as a page would: status through sudo until it has finished.
	var final job
	itest.Poll(t, 30*time.Second, "job "+j.ID+" to finish", func() (bool, string) {
		r := p.client(t, map[string]any{"op": "status", "id": j.ID}, &final)
		if !r.OK {
			t.Fatalf("status through sudo: %+v", r.Error)
		}
		return itest.Finished(final.State), final.State
	})
	if final.State != "succeeded" || final.ExitCode == nil || *final.ExitCode != 0 {
		t.Fatalf("job ended %v", final)
	}
	if final.User != runAs || final.RequestedBy != itest.WebUser {
		t.Errorf("status: user %q requested_by %q", final.User, final.RequestedBy)
	}

	// Its output through the client (sudo): it ran as cmesh-test, in a clean environment.
	var chunk struct {
		Data string `json:"data"`
		Done bool   `json:"done"`
	}
	if r := p.client(t, map[string]any{"op": "log", "id": j.ID}, &chunk); !r.OK {
		t.Fatalf("log through sudo: %+v", r.Error)
	}
	if !chunk.Done {
		t.Errorf("log of a finished job is not done")
	}
	out := chunk.Data
	if !strings.HasPrefix(out, "build mars mpvg\n"+runAs+"\n") {
		t.Errorf("job output does not start with \"build mars mpvg\\n%s\\n\":\n%s", runAs, out)
	}
	envs := envLines(out)
	for k, v := range map[string]string{"USER": runAs, "LOGNAME": runAs, "CMESH_RUN_JOB_ID": j.ID, "CMESH_RUN_JOB_NAME": "mars-mpvg"} {
		if envs[k] != v {
			t.Errorf("job env %s=%q, want %q", k, envs[k], v)
		}
	}
	for k := range envs {
		if strings.HasPrefix(k, "SUDO_") || strings.HasPrefix(k, "HTTP_") || k == "DB_PASSWORD" || k == "BUILD_FLAVOR" {
			t.Errorf("the job's environment has %s: %q", k, envs[k])
		}
	}
	if strings.Contains(out, poolSecret) || strings.Contains(out, p.secret) {
		t.Errorf("a pool or request secret reached the job:\n%s", out)
	}
	t.Logf("job output:\n%s", out)

	// The same through sudo by hand, and directly as www-data (group-readable state dir).
	if r := p.sudo(t, "log", j.ID); r.Exit != 0 || r.Stdout != out {
		t.Errorf("sudo log %s: exit %d, stdout %q (want the client's %q), stderr %q", j.ID, r.Exit, r.Stdout, out, r.Stderr)
	}
	direct := p.run(t, []string{installed, "--state-dir", w.stateDir, "status", "--json", j.ID}, nil, nil)
	var dj job
	if direct.Exit != 0 || json.Unmarshal([]byte(direct.Stdout), &dj) != nil {
		t.Fatalf("status as www-data without sudo: exit %d, stdout %q, stderr %q", direct.Exit, direct.Stdout, direct.Stderr)
	}
	if direct.EUID == nil || *direct.EUID != w.webUID {
		t.Errorf("the page did not run as www-data: euid %v", direct.EUID)
	}
	if dj.ID != j.ID || dj.State != "succeeded" || dj.User != runAs || dj.RequestedBy != itest.WebUser {
		t.Errorf("status as www-data without sudo: %v", dj)
	}
	dlog := p.run(t, []string{installed, "--state-dir", w.stateDir, "log", j.ID}, nil, nil)
	if dlog.Exit != 0 || dlog.Stdout != out {
		t.Errorf("log as www-data without sudo: exit %d, stdout %q, stderr %q", dlog.Exit, dlog.Stdout, dlog.Stderr)
	}

	// The record on disk says who asked and as whom it ran.
	var rec map[string]any
	itest.Must(t, json.Unmarshal(readFile(t, filepath.Join(w.stateDir, "jobs", j.ID+".json")), &rec))
	if rec["requested_by"] != itest.WebUser || rec["user"] != runAs {
		t.Errorf("record: requested_by %v user %v", rec["requested_by"], rec["user"])
	}

	// One audit line for the schedule.
	lines, raw, _ := readAudit(t, w.audit, auditOff)
	var sched []auditLine
	for _, l := range lines {
		if l.str("outcome") == "scheduled" {
			sched = append(sched, l)
		}
	}
	if len(sched) != 1 {
		t.Fatalf("want one \"scheduled\" audit line, got:\n%s", strings.Join(raw, "\n"))
	}
	a := sched[0]
	if a.str("id") != j.ID || a.str("requested_by") != itest.WebUser || a.str("user") != runAs || !strings.HasPrefix(a.str("profile"), "build ") {
		t.Errorf("audit line %s: want id %s, requested_by %s, user %s, profile build ...", raw[0], j.ID, itest.WebUser, runAs)
	}
	t.Logf("audit: %s", raw[0])
	return final
}

func testAllowedEnv(t *testing.T, w *world) {
	p := w.pool
	r := p.sudo(t, "schedule", "--json", "--profile", "build", "--arg", "org=mars", "--arg", "name=fast", "--env", "BUILD_FLAVOR=fast")
	var j job
	if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &j) != nil {
		t.Fatalf("schedule --env BUILD_FLAVOR=fast: exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
	}
	var final job
	itest.Poll(t, 30*time.Second, "job "+j.ID+" to finish", func() (bool, string) {
		r := p.sudo(t, "status", "--json", j.ID)
		if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &final) != nil {
			t.Fatalf("sudo status: exit %d %q %q", r.Exit, r.Stdout, r.Stderr)
		}
		return itest.Finished(final.State), final.State
	})
	if final.State != "succeeded" {
		t.Fatalf("job ended %v", final)
	}
	lg := p.sudo(t, "log", j.ID)
	if lg.Exit != 0 || envLines(lg.Stdout)["BUILD_FLAVOR"] != "fast" {
		t.Errorf("BUILD_FLAVOR=fast did not reach the job: exit %d\n%s%s", lg.Exit, lg.Stdout, lg.Stderr)
	}
}

// snapshot is what "runs nothing" compares: the state dir's job files and cmesh-test's at jobs.
type snapshot struct {
	files  []string
	atJobs []string
}

func takeSnapshot(t *testing.T, w *world) snapshot {
	t.Helper()
	var s snapshot
	for _, d := range []string{"jobs", "active"} {
		ents, err := os.ReadDir(filepath.Join(w.stateDir, d))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range ents {
			s.files = append(s.files, d+"/"+e.Name())
		}
	}
	var err error
	s.atJobs, err = itest.AtJobs(runAs)
	itest.Must(t, err)
	return s
}

// nothingNew fails t when after holds a job file or an at job that before did not.
func nothingNew(t *testing.T, before, after snapshot) {
	t.Helper()
	for _, f := range after.files {
		// A job from before may go on making its own files (its wrapper makes its progress
		// file, its hook's output): only a file of a job that did not exist counts.
		id := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(f, ".progress"), ".hook"), ".out")
		if id != f && slices.Contains(before.files, id+".out") {
			continue
		}
		if !slices.Contains(before.files, f) {
			t.Errorf("a refused call left %s in the state dir", f)
		}
	}
	for _, n := range after.atJobs {
		if !slices.Contains(before.atJobs, n) {
			t.Errorf("a refused call left at job %s (atq)", n)
		}
	}
}

// expectDenied checks a refused cmesh-run call: exit 5, the JSON error "denied" on stdout
// (the call had --json), one line on stderr, nothing scheduled, and one audit line.
func expectDenied(t *testing.T, w *world, asker string, jsonOut bool, call func() result) auditLine {
	t.Helper()
	before := takeSnapshot(t, w)
	_, _, off := readAudit(t, w.audit, 0)
	r := call()
	if r.Exit != 5 {
		t.Errorf("exit %d, want 5 (denied); stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
	}
	if jsonOut {
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		var e struct {
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &e); err != nil || e.Error == nil || e.Error.Code != "denied" {
			t.Errorf("stdout %q: want {\"error\":{\"code\":\"denied\",...}}", r.Stdout)
		}
	} else if r.Stdout != "" {
		t.Errorf("stdout %q: want nothing (no --json)", r.Stdout)
	}
	if strings.TrimSpace(r.Stderr) == "" {
		t.Errorf("no message on stderr")
	}
	nothingNew(t, before, takeSnapshot(t, w))

	got, raw, _ := readAudit(t, w.audit, off)
	if len(got) != 1 {
		t.Errorf("want exactly one audit line in %s (audit_log of %s) for the refusal %q, got %d:\n%s",
			w.audit, confFile, firstLine(r.Stderr), len(got), strings.Join(raw, "\n"))
		if len(got) == 0 {
			return nil
		}
	}
	a := got[len(got)-1]
	if a.str("outcome") != "refused" || a.str("requested_by") != asker || a.str("user") != runAs {
		t.Errorf("audit line %s: want outcome refused, requested_by %s, user %s", raw[len(raw)-1], asker, runAs)
	}
	t.Logf("exit %d, stderr %s    audit: %s", r.Exit, strings.TrimSpace(r.Stderr), raw[len(raw)-1])
	return a
}

func testRefusals(t *testing.T, w *world, first job) {
	p := w.pool
	evilConf := filepath.Join(w.evil, "config.toml")
	evilState := filepath.Join(w.evil, "state")
	evilConfText := fmt.Sprintf("state_dir = %q\nallow_free_commands = true\n", evilState)
	// www-data writes its own config, from a request.
	if r := p.run(t, []string{"/bin/true"}, nil, map[string]string{evilConf: evilConfText}); r.Exit != 0 {
		t.Fatalf("page could not run /bin/true: %+v", r)
	}
	if _, o, _ := statOwner(t, evilConf); o != w.webUID {
		t.Fatalf("%s is owned by %d, want www-data", evilConf, o)
	}
	prof := []string{"--profile", "build", "--arg", "org=mars", "--arg", "name=mpvg"}
	sched := func(extra ...string) []string {
		return append([]string{"schedule", "--json"}, extra...)
	}
	buildWith := func(org, name string) []string {
		return sched("--profile", "build", "--arg", "org="+org, "--arg", "name="+name)
	}
	const secret = "s3cr3t-value-do-not-log"
	cases := []struct {
		name string
		args []string
	}{
		{"free command after --", sched("--", "id")},
		{"free command with --command", sched("--command", "id")},
		{"--config www-data wrote, profile", append([]string{"--config", evilConf}, sched(prof...)...)},
		{"--config www-data wrote, free command", append([]string{"--config", evilConf}, sched("--", "id")...)},
		{"--state-dir on schedule", append([]string{"--state-dir", evilState}, sched(prof...)...)},
		{"--state-dir on status", []string{"--state-dir", evilState, "status", "--json", first.ID}},
		{"--inherit-env", sched(append([]string{"--inherit-env"}, prof...)...)},
		{"--env the profile does not allow", sched(append([]string{"--env", "SECRET=" + secret}, prof...)...)},
		{"--env allowed and not allowed", sched(append([]string{"--env", "BUILD_FLAVOR=fast", "--env", "LD_PRELOAD=/tmp/x.so"}, prof...)...)},
		{"--workdir", sched(append([]string{"--workdir", "/tmp"}, prof...)...)},
		{"--arg mars;id", buildWith("mars;id", "mpvg")},
		{"--arg ../..", buildWith("mars", "../..")},
		{"--arg $(id)", buildWith("$(id)", "mpvg")},
		{"--arg with a newline", buildWith("mars\nid", "mpvg")},
		{"--arg empty", buildWith("mars", "")},
		{"--arg 10 KB", buildWith(strings.Repeat("a", 10240), "mpvg")},
		{"--arg the profile does not take", sched(append(prof, "--arg", "evil=x")...)},
		{"unknown profile", sched("--profile", "nope", "--arg", "org=mars", "--arg", "name=mpvg")},
		{"status ../ ID", []string{"status", "--json", "../../../etc/passwd"}},
		{"status ../ + real ID", []string{"status", "--json", "../jobs/" + first.ID}},
		{"log ../ ID", []string{"log", "--json", "../" + filepath.Base(w.stateDir) + "/jobs/" + first.ID}},
		{"log ../ ID (plain)", []string{"log", "../../etc/shadow"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := expectDenied(t, w, itest.WebUser, slices.Contains(c.args, "--json"), func() result {
				return p.sudo(t, c.args...).result
			})
			if a != nil && strings.Contains(fmt.Sprint(a), secret) {
				t.Errorf("the audit line shows the --env value: %v", a)
			}
		})
	}
	if _, err := os.Lstat(evilState); !os.IsNotExist(err) {
		t.Errorf("www-data's state dir %s was created (%v): a refused --state-dir was obeyed", evilState, err)
	}
}

// testEnvOverrides: CMESH_RUN_CONFIG and CMESH_RUN_STATE_DIR in www-data's environment.
func testEnvOverrides(t *testing.T, w *world, first job) {
	p := w.pool
	evilConf := filepath.Join(w.evil, "config.toml")
	evilState := filepath.Join(w.evil, "state")
	vars := map[string]string{"CMESH_RUN_CONFIG": evilConf, "CMESH_RUN_STATE_DIR": evilState}

	for _, v := range []string{"CMESH_RUN_CONFIG", "CMESH_RUN_STATE_DIR"} {
		t.Run("sudo --preserve-env="+v, func(t *testing.T) {
			before := takeSnapshot(t, w)
			_, _, off := readAudit(t, w.audit, 0)
			argv := []string{sudoBin, "-n", "--preserve-env=" + v, "-u", runAs, installed, "schedule", "--json", "--", "id"}
			r := p.run(t, argv, map[string]string{v: vars[v]}, nil)
			switch {
			case r.Exit == 5:
				t.Logf("sudo passed %s on; cmesh-run refused it (exit 5): %s", v, strings.TrimSpace(r.Stderr))
				lines, raw, _ := readAudit(t, w.audit, off)
				if len(lines) != 1 || lines[0].str("outcome") != "refused" {
					t.Errorf("want one refused audit line, got %q", raw)
				}
			case r.Exit != 0 && strings.Contains(r.Stderr, "sudo:") && strings.Contains(r.Stderr, "not allowed"):
				t.Logf("WHICH HAPPENED: sudo itself refused to preserve %s (exit %d: %s); cmesh-run never ran", v, r.Exit, strings.TrimSpace(r.Stderr))
				if lines, raw, _ := readAudit(t, w.audit, off); len(lines) != 0 {
					t.Errorf("cmesh-run ran although sudo refused: %q", raw)
				}
			default:
				t.Errorf("sudo --preserve-env=%s: exit %d, stdout %q, stderr %q: want sudo to refuse, or cmesh-run to exit 5", v, r.Exit, r.Stdout, r.Stderr)
			}
			nothingNew(t, before, takeSnapshot(t, w))
		})
		t.Run("sudo "+v+"=... on sudo's command line", func(t *testing.T) {
			before := takeSnapshot(t, w)
			_, _, off := readAudit(t, w.audit, 0)
			argv := []string{sudoBin, "-n", "-u", runAs, v + "=" + vars[v], installed, "schedule", "--json", "--", "id"}
			r := p.run(t, argv, nil, nil)
			switch {
			case r.Exit == 5:
				t.Logf("sudo set %s; cmesh-run refused it (exit 5)", v)
			case r.Exit != 0 && strings.Contains(r.Stderr, "sudo:") && strings.Contains(r.Stderr, "not allowed"):
				t.Logf("WHICH HAPPENED: sudo refused to set %s (exit %d: %s)", v, r.Exit, strings.TrimSpace(r.Stderr))
				if lines, raw, _ := readAudit(t, w.audit, off); len(lines) != 0 {
					t.Errorf("cmesh-run ran although sudo refused: %q", raw)
				}
			default:
				t.Errorf("exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
			}
			nothingNew(t, before, takeSnapshot(t, w))
		})
	}

	// Plain sudo with both variables in the caller's environment: sudo's env_reset drops them,
	// so cmesh-run uses the root config and its state dir. A status of a job of the real state
	// dir works (it would be refused, or not found, had either variable arrived), and a free
	// command is still refused, by the root config's allow_free_commands = false.
	t.Run("plain sudo drops them", func(t *testing.T) {
		argv := []string{sudoBin, "-n", "-u", runAs, installed, "status", "--json", first.ID}
		r := p.run(t, argv, vars, nil)
		var j job
		if r.Exit != 0 || json.Unmarshal([]byte(r.Stdout), &j) != nil || j.ID != first.ID {
			t.Errorf("status with CMESH_RUN_* set: exit %d, stdout %q, stderr %q: the variables reached cmesh-run?", r.Exit, r.Stdout, r.Stderr)
		} else {
			t.Logf("WHICH HAPPENED: sudo (env_reset) dropped CMESH_RUN_CONFIG and CMESH_RUN_STATE_DIR; cmesh-run read the root config's state dir")
		}
		a := expectDenied(t, w, itest.WebUser, true, func() result {
			return p.run(t, []string{sudoBin, "-n", "-u", runAs, installed, "schedule", "--json", "--", "id"}, vars, nil).result
		})
		if a != nil && strings.Contains(a.str("error"), "CMESH_RUN_") {
			t.Errorf("refused because of a variable that should not have arrived: %v", a)
		}
	})

	// Should a sudoers rule let them through, cmesh-run itself refuses them. root's rule
	// (ALL) allows --preserve-env, so root shows what would happen.
	for _, v := range []string{"CMESH_RUN_CONFIG", "CMESH_RUN_STATE_DIR"} {
		t.Run("cmesh-run refuses "+v+" when a sudo rule lets it through", func(t *testing.T) {
			env := append(rootEnv(), v+"="+vars[v])
			expectDenied(t, w, "root", true, func() result {
				return runAsRoot(t, env, sudoBin, "-n", "--preserve-env="+v, "-u", runAs, installed, "schedule", "--json", "--profile", "build", "--arg", "org=mars", "--arg", "name=mpvg")
			})
		})
	}
	if _, err := os.Lstat(evilState); !os.IsNotExist(err) {
		t.Errorf("www-data's state dir %s was created (%v): CMESH_RUN_STATE_DIR was obeyed", evilState, err)
	}
}

// testConfigCheck: a config that someone other than root could have written is refused.
func testConfigCheck(t *testing.T, w *world, first job) {
	p := w.pool
	restore := func() {
		itest.Must(t, os.Chown(confFile, 0, 0))
		itest.Must(t, os.Chmod(confFile, 0o644))
	}
	defer restore()
	calls := [][]string{
		{"schedule", "--json", "--profile", "build", "--arg", "org=mars", "--arg", "name=mpvg"},
		{"status", "--json", first.ID},
		{"log", "--json", first.ID},
		{"list", "--json"},
		{"status", "--json"},
	}
	for _, c := range []struct {
		name   string
		change func()
	}{
		{"group-writable 0664", func() { itest.Must(t, os.Chmod(confFile, 0o664)) }},
		{"owned by www-data", func() { itest.Must(t, os.Chown(confFile, w.webUID, w.webGID)) }},
		{"world-writable 0646", func() { itest.Must(t, os.Chmod(confFile, 0o646)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.change()
			defer restore()
			for _, args := range calls {
				before := takeSnapshot(t, w)
				r := p.sudo(t, args...)
				if r.Exit != 5 || !strings.Contains(r.Stdout, `"denied"`) {
					t.Errorf("config %s: sudo cmesh-run %s: exit %d, stdout %q, stderr %q; want exit 5 denied", c.name, strings.Join(args, " "), r.Exit, r.Stdout, r.Stderr)
				} else {
					t.Logf("%s: exit 5: %s", strings.Join(args[:1], " "), firstLine(r.Stderr))
				}
				nothingNew(t, before, takeSnapshot(t, w))
			}
		})
	}
	restore()
	if r := p.sudo(t, "status", "--json", first.ID); r.Exit != 0 {
		t.Errorf("after restoring the config to root:root 0644, status fails: exit %d %q", r.Exit, r.Stderr)
	}
}

// checkStateModes walks the state dir: every dir 2750, every file 0640, all group www-data,
// nothing for others; but private/ (the locks, the fallback audit log) is the owner's alone:
// 0700, files 0600 or less.
func checkStateModes(t *testing.T, w *world) {
	n := 0
	err := filepath.WalkDir(w.stateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(path)
		if err != nil {
			return err
		}
		n++
		sys := st.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(w.stateDir, path)
		if rel == "private" || strings.HasPrefix(rel, "private/") {
			switch {
			case st.IsDir() && st.Mode().Perm() != 0o700:
				t.Errorf("dir %s: %v, want 0700", rel, st.Mode())
			case st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0:
				t.Errorf("file %s: %v, want 0600 or less", rel, st.Mode())
			case !st.IsDir() && !st.Mode().IsRegular():
				t.Errorf("%s: unexpected %v", rel, st.Mode())
			}
			if int(sys.Uid) != w.runUID {
				t.Errorf("%s: owner %d, want %s (%d)", rel, sys.Uid, runAs, w.runUID)
			}
			return nil
		}
		switch {
		case st.IsDir():
			if st.Mode()&fs.ModeSetgid == 0 || st.Mode().Perm() != 0o750 {
				t.Errorf("dir %s: %v, want drwxr-s--- (2750)", rel, st.Mode())
			}
		case st.Mode().IsRegular():
			if st.Mode().Perm() != 0o640 {
				t.Errorf("file %s: %v, want 0640", rel, st.Mode())
			}
		default:
			t.Errorf("%s: unexpected %v", rel, st.Mode())
		}
		if int(sys.Gid) != w.webGID {
			t.Errorf("%s: group %d, want www-data (%d)", rel, sys.Gid, w.webGID)
		}
		if int(sys.Uid) != w.runUID {
			t.Errorf("%s: owner %d, want %s (%d)", rel, sys.Uid, runAs, w.runUID)
		}
		if st.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s: others may access it (%v)", rel, st.Mode())
		}
		return nil
	})
	itest.Must(t, err)
	t.Logf("%d entries of the state dir checked", n)
}

// ---------------------------------------------------------------------------------------------

func envLines(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && k != "" && !strings.ContainsAny(k, " \t") {
			m[k] = v
		}
	}
	return m
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	itest.Must(t, err)
	return b
}

func withNL(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return append(append([]byte{}, b...), '\n')
	}
	return b
}

func lineIs(data []byte, name string) bool {
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == name {
			return true
		}
	}
	return false
}

func passwdField(t *testing.T, name string, field int) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/getent", "passwd", name).Output()
	itest.Must(t, err)
	f := strings.Split(strings.TrimSpace(string(out)), ":")
	if len(f) <= field {
		t.Fatalf("getent passwd %s: %q", name, out)
	}
	return f[field]
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}
