//go:build integration

package systemd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/backend/backendtest"
	"github.com/cmesh/cmesh-run/test/itest"
)

// The systemd backend, against the container's real systemd: what a job's unit looks like
// from outside, success, failure, MemoryMax, timeout, cancel, a queued job whose unit is gone,
// the template unit, and the schedule latency next to at's.

const (
	// rootState is the state dir of the jobs root schedules in TestSystemdBackend.
	rootState = "/var/tmp/cmesh-run-systemd-backend-state"
	// jobScripts is where the backend puts each job's script (systemd.ScriptDir).
	jobScripts = "/run/cmesh-run/jobs"
	// templateUnit is where setup --systemd-template installs the template.
	templateUnit = "/etc/systemd/system/cmesh-run@.service"
)

// result is how a command run in the container ended.
type result struct {
	out, err string
	code     int
}

// cmeshIn runs cmesh-run in the container as user (root or a user name) with state dir state
// ("" for none: the config's) and returns how it ended; only a failure to run it at all
// fails the test.
func (c *container) cmeshIn(state, user string, args ...string) result {
	c.t.Helper()
	argv := []string{cmeshBin}
	if state != "" {
		argv = append(argv, "--state-dir", state)
	}
	argv = append(argv, args...)
	var out, errOut string
	var err error
	if user == "root" {
		out, errOut, err = c.run(60*time.Second, argv...)
	} else {
		out, errOut, err = c.runAs(60*time.Second, user, argv...)
	}
	r := result{out, errOut, 0}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			c.t.Fatalf("in the container, as %s: %q: %v", user, argv, err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

// asRoot runs cmesh-run as root on rootState and fails the test unless it exits 0.
func (c *container) asRoot(args ...string) string {
	c.t.Helper()
	return c.asRootIn(rootState, args...)
}

// asRootIn runs cmesh-run as root on state and fails the test unless it exits 0.
func (c *container) asRootIn(state string, args ...string) string {
	c.t.Helper()
	r := c.cmeshIn(state, "root", args...)
	if r.code != 0 {
		c.t.Fatalf("cmesh-run %q: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.out, r.err)
	}
	return r.out
}

// schedule schedules a job as root through the systemd backend and returns its object.
func (c *container) schedule(args ...string) jobRecord {
	c.t.Helper()
	out := c.asRoot(append([]string{"schedule", "--backend", "systemd", "--json"}, args...)...)
	var j jobRecord
	if err := json.Unmarshal([]byte(out), &j); err != nil || !itest.IDPattern.MatchString(j.ID) {
		c.t.Fatalf("schedule printed %q: %v", out, err)
	}
	return j
}

// job returns job id of rootState, as root sees it.
func (c *container) job(state, id string) jobRecord {
	c.t.Helper()
	r := c.cmeshIn(state, "root", "status", "--json", id)
	var j jobRecord
	if err := json.Unmarshal([]byte(r.out), &j); r.code != 0 || err != nil || j.ID != id {
		c.t.Fatalf("status --json %s: exit %d, %v: %q %s", id, r.code, err, r.out, r.err)
	}
	return j
}

// waitState polls job id until cond holds, failing the test after within.
func (c *container) waitState(state, id string, within time.Duration, what string, cond func(j jobRecord) bool) jobRecord {
	c.t.Helper()
	var j jobRecord
	if !itest.Eventually(within, func() bool { j = c.job(state, id); return cond(j) }) {
		c.t.Fatalf("job %s not %s within %v: %+v", id, what, within, j)
	}
	return j
}

// unitGone polls until unit is no longer loaded (a transient unit with --collect is unloaded
// as soon as it stops) or, for a template instance, until it is inactive.
func (c *container) unitGone(unit string, within time.Duration) bool {
	c.t.Helper()
	return itest.Eventually(within, func() bool {
		p := c.showUnit(unit, "LoadState", "ActiveState")
		return p["LoadState"] == "not-found" || strings.Contains(unit, "@") && p["ActiveState"] == "inactive"
	})
}

// processesInUnit returns the host PIDs of the live processes in unit's cgroup.
func processesInUnit(unit string) []int {
	var pids []int
	for _, pid := range itest.PIDs() {
		if strings.HasSuffix(cgroupOf(pid), "/"+unit) && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// memoryEnforced tells whether MemoryMax= reaches the kernel in this container: the limit a
// unit's process finds in its own memory cgroup (v1 memory.limit_in_bytes or v2 memory.max).
func (c *container) memoryEnforced() (bool, string) {
	out, errOut, err := c.run(30*time.Second, "systemd-run", "--quiet", "--wait", "--pipe", "--collect", "-p", "MemoryMax=50M", "/bin/sh", "-c",
		`v1=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); v2=$(sed -n 's/^0:://p' /proc/self/cgroup)
cat "/sys/fs/cgroup/memory$v1/memory.limit_in_bytes" "/sys/fs/cgroup$v2/memory.max" 2>/dev/null; true`)
	return err == nil && strings.Contains(out, "52428800"), fmt.Sprintf("%q %q %v", out, errOut, err)
}

// TestSystemdBackend runs jobs through `--backend systemd` as root in the container.
func TestSystemdBackend(t *testing.T) {
	if why := ensurePrerequisites(t); why != "" {
		unavailable(t, "%s", why)
	}
	bin := binary(t)
	c := bootContainerWith(t, bootOptions{memory: true}, func(c *container) {
		prepareOverlay(t, c, bin, nil)
		// Root may run free commands (the default); a config that exists keeps setup
		// --write from installing its sample, which allows profiles only.
		writeFile(t, c.overlay("/etc/cmesh-run/config.toml"), []byte("allow_free_commands = true\n"), 0o644)
	})
	// Subtests run one after another on the one container; its helpers report to the
	// running subtest.
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(st *testing.T) {
			c.t = st
			defer func() { c.t = t }()
			f(st)
		})
	}

	run("conformance", func(t *testing.T) {
		// The suite every backend passes; the jobs' PIDs are the
		// container's, so kills happen in there.
		backendtest.Run(t, backendtest.Harness{
			Backend: "systemd", StateDir: c.path(rootState), StartTimeout: 30 * time.Second,
			CLI: func(t *testing.T, args ...string) (int, string, string) {
				r := c.cmeshIn(rootState, "root", args...)
				return r.code, r.out, r.err
			},
			Kill: func(_ string, pid int, sig syscall.Signal) error {
				_, _, err := c.run(10*time.Second, "kill", "-"+strconv.Itoa(int(sig)), "--", strconv.Itoa(pid))
				return err
			},
		})
	})

	run("refused_for_www-data", func(t *testing.T) {
		// Without sudo the web user cannot start system units: exit 4 and the way out.
		r := c.cmeshIn(stateDir, itest.WebUser, "schedule", "--backend", "systemd", "--", "true")
		if r.code != 4 || !strings.Contains(r.err, "needs root") || !strings.Contains(r.err, "sudo") || r.out != "" {
			t.Errorf("as %s: exit %d, stdout %q, stderr %q; want exit 4 naming root and sudo", itest.WebUser, r.code, r.out, r.err)
		}
		if out := c.cmesh("list", "--json"); strings.TrimSpace(string(out)) != "[]" {
			t.Errorf("a refused schedule left a job: %s", out)
		}
	})

	run("success", func(t *testing.T) {
		tok, secret := "tok-"+randHex(4), "secret-"+randHex(8)
		j := c.schedule("--env", "CMESH_TEST_SECRET="+secret, "--", "sh", "-c",
			`echo "out `+tok+` $CMESH_TEST_SECRET"; echo err >&2; id -un; sleep 2`)
		unit := "cmesh-run-" + j.ID + ".service"
		if j.Backend != "systemd" || deref(j.BackendRef) != unit || j.User != "root" {
			t.Errorf("job: backend %q ref %q user %q; want systemd, %s, root", j.Backend, deref(j.BackendRef), j.User, unit)
		}
		j = c.waitState(rootState, j.ID, 30*time.Second, "running", func(j jobRecord) bool { return j.State == "running" })

		// What everyone can see of the unit: no argv, no --env value.
		show, errOut, err := c.runAs(15*time.Second, itest.WebUser, "systemctl", "show", "--no-pager", unit)
		if err != nil {
			t.Fatalf("systemctl show %s as %s: %v %s", unit, itest.WebUser, err, errOut)
		}
		props := ParseProps(show)
		script := jobScripts + "/" + j.ID + ".sh"
		for k, want := range map[string]string{"ActiveState": "active", "Type": "exec", "User": "root", "OOMPolicy": "continue", "KillMode": "control-group"} {
			if props[k] != want {
				t.Errorf("%s: %s=%q, want %q", unit, k, props[k], want)
			}
		}
		if !strings.Contains(props["ExecStart"], "argv[]=/bin/sh "+script+" ;") {
			t.Errorf("%s: ExecStart=%s, want /bin/sh %s", unit, props["ExecStart"], script)
		}
		if strings.Contains(show, tok) || strings.Contains(show, secret) {
			t.Errorf("systemctl show %s, as %s, reveals the job's argv or its --env value", unit, itest.WebUser)
		}
		// The script: root's, 0600, in a directory only root may write.
		var st syscall.Stat_t
		if err := syscall.Lstat(c.path(script), &st); err != nil || st.Mode&0o7777 != 0o600 || st.Uid != 0 || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			t.Errorf("script %s: %v, mode %o uid %d; want a regular file, 0600, root", script, err, st.Mode, st.Uid)
		}
		if err := syscall.Lstat(c.path(jobScripts), &st); err != nil || st.Mode&0o7777 != 0o711 || st.Uid != 0 {
			t.Errorf("%s: %v, mode %o uid %d; want 0711 root", jobScripts, err, st.Mode, st.Uid)
		}
		if out, _, err := c.runAs(10*time.Second, itest.WebUser, "cat", script); err == nil {
			t.Errorf("%s could read the job's script: %q", itest.WebUser, out)
		}
		// The job runs in its unit's cgroup.
		if j.PID == nil {
			t.Fatalf("running without a pid: %+v", j)
		}
		if hp := hostPID(c.init, *j.PID); hp == 0 || !strings.HasSuffix(cgroupOf(hp), "/system.slice/"+unit) {
			t.Errorf("job pid %d (host %d) in cgroup %q, want %s's", *j.PID, hp, cgroupOf(hp), unit)
		}

		if r := c.cmeshIn(rootState, "root", "wait", "--timeout", "30s", j.ID); r.code != 0 {
			t.Errorf("wait: exit %d (%s), want 0", r.code, r.err)
		}
		j = c.job(rootState, j.ID)
		if j.State != "succeeded" || j.ExitCode == nil || *j.ExitCode != 0 {
			t.Errorf("ended %s exit %v, want succeeded 0", j.State, j.ExitCode)
		}
		if got, want := c.asRoot("log", j.ID), "out "+tok+" "+secret+"\nerr\nroot\n"; got != want {
			t.Errorf("log = %q, want %q", got, want)
		}
		if !c.unitGone(unit, 10*time.Second) {
			t.Errorf("%s still loaded after the job ended: %v", unit, c.showUnit(unit, "LoadState", "ActiveState"))
		}
		if _, err := os.Lstat(c.path(script)); err == nil {
			t.Errorf("script %s left behind after its unit stopped", script)
		}
	})

	run("failure", func(t *testing.T) {
		j := c.schedule("--", "sh", "-c", "echo bye; exit 3")
		if r := c.cmeshIn(rootState, "root", "wait", "--timeout", "30s", j.ID); r.code != 3 {
			t.Errorf("wait: exit %d (%s), want 3", r.code, r.err)
		}
		j = c.job(rootState, j.ID)
		if j.State != "failed" || j.ExitCode == nil || *j.ExitCode != 3 {
			t.Errorf("ended %s exit %v, want failed 3", j.State, j.ExitCode)
		}
		if got := c.asRoot("log", j.ID); got != "bye\n" {
			t.Errorf("log = %q", got)
		}
		if !c.unitGone(deref(j.BackendRef), 10*time.Second) {
			t.Errorf("%s still loaded", deref(j.BackendRef))
		}
	})

	run("memory_max", func(t *testing.T) {
		if ok, why := c.memoryEnforced(); !ok {
			unavailable(t, "MemoryMax= is not enforced in the container (no writable memory controller): %s", why)
		}
		// tail keeps its whole input when it has no newline: ~300 MB, as the job's own
		// process (exec), so that the kernel's SIGKILL is the job's end.
		j := c.schedule("--memory-max", "50M", "--timeout", "60s", "--", "bash", "-c", "exec tail < <(head -c 300M /dev/zero)")
		if r := c.cmeshIn(rootState, "root", "wait", "--timeout", "60s", j.ID); r.code != 128+9 {
			t.Errorf("wait: exit %d (%s), want %d", r.code, r.err, 128+9)
		}
		j = c.job(rootState, j.ID)
		if j.State != "failed" || j.Signal != "KILL" || j.ExitCode == nil || *j.ExitCode != 137 {
			t.Errorf("ended %s exit %v signal %q, want failed 137 KILL", j.State, j.ExitCode, j.Signal)
		}
		if out := c.asRoot("status", j.ID); !strings.Contains(out, "signal KILL") {
			t.Errorf("status does not show the signal:\n%s", out)
		}
		if !c.unitGone(deref(j.BackendRef), 10*time.Second) {
			t.Errorf("%s still loaded", deref(j.BackendRef))
		}
	})

	run("timeout", func(t *testing.T) {
		start := time.Now()
		j := c.schedule("--timeout", "1s", "--", "sleep", "30")
		if p := c.showUnit(deref(j.BackendRef), "RuntimeMaxUSec"); p["RuntimeMaxUSec"] != "41s" {
			t.Errorf("RuntimeMaxUSec=%q, want 41s (timeout 1s + grace 10s + 30s)", p["RuntimeMaxUSec"])
		}
		j = c.waitState(rootState, j.ID, 20*time.Second, "finished", func(j jobRecord) bool { return itest.Finished(j.State) })
		if j.State != "timed_out" {
			t.Errorf("ended %s exit %v signal %q, want timed_out", j.State, j.ExitCode, j.Signal)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("took %v", d)
		}
		if !c.unitGone(deref(j.BackendRef), 10*time.Second) {
			t.Errorf("%s still loaded", deref(j.BackendRef))
		}
	})

	run("cancel_and_lost", func(t *testing.T) {
		tok := "tok-" + randHex(4)
		j := c.schedule("--memory-max", "50M", "--cpu-quota", "50%", "--nice", "5", "--", "sh", "-c", ": "+tok+"; sleep 300 & wait")
		unit := deref(j.BackendRef)
		j = c.waitState(rootState, j.ID, 30*time.Second, "running", func(j jobRecord) bool { return j.State == "running" })
		p := c.showUnit(unit, "MemoryMax", "CPUQuotaPerSecUSec", "Nice")
		if p["MemoryMax"] != "52428800" || p["CPUQuotaPerSecUSec"] != "500ms" || p["Nice"] != "5" {
			t.Errorf("%s: %v, want MemoryMax=52428800 CPUQuotaPerSecUSec=500ms Nice=5", unit, p)
		}
		if len(processesInUnit(unit)) < 3 { // the wrapper, sh, sleep
			t.Errorf("processes in %s: %v, want the wrapper, sh and sleep", unit, processesInUnit(unit))
		}

		// A queued job's fate comes from its unit: a record that says queued, whose unit
		// is gone, is lost; one whose unit is active is still queued.
		for _, tc := range []struct{ ref, want string }{{"", "lost"}, {unit, "queued"}} {
			id := "probe-" + randHex(4)
			ref := tc.ref
			if ref == "" {
				ref = "cmesh-run-" + id + ".service"
			}
			craftQueued(t, c, j.ID, id, ref)
			if got := c.job(rootState, id); got.State != tc.want {
				t.Errorf("queued record whose unit %s is %v: state %s, want %s", ref, c.showUnit(ref, "ActiveState")["ActiveState"], got.State, tc.want)
			}
			for _, ext := range []string{".json", ".out"} {
				os.Remove(c.path(rootState + "/jobs/" + id + ext))
			}
		}

		start := time.Now()
		if r := c.cmeshIn(rootState, "root", "cancel", "--grace", "5s", j.ID); r.code != 0 {
			t.Fatalf("cancel: exit %d: %s", r.code, r.err)
		}
		t.Logf("cancel returned after %v", time.Since(start).Round(time.Millisecond))
		j = c.job(rootState, j.ID)
		if j.State != "canceled" {
			t.Errorf("after cancel: %s, want canceled", j.State)
		}
		if !c.unitGone(unit, 10*time.Second) {
			t.Errorf("%s still loaded after the cancel", unit)
		}
		if left := append(itest.ProcessesWith(tok), processesInUnit(unit)...); len(left) > 0 {
			t.Errorf("processes left after the cancel: %v", left)
		}
	})

	run("template", func(t *testing.T) {
		defer func() {
			os.Remove(c.path(templateUnit))
			c.must(30*time.Second, "systemctl", "daemon-reload")
		}()
		setupState := "/var/tmp/cmesh-run-systemd-setup-state"
		args := []string{"setup", "--systemd-template", "--web-user", itest.WebUser, "--run-as", itest.WebUser}
		r := c.cmeshIn(setupState, "root", args...)
		if r.code != 0 || !strings.Contains(r.out, "ExecStart=/bin/sh /run/cmesh-run/jobs/%i.sh\n") || !strings.Contains(r.out, "systemctl daemon-reload") {
			t.Fatalf("setup --systemd-template: exit %d\n%s%s", r.code, r.out, r.err)
		}
		if r = c.cmeshIn(setupState, "root", append(args, "--write")...); r.code != 0 {
			t.Fatalf("setup --systemd-template --write: exit %d\n%s%s", r.code, r.out, r.err)
		}
		if b, err := os.ReadFile(c.path(templateUnit)); err != nil || !strings.Contains(r.out, "done: systemd's template unit") || !strings.Contains(string(b), "\nOOMPolicy=continue\n") {
			t.Fatalf("template not installed: %v\n%s", err, r.out)
		}
		if r = c.cmeshIn(setupState, "root", args...); strings.Contains(r.out, "template unit") {
			t.Errorf("setup still plans the template once installed:\n%s", r.out)
		}

		j := c.schedule("--memory-max", "50M", "--", "sh", "-c", "echo tmpl; sleep 1")
		unit := "cmesh-run@" + j.ID + ".service"
		if deref(j.BackendRef) != unit {
			t.Fatalf("ref %q, want %s", deref(j.BackendRef), unit)
		}
		p := c.showUnit(unit, "FragmentPath", "MemoryMax", "ActiveState")
		if p["FragmentPath"] != templateUnit || p["MemoryMax"] != "52428800" {
			t.Errorf("%s: %v", unit, p)
		}
		if r := c.cmeshIn(rootState, "root", "wait", "--timeout", "30s", j.ID); r.code != 0 {
			t.Errorf("wait: exit %d (%s)", r.code, r.err)
		}
		if j = c.job(rootState, j.ID); j.State != "succeeded" || c.asRoot("log", j.ID) != "tmpl\n" {
			t.Errorf("ended %s, log %q", j.State, c.asRoot("log", j.ID))
		}
		if !c.unitGone(unit, 10*time.Second) {
			t.Errorf("%s still active", unit)
		}
		for _, f := range []string{jobScripts + "/" + j.ID + ".sh", "/run/systemd/system.control/" + unit + ".d"} {
			if itest.Eventually(5*time.Second, func() bool { _, err := os.Lstat(c.path(f)); return err != nil }) == false {
				t.Errorf("%s left behind", f)
			}
		}
	})

	run("latency", func(t *testing.T) {
		c.must(30*time.Second, "systemctl", "start", "atd.service")
		// 20 schedules per backend, alternating, timed inside the container; and, for
		// comparison, the bare tools each backend calls.
		script := `for i in $(seq 20); do for b in at systemd; do
  s=$(date +%s%N); id=$(` + cmeshBin + ` --state-dir ` + rootState + ` schedule --backend $b -- true) || exit 1; e=$(date +%s%N)
  echo "$b $(( (e - s) / 1000 )) $id"
done
  s=$(date +%s%N); echo true | at -M now 2>/dev/null || exit 1; e=$(date +%s%N); echo "bare-at $(( (e - s) / 1000 )) -"
  s=$(date +%s%N); systemd-run --quiet --collect -p Type=exec /bin/true || exit 1; e=$(date +%s%N); echo "bare-systemd-run $(( (e - s) / 1000 )) -"
done`
		out := c.must(120*time.Second, "sh", "-c", script)
		took := map[string][]float64{}
		started := map[string][]float64{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) != 3 {
				t.Fatalf("bad line %q", l)
			}
			us, _ := strconv.Atoi(f[1])
			took[f[0]] = append(took[f[0]], float64(us)/1000)
			if f[2] == "-" {
				continue
			}
			j := c.waitState(rootState, f[2], 20*time.Second, "finished", func(j jobRecord) bool { return itest.Finished(j.State) })
			if j.State != "succeeded" {
				t.Errorf("%s job %s: %s", f[0], j.ID, j.State)
			}
			if s, err := startDelay(j); err == nil {
				started[f[0]] = append(started[f[0]], s)
			}
		}
		for _, b := range []string{"at", "systemd"} {
			t.Logf("LATENCY schedule --backend %-7s returns after: median %5.1f ms (min %5.1f, max %5.1f, n=%d); its job starts %5.1f ms after created_at (median)",
				b, itest.Median(took[b]), minOf(took[b]), maxOf(took[b]), len(took[b]), itest.Median(started[b]))
		}
		for _, b := range []string{"bare-at", "bare-systemd-run"} {
			t.Logf("LATENCY %-16s alone: median %5.1f ms (min %5.1f, max %5.1f, n=%d)", b, itest.Median(took[b]), minOf(took[b]), maxOf(took[b]), len(took[b]))
		}
	})
}

// ParseProps parses `systemctl show` output.
func ParseProps(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// craftQueued writes into rootState a record for job id, queued on unit ref, made from job
// from's: what a job whose wrapper never started leaves.
func craftQueued(t *testing.T, c *container, from, id, ref string) {
	t.Helper()
	jobs := rootState + "/jobs/"
	b, err := os.ReadFile(c.path(jobs + from + ".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"wrapper_pid", "wrapper_start", "pid_start", "boot_id", "start_offset", "cancel", "signal"} {
		delete(r, k)
	}
	r["id"], r["state"], r["backend_ref"], r["pid"] = id, "queued", ref, nil
	r["started_at"], r["finished_at"], r["exit_code"] = nil, nil, nil
	r["created_at"], r["output_path"] = time.Now().UTC().Format(time.RFC3339Nano), jobs+id+".out"
	b, _ = json.Marshal(r)
	if err := os.WriteFile(c.path(jobs+id+".out"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.path(jobs+id+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startDelay is how long after its created_at job j's wrapper started it, in ms.
func startDelay(j jobRecord) (float64, error) {
	if j.StartedAt == nil {
		return 0, fmt.Errorf("job %s has no started_at", j.ID)
	}
	return float64(j.StartedAt.Sub(j.CreatedAt).Microseconds()) / 1000, nil
}

func minOf(v []float64) float64 {
	m := 0.0
	for i, x := range v {
		if i == 0 || x < m {
			m = x
		}
	}
	return m
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		if x > m {
			m = x
		}
	}
	return m
}

// TestSystemdBackendWithoutSystemd: on a machine where systemd is not PID 1 (this test's
// host, usually), --backend systemd is refused with exit 4 and the way out, and nothing is
// recorded.
func TestSystemdBackendWithoutSystemd(t *testing.T) {
	if st, err := os.Stat("/run/systemd/system"); err == nil && st.IsDir() {
		t.Skip("systemd is PID 1 on this host")
	}
	bin := binary(t)
	state := t.TempDir()
	cmd := exec.Command(bin, "--state-dir", state, "schedule", "--backend", "systemd", "--", "true")
	cmd.Env = []string{"PATH=" + itest.StdPath}
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("schedule --backend systemd: %v, want exit 4\nstderr: %s", err, se.String())
	}
	lines := strings.Split(strings.TrimSpace(se.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "cmesh-run: error: systemd is not running as init (PID 1)") ||
		!strings.HasPrefix(lines[1], "hint: use --backend at") || so.Len() != 0 {
		t.Errorf("stdout %q, stderr:\n%s\nwant one error line and one hint line", so.String(), se.String())
	}
	out, err := exec.Command(bin, "--state-dir", state, "list", "--json").Output()
	if err != nil || strings.TrimSpace(string(out)) != "[]" {
		t.Errorf("list after the refusal: %q %v, want []", out, err)
	}
}
