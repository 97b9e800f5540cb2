//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

type check struct {
	Name, Status, Message, Fix string
}

type report struct {
	OK     bool    `json:"ok"`
	Checks []check `json:"checks"`
}

// doctor runs cmesh-run doctor --json as uid (0 or 65534) and returns its
// report and exit status.
func doctor(t *testing.T, uid uint32, state string, args ...string) (report, int) {
	t.Helper()
	b := bin
	if uid != 0 {
		b = nobodyBin(t)
	}
	cmd := exec.Command(b, append([]string{"--state-dir", state, "doctor", "--json", "--probe-timeout", "20s"}, args...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "CMESH_RUN_CONFIG=" + emptyConfig}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(so.Bytes(), &r); err != nil {
		t.Fatalf("doctor --json: %v\nstdout %s\nstderr %s", err, so.String(), se.String())
	}
	return r, code
}

// nobodyBin copies the binary where user nobody can run it.
func nobodyBin(t *testing.T) string {
	dir, err := os.MkdirTemp("/tmp", "cmesh-run-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	p := filepath.Join(dir, "cmesh-run")
	data, err := os.ReadFile(bin)
	if err != nil || os.WriteFile(p, data, 0o755) != nil {
		t.Fatalf("copy binary: %v", err)
	}
	return p
}

func find(t *testing.T, r report, prefix string) check {
	t.Helper()
	for _, c := range r.Checks {
		if strings.HasPrefix(c.Name, prefix) {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", prefix, r.Checks)
	return check{}
}

func pool(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "pool.conf")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDoctorHealthy(t *testing.T) {
	needAtd(t)
	state := filepath.Join(t.TempDir(), "state")
	conf := pool(t, "[app]\nuser = root\ngroup = root\nlisten = /run/x.sock\nclear_env = yes\n")
	r, code := doctor(t, 0, state, "--fpm-conf", conf)
	if code != 0 || !r.OK {
		t.Fatalf("exit %d on a healthy setup: %+v", code, r.Checks)
	}
	for _, want := range []string{"at installed", "atd running", "at allows root", "state dir", "probe job", "php-fpm pool app", "SELinux"} {
		if c := find(t, r, want); c.Status != "ok" {
			t.Errorf("%s: %+v", want, c)
		}
	}
	if entries, _ := os.ReadDir(state + "/jobs"); len(entries) != 0 {
		t.Errorf("the probe job left files: %v", entries)
	}
}

func TestDoctorExecDisabledInPool(t *testing.T) {
	needAtd(t)
	conf := pool(t, "[global]\npid = /run/x.pid\n[app]\nuser = root\nphp_admin_value[disable_functions] = exec,shell_exec,system,passthru,proc_open,popen,pcntl_exec\n")
	r, code := doctor(t, 0, t.TempDir(), "--fpm-conf", conf)
	c := find(t, r, "php-fpm pool app")
	if code != 1 || c.Status != "fail" || !strings.Contains(c.Fix, "remove exec and proc_open from disable_functions in "+conf) {
		t.Errorf("exit %d, check %+v", code, c)
	}
	conf = pool(t, "[app]\nuser = root\nphp_admin_value[disable_functions] = exec,shell_exec\n")
	r, _ = doctor(t, 0, t.TempDir(), "--fpm-conf", conf)
	if c := find(t, r, "php-fpm pool app"); c.Status != "warn" || !strings.Contains(c.Message, "still allowed: system,passthru,proc_open,popen") {
		t.Errorf("partly disabled: %+v", c)
	}
}

// As nobody: Debian's at.deny lists nobody, and a root-owned state dir is
// not writable.
func TestDoctorDeniedUserAndStateDir(t *testing.T) {
	needAtd(t)
	state, err := os.MkdirTemp("/tmp", "cmesh-run-rootonly")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	os.Chmod(state, 0o755)
	r, code := doctor(t, 65534, state, "--fpm-conf", "/nonexistent/*.conf")
	if code != 1 || r.OK {
		t.Errorf("exit %d ok %v, want 1 false", code, r.OK)
	}
	c := find(t, r, "state dir "+state)
	if c.Status != "fail" || !strings.Contains(c.Message, "not writable by nobody") || !strings.Contains(c.Fix, "chown nobody "+state) {
		t.Errorf("state dir: %+v", c)
	}
	// nobody cannot read /etc/at.deny: the check says so, and the probe
	// is not run while the state dir is broken.
	if c := find(t, r, "at allows nobody"); c.Status != "warn" && c.Status != "fail" {
		t.Errorf("at permission: %+v", c)
	}
	// With a writable state dir the probe runs, and at's refusal comes
	// back with the line to delete.
	os.Chmod(state, 0o777)
	r, code = doctor(t, 65534, state+"/s", "--fpm-conf", "/nonexistent/*.conf")
	c = find(t, r, "probe job")
	if code != 1 || c.Status != "fail" || !strings.Contains(c.Message, "/etc/at.deny") || !strings.Contains(c.Fix, `sed -i '/^nobody$/d' /etc/at.deny`) {
		t.Errorf("probe as a denied user: exit %d %+v", code, c)
	}
	// What auto would pick does not claim a permission nobody could read.
	if c := find(t, r, "backend auto"); strings.Contains(c.Message, "lets nobody use it") || !strings.Contains(c.Message, "the probe job tells") {
		t.Errorf("backend auto as a user who cannot read at.deny: %+v", c)
	}
}
