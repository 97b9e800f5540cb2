//go:build integration

package readme

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// how says what a spanChecks entry does with its command.
type how string

const (
	runAsIs   how = "run as is"
	rewritten how = "run rewritten"
	covered   how = "covered by"
	checked   how = "checked, not run"
)

type spanCheck struct {
	how   how
	why   string // the rewrite, or what proves the command and why it does not run here
	check func(t *testing.T, span string)
}

// readmeSedFix is the README's fix for Debian's at.deny; doctor must print the same one.
const readmeSedFix = `sed -i '/^www-data$/d' /etc/at.deny`

// spanChecks has one entry per command in an inline code span of README.md, keyed by the
// span as it reads (whitespace collapsed). TestReadmeEverythingHasACheck fails on a command
// span missing here and on an entry the README no longer has.
var spanChecks = map[string]spanCheck{
	"make test": {checked,
		"it is what runs this suite; the Makefile's test target runs scripts/test.sh, which .ci/run calls with CMESH_RUN_REQUIRE_INTEGRATION=1",
		func(t *testing.T, _ string) { checkMakeTestRunsEverything(t) }},
	"CMESH_RUN_REQUIRE_INTEGRATION=1 make test": {checked,
		"as make test; scripts/test.sh turns a skipped suite into a failure with it",
		func(t *testing.T, _ string) { checkMakeTestRunsEverything(t) }},
	"make demo": {covered, `this suite: block sh "cmesh-run" #1 runs it from the repo root`,
		inBlock(`sh "cmesh-run" #1`, "make demo")},
	"make install": {covered, `this suite: block sh "Install" #1 runs it with DESTDIR in a temp dir`,
		inBlock(`sh "Install" #1`, "make install")},
	"make man": {rewritten,
		"make -n man (it would overwrite the committed man page); the binary's _man prints a man page; scripts/test.sh fails on a stale one",
		checkMakeMan},
	"make bench": {checked,
		"make -n bench: it runs scripts/bench.sh, for minutes, against at, nq and task-spooler; docs/benchmarks.md holds its table",
		checkMakeBench},
	"man -l man/cmesh-run.1":            {runAsIs, "from the repo root with MANPAGER=cat; the page has every command and flag of the binary", checkMan},
	"at now":                            {runAsIs, "a one-line script on stdin, which atd runs", checkAtNow},
	`schedule --command 'prog "a b" c'`: {rewritten, "cmesh-run in front, prog a script that prints each argument", checkCommandSplit},
	`schedule -- sh -c '...'`:           {rewritten, "cmesh-run in front, '...' a pipeline with an arithmetic expansion", checkShellJob},
	"cmesh-run worker":                  {runAsIs, "started in the background, runs a spool job, stopped by PID with SIGTERM", checkWorker},
	"cmesh-run drain":                   {runAsIs, "after a spool job was scheduled, which it starts", checkDrain},
	"setup --supervisor FILE":           {rewritten, "cmesh-run in front, FILE a temp path; without --write it only prints", checkSetupSupervisor},
	"* * * * * cmesh /usr/local/bin/cmesh-run drain": {rewritten,
		"the crontab line's fields checked; its command run as root (the user cmesh is made by setup --write, proved by test/sudo)",
		checkCronDrain},
	"status --json": {covered,
		"test/integration TestProgress: the job object with its progress, and its hook in TestHooksRunOnceAfterTheEnd",
		coveredBy("test/integration/hooks_test.go", "TestProgress", `e.must("status", "--json", id)`)},
	"log --json": {covered,
		"test/integration TestProgress: one poll's bytes with the progress",
		coveredBy("test/integration/hooks_test.go", "TestProgress", `e.must("log", "--json", id)`)},
	"log --hook ID": {covered,
		"test/integration TestHooksRunOnceAfterTheEnd: the hook's output through log --hook, apart from the job's",
		coveredBy("test/integration/hooks_test.go", "TestHooksRunOnceAfterTheEnd", `l.must("log", "--hook", id)`)},
	"systemctl restart php8.2-fpm": {covered,
		"test/systemd TestJobSurvivesFPMRestart: needs systemd as PID 1 and php-fpm, which the test boots in a container",
		coveredBy("test/systemd/restart_test.go", "TestJobSurvivesFPMRestart", `"systemctl", "restart", fpmUnit`)},
	"cmd > log 2>&1 &": {covered,
		"test/systemd TestJobSurvivesFPMRestart: its control page starts a job so and sees it die with the pool's cgroup",
		coveredBy("test/systemd/restart_test.go", "TestJobSurvivesFPMRestart", `2>&1 &`)},
	readmeSedFix: {rewritten, "on a temp copy of /etc/at.deny (the real one is never changed)", checkSedAtDeny},
	"systemctl enable --now atd": {rewritten,
		"systemctl --root=TEMP enable atd: the enabling, in a temp root; --now needs systemd as PID 1, test/systemd TestJobSurvivesFPMRestart starts atd.service under one",
		checkSystemctlEnable},
	"/usr/sbin/atd": {covered,
		"test/integration TestZAtdDown stops the machine's atd and starts it again with /usr/sbin/atd; a second one here would disturb the running one",
		coveredBy("test/integration/at_test.go", "TestZAtdDown", `exec.Command("/usr/sbin/atd")`)},
	"sudo -u www-data /usr/local/bin/cmesh-run doctor": {rewritten,
		"the binary under test run as www-data by the test itself (sudo would put cmesh-run in sudo mode, proved by test/sudo), with the temp state dir",
		checkDoctorAsWebUser},
	"cmesh-run setup --web-user www-data --run-as cmesh": {runAsIs, "without --write it only prints the plan: the README's sudo rule among it", checkSetupPlan},
	"cmesh-run setup": {runAsIs, "the defaults are www-data and cmesh: the same plan", checkSetupPlan},
	"setup --write": {covered, "test/sudo TestRunAsAndLockDown: it creates a user and a sudo rule, then restores the machine",
		coveredBy("test/sudo/sudo_test.go", "TestRunAsAndLockDown", `append(args, "--write")`)},
	"visudo -cf": {covered, "test/sudo TestRunAsAndLockDown: setup --write checks the sudo rule with it before installing it",
		coveredBy("test/sudo/sudo_test.go", "TestRunAsAndLockDown", `"visudo -cf"`)},
	"sudo -n -u cmesh /usr/local/bin/cmesh-run schedule --profile pushfin --arg org=mars ...": {covered,
		"test/sudo TestRunAsAndLockDown: needs the user, the sudo rule and a profile that setup --write and the test install",
		coveredBy("test/sudo/sudo_test.go", "TestRunAsAndLockDown", `"-n", "-u", runAs`)},
	"cmesh-run log --follow ID": {rewritten, `ID the "$id" of a job just scheduled`, checkLogFollow},
	"cmesh-run doctor":          {runAsIs, "as root, with the temp state dir: each line OK, WARN or FAIL, exit 1 exactly on a FAIL", checkDoctorAsRoot},
}

// TestReadmeCommandSpans runs the spanChecks of the commands README.md shows;
// TestReadmeEverythingHasACheck fails on a command span without one.
func TestReadmeCommandSpans(t *testing.T) {
	needAtd(t)
	spans := parseReadme(t).commandSpans(subcommands(t))
	var names []string
	for s := range spanChecks {
		if _, ok := spans[s]; ok {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	for _, s := range names {
		c := spanChecks[s]
		t.Run(safeName(s), func(t *testing.T) {
			t.Logf("README.md:%d `%s`: %s: %s", spans[s], s, c.how, c.why)
			c.check(t, s)
		})
	}
}

// inBlock checks that a fenced block of the README, which TestReadmeShellBlocks runs, has
// the command line.
func inBlock(key, line string) func(t *testing.T, span string) {
	return func(t *testing.T, _ string) {
		for _, b := range parseReadme(t).blocks {
			if b.key() != key {
				continue
			}
			for _, l := range commandLines(b.text) {
				if l.key == line {
					return
				}
			}
		}
		t.Errorf("README.md has no block %s with the line %q", key, line)
	}
}

// coveredBy checks that the named test exists in file, and that its package (the dir of
// file) has each needle, the call that proves the command.
func coveredBy(file, test string, needles ...string) func(t *testing.T, span string) {
	return func(t *testing.T, _ string) {
		src := readFile(t, filepath.Join(repoRoot, file))
		if !regexp.MustCompile(`(?m)^func ` + test + `\(t \*testing\.T\) \{`).MatchString(src) {
			t.Errorf("%s has no func %s(t *testing.T)", file, test)
		}
		files, _ := filepath.Glob(filepath.Join(repoRoot, filepath.Dir(file), "*_test.go"))
		var pkg strings.Builder
		for _, f := range files {
			pkg.WriteString(readFile(t, f))
		}
		for _, n := range needles {
			if !strings.Contains(pkg.String(), n) {
				t.Errorf("%s no longer has %s", filepath.Dir(file), n)
			}
		}
	}
}

func mustReplace(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q has no %q to rewrite", s, old)
	}
	return strings.Replace(s, old, new, 1)
}

// sh runs script with bash in the sandbox, the README's placeholders rewritten.
func (sb *sandbox) sh(script string) result {
	sb.t.Helper()
	sb.t.Logf("bash: %s", sb.rewrite(script))
	return execIn(sb.t, sb.dir, sb.env(), 2*deadline, "", "/bin/bash", "-c", "set -euo pipefail\n"+sb.rewrite(script))
}

func (sb *sandbox) mustSh(script string) result {
	sb.t.Helper()
	r := sb.sh(script)
	if r.code != 0 {
		sb.t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

const pushfin = "/opt/cmesh/scripts/pushfin.sh -o mars -n mpvg"

func checkLogFollow(t *testing.T, span string) {
	sb := newSandbox(t)
	r := sb.mustSh(`id=$(cmesh-run schedule -- ` + pushfin + ")\n" + mustReplace(t, span, "ID", `"$id"`))
	if want := pushfinOutput(sb.dir, ""); r.stdout != want {
		t.Errorf("printed %q, want %q", r.stdout, want)
	}
}

func checkCommandSplit(t *testing.T, span string) {
	sb := newSandbox(t)
	prog := filepath.Join(sb.dir, "prog")
	itest.Must(t, os.WriteFile(prog, []byte("#!/bin/sh\nfor a; do printf '[%s]\\n' \"$a\"; done\n"), 0o755))
	r := sb.mustSh(`id=$(cmesh-run ` + mustReplace(t, span, "'prog ", "'"+prog+" ") + ")\n" +
		`cmesh-run wait --timeout 60s "$id"` + "\n" + `cmesh-run log "$id"`)
	if r.stdout != "[a b]\n[c]\n" {
		t.Errorf("the job got %q, want the two arguments [a b] and [c]", r.stdout)
	}
}

func checkShellJob(t *testing.T, span string) {
	sb := newSandbox(t)
	r := sb.mustSh(`id=$(cmesh-run ` + mustReplace(t, span, "'...'", `'echo "shell: $((6 * 7))" | tr a-z A-Z'`) + ")\n" +
		`cmesh-run wait --timeout 60s "$id"` + "\n" + `cmesh-run log "$id"`)
	if r.stdout != "SHELL: 42\n" {
		t.Errorf("the job printed %q, want SHELL: 42", r.stdout)
	}
}

func checkWorker(t *testing.T, span string) {
	sb := newSandbox(t)
	argv := strings.Fields(span)
	cmd := exec.Command(bin, argv[1:]...)
	cmd.Dir, cmd.Env = sb.dir, sb.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	itest.Must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-done
		}
	})
	id := sb.schedule("--backend", "spool", "--", sb.rewrite("/opt/cmesh/scripts/pushfin.sh"), "-o", "mars", "-n", "mpvg")
	sb.waitOK(id)
	if got, want := sb.mustCmesh("log", id), pushfinOutput(sb.dir, ""); got != want {
		t.Errorf("spool job printed %q, want %q", got, want)
	}
	itest.Must(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("worker after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(deadline):
		t.Fatalf("worker still running %v after SIGTERM\n%s", deadline, out.String())
	}
}

func checkDrain(t *testing.T, span string) {
	sb := newSandbox(t)
	id := sb.schedule("--backend", "spool", "--", sb.rewrite("/opt/cmesh/scripts/pushfin.sh"), "-o", "mars", "-n", "mpvg")
	sb.mustSh(span)
	sb.waitOK(id)
	if got, want := sb.mustCmesh("log", id), pushfinOutput(sb.dir, ""); got != want {
		t.Errorf("spool job printed %q, want %q", got, want)
	}
}

func checkCronDrain(t *testing.T, span string) {
	sb := newSandbox(t)
	f := strings.Fields(span)
	if len(f) < 7 || !isCronTimes(f[:5]) || !filepath.IsAbs(f[6]) {
		t.Fatalf("not a system crontab line (5 time fields, a user, a command by absolute path): %q", f)
	}
	sb.mustSh(strings.Join(f[6:], " "))
	if js := sb.jobs(); len(js) != 0 {
		t.Errorf("drain of an empty spool made jobs: %+v", js)
	}
}

func checkSetupSupervisor(t *testing.T, span string) {
	sb := newSandbox(t)
	conf := filepath.Join(sb.dir, "cmesh-run-worker.conf")
	r := sb.mustSh("cmesh-run " + mustReplace(t, span, "FILE", conf))
	wantMatch(t, r.stdout, `(?m)^\[program:cmesh-run-worker\]$`, `(?m)^command=/usr/local/bin/cmesh-run --state-dir \S+ worker$`, regexp.QuoteMeta(conf))
	if _, err := os.Stat(conf); err == nil {
		t.Errorf("setup without --write wrote %s", conf)
	}
}

// checkSetupPlan runs the README's setup command: it prints the README's sudo rule, unless
// the machine already has it.
func checkSetupPlan(t *testing.T, span string) {
	sb := newSandbox(t)
	r := sb.mustSh(span)
	rule := "www-data ALL=(cmesh) NOPASSWD: /usr/local/bin/cmesh-run"
	if !strings.Contains(readmeText(t), "`"+rule+"`") {
		t.Errorf("README.md no longer shows the sudo rule %q", rule)
	}
	if have, _ := os.ReadFile("/etc/sudoers.d/cmesh-run"); strings.Contains(string(have), rule) {
		t.Logf("/etc/sudoers.d/cmesh-run already has the rule: the plan leaves it out")
		return
	}
	wantMatch(t, r.stdout, regexp.QuoteMeta(rule), `visudo -cf`)
}

func readmeText(t *testing.T) string { return readFile(t, filepath.Join(repoRoot, "README.md")) }

func checkSedAtDeny(t *testing.T, span string) {
	sb := newSandbox(t)
	deny := filepath.Join(sb.dir, "at.deny")
	orig, err := os.ReadFile("/etc/at.deny")
	if err != nil {
		orig = []byte("daemon\nnobody\n")
	}
	lines := strings.Split(strings.TrimRight(string(orig), "\n"), "\n")
	if !slices.Contains(lines, "www-data") {
		lines = append(lines, "www-data")
	}
	itest.Must(t, os.WriteFile(deny, []byte(strings.Join(lines, "\n")+"\n"), 0o640))
	sb.mustSh(mustReplace(t, span, "/etc/at.deny", deny))
	want := slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return l == "www-data" })
	if got := readFile(t, deny); got != strings.Join(want, "\n")+"\n" {
		t.Errorf("after the sed:\n%s\nwant every line but www-data:\n%s", got, strings.Join(want, "\n"))
	}
}

func checkSystemctlEnable(t *testing.T, span string) {
	systemctl, err := exec.LookPath("systemctl")
	unit := ""
	for _, p := range []string{"/lib/systemd/system/atd.service", "/usr/lib/systemd/system/atd.service"} {
		if _, err := os.Stat(p); err == nil {
			unit = p
		}
	}
	if err != nil || unit == "" {
		unavailable(t, "systemctl or atd.service missing")
	}
	root := t.TempDir()
	itest.Must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(unit)), 0o755))
	itest.Must(t, os.WriteFile(filepath.Join(root, unit), []byte(readFile(t, unit)), 0o644))
	args := strings.Fields(mustReplace(t, span, "systemctl enable --now", "systemctl --root="+root+" enable"))
	r := execIn(t, root, []string{"PATH=" + itest.StdPath}, deadline, "", append([]string{systemctl}, args[1:]...)...)
	if r.code != 0 {
		t.Fatalf("%q: exit %d: %s%s", args, r.code, r.stdout, r.stderr)
	}
	if links, _ := filepath.Glob(filepath.Join(root, "etc/systemd/system/*.wants/atd.service")); len(links) == 0 {
		t.Errorf("systemctl enable made no .wants link for atd.service:\n%s", r.stderr)
	}
}

func checkAtNow(t *testing.T, span string) {
	sb := newSandbox(t)
	ran := filepath.Join(sb.dir, "at-ran")
	r := sb.mustSh("echo " + shQuote("echo ran > "+shQuote(ran)) + " | " + span)
	m := regexp.MustCompile(`(?m)^job (\d+) at `).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("at printed no job number: %s", r.stderr)
	}
	ok := false
	t.Cleanup(func() {
		if !ok {
			exec.Command("/usr/bin/atrm", m[1]).Run()
		}
	})
	waitFor(t, "at job "+m[1]+" to run", func() bool { b, _ := os.ReadFile(ran); return string(b) == "ran\n" })
	ok = true
}

// makeDryRun runs the span's make command with -n from the repo root:
// what it would do, without doing it.
func makeDryRun(t *testing.T, span string) result {
	t.Helper()
	genv, goDir := goEnv(t)
	args := strings.Fields(mustReplace(t, span, "make", "make -n"))
	return execIn(t, repoRoot, append(genv, "PATH="+goDir+":"+itest.StdPath), deadline, "", args...)
}

func checkMakeMan(t *testing.T, span string) {
	r := makeDryRun(t, span)
	if r.code != 0 || !strings.Contains(r.stdout, "./cmesh-run _man > man/cmesh-run.1") {
		t.Errorf("make -n man: exit %d, does not write the man page from the binary:\n%s%s", r.code, r.stdout, r.stderr)
	}
	page := execIn(t, repoRoot, []string{"PATH=" + itest.StdPath}, deadline, "", bin, "_man")
	if page.code != 0 || !strings.HasPrefix(page.stdout, ".TH CMESH\\-RUN 1 ") {
		t.Errorf("cmesh-run _man: exit %d, not a man page: %.200s", page.code, page.stdout)
	}
	wantMatch(t, readFile(t, filepath.Join(repoRoot, "scripts/test.sh")), regexp.QuoteMeta(`./cmesh-run _man | diff -u man/cmesh-run.1 -`))
}

func checkMakeBench(t *testing.T, span string) {
	r := makeDryRun(t, span)
	if r.code != 0 || !strings.Contains(r.stdout, "bash scripts/bench.sh") {
		t.Errorf("make -n bench: exit %d, does not run scripts/bench.sh:\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, f := range []string{"scripts/bench.sh", "docs/benchmarks.md"} {
		if _, err := os.Stat(filepath.Join(repoRoot, f)); err != nil {
			t.Errorf("the README names %s: %v", f, err)
		}
	}
}

func checkMan(t *testing.T, span string) {
	if _, err := exec.LookPath("man"); err != nil {
		unavailable(t, "man missing (apt-get install man-db)")
	}
	argv := strings.Fields(span)
	r := execIn(t, repoRoot, []string{"PATH=" + itest.StdPath, "MANPAGER=cat", "MANWIDTH=100"}, deadline, "", argv...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	// What the README says the page has.
	for _, sec := range []string{"COMMANDS", "STATES", "MARKERS", "THE JOB'S ENVIRONMENT", "FILES", "EXIT STATUS", "SPOOL REQUESTS"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sec) + `$`).MatchString(r.stdout) {
			t.Errorf("the man page has no section %s", sec)
		}
	}
	src := strings.ReplaceAll(readFile(t, filepath.Join(repoRoot, "man/cmesh-run.1")), `\-`, "-")
	for sub := range subcommands(t) {
		for f := range optionFlags(help(t, sub)) {
			if strings.HasPrefix(f, "--") && f != "--help" && !strings.Contains(src, f) {
				t.Errorf("the man page does not have %s %s", sub, f)
			}
		}
		if !strings.Contains(src, sub) {
			t.Errorf("the man page does not have the command %s", sub)
		}
	}
}

// doctorLine is one check of doctor's text output.
type doctorLine struct{ status, text, fix string }

// parseDoctor reads doctor's output, failing on a line that is not OK, WARN, FAIL or the fix
// of the line above, and on a WARN or FAIL without a fix.
func parseDoctor(t *testing.T, out string) []doctorLine {
	t.Helper()
	var ls []doctorLine
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if m := regexp.MustCompile(`^(OK|WARN|FAIL)\s+(.*)$`).FindStringSubmatch(l); m != nil {
			ls = append(ls, doctorLine{status: m[1], text: m[2]})
		} else if fix, ok := strings.CutPrefix(strings.TrimSpace(l), "fix: "); ok && len(ls) > 0 && strings.HasPrefix(l, " ") {
			ls[len(ls)-1].fix = fix
		} else {
			t.Errorf("doctor line %q is none of OK, WARN, FAIL or a fix", l)
		}
	}
	for _, l := range ls {
		if l.status != "OK" && l.fix == "" {
			t.Errorf("doctor: %s %s has no fix", l.status, l.text)
		}
	}
	return ls
}

// checkDoctorExit checks the README's "exit 1 on any FAIL".
func checkDoctorExit(t *testing.T, r result, ls []doctorLine) {
	t.Helper()
	failed := slices.ContainsFunc(ls, func(l doctorLine) bool { return l.status == "FAIL" })
	if want := map[bool]int{false: 0, true: 1}[failed]; r.code != want {
		t.Errorf("doctor exited %d with FAIL lines %v, want %d\n%s%s", r.code, failed, want, r.stdout, r.stderr)
	}
}

func checkDoctorAsRoot(t *testing.T, span string) {
	sb := newSandbox(t)
	r := sb.sh(span)
	ls := parseDoctor(t, r.stdout)
	checkDoctorExit(t, r, ls)
	for _, name := range []string{"at installed", "atd running", "probe job"} {
		if !slices.ContainsFunc(ls, func(l doctorLine) bool { return l.status == "OK" && strings.HasPrefix(l.text, name+":") }) {
			t.Errorf("doctor as root has no OK line for %s:\n%s", name, r.stdout)
		}
	}
}

func checkDoctorAsWebUser(t *testing.T, span string) {
	sb := newSandbox(t)
	u, err := user.Lookup("www-data")
	if err != nil {
		t.Fatalf("no user www-data: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	var groups []uint32
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			n, _ := strconv.Atoi(g)
			groups = append(groups, uint32(n))
		}
	}
	// www-data must reach the binary and own the state dir.
	itest.Must(t, os.Chmod(filepath.Dir(sb.dir), 0o755))
	itest.Must(t, os.Chmod(sb.dir, 0o755))
	wbin := filepath.Join(sb.dir, "wbin")
	itest.Must(t, os.MkdirAll(wbin, 0o755))
	itest.Must(t, os.WriteFile(filepath.Join(wbin, "cmesh-run"), []byte(readFile(t, bin)), 0o755))
	itest.Must(t, os.Mkdir(sb.state, 0o700))
	itest.Must(t, os.Chown(sb.state, uid, gid))

	argv := strings.Fields(mustReplace(t, span, "sudo -u www-data /usr/local/bin/cmesh-run", filepath.Join(wbin, "cmesh-run")))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = sb.dir
	cmd.Env = []string{"PATH=" + itest.StdPath, "CMESH_RUN_STATE_DIR=" + sb.state, "CMESH_RUN_CONFIG=" + emptyConfig, "HOME=" + u.HomeDir, "USER=www-data", "LOGNAME=www-data"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = runWithin(cmd, 2*deadline)
	r := result{so.String(), se.String(), cmd.ProcessState.ExitCode()}
	if err != nil && r.code < 0 {
		t.Fatalf("doctor as www-data: %v", err)
	}
	t.Logf("doctor as www-data, exit %d:\n%s", r.code, r.stdout)
	ls := parseDoctor(t, r.stdout)
	checkDoctorExit(t, r, ls)
	// On a stock Debian, www-data is in at.deny: doctor must say so with the README's fix.
	deny, _ := os.ReadFile("/etc/at.deny")
	_, allowErr := os.Stat("/etc/at.allow")
	if os.IsNotExist(allowErr) && slices.Contains(strings.Split(string(deny), "\n"), "www-data") {
		if !slices.ContainsFunc(ls, func(l doctorLine) bool { return l.status == "FAIL" && strings.Contains(l.fix, readmeSedFix) }) {
			t.Errorf("/etc/at.deny lists www-data, but no FAIL line of doctor's gives the README's fix %q:\n%s", readmeSedFix, r.stdout)
		}
	}
}

// runWithin runs cmd and kills it (by PID) if it outlives limit.
func runWithin(cmd *exec.Cmd, limit time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("killed after %v", limit)
	}
}

// ---------------------------------------------------------------------------------------------
// Flags and PHP calls named in spans

var (
	helpMu    sync.Mutex
	helpCache = map[string]string{}
)

// help returns `cmesh-run [sub] --help`.
func help(t *testing.T, sub ...string) string {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	k := strings.Join(sub, " ")
	if h, ok := helpCache[k]; ok {
		return h
	}
	out, err := exec.Command(bin, append(sub, "--help")...).Output()
	if err != nil {
		t.Fatalf("cmesh-run %s --help: %v", k, err)
	}
	helpCache[k] = string(out)
	return string(out)
}

// subcommands returns the commands `cmesh-run --help` lists.
func subcommands(t *testing.T) map[string]bool {
	t.Helper()
	h := help(t)
	i := strings.Index(h, "COMMANDS:")
	if i < 0 {
		t.Fatalf("cmesh-run --help lists no COMMANDS")
	}
	subs := map[string]bool{}
	for _, l := range strings.Split(h[i:], "\n")[1:] {
		m := regexp.MustCompile(`^\s+([a-z][a-z0-9-]*)(,\s*\S+)?\s{2,}\S`).FindStringSubmatch(l)
		if m == nil {
			break
		}
		if m[1] != "help" {
			subs[m[1]] = true
		}
	}
	if len(subs) == 0 {
		t.Fatalf("no commands in cmesh-run --help")
	}
	return subs
}

var flagToken = regexp.MustCompile(`^--?[A-Za-z][A-Za-z0-9-]*$`)

// optionFlags returns the flags a help text's option lines define (not those its
// descriptions mention).
func optionFlags(h string) map[string]bool {
	flags := map[string]bool{}
	for _, l := range strings.Split(h, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "-") {
			continue
		}
		names := regexp.MustCompile(`\s{2,}`).Split(l, 2)[0]
		for _, w := range strings.FieldsFunc(names, func(r rune) bool { return r == ' ' || r == ',' || r == '[' || r == ']' }) {
			if flagToken.MatchString(w) {
				flags[w] = true
			}
		}
	}
	return flags
}

// TestReadmeFlagsExist checks each flag a span of the README uses against the binary's help:
// a cmesh-run command's flags against its command's help, a bare flag against any.
func TestReadmeFlagsExist(t *testing.T) {
	r := parseReadme(t)
	subs := subcommands(t)
	all := optionFlags(help(t))
	for sub := range subs {
		for f := range optionFlags(help(t, sub)) {
			all[f] = true
		}
	}
	checked := 0
	for _, s := range r.spans {
		w := strings.Fields(s.text)
		var global, local []string
		sub := ""
		switch {
		case strings.HasPrefix(w[0], "--"):
			for _, x := range w {
				if flag, _, _ := strings.Cut(x, "="); flagToken.MatchString(flag) && !all[flag] {
					t.Errorf("README.md:%d `%s`: no command of cmesh-run has %s", s.line, s.text, flag)
				}
			}
			checked++
			continue
		case subs[w[0]]:
			sub, local = w[0], w[1:]
		default:
			i := slices.IndexFunc(w, func(x string) bool { return path.Base(x) == "cmesh-run" })
			if i < 0 || !isCommand(s.text, subs) {
				continue
			}
			rest := w[i+1:]
			j := slices.IndexFunc(rest, func(x string) bool { return subs[x] })
			if j < 0 {
				global = rest
			} else {
				global, sub, local = rest[:j], rest[j], rest[j+1:]
			}
		}
		checked++
		check := func(words []string, h string, where string) {
			for _, x := range words {
				if x == "--" {
					return
				}
				if flag, _, _ := strings.Cut(x, "="); flagToken.MatchString(flag) && !optionFlags(h)[flag] {
					t.Errorf("README.md:%d `%s`: %s is not a flag of %s", s.line, s.text, flag, where)
				}
			}
		}
		check(global, help(t), "cmesh-run")
		if sub != "" {
			check(local, help(t, sub), "cmesh-run "+sub)
		}
	}
	t.Logf("checked the flags of %d spans", checked)
}

var phpCall = regexp.MustCompile(`^(new\s+)?([A-Za-z_]\w*)\((.*)\)$`)

// TestReadmePHPCalls checks each PHP call a span of the README shows: a method of
// Cmesh\Run\Client (or its constructor) taking those parameters, or a PHP function.
func TestReadmePHPCalls(t *testing.T) {
	needPHP(t)
	r := parseReadme(t)
	type call struct {
		span       span
		isNew      bool
		name       string
		args       []string
		paramNames []string
	}
	var calls []call
	var names []string
	for _, s := range r.spans {
		if m := phpCall.FindStringSubmatch(s.text); m != nil {
			calls = append(calls, call{span: s, isNew: m[1] != "", name: m[2], args: splitArgs(m[3])})
			names = append(names, m[2])
		}
	}
	prog := `<?php
foreach (glob(` + itest.PHPString(filepath.Join(repoRoot, "php/src")) + ` . '/*.php') as $f) { require_once $f; }
$c = new ReflectionClass(\Cmesh\Run\Client::class);
$methods = [];
foreach ($c->getMethods(ReflectionMethod::IS_PUBLIC) as $m) {
    $methods[$m->getName()] = array_map(fn ($p) => $p->getName(), $m->getParameters());
}
$functions = [];
foreach (array_slice($argv, 1) as $n) { $functions[$n] = function_exists($n); }
echo json_encode(['class' => $c->getShortName(), 'methods' => $methods, 'functions' => $functions]);
`
	file := filepath.Join(t.TempDir(), "reflect.php")
	itest.Must(t, os.WriteFile(file, []byte(prog), 0o644))
	res := execIn(t, filepath.Dir(file), []string{"PATH=" + itest.StdPath}, deadline, "", append([]string{itest.PHPBin, file}, names...)...)
	if res.code != 0 {
		t.Fatalf("php: exit %d: %s%s", res.code, res.stdout, res.stderr)
	}
	var api struct {
		Class     string              `json:"class"`
		Methods   map[string][]string `json:"methods"`
		Functions map[string]bool     `json:"functions"`
	}
	itest.Must(t, json.Unmarshal([]byte(res.stdout), &api))
	for _, c := range calls {
		var params []string
		switch {
		case c.isNew && c.name == api.Class:
			params = api.Methods["__construct"]
		case c.isNew:
			t.Errorf("README.md:%d `%s`: no class %s in php/src", c.span.line, c.span.text, c.name)
			continue
		case api.Methods[c.name] != nil:
			params = api.Methods[c.name]
		case api.Functions[c.name]:
			continue
		default:
			t.Errorf("README.md:%d `%s`: %s is neither a method of %s nor a PHP function", c.span.line, c.span.text, c.name, api.Class)
			continue
		}
		for i, a := range c.args {
			named := regexp.MustCompile(`^([A-Za-z_]\w*)\s*:`).FindStringSubmatch(a)
			v := regexp.MustCompile(`^\$([A-Za-z_]\w*)$`).FindStringSubmatch(a)
			switch {
			case named != nil && !slices.Contains(params, named[1]):
				t.Errorf("README.md:%d `%s`: %s has no parameter %s (has %v)", c.span.line, c.span.text, c.name, named[1], params)
			case named == nil && i >= len(params):
				t.Errorf("README.md:%d `%s`: %s takes %d arguments", c.span.line, c.span.text, c.name, len(params))
			case v != nil && params[i] != v[1]:
				t.Errorf("README.md:%d `%s`: argument %d of %s is $%s, not $%s", c.span.line, c.span.text, i+1, c.name, params[i], v[1])
			}
		}
	}
	t.Logf("checked %d PHP calls", len(calls))
}

// splitArgs splits a PHP argument list at its top-level commas.
func splitArgs(s string) []string {
	var args []string
	depth, start := 0, 0
	var quote rune
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '(' || r == '[' || r == '{':
			depth++
		case r == ')' || r == ']' || r == '}':
			depth--
		case r == ',' && depth == 0:
			args = append(args, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	if rest := strings.TrimSpace(s[start:]); rest != "" {
		args = append(args, rest)
	}
	return args
}
