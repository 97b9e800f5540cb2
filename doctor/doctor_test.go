package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/atsched"
)

func TestParseFPM(t *testing.T) {
	p := filepath.Join(t.TempDir(), "www.conf")
	os.WriteFile(p, []byte(`; comment
[global]
pid = /run/php.pid
[www]
user = www-data
clear_env = no ; trailing comment
php_admin_value[disable_functions] = "exec,system"
[api]
user=api
user=api2
`), 0o644)
	pools, err := parseFPM(p)
	if err != nil || len(pools) != 2 {
		t.Fatalf("parseFPM = %+v, %v", pools, err)
	}
	if v := pools[0].values; v["user"] != "www-data" || v["clear_env"] != "no" || v["php_admin_value[disable_functions]"] != "exec,system" {
		t.Errorf("www = %v", v)
	}
	if pools[1].values["user"] != "api2" {
		t.Errorf("the last value wins, as in php-fpm: %v", pools[1].values)
	}
}

func TestStateDirModes(t *testing.T) {
	dir := t.TempDir()
	env := Env{At: atsched.New("tester", os.Getuid()), StateDir: dir}
	for mode, want := range map[os.FileMode]string{0o750: OK, 0o755: Warn, 0o777: Fail} {
		os.Chmod(dir, mode)
		var got []Check
		checkStateDir(env, func(c Check) { got = append(got, c) })
		if got[0].Status != want {
			t.Errorf("mode %o: %+v, want %s", mode, got[0], want)
		}
	}
	env.StateDir = "/var/www/state"
	var got []Check
	checkStateDir(env, func(c Check) { got = append(got, c) })
	last := got[len(got)-1]
	if last.Status != Warn || !strings.Contains(last.Message, "under /var/www") {
		t.Errorf("state dir under the web root: %+v", last)
	}
}

// On a host where another backend takes the jobs (only systemd, only a
// spool worker, nothing but direct), at is no concern: its checks do not
// fail doctor, and the probe goes through the backend in use.
func TestProbeThroughTheBackendInUse(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o750)
	missing := atsched.New("tester", os.Getuid())
	missing.At = filepath.Join(dir, "no-at")
	probed := false
	checks := Run(Env{
		At: missing, StateDir: dir, Backend: "direct", BackendCheck: func() error { return nil },
		Probe: func(time.Duration) error { probed = true; return nil }, AuditLog: "/var/log/x",
	})
	if Failed(checks) || !probed {
		t.Fatalf("direct backend, no at: failed=%v probed=%v: %+v", Failed(checks), probed, checks)
	}
	for _, c := range checks {
		if strings.HasPrefix(c.Name, "at ") || c.Name == "atd running" {
			t.Errorf("an at check on a host that does not use at: %+v", c)
		}
	}
	// The default backend, at, still gets its own checks, and without at
	// the probe is not run.
	probed = false
	checks = Run(Env{At: missing, StateDir: dir, Backend: "at", Probe: func(time.Duration) error { probed = true; return nil }})
	if !Failed(checks) || probed {
		t.Errorf("at backend without at: failed=%v probed=%v", Failed(checks), probed)
	}
}
