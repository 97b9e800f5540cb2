//go:build integration

package systemd

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// sudoState is the state dir of the jobs scheduled through sudo (the root-owned config's).
const sudoState = "/var/tmp/cmesh-run-systemd-sudo-state"

// schedSudoPage schedules the script the way PHP reaches the systemd backend: exec() of
// sudo -n cmesh-run (as root: only root may start system units) with --backend systemd.
func schedSudoPage(script string) string {
	return `<?php
$script = ` + phpNowdoc(script) + `;
$cmd = '/usr/bin/sudo -n ' . ` + itest.PHPString(cmeshBin) + ` . ' schedule --backend systemd -- sh -c ' . escapeshellarg($script)
     . ' 2>>/tmp/cmesh-run-systemd-test-sudo.err';
$out = [];
$rc = -1;
$last = exec($cmd, $out, $rc);
header('Content-Type: application/json');
echo json_encode(['rc' => $rc, 'last' => $last, 'out' => $out]);
`
}

// TestSystemdJobSurvivesFPMRestart: a job that a PHP-FPM request schedules with --backend
// systemd (through sudo, as root) runs in a unit of its own, and survives `systemctl restart
// php8.2-fpm`, which kills a control job started from the same kind of page with
// exec('... &').
func TestSystemdJobSurvivesFPMRestart(t *testing.T) {
	if why := ensurePrerequisites(t); why != "" {
		unavailable(t, "%s", why)
	}
	if _, err := os.Stat("/usr/bin/sudo"); err != nil {
		unavailable(t, "sudo is not installed (apt-get install sudo)")
	}
	bin := binary(t)
	const n = 60 // lines, one every 100 ms
	r := randHex(4)
	tokJob, tokCtl := "cmesh-sd-"+r, "plain-ctl-"+r
	ctlLog := "/tmp/cmesh-run-systemd-test-ctl-" + r + ".log"

	c := bootContainer(t, func(c *container) {
		prepareOverlay(t, c, bin, map[string]string{
			"ping.php":    `<?php echo "pong";` + "\n",
			"sched.php":   schedSudoPage(jobScript(tokJob, n)),
			"control.php": controlPage(jobScript(tokCtl, n), ctlLog),
		})
		// The web user may run cmesh-run, and only it, as root; under sudo cmesh-run takes
		// its state dir and rules from the root-owned config alone.
		writeFile(t, c.overlay("/etc/sudoers.d/cmesh-run-systemd-test"), []byte(itest.WebUser+" ALL=(root) NOPASSWD: "+cmeshBin+"\n"), 0o440)
		writeFile(t, c.overlay("/etc/cmesh-run/config.toml"), []byte("state_dir = \""+sudoState+"\"\nallow_free_commands = true\n"), 0o644)
	})

	c.must(60*time.Second, "systemctl", "start", fpmUnit)
	c.waitForPool()
	c.startControl()
	var resp struct {
		RC   int
		Last string
		Out  []string
	}
	c.page("sched.php", &resp)
	if resp.RC != 0 || !itest.IDPattern.MatchString(resp.Last) {
		errs := c.readFile("/tmp/cmesh-run-systemd-test-sudo.err")
		t.Fatalf("sched.php: rc %d, last line %q, output %q; stderr: %s", resp.RC, resp.Last, resp.Out, errs)
	}
	id := resp.Last
	unit := "cmesh-run-" + id + ".service"

	var j jobRecord
	if !itest.Eventually(20*time.Second, func() bool {
		j = c.job(sudoState, id)
		return j.State == "running" && bytes.Count(c.readFile(ctlLog), []byte("\n")) >= linesBeforeRestart &&
			strings.Count(c.asRootIn(sudoState, "log", id), "\n") >= linesBeforeRestart
	}) {
		t.Fatalf("the jobs did not get going within 20s: %+v; control log %q", j, itest.LastLines(string(c.readFile(ctlLog)), 2))
	}
	if j.Backend != "systemd" || deref(j.BackendRef) != unit || j.User != "root" {
		t.Errorf("job: backend %q ref %q user %q, want systemd, %s, root", j.Backend, deref(j.BackendRef), j.User, unit)
	}
	hp := hostPID(c.init, *j.PID)
	if cg := cgroupOf(hp); !strings.HasSuffix(cg, "/system.slice/"+unit) {
		t.Errorf("job pid %d (host %d) in cgroup %q, want %s's", *j.PID, hp, cg, unit)
	}
	ctlPIDs := itest.ProcessesWith(tokCtl)
	if len(ctlPIDs) == 0 || !strings.HasSuffix(cgroupOf(ctlPIDs[0]), "/"+fpmUnit) {
		t.Fatalf("the control job (%v) does not run in %s's cgroup: the restart would tell nothing", ctlPIDs, fpmUnit)
	}

	restartStart := time.Now()
	c.must(60*time.Second, "systemctl", "restart", fpmUnit)
	restartEnd := time.Now()
	if !itest.Eventually(3*time.Second, func() bool { return len(itest.ProcessesWith(tokCtl)) == 0 }) {
		t.Errorf("the control job survived the restart: %v", itest.ProcessesWith(tokCtl))
	}
	if j = c.job(sudoState, id); j.State != "running" || hostPID(c.init, *j.PID) == 0 {
		t.Errorf("job right after the restart: %+v, want running and alive", j)
	}
	j = c.waitState(sudoState, id, 30*time.Second, "finished", func(j jobRecord) bool { return itest.Finished(j.State) })
	if j.State != "succeeded" || j.ExitCode == nil || *j.ExitCode != 0 {
		t.Errorf("job ended %s exit %v, want succeeded 0", j.State, j.ExitCode)
	}
	if j.StartedAt == nil || j.FinishedAt == nil || !j.StartedAt.Before(restartStart) || !j.FinishedAt.After(restartEnd) {
		t.Errorf("started_at %v finished_at %v do not straddle the restart", j.StartedAt, j.FinishedAt)
	}
	if got, want := c.asRootIn(sudoState, "log", id), string(expectedOutput(tokJob, n)); got != want {
		t.Errorf("log: %d bytes ending %q, want %d ending %q", len(got), itest.LastLines(got, 1), len(want), itest.LastLines(want, 1))
	}
	if !c.unitGone(unit, 10*time.Second) {
		t.Errorf("%s still loaded after the job ended", unit)
	}
	t.Logf("job %s (unit %s) survived the restart and ended %s", id, unit, j.State)
}
