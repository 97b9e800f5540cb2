//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// The same job through each local backend: same wrapper, markers, record,
// so status, log, wait and cancel behave the same.
func TestBackendsAlike(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A worker for the spool, stopped by PID at the end.
	w := exec.Command(bin, "--state-dir", e.state, "worker", "--poll", "200ms")
	w.Env = []string{"PATH=/usr/bin:/bin", "CMESH_RUN_CONFIG=" + emptyConfig}
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { w.Process.Signal(syscall.SIGTERM); w.Wait() }()
	for _, be := range []string{"at", "direct", "spool"} {
		id := e.schedule([]string{"--backend", be}, "sh", "-c", "echo via $0; exit 3", be)
		if code := e.run("wait", "--timeout", "30s", id).code; code != 3 {
			t.Errorf("%s: wait %d, want 3", be, code)
		}
		j := e.status(id)
		if j.Backend != be || j.State != "failed" || string(e.log(id)) != "via "+be+"\n" {
			t.Errorf("%s: %+v log %q", be, j, e.log(id))
		}
		id = e.schedule([]string{"--backend", be}, "sh", "-c", "sleep 1000 & sleep 1000")
		e.waitState(id, "running", 30*time.Second)
		if r := e.run("cancel", "--grace", "1s", id); r.code != 0 || e.status(id).State != "canceled" || len(jobProcs(id)) != 0 {
			t.Errorf("%s: cancel: %d %s, left %v", be, r.code, r.stderr, jobProcs(id))
			killJobProcs(id)
		}
	}
	// A second worker is refused while the first runs.
	if r := e.run("worker"); r.code != 4 || !strings.Contains(string(r.stderr), "worker.lock") {
		t.Errorf("second worker: exit %d %s", r.code, r.stderr)
	}
	// The worker stops on SIGTERM; a running spool job goes on.
	id := e.schedule([]string{"--backend", "spool"}, "sleep", "2")
	e.waitState(id, "running", 30*time.Second)
	w.Process.Signal(syscall.SIGTERM)
	w.Wait()
	if j := e.waitDone(id, 30*time.Second); j.State != "succeeded" {
		t.Errorf("spool job after the worker stopped: %s", j.State)
	}
	// Without a worker a spool job waits for drain.
	id = e.schedule([]string{"--backend", "spool"}, "true")
	time.Sleep(300 * time.Millisecond) // nothing may start it; this is the claim under test
	if s := e.status(id).State; s != "queued" {
		t.Errorf("spool job with no worker: %s, want queued", s)
	}
	e.must("drain")
	if j := e.waitDone(id, 30*time.Second); j.State != "succeeded" {
		t.Errorf("after drain: %s", j.State)
	}
}

func TestAutoPicksAt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out := e.must("schedule", "--json", "--backend", "auto", "--", "true")
	var j job
	json.Unmarshal(out, &j)
	if j.Backend != "at" {
		t.Errorf("auto with atd running picked %q", j.Backend)
	}
	var rep report
	json.Unmarshal(e.must("doctor", "--json", "--fpm-conf", "/nonexistent"), &rep)
	if c := find(t, rep, "backend auto"); !strings.Contains(c.Message, "picks at") {
		t.Errorf("doctor: %+v", c)
	}
}

// A caller's descriptors (a web server's socket, say) never reach the job,
// whichever backend starts it.
func TestNoInheritedDescriptors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, be := range []string{"at", "direct"} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--state-dir", e.state, "schedule", "--backend", be, "--", "sh", "-c", "ls /proc/$$/fd")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "CMESH_RUN_CONFIG=" + emptyConfig}
		cmd.ExtraFiles = []*os.File{r, w} // fds 3 and 4, without close-on-exec
		out, err := cmd.Output()
		r.Close()
		w.Close()
		if err != nil {
			t.Fatalf("%s: %v", be, err)
		}
		id := strings.TrimSpace(string(out))
		e.waitDone(id, 30*time.Second)
		if got := strings.Fields(string(e.log(id))); strings.Join(got, " ") != "0 1 2" {
			t.Errorf("%s: the job's descriptors are %v, want 0 1 2", be, got)
		}
	}
}

// The job's program starts stopped at its exec, held by the wrapper as
// its tracer, unless that would cost it privileges: a set-user-ID program
// run by a non-root user keeps them (the kernel does not grant set-ID bits
// to a traced exec, so such a program goes through _exec).
func TestSetuidProgramKeepsItsPrivileges(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("/tmp", "cmesh-run-suid")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil || fs.Flags&0x2 != 0 { // ST_NOSUID
		t.Skipf("%s is mounted nosuid: set-user-ID cannot be shown here", dir)
	}
	data, err := os.ReadFile("/usr/bin/id")
	if err != nil {
		t.Fatal(err)
	}
	plain, suid := dir+"/id-plain", dir+"/id-suid"
	for _, p := range []string{plain, suid} {
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(suid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	b := nobodyBin(t)
	state := dir + "/state"
	asNobody := func(args ...string) string {
		cmd := exec.Command(b, append([]string{"--state-dir", state}, args...)...)
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "CMESH_RUN_CONFIG=" + emptyConfig}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("as nobody: cmesh-run %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	for _, c := range []struct{ prog, want string }{{plain, "65534"}, {suid, "0"}} {
		id := asNobody("schedule", "--backend", "direct", "--workdir", "/", "--", c.prog, "-u")
		deadline := time.Now().Add(startDeadline)
		for {
			var j job
			json.Unmarshal([]byte(asNobody("status", "--json", id)), &j)
			if j.State == "succeeded" {
				break
			}
			if itest.Finished(j.State) || time.Now().After(deadline) {
				t.Fatalf("%s: state %s", c.prog, j.State)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := asNobody("log", id); got != c.want {
			t.Errorf("%s -u run by nobody printed %q, want %q", c.prog, got, c.want)
		}
	}
}
