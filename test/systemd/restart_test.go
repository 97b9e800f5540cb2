//go:build integration

package systemd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

const (
	fpmUnit   = "php8.2-fpm.service"
	fpmSocket = "/run/php/php8.2-fpm.sock"
	// Inside the container.
	cmeshBin = "/usr/local/bin/cmesh-run"
	stateDir = "/var/tmp/cmesh-run-systemd-test-state"
	pagesDir = "/srv/cmesh-run-systemd-test"

	// Every job prints ticks lines, one every 100 ms (~12.5 s in all).
	ticks = 120
	// The restart comes once every job has printed this many lines.
	linesBeforeRestart = 15
)

// TestJobSurvivesFPMRestart schedules two jobs through cmesh-run from PHP-FPM requests (one
// with exec(), one with proc_open()) and starts a control job from the same kind of page with
// exec('sh -c "..." > log 2>&1 &'); restarts php8.2-fpm while all three print a line every
// 100 ms; then expects the cmesh-run jobs to end succeeded with their exact, complete output,
// and the control job to have been killed by the restart (systemd kills the whole cgroup of
// the unit, KillMode=control-group).
func TestJobSurvivesFPMRestart(t *testing.T) {
	if why := ensurePrerequisites(t); why != "" {
		unavailable(t, "%s", why)
	}
	bin := binary(t)
	r := randHex(4)
	tokExec, tokProc, tokCtl := "cmesh-exec-"+r, "cmesh-proc-"+r, "plain-ctl-"+r
	ctlLog := "/tmp/cmesh-run-systemd-test-ctl-" + r + ".log"

	c := bootContainer(t, func(c *container) {
		prepareOverlay(t, c, bin, map[string]string{
			"ping.php":       `<?php echo "pong";` + "\n",
			"sched_exec.php": schedExecPage(jobScript(tokExec, ticks)),
			"sched_proc.php": schedProcPage(jobScript(tokProc, ticks)),
			"control.php":    controlPage(jobScript(tokCtl, ticks), ctlLog),
		})
	})

	c.must(60*time.Second, "systemctl", "start", "atd.service", fpmUnit)
	unit := c.showUnit(fpmUnit, "FragmentPath", "DropInPaths", "KillMode", "ActiveState", "MainPID")
	t.Logf("%s: %v", fpmUnit, unit)
	if unit["FragmentPath"] != fpmUnitFile || unit["DropInPaths"] != "" || unit["KillMode"] != "control-group" {
		t.Fatalf("%s is not the stock unit (want FragmentPath=%s, no drop-ins, KillMode=control-group): %v",
			fpmUnit, fpmUnitFile, unit)
	}
	c.waitForPool()

	// The control job first: it would be the first to finish if it were not killed.
	c.startControl()

	var execResp struct {
		RC   int
		Last string
		Out  []string
	}
	c.page("sched_exec.php", &execResp)
	if execResp.RC != 0 || len(execResp.Out) != 1 || !itest.IDPattern.MatchString(execResp.Last) {
		errs, _ := os.ReadFile(c.path("/tmp/cmesh-run-systemd-test-exec.err"))
		t.Fatalf("schedule from exec(): exit %d, stdout %q (want the ID alone on one line); stderr: %s", execResp.RC, execResp.Out, errs)
	}
	idExec := execResp.Last

	var procResp struct {
		RC     int
		Stdout string
		Stderr string
	}
	c.page("sched_proc.php", &procResp)
	idProc := strings.TrimSuffix(procResp.Stdout, "\n")
	if procResp.RC != 0 || !itest.IDPattern.MatchString(idProc) {
		t.Fatalf("schedule from proc_open(): exit %d, stdout %q (want the ID alone on one line), stderr %q", procResp.RC, procResp.Stdout, procResp.Stderr)
	}
	if procResp.Stderr != "" {
		t.Errorf("schedule from proc_open() wrote to stderr: %q", procResp.Stderr)
	}
	t.Logf("scheduled %s (exec) and %s (proc_open)", idExec, idProc)
	jobs := []struct{ id, tok string }{{idExec, tokExec}, {idProc, tokProc}}

	// Wait until all three are well under way.
	ok := itest.Eventually(20*time.Second, func() bool {
		if bytes.Count(c.readFile(ctlLog), []byte("\n")) < linesBeforeRestart {
			return false
		}
		for _, j := range jobs {
			if st := c.status(j.id); st.State != "running" || bytes.Count(c.log(j.id), []byte("\n")) < linesBeforeRestart {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("the jobs did not get going within 20s: control log %q; %s: %+v; %s: %+v",
			itest.LastLines(string(c.readFile(ctlLog)), 3), idExec, c.status(idExec), idProc, c.status(idProc))
	}

	// Where they run: the control job in php8.2-fpm's cgroup, the cmesh-run jobs outside it.
	ctlPIDs := itest.ProcessesWith(tokCtl)
	if len(ctlPIDs) == 0 {
		t.Fatalf("no process of the control job (%s) before the restart", tokCtl)
	}
	for _, pid := range ctlPIDs {
		cg := cgroupOf(pid)
		t.Logf("control job: host PID %d, cgroup %s", pid, cg)
		if !strings.HasSuffix(cg, "/"+fpmUnit) {
			t.Errorf("control job PID %d runs in cgroup %q, not %s's: the restart cannot tell anything", pid, cg, fpmUnit)
		}
	}
	for _, j := range jobs {
		st := c.status(j.id)
		if st.PID == nil {
			t.Fatalf("job %s is running without a pid: %+v", j.id, st)
		}
		hp := hostPID(c.init, *st.PID)
		if hp == 0 {
			t.Fatalf("job %s: its pid %d is not alive in the container before the restart", j.id, *st.PID)
		}
		cg := cgroupOf(hp)
		t.Logf("job %s: pid %d (host %d), cgroup %s", j.id, *st.PID, hp, cg)
		if strings.Contains(cg, fpmUnit) {
			t.Errorf("job %s runs in %s's cgroup %q", j.id, fpmUnit, cg)
		}
	}

	// The restart.
	restartStart := time.Now()
	c.must(60*time.Second, "systemctl", "restart", fpmUnit)
	restartEnd := time.Now()
	after := c.showUnit(fpmUnit, "ActiveState", "MainPID")
	t.Logf("systemctl restart %s took %v; MainPID %s -> %s", fpmUnit, restartEnd.Sub(restartStart).Round(time.Millisecond), unit["MainPID"], after["MainPID"])
	if after["ActiveState"] != "active" || after["MainPID"] == unit["MainPID"] || after["MainPID"] == "0" {
		t.Fatalf("php8.2-fpm was not restarted: before %v, after %v", unit, after)
	}

	// The control job is gone right after the restart (only a zombie waiting for its reaper may
	// linger a moment), and its output stops.
	if !itest.Eventually(3*time.Second, func() bool { return len(itest.ProcessesWith(tokCtl)) == 0 }) {
		t.Errorf("the control job survived the restart: PIDs %v still run 3s later; the test cannot tell a surviving job from a killed one", itest.ProcessesWith(tokCtl))
	}
	ctlSnap := c.readFile(ctlLog)
	t.Logf("control job killed by the restart after %d lines", bytes.Count(ctlSnap, []byte("\n")))

	// The cmesh-run jobs are still running, and end succeeded with their whole output.
	for _, j := range jobs {
		st := c.status(j.id)
		if st.State != "running" || st.PID == nil || hostPID(c.init, *st.PID) == 0 {
			t.Errorf("job %s right after the restart: state %s, pid %v alive=%v; want running and alive",
				j.id, st.State, st.PID, st.PID != nil && hostPID(c.init, *st.PID) != 0)
		}
	}
	for _, j := range jobs {
		var st jobRecord
		if !itest.Eventually(40*time.Second, func() bool { st = c.status(j.id); return itest.Finished(st.State) }) {
			t.Fatalf("job %s still %s 40s after the restart", j.id, st.State)
		}
		if st.State != "succeeded" || st.ExitCode == nil || *st.ExitCode != 0 {
			t.Errorf("job %s ended %s exit %v, want succeeded 0: %+v", j.id, st.State, st.ExitCode, st)
		}
		if st.Backend != "at" || st.User != itest.WebUser {
			t.Errorf("job %s: backend %q user %q, want at and %s", j.id, st.Backend, st.User, itest.WebUser)
		}
		if st.StartedAt == nil || st.FinishedAt == nil || !st.StartedAt.Before(restartStart) || !st.FinishedAt.After(restartEnd) {
			t.Errorf("job %s: started_at %v finished_at %v do not straddle the restart (%s .. %s)", j.id,
				st.StartedAt, st.FinishedAt, restartStart.UTC().Format(time.RFC3339Nano), restartEnd.UTC().Format(time.RFC3339Nano))
		}
		got, want := c.log(j.id), expectedOutput(j.tok, ticks)
		if !bytes.Equal(got, want) {
			t.Errorf("job %s: log is not the job's exact output:\n got %d bytes, ending %q\nwant %d bytes, ending %q",
				j.id, len(got), itest.LastLines(string(got), 2), len(want), itest.LastLines(string(want), 2))
		}
	}

	t.Logf("both cmesh-run jobs ended, exact output, %v after the restart", time.Since(restartEnd).Round(time.Millisecond))

	// By now the control job would have finished too (it started first): its output must be
	// what it was right after the restart, a strict prefix of what it would have printed.
	ctlFinal := c.readFile(ctlLog)
	ctlFull := expectedOutput(tokCtl, ticks)
	if !bytes.Equal(ctlFinal, ctlSnap) {
		t.Errorf("the control job's output grew after the restart: %d bytes then, %d now", len(ctlSnap), len(ctlFinal))
	}
	if len(ctlFinal) >= len(ctlFull) || !bytes.HasPrefix(ctlFull, ctlFinal) {
		t.Errorf("the control job's output (%d of %d bytes, ending %q) is not a cut-short prefix of its full output",
			len(ctlFinal), len(ctlFull), itest.LastLines(string(ctlFinal), 2))
	}
	if len(itest.ProcessesWith(tokCtl)) != 0 {
		t.Errorf("a process of the control job is running again: %v", itest.ProcessesWith(tokCtl))
	}
}

// ---------------------------------------------------------------------------------------------
// The jobs and the pages

// jobScript prints n lines, one every 100 ms, every tenth on stderr, then a last line without
// a newline.
func jobScript(tok string, n int) string {
	return fmt.Sprintf(`i=0
while [ $i -lt %d ]; do
  if [ $((i %% 10)) -eq 9 ]; then echo "%s err $i" >&2; else echo "%s out $i"; fi
  i=$((i + 1))
  sleep 0.1
done
printf '%%s' '%s done'`, n, tok, tok, tok)
}

// expectedOutput is what jobScript(tok, n) prints, stdout and stderr in one stream.
func expectedOutput(tok string, n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		if i%10 == 9 {
			fmt.Fprintf(&b, "%s err %d\n", tok, i)
		} else {
			fmt.Fprintf(&b, "%s out %d\n", tok, i)
		}
	}
	fmt.Fprintf(&b, "%s done", tok)
	return b.Bytes()
}

// phpNowdoc returns a PHP nowdoc holding s verbatim.
func phpNowdoc(s string) string {
	if strings.Contains(s, "\nEOS") {
		panic("script contains the nowdoc terminator")
	}
	return "<<<'EOS'\n" + s + "\nEOS"
}

// schedExecPage schedules the script the way most PHP code does: exec() of a shell command
// line, the ID being the last line printed.
func schedExecPage(script string) string {
	return `<?php
$script = ` + phpNowdoc(script) + `;
$cmd = ` + itest.PHPString(cmeshBin) + ` . ' --state-dir ' . escapeshellarg(` + itest.PHPString(stateDir) + `)
     . ' schedule -- sh -c ' . escapeshellarg($script)
     . ' 2>>/tmp/cmesh-run-systemd-test-exec.err';
$out = [];
$rc = -1;
$last = exec($cmd, $out, $rc);
header('Content-Type: application/json');
echo json_encode(['rc' => $rc, 'last' => $last, 'out' => $out]);
`
}

// schedProcPage schedules the script with proc_open() of an argv array: no shell involved.
func schedProcPage(script string) string {
	return `<?php
$script = ` + phpNowdoc(script) + `;
$argv = [` + itest.PHPString(cmeshBin) + `, '--state-dir', ` + itest.PHPString(stateDir) + `, 'schedule', '--', 'sh', '-c', $script];
$p = proc_open($argv, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
header('Content-Type: application/json');
if ($p === false) {
    echo json_encode(['rc' => -1, 'stdout' => '', 'stderr' => 'proc_open failed']);
    exit;
}
$stdout = stream_get_contents($pipes[1]);
$stderr = stream_get_contents($pipes[2]);
fclose($pipes[1]);
fclose($pipes[2]);
$rc = proc_close($p);
echo json_encode(['rc' => $rc, 'stdout' => $stdout, 'stderr' => $stderr]);
`
}

// controlPage starts the script the naive way: exec('sh -c "..." > log 2>&1 &').
func controlPage(script, log string) string {
	return `<?php
$script = ` + phpNowdoc(script) + `;
$out = [];
$rc = -1;
exec('sh -c ' . escapeshellarg($script) . ' > ' . escapeshellarg(` + itest.PHPString(log) + `) . ' 2>&1 &', $out, $rc);
header('Content-Type: application/json');
echo json_encode(['rc' => $rc]);
`
}

// prepareOverlay readies the container's root before it boots. Everything lands in the
// overlay's tmpfs upper layer; the host's files stay untouched.
func prepareOverlay(t *testing.T, c *container, bin string, pages map[string]string) {
	t.Helper()
	// Units of the host that have nothing to do with the test and only cost time and CPU in
	// the container (postgresql would replay a copy of the host's live database).
	for _, u := range []string{"postgresql.service", "postgresql@.service", "exim4.service", "exim4-base.timer",
		"apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer", "e2scrub_reap.service",
		"fstrim.timer", "dpkg-db-backup.timer", "phpsessionclean.timer", "systemd-timesyncd.service", "getty@tty1.service"} {
		p := c.overlay("/etc/systemd/system/" + u)
		os.Remove(p)
		if err := os.Symlink("/dev/null", p); err != nil {
			t.Fatal(err)
		}
	}

	// The container shares the host's machine-id: keep its journal in /run, not appended to
	// (and so copied up from) the host's persistent journal files.
	os.RemoveAll(c.overlay("/var/log/journal"))

	// Let www-data use at: drop it from at.deny; no at.allow.
	deny, err := os.ReadFile(c.overlay("/etc/at.deny"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(deny), "\n") {
		if strings.TrimSpace(l) != itest.WebUser && l != "" {
			keep = append(keep, l)
		}
	}
	// at is setgid daemon and reads at.deny through its group: the file must stay root:daemon
	// 0640 (root:root 0640 makes at refuse everyone but root).
	writeFile(t, c.overlay("/etc/at.deny"), []byte(strings.Join(keep, "\n")+"\n"), 0o640)
	var atBin syscall.Stat_t
	if err := syscall.Stat(c.overlay("/usr/bin/at"), &atBin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(c.overlay("/etc/at.deny"), 0, int(atBin.Gid)); err != nil {
		t.Fatal(err)
	}
	os.Remove(c.overlay("/etc/at.allow"))
	// The host's queued at jobs must not run a second time in the container.
	for _, spool := range []string{"/var/spool/cron/atjobs", "/var/spool/cron/atspool"} {
		ents, _ := os.ReadDir(c.overlay(spool))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				os.RemoveAll(filepath.Join(c.overlay(spool), e.Name()))
			}
		}
	}

	// cmesh-run with its defaults: no config of the host's.
	os.RemoveAll(c.overlay("/etc/cmesh-run"))
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c.overlay(cmeshBin), data, 0o755)

	uid, gid := lookupUser(t, c.overlay("/etc/passwd"), itest.WebUser)
	os.RemoveAll(c.overlay(stateDir))
	if err := os.MkdirAll(c.overlay(stateDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(c.overlay(stateDir), uid, gid); err != nil {
		t.Fatal(err)
	}

	os.RemoveAll(c.overlay(pagesDir))
	for name, body := range pages {
		writeFile(t, c.overlay(filepath.Join(pagesDir, name)), []byte(body), 0o644)
	}
}

// lookupUser returns the uid and gid of name in a passwd file.
func lookupUser(t *testing.T, passwd, name string) (int, int) {
	t.Helper()
	b, err := os.ReadFile(passwd)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) > 3 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				return uid, gid
			}
		}
	}
	unavailable(t, "no user %s in %s", name, passwd)
	return 0, 0
}

// ---------------------------------------------------------------------------------------------
// Talking to the container

// fcgi sends a GET for page to the stock pool's socket, as a web server would, and returns the
// response's headers and body.
func (c *container) fcgi(page string) (map[string]string, string, error) {
	req := itest.Request{Script: pagesDir + "/" + page}
	out, errOut, err := c.runIn(20*time.Second, req.Params(), "cgi-fcgi", "-bind", "-connect", fpmSocket)
	if err != nil {
		return nil, "", fmt.Errorf("cgi-fcgi %s: %v: %s", page, err, errOut)
	}
	r := itest.ParseCGI([]byte(out))
	if r.Err != nil {
		return nil, "", fmt.Errorf("cgi-fcgi %s: %v", page, r.Err)
	}
	if r.Status != 200 {
		return r.Header, string(r.Body), fmt.Errorf("%s: %v: %s", page, r.Header, r.Body)
	}
	return r.Header, string(r.Body), nil
}

// waitForPool waits until the stock pool answers ping.php.
func (c *container) waitForPool() {
	c.t.Helper()
	if !itest.Eventually(15*time.Second, func() bool { _, body, err := c.fcgi("ping.php"); return err == nil && body == "pong" }) {
		_, body, err := c.fcgi("ping.php")
		c.t.Fatalf("php8.2-fpm in the container does not answer ping.php: %v %q", err, body)
	}
}

// startControl starts the control job through control.php.
func (c *container) startControl() {
	c.t.Helper()
	var resp struct{ RC int }
	c.page("control.php", &resp)
	if resp.RC != 0 {
		c.t.Fatalf("control.php: exec returned %d", resp.RC)
	}
}

// page requests page and decodes its JSON answer into v.
func (c *container) page(page string, v any) {
	c.t.Helper()
	_, body, err := c.fcgi(page)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		c.t.Fatalf("%s: %v: %q", page, err, body)
	}
}

// showUnit returns properties of a unit.
func (c *container) showUnit(unit string, props ...string) map[string]string {
	c.t.Helper()
	out := c.must(15*time.Second, append([]string{"systemctl", "show", unit}, func() []string {
		var a []string
		for _, p := range props {
			a = append(a, "-p", p)
		}
		return a
	}()...)...)
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// readFile reads a file inside the running container ("" when missing).
func (c *container) readFile(p string) []byte {
	b, _ := os.ReadFile(c.path(p))
	return b
}

// jobRecord is SPEC.md's job object.
type jobRecord = itest.Job

// cmesh runs cmesh-run inside the container as www-data (who scheduled the jobs, as a status
// page would) and fails the test unless it exits 0.
func (c *container) cmesh(args ...string) []byte {
	c.t.Helper()
	argv := append([]string{cmeshBin, "--state-dir", stateDir}, args...)
	out, errOut, err := c.runAs(15*time.Second, itest.WebUser, argv...)
	if err != nil {
		c.t.Fatalf("in the container, as %s: %q: %v\nstdout: %s\nstderr: %s", itest.WebUser, argv, err, out, errOut)
	}
	return []byte(out)
}

func (c *container) status(id string) jobRecord {
	c.t.Helper()
	var j jobRecord
	out := c.cmesh("status", "--json", id)
	if err := json.Unmarshal(out, &j); err != nil {
		c.t.Fatalf("status --json %s: %v: %q", id, err, out)
	}
	if j.ID != id {
		c.t.Fatalf("status --json %s returned job %q", id, j.ID)
	}
	return j
}

func (c *container) log(id string) []byte {
	c.t.Helper()
	return c.cmesh("log", id)
}

func deref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}
