package systemd

import (
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/status"
)

func TestUnitNames(t *testing.T) {
	id := "20261127-212514.889432-ca8066"
	if got := UnitName(id); got != "cmesh-run-"+id+".service" {
		t.Errorf("UnitName = %q", got)
	}
	if got := InstanceName(id); got != "cmesh-run@"+id+".service" {
		t.Errorf("InstanceName = %q", got)
	}
	for _, ok := range []string{UnitName(id), InstanceName(id), "cmesh-run-a.service", "cmesh-run@A_b.c-d.service"} {
		if !ValidUnit(ok) {
			t.Errorf("ValidUnit(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "cmesh-run-.service", "ssh.service", "cmesh-run-x", "--now", "cmesh-run-a/b.service",
		"cmesh-run-a b.service", "cmesh-run-x.service;reboot", "cmesh-run-.hidden.service", "cmesh-run@x.socket", "x-cmesh-run-a.service"} {
		if ValidUnit(bad) {
			t.Errorf("ValidUnit(%q) = true", bad)
		}
	}
}

func TestProperties(t *testing.T) {
	script := "/run/cmesh-run/jobs/J.sh"
	got, err := Properties(status.Spec{}, "www-data", script)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Type=exec", "User=www-data", "WorkingDirectory=/", "StandardInput=null", "KillMode=control-group",
		"OOMPolicy=continue", "TimeoutStopSec=40", "ExecStopPost=+/bin/rm -f -- " + script}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plain spec:\n got %q\nwant %q", got, want)
	}

	spec := status.Spec{Timeout: 90 * time.Second, Grace: 5 * time.Second, Nice: 10, MemoryMax: "512M", CPUQuota: "50"}
	got, err = Properties(spec, "root", script)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"Type=exec", "User=root", "WorkingDirectory=/", "StandardInput=null", "KillMode=control-group",
		"OOMPolicy=continue", "TimeoutStopSec=35", "ExecStopPost=+/bin/rm -f -- " + script,
		"RuntimeMaxSec=125", "Nice=10", "MemoryMax=512M", "CPUQuota=50%"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("full spec:\n got %q\nwant %q", got, want)
	}

	if _, err := Properties(status.Spec{MemoryMax: "lots"}, "root", script); errs.KindOf(err) != errs.Usage {
		t.Errorf("bad MemoryMax: %v, want a usage error", err)
	}
}

func TestRuntimeMax(t *testing.T) {
	for _, c := range []struct {
		spec status.Spec
		want time.Duration
	}{
		{status.Spec{}, 0},
		{status.Spec{Timeout: time.Second}, time.Second + 10*time.Second + Margin}, // default grace
		{status.Spec{Timeout: time.Minute, Grace: 2 * time.Second}, time.Minute + 2*time.Second + Margin},
		// Every attempt may run into the timeout, with the delays between them.
		{status.Spec{Timeout: time.Minute, Grace: 2 * time.Second, Retries: 2, RetryDelay: 10 * time.Second},
			3*(time.Minute+2*time.Second) + 2*10*time.Second + Margin},
		// A job that may wait for a slot for as long as it takes has no cap.
		{status.Spec{Timeout: time.Minute, Slots: 2}, 0},
	} {
		if got := RuntimeMax(c.spec); got != c.want {
			t.Errorf("RuntimeMax(%+v) = %v, want %v", c.spec, got, c.want)
		}
	}
	if got := seconds(1500 * time.Millisecond); got != "2" {
		t.Errorf("seconds(1.5s) = %q, want 2 (rounded up)", got)
	}
}

func TestQuotaSyntax(t *testing.T) {
	for _, v := range []string{"512M", "1G", "1.5G", "1073741824", "20%", "infinity", "100K", "0"} {
		if !ValidMemoryMax(v) {
			t.Errorf("ValidMemoryMax(%q) = false", v)
		}
	}
	for _, v := range []string{"", "M", "512MB", "512m", "-1", "1e9", "0%", "12.G", "50M ", "1G\nUser=root", "infinite"} {
		if ValidMemoryMax(v) {
			t.Errorf("ValidMemoryMax(%q) = true", v)
		}
	}
	for _, v := range []string{"50%", "50", "200%", "0.5%"} {
		if !ValidCPUQuota(v) {
			t.Errorf("ValidCPUQuota(%q) = false", v)
		}
	}
	for _, v := range []string{"", "%", "0%", "0", "half", "50%%", "-5%", "50%\nUser=root"} {
		if ValidCPUQuota(v) {
			t.Errorf("ValidCPUQuota(%q) = true", v)
		}
	}
	err := CheckQuotas(status.Spec{CPUQuota: "fast"})
	if errs.KindOf(err) != errs.Usage || !strings.Contains(err.Error(), "--cpu-quota") {
		t.Errorf("CheckQuotas(fast) = %v", err)
	}
}

func TestParseShow(t *testing.T) {
	m := ParseShow([]byte("ActiveState=active\nLoadState=loaded\nExecStart={ path=/bin/sh ; argv[]=/bin/sh x=y }\n\n"))
	if m["ActiveState"] != "active" || m["LoadState"] != "loaded" || m["ExecStart"] != "{ path=/bin/sh ; argv[]=/bin/sh x=y }" {
		t.Errorf("ParseShow = %q", m)
	}
	for state, want := range map[string]bool{"active": true, "activating": true, "deactivating": true, "reloading": true,
		"inactive": false, "failed": false, "": false} {
		if got := Pending(map[string]string{"ActiveState": state}); got != want {
			t.Errorf("Pending(%q) = %v, want %v", state, got, want)
		}
	}
}

func TestTemplateUnit(t *testing.T) {
	u := TemplateUnit()
	for _, line := range []string{"Type=exec", "ExecStart=/bin/sh /run/cmesh-run/jobs/%i.sh", "OOMPolicy=continue",
		"KillMode=control-group", "CollectMode=inactive-or-failed", "ExecStopPost=-/bin/rm -f -- /run/cmesh-run/jobs/%i.sh"} {
		if !strings.Contains(u, "\n"+line+"\n") {
			t.Errorf("template unit lacks the line %q:\n%s", line, u)
		}
	}
}

// fakeTools makes a systemd backend whose systemd-run and systemctl are
// scripts that log their argv, print $0.out and exit with $0.rc, and whose
// directories are temporary.
func fakeTools(t *testing.T) (*Systemd, string) {
	t.Helper()
	dir := t.TempDir()
	logf := filepath.Join(dir, "calls.log")
	fake := `#!/bin/sh
{ printf '%s' "$(basename "$0")"; for a in "$@"; do printf ' [%s]' "$a"; done; echo; } >> ` + logf + `
[ -f "$0.hook" ] && . "$0.hook"
[ -f "$0.out" ] && cat "$0.out"
exit $(cat "$0.rc" 2>/dev/null || echo 0)
`
	s := &Systemd{
		SystemdRun: filepath.Join(dir, "systemd-run"), Systemctl: filepath.Join(dir, "systemctl"),
		BootedDir: filepath.Join(dir, "booted"), ScriptDir: filepath.Join(dir, "run", "jobs"),
		TemplatePath: filepath.Join(dir, "cmesh-run@.service"), ControlDir: filepath.Join(dir, "control"),
		User: "root", UID: 0,
	}
	for _, p := range []string{s.SystemdRun, s.Systemctl} {
		if err := os.WriteFile(p, []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(s.BootedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return s, logf
}

func calls(t *testing.T, logf string) []string {
	b, _ := os.ReadFile(logf)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func me(t *testing.T) (string, int) {
	u, err := user.Current()
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	return u.Username, uid
}

func job(id, who string, spec status.Spec) backend.Job {
	spec.Nonce, spec.Workdir = "n0nce", "/"
	spec.Env = []string{"PATH=/usr/bin:/bin", "SECRET=hunter2"}
	return backend.Job{
		Record: &status.Record{Job: status.Job{ID: id, User: who, CreatedAt: time.Now()}},
		Argv:   []string{"sh", "-c", "echo hi"}, Spec: spec, Exe: "/usr/local/bin/cmesh-run", StateDir: "/var/lib/cmesh-run",
	}
}

func TestCheck(t *testing.T) {
	s, _ := fakeTools(t)
	if err := s.Check(); err != nil {
		t.Errorf("root, booted: %v", err)
	}
	s.UID, s.User = 33, "www-data"
	err := s.Check()
	if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "Interactive authentication required") ||
		!strings.Contains(errs.HintOf(err), "www-data ALL=(root) NOPASSWD: /usr/local/bin/cmesh-run") {
		t.Errorf("www-data: %v (hint %q), want unavailable with the sudo rule", err, errs.HintOf(err))
	}
	os.Remove(s.BootedDir)
	err = s.Check()
	if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "systemd is not running as init (PID 1)") ||
		!strings.Contains(errs.HintOf(err), "--backend at") {
		t.Errorf("not booted: %v (hint %q)", err, errs.HintOf(err))
	}
}

func TestSubmitTransient(t *testing.T) {
	s, logf := fakeTools(t)
	name, uid := me(t)
	s.UID = uid
	id := "20261127-212514.889432-ca8066"
	script := s.ScriptPath(id)
	// While systemd-run runs, the script must exist, private, with the job.
	os.WriteFile(s.SystemdRun+".hook", []byte(`stat -c '%a %u' `+script+` > `+script+`.seen; cat `+script+` >> `+script+`.seen`+"\n"), 0o644)

	j := job(id, name, status.Spec{Timeout: time.Second, MemoryMax: "50M"})
	ref, err := s.Submit(j)
	if err != nil {
		t.Fatal(err)
	}
	if ref != UnitName(id) {
		t.Errorf("ref = %q, want %q", ref, UnitName(id))
	}
	c := calls(t, logf)
	want := "systemd-run [--quiet] [--no-ask-password] [--collect] [--unit=" + UnitName(id) + "] [--description=cmesh-run job " + id + "]" +
		" [--property=Type=exec] [--property=User=" + name + "] [--property=WorkingDirectory=/] [--property=StandardInput=null]" +
		" [--property=KillMode=control-group] [--property=OOMPolicy=continue] [--property=TimeoutStopSec=40]" +
		" [--property=ExecStopPost=+/bin/rm -f -- " + script + "] [--property=RuntimeMaxSec=41] [--property=MemoryMax=50M]" +
		" [--] [/bin/sh] [" + script + "]"
	if len(c) != 1 || c[0] != want {
		t.Errorf("calls:\n got %q\nwant %q", c, want)
	}
	if strings.Contains(strings.Join(c, "\n"), "hunter2") || strings.Contains(strings.Join(c, "\n"), "echo hi") {
		t.Errorf("the job's env or argv reached systemd-run's command line: %q", c)
	}
	seen, err := os.ReadFile(script + ".seen")
	if err != nil {
		t.Fatal(err)
	}
	if first, rest, _ := strings.Cut(string(seen), "\n"); first != "600 "+strconv.Itoa(uid) || rest != string(j.Script()) {
		t.Errorf("script while systemd-run ran: %q, want mode 600, owner %d and the job's script", seen, uid)
	}
	if st, err := os.Stat(s.ScriptDir); err != nil || st.Mode().Perm() != 0o711 {
		t.Errorf("script dir: %v %v, want mode 0711", st, err)
	}
	// The file is the unit's until it stops; submitting the same ID again
	// must not write through it.
	if _, err := s.Submit(j); err == nil {
		t.Errorf("second Submit of the same ID succeeded")
	}
}

func TestSubmitFailures(t *testing.T) {
	s, _ := fakeTools(t)
	name, uid := me(t)
	s.UID = uid
	id := "20261127-212514.889432-aaaaaa"

	os.WriteFile(s.SystemdRun+".out", []byte("Failed to start transient service unit: Interactive authentication required.\n"), 0o644)
	os.WriteFile(s.SystemdRun+".rc", []byte("1\n"), 0o644)
	_, err := s.Submit(job(id, name, status.Spec{}))
	if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "needs root") {
		t.Errorf("auth failure: %v", err)
	}
	if _, err := os.Lstat(s.ScriptPath(id)); err == nil {
		t.Errorf("script left behind after a failed submit")
	}

	os.WriteFile(s.SystemdRun+".out", []byte("Job for cmesh-run-x.service failed.\n"), 0o644)
	_, err = s.Submit(job(id, name, status.Spec{}))
	if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "Job for cmesh-run-x.service failed.") {
		t.Errorf("failed start: %v", err)
	}
	if _, err := os.Lstat(s.ScriptPath(id)); err == nil {
		t.Errorf("script left behind after a failed submit")
	}

	// Bad quotas never reach systemd, nor leave a script.
	_, err = s.Submit(job(id, name, status.Spec{MemoryMax: "50 MB"}))
	if errs.KindOf(err) != errs.Usage {
		t.Errorf("bad quota: %v, want a usage error", err)
	}

	// A script directory someone else could write is refused.
	os.Remove(s.SystemdRun + ".rc")
	os.Chmod(s.ScriptDir, 0o777)
	_, err = s.Submit(job(id, name, status.Spec{}))
	if err == nil || !strings.Contains(err.Error(), "refusing "+s.ScriptDir) {
		t.Errorf("world-writable script dir: %v", err)
	}
	os.Chmod(s.ScriptDir, 0o711)
	// So is a symlink where the script would go.
	os.Symlink("/etc/passwd", s.ScriptPath(id))
	if _, err := s.Submit(job(id, name, status.Spec{})); err == nil {
		t.Errorf("Submit wrote through a planted symlink")
	}
}

func TestSubmitTemplate(t *testing.T) {
	s, logf := fakeTools(t)
	name, uid := me(t)
	s.UID = uid
	if err := os.WriteFile(s.TemplatePath, []byte(TemplateUnit()), 0o644); err != nil {
		t.Fatal(err)
	}
	if s.Mode() != Template {
		t.Fatalf("Mode = %s with a template file", s.Mode())
	}
	id := "20261127-212514.889432-bbbbbb"
	j := job(id, name, status.Spec{MemoryMax: "50M", CPUQuota: "20%", Timeout: time.Second})
	if uid != 0 {
		if _, err := s.Submit(j); err == nil {
			t.Errorf("template mode took a job of %s (not root)", name)
		}
		t.Skip("the rest needs root")
	}
	ref, err := s.Submit(j)
	if err != nil {
		t.Fatal(err)
	}
	if ref != InstanceName(id) {
		t.Errorf("ref = %q", ref)
	}
	want := []string{
		"systemctl [--runtime] [--no-ask-password] [set-property] [--] [" + ref + "] [MemoryMax=50M] [CPUQuota=20%]",
		"systemctl [--no-ask-password] [start] [--] [" + ref + "]",
	}
	if c := calls(t, logf); !reflect.DeepEqual(c, want) {
		t.Errorf("calls:\n got %q\nwant %q", c, want)
	}
}

func TestRemove(t *testing.T) {
	s, logf := fakeTools(t)
	if err := s.Remove("ssh.service"); err == nil {
		t.Errorf("Remove(ssh.service) succeeded")
	}
	os.WriteFile(s.Systemctl+".out", []byte("Failed to stop cmesh-run-a.service: Unit cmesh-run-a.service not loaded.\n"), 0o644)
	os.WriteFile(s.Systemctl+".rc", []byte("5\n"), 0o644)
	if err := s.Remove("cmesh-run-a.service"); err != nil {
		t.Errorf("Remove of a unit that is gone: %v", err)
	}
	want := []string{"systemctl [--no-block] [--no-ask-password] [stop] [--] [cmesh-run-a.service]"}
	if c := calls(t, logf); !reflect.DeepEqual(c, want) {
		t.Errorf("calls: %q, want %q", c, want)
	}
}

func TestProbe(t *testing.T) {
	s, _ := fakeTools(t)
	ref := "cmesh-run-a.service"
	rec := &status.Record{Job: status.Job{ID: "a", CreatedAt: time.Now(), BackendRef: &ref}}

	os.WriteFile(s.Systemctl+".out", []byte("ActiveState=active\nLoadState=loaded\n"), 0o644)
	if seen, err := s.Probe()(rec); !seen.Held || err != nil {
		t.Errorf("active unit: %v %v, want pending", seen.Held, err)
	}
	os.WriteFile(s.Systemctl+".out", []byte("ActiveState=inactive\nLoadState=not-found\n"), 0o644)
	if seen, err := s.Probe()(rec); seen.Held || err != nil {
		t.Errorf("unit gone: %v %v, want not pending (so: lost)", seen.Held, err)
	}
	os.WriteFile(s.Systemctl+".rc", []byte("1\n"), 0o644)
	if seen, err := s.Probe()(rec); !seen.Held || err == nil {
		t.Errorf("systemctl failing: %v %v, want pending and the error", seen.Held, err)
	}

	rec.BackendRef = nil
	if seen, _ := s.Probe()(rec); !seen.Held {
		t.Errorf("fresh record without a unit yet: not pending")
	}
	rec.CreatedAt = time.Now().Add(-2 * submitGrace)
	if seen, _ := s.Probe()(rec); seen.Held {
		t.Errorf("old record that never got a unit: still pending")
	}
}
