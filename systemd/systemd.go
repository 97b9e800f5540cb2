// Package systemd is the systemd backend: each job runs in a unit of its
// own, started by the system manager, outside the caller's process tree,
// session and cgroup, with the memory and CPU quotas, run time cap and
// niceness of its spec enforced by systemd.
//
// Two ways to get the unit, chosen by the machine, not the caller:
//
//   - transient (the default): `systemd-run --unit=cmesh-run-ID.service
//     --property=Type=exec --collect ... /bin/sh SCRIPT`, every property on
//     the command line;
//   - template: when /etc/systemd/system/cmesh-run@.service exists (`cmesh-run
//     setup --systemd-template --write` installs it), `systemctl start
//     cmesh-run@ID.service`; its quotas go on the instance first with
//     `systemctl set-property --runtime` (RuntimeMaxSec= and Nice= cannot be
//     set per instance: the wrapper's own timeout and nice still apply). The
//     unit's definition is then the admin's, reviewable in one file. The
//     config has no key to choose between the two (a `systemd_mode` key
//     would need config/, which strictly refuses unknown keys), so the
//     template file's existence is the switch, and only root can make it.
//     Template instances always run as root.
//
// Either way the unit runs the wrapper exactly as the at backend does: the
// script backend.Job.Script builds, run by /bin/sh. How the script reaches
// the unit is what makes the backend safe (see ScriptDir):
//
//   - Not on the command line or in a property: `systemctl show` of any unit
//     prints its ExecStart=, Environment= and the like to every user, and
//     the script holds the job's argv and --env values. The unit only names
//     a file: ExecStart=/bin/sh FILE.
//   - The file is in /run/cmesh-run/jobs, a directory owned by root, mode
//     0711, that nobody else can write: not in the state dir, which its
//     owner or group (the web user, often) may be able to write, and so
//     could swap the file, or the whole jobs/ directory, between schedule
//     and the moment root's systemd runs it. It is created with
//     O_EXCL|O_NOFOLLOW, mode 0600, owned by the job's user: nobody else can
//     read it, and the caller, who under sudo is not that user, can neither
//     read nor change it. It lives in /run (tmpfs): it never reaches a disk.
//   - ExecStopPost= removes it when the unit stops, whatever way it stops
//     (the "+" prefix: with full privileges, whoever the job's user is).
//
// Results come from the wrapper's markers, never from systemd's unit state:
// a transient unit that succeeded is unloaded at once (--collect), its exit
// status gone. So OOMPolicy=continue: when the kernel kills the job for
// exceeding MemoryMax, systemd must not stop the unit (SIGTERM to the
// wrapper would read as a cancel); the wrapper sees the job die of SIGKILL
// and writes that. KillMode stays control-group: stopping the unit stops
// the whole job, and leftovers are killed once the wrapper has exited; a
// cancel goes to the wrapper (SIGUSR1) as with at, which ends the job's
// tree itself and writes the marker before its unit ends.
//
// Only root can start system units: as www-data, systemd-run fails with
// "Interactive authentication required", and `systemd-run --user` would tie
// the job to the web user's session manager. So Check refuses other users
// with the sudo rule to use instead.
package systemd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// Where things are on a systemd machine.
const (
	// BootedDir exists when systemd is PID 1 (what sd_booted(3) checks).
	BootedDir = "/run/systemd/system"
	// ScriptDir holds the jobs' scripts until their units stop.
	ScriptDir = "/run/cmesh-run/jobs"
	// TemplatePath is the template unit; its existence selects it.
	TemplatePath = "/etc/systemd/system/" + TemplateName
	// TemplateName is the template unit's name.
	TemplateName = "cmesh-run@.service"
	// ControlDir is where `systemctl set-property --runtime` writes its
	// drop-ins (cmesh-run@ID.service.d/); the template's ExecStopPost
	// removes a job's.
	ControlDir = "/run/systemd/system.control"

	// Margin is added to the time the wrapper needs for its own timeout
	// before systemd's RuntimeMaxSec= and TimeoutStopSec= strike: the
	// wrapper gets the first chance, so that its marker says timed_out.
	Margin = 30 * time.Second
)

// Mode is how units are made: transient or from the template.
type Mode string

const (
	Transient Mode = "transient"
	Template  Mode = "template"
)

// Systemd is the systemd backend; paths are absolute because PHP-FPM hands
// its children no PATH. The zero value is not usable: call New.
type Systemd struct {
	SystemdRun, Systemctl string
	BootedDir             string
	ScriptDir             string
	TemplatePath          string
	ControlDir            string
	User                  string // the calling user
	UID                   int
}

// New returns the systemd backend for the calling user.
func New(user string, uid int) *Systemd {
	return &Systemd{
		SystemdRun: "/usr/bin/systemd-run", Systemctl: "/usr/bin/systemctl",
		BootedDir: BootedDir, ScriptDir: ScriptDir, TemplatePath: TemplatePath, ControlDir: ControlDir,
		User: user, UID: uid,
	}
}

// Name implements backend.Backend.
func (s *Systemd) Name() string { return "systemd" }

// Quotas implements backend.Backend: MemoryMax= and CPUQuota= on the unit.
func (s *Systemd) Quotas() bool { return true }

// cleanEnv is all systemd-run and systemctl see of our environment.
var cleanEnv = []string{"PATH=" + proc.CleanPath, "LANG=C.UTF-8"}

func unavailable(format string, args ...any) *errs.Error {
	return errs.Errorf(errs.Unavailable, format, args...)
}

// Booted tells whether systemd is the init system (PID 1) here.
func (s *Systemd) Booted() bool {
	st, err := os.Lstat(s.BootedDir)
	return err == nil && st.IsDir()
}

// Mode returns the template mode when the template unit is installed.
func (s *Systemd) Mode() Mode {
	if st, err := os.Lstat(s.TemplatePath); err == nil && st.Mode().IsRegular() {
		return Template
	}
	return Transient
}

// Check implements backend.Backend: systemd is PID 1, its tools are here,
// the caller is root, and a template unit, when there is one, is sane.
func (s *Systemd) Check() error {
	if !s.Booted() {
		return unavailable("systemd is not running as init (PID 1) here (%s is missing), so it cannot start units", s.BootedDir).
			WithHint("use --backend at (the default) on this machine; the systemd backend needs a machine booted with systemd")
	}
	for _, p := range []string{s.SystemdRun, s.Systemctl} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			return unavailable("%s is missing", p).WithHint("install systemd: apt-get install systemd")
		}
	}
	if s.UID != 0 {
		return s.needRoot()
	}
	if s.Mode() == Template {
		return s.checkTemplate()
	}
	return nil
}

// needRoot is the error for a caller other than root.
func (s *Systemd) needRoot() *errs.Error {
	return unavailable("the systemd backend needs root: as %s, systemd-run fails with \"Interactive authentication required\" (and --user units would die with the user's session)", s.User).
		WithHint("let %s run cmesh-run as root through sudo (a sudoers rule \"%s ALL=(root) NOPASSWD: /usr/local/bin/cmesh-run\", then sudo -n /usr/local/bin/cmesh-run schedule --backend systemd ...), or use --backend at",
			s.User, s.User)
}

// checkTemplate refuses a template unit that someone besides root could
// have written: systemd runs its ExecStart as root.
func (s *Systemd) checkTemplate() error {
	st, err := os.Lstat(s.TemplatePath)
	if err != nil {
		return unavailable("cannot check %s: %v", s.TemplatePath, err)
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if sys == nil || sys.Uid != 0 || st.Mode().Perm()&0o022 != 0 {
		return unavailable("refusing the template unit %s: it must be owned by root and writable by root only", s.TemplatePath).
			WithHint("chown root:root %s; chmod 0644 %s (or reinstall it: cmesh-run setup --systemd-template --write)", s.TemplatePath, s.TemplatePath)
	}
	b, err := os.ReadFile(s.TemplatePath)
	if err != nil {
		return unavailable("cannot read %s: %v", s.TemplatePath, err)
	}
	if want := "ExecStart=/bin/sh " + filepath.Join(s.ScriptDir, "%i.sh"); !bytes.Contains(b, []byte("\n"+want+"\n")) {
		return unavailable("the template unit %s does not run the job's script (no line %q)", s.TemplatePath, want).
			WithHint("reinstall it: cmesh-run setup --systemd-template --write (or remove it to use transient units)")
	}
	return nil
}

// UnitName is the transient unit of job id.
func UnitName(id string) string { return "cmesh-run-" + id + ".service" }

// InstanceName is the template's instance for job id.
func InstanceName(id string) string { return "cmesh-run@" + id + ".service" }

// ValidUnit reports whether ref is a unit this backend makes: the only
// names Remove and Probe hand to systemctl (the record that holds them may
// be writable by others).
func ValidUnit(ref string) bool {
	id, ok := strings.CutSuffix(ref, ".service")
	if !ok {
		return false
	}
	if rest, ok := strings.CutPrefix(id, "cmesh-run-"); ok {
		return status.CheckID(rest) == nil
	}
	if rest, ok := strings.CutPrefix(id, "cmesh-run@"); ok {
		return status.CheckID(rest) == nil
	}
	return false
}

// ScriptPath is where job id's script waits for its unit.
func (s *Systemd) ScriptPath(id string) string { return filepath.Join(s.ScriptDir, id+".sh") }

// Submit implements backend.Backend: the script goes to a private file,
// then a unit runs it. systemd-run (or systemctl start) returns once
// /bin/sh has been exec'd in the unit (Type=exec), so a unit that cannot
// start is an error here, not a job that never runs.
func (s *Systemd) Submit(j backend.Job) (string, error) {
	id := j.Record.ID
	if err := status.CheckID(id); err != nil {
		return "", err
	}
	uid, gid, err := lookupUser(j.Record.User)
	if err != nil {
		return "", err
	}
	mode := s.Mode()
	if mode == Template && uid != 0 {
		return "", unavailable("the template unit %s runs jobs as root, this job would run as %s", s.TemplatePath, j.Record.User).
			WithHint("remove %s to use transient units, which run each job as its user", s.TemplatePath)
	}
	script := s.ScriptPath(id)
	props, err := Properties(j.Spec, j.Record.User, script)
	if err != nil {
		return "", err
	}
	if err := s.writeScript(script, uid, gid, j.Script()); err != nil {
		return "", err
	}
	var ref string
	if mode == Template {
		ref, err = s.startInstance(id, j.Spec)
	} else {
		ref, err = s.runTransient(id, props, script)
	}
	if err != nil {
		os.Remove(script)
		return "", err
	}
	return ref, nil
}

// runTransient starts the transient unit of job id.
func (s *Systemd) runTransient(id string, props []string, script string) (string, error) {
	unit := UnitName(id)
	args := []string{"--quiet", "--no-ask-password", "--collect", "--unit=" + unit, "--description=cmesh-run job " + id}
	for _, p := range props {
		args = append(args, "--property="+p)
	}
	args = append(args, "--", "/bin/sh", script)
	if out, err := s.command(s.SystemdRun, args...).CombinedOutput(); err != nil {
		// The unit may exist though its start failed; it must not linger.
		_ = s.Remove(unit)
		return "", s.failed("systemd-run", out, err)
	}
	return unit, nil
}

// startInstance starts the template's instance for job id, its quotas set
// on it first.
func (s *Systemd) startInstance(id string, spec status.Spec) (string, error) {
	unit := InstanceName(id)
	if q := QuotaProperties(spec); len(q) > 0 {
		args := append([]string{"--runtime", "--no-ask-password", "set-property", "--", unit}, q...)
		if out, err := s.command(s.Systemctl, args...).CombinedOutput(); err != nil {
			os.RemoveAll(filepath.Join(s.ControlDir, unit+".d"))
			return "", s.failed("systemctl set-property", out, err)
		}
	}
	if out, err := s.command(s.Systemctl, "--no-ask-password", "start", "--", unit).CombinedOutput(); err != nil {
		_ = s.Remove(unit)
		os.RemoveAll(filepath.Join(s.ControlDir, unit+".d"))
		e := s.failed("systemctl start", out, err)
		if bytes.Contains(out, []byte("not found")) {
			e.Hint = fmt.Sprintf("make systemd read %s: systemctl daemon-reload", s.TemplatePath)
		}
		return "", e
	}
	return unit, nil
}

func (s *Systemd) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = cleanEnv
	cmd.Dir = "/"
	return cmd
}

// failed turns a failed systemd-run or systemctl into the error to show.
func (s *Systemd) failed(what string, out []byte, err error) *errs.Error {
	if bytes.Contains(out, []byte("Interactive authentication required")) || bytes.Contains(out, []byte("Access denied")) {
		return s.needRoot()
	}
	if bytes.Contains(out, []byte("not been booted with systemd")) || bytes.Contains(out, []byte("Failed to connect to bus")) {
		return unavailable("%s: systemd is not running as init (PID 1): %s", what, lastLine(out)).
			WithHint("use --backend at (the default) on this machine")
	}
	return unavailable("%s failed: %s (%v)", what, lastLine(out), err).
		WithHint("see journalctl -u 'cmesh-run*' -n 20, and run cmesh-run doctor")
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// lookupUser returns the uid and gid of the user a job runs as.
func lookupUser(name string) (int, int, error) {
	if u, err := user.Lookup(name); err == nil {
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil {
			return uid, gid, nil
		}
	}
	// A uid without a passwd entry (how the record names such a user).
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, n, nil
	}
	return 0, 0, errs.Errorf(errs.Internal, "no user %q to run the job as", name)
}

// writeScript creates the script file: exclusively, never through a
// symlink, 0600 and owned by the job's user, in a directory only root may
// write (checked, not assumed).
func (s *Systemd) writeScript(path string, uid, gid int, data []byte) error {
	if err := s.scriptDir(); err != nil {
		return err
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return errs.Errorf(errs.Internal, "cannot create the job's script %s: %v", path, err).
			WithHint("check %s: a directory owned by root, mode 0711", s.ScriptDir)
	}
	f := os.NewFile(uintptr(fd), path)
	err = f.Chmod(0o600)
	if err == nil {
		err = f.Chown(uid, gid)
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return errs.Errorf(errs.Internal, "cannot write the job's script %s: %v", path, err).
			WithHint("free space in /run (df -h /run)")
	}
	return nil
}

// scriptDir makes ScriptDir and its parent if missing (root, 0755 and
// 0711) and checks both: real directories, owned by us, writable by nobody
// else.
func (s *Systemd) scriptDir() error {
	parent := filepath.Dir(s.ScriptDir)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{parent, 0o755}, {s.ScriptDir, 0o711}} {
		if err := os.Mkdir(d.path, d.mode); err == nil {
			_ = os.Chmod(d.path, d.mode) // umask
		} else if !errors.Is(err, fs.ErrExist) {
			return errs.Errorf(errs.Internal, "cannot create %s: %v", d.path, err).WithHint("run cmesh-run as root")
		}
		st, err := os.Lstat(d.path)
		if err != nil {
			return errs.Errorf(errs.Internal, "%s: %v", d.path, err)
		}
		sys, _ := st.Sys().(*syscall.Stat_t)
		if !st.IsDir() || sys == nil || int(sys.Uid) != os.Geteuid() || st.Mode().Perm()&0o022 != 0 {
			return errs.Errorf(errs.Internal, "refusing %s for job scripts: it must be a directory owned by uid %d that nobody else may write", d.path, os.Geteuid()).
				WithHint("remove it (rm -rf %s); cmesh-run recreates it", d.path)
		}
	}
	return nil
}

// Remove implements backend.Backend: stop the unit. --no-block: a wrapper
// that has started waits for the job's lock, which cancel holds while it
// calls Remove; it finds the job canceled once it gets it. A unit that is
// gone already is no error.
func (s *Systemd) Remove(ref string) error {
	if !ValidUnit(ref) {
		return fmt.Errorf("not a cmesh-run unit: %q", ref)
	}
	out, err := s.command(s.Systemctl, "--no-block", "--no-ask-password", "stop", "--", ref).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("not loaded")) {
		return fmt.Errorf("systemctl stop %s: %v: %s", ref, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// submitGrace is how long a record may lack its unit's name before a
// reader concludes its scheduler died before systemd took the job.
const submitGrace = time.Minute

// Probe implements backend.Backend: a queued job is still in the backend
// while its unit is active (or on its way up or down). `systemctl show`
// needs no privileges, so any reader of the state dir can ask.
func (s *Systemd) Probe() status.Probe {
	seen := map[string]bool{}
	return func(r *status.Record) (status.Seen, error) {
		if r.BackendRef == nil {
			return status.Held(time.Since(r.CreatedAt) < submitGrace), nil
		}
		ref := *r.BackendRef
		if !ValidUnit(ref) {
			return status.Held(false), nil
		}
		if v, ok := seen[ref]; ok {
			return status.Held(v), nil
		}
		out, err := s.command(s.Systemctl, "show", "--property=ActiveState,LoadState", "--", ref).Output()
		if err != nil {
			return status.Held(true), fmt.Errorf("systemctl show %s: %v", ref, err)
		}
		v := Pending(ParseShow(out))
		seen[ref] = v
		return status.Held(v), nil
	}
}

// Pending tells from a unit's ActiveState whether its job may still start.
func Pending(props map[string]string) bool {
	switch props["ActiveState"] {
	case "active", "activating", "deactivating", "reloading", "refreshing":
		return true
	}
	return false
}

// ParseShow parses `systemctl show` output: KEY=VALUE lines.
func ParseShow(out []byte) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimRight(l, "\r"), "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// Properties returns the transient unit's properties for a job run as
// user with spec, in systemd-run's --property syntax.
func Properties(spec status.Spec, user, script string) ([]string, error) {
	if err := CheckQuotas(spec); err != nil {
		return nil, err
	}
	p := []string{
		"Type=exec",
		"User=" + user,
		"WorkingDirectory=/",
		"StandardInput=null",
		"KillMode=control-group",
		"OOMPolicy=continue",
		"TimeoutStopSec=" + seconds(grace(spec)+Margin),
		"ExecStopPost=+/bin/rm -f -- " + script,
	}
	if d := RuntimeMax(spec); d > 0 {
		p = append(p, "RuntimeMaxSec="+seconds(d))
	}
	if spec.Nice != 0 {
		p = append(p, "Nice="+strconv.Itoa(spec.Nice))
	}
	return append(p, QuotaProperties(spec)...), nil
}

// QuotaProperties are the spec's quotas as unit properties.
func QuotaProperties(spec status.Spec) []string {
	var p []string
	if spec.MemoryMax != "" {
		p = append(p, "MemoryMax="+spec.MemoryMax)
	}
	if spec.CPUQuota != "" {
		q := spec.CPUQuota
		if !strings.HasSuffix(q, "%") {
			q += "%"
		}
		p = append(p, "CPUQuota="+q)
	}
	return p
}

// RuntimeMax is the unit's RuntimeMaxSec= for spec: the longest the
// wrapper itself can take when every attempt runs into its timeout (each
// attempt's timeout and grace, the delays between them) plus Margin; 0
// (none) without a timeout, or when the job may wait for a max_running slot
// for as long as it takes. It is a backstop for a wrapper that hangs: when
// it strikes, systemd stops the unit (SIGTERM to every process in it) and
// the wrapper, if it still can, records the job as canceled.
func RuntimeMax(spec status.Spec) time.Duration {
	// A job that may wait inside its unit (for a slot, other jobs, its
	// start time) would be stopped by a limit counted from the unit's
	// start; the wrapper's own timeout counts each attempt.
	if spec.Timeout <= 0 || spec.Slots > 0 || len(spec.After) > 0 || !spec.NotBefore.IsZero() {
		return 0
	}
	n := time.Duration(spec.Retries + 1)
	return n*(spec.Timeout+grace(spec)) + time.Duration(spec.Retries)*spec.RetryDelay + Margin
}

func grace(spec status.Spec) time.Duration {
	if spec.Grace > 0 {
		return spec.Grace
	}
	return status.DefaultGrace
}

// seconds renders d for systemd as whole seconds, rounded up.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
}

// CheckQuotas validates --memory-max and --cpu-quota in systemd's syntax,
// so that a typo is a usage error and not a unit that fails to start.
func CheckQuotas(spec status.Spec) error {
	if v := spec.MemoryMax; v != "" && !ValidMemoryMax(v) {
		return errs.Errorf(errs.Usage, "--memory-max %q: want bytes with an optional K, M, G or T suffix (512M), a percentage of the RAM (20%%), or infinity", v).
			WithHint("e.g. --memory-max 512M")
	}
	if v := spec.CPUQuota; v != "" && !ValidCPUQuota(v) {
		return errs.Errorf(errs.Usage, "--cpu-quota %q: want a percentage of one CPU greater than 0 (50%% is half a CPU, 200%% two)", v).
			WithHint("e.g. --cpu-quota 50%%")
	}
	return nil
}

// ValidMemoryMax accepts what MemoryMax= takes: 512M, 1.5G, 1073741824,
// 20%, infinity.
func ValidMemoryMax(v string) bool {
	if v == "infinity" {
		return true
	}
	if n, ok := strings.CutSuffix(v, "%"); ok {
		return decimal(n) && positive(n)
	}
	if len(v) > 0 && strings.IndexByte("KMGTPE", v[len(v)-1]) >= 0 {
		v = v[:len(v)-1]
	}
	return decimal(v)
}

// ValidCPUQuota accepts a percentage above zero, its % sign optional.
func ValidCPUQuota(v string) bool {
	n := strings.TrimSuffix(v, "%")
	return decimal(n) && positive(n)
}

// decimal matches [0-9]+(\.[0-9]+)? by hand: a regexp here would be
// compiled at every start of the binary.
func decimal(s string) bool {
	whole, frac, dot := strings.Cut(s, ".")
	digits := func(s string) bool {
		if s == "" || len(s) > 20 {
			return false
		}
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	return digits(whole) && (!dot || digits(frac))
}

func positive(s string) bool {
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && f > 0
}

// TemplateUnit is the template unit's text, as setup installs it at
// TemplatePath.
func TemplateUnit() string {
	script := filepath.Join(ScriptDir, "%i.sh")
	return `# cmesh-run's template unit: while this file exists, cmesh-run schedule --backend systemd
# starts each job as an instance of it (cmesh-run@ID.service) instead of a transient unit.
# Installed by: cmesh-run setup --systemd-template --write. Remove it to go back to
# transient units. systemd runs it as root: keep it root-owned, 0644.
[Unit]
Description=cmesh-run job %i
Documentation=man:cmesh-run(1)

[Service]
# Started once /bin/sh is exec'd; the wrapper writes the job's markers and record.
Type=exec
# cmesh-run writes the job's script there just before the start: owned by root, 0600, in a
# directory nobody else may write. Removed when the unit stops, with the instance's
# quotas (systemctl set-property --runtime drop-ins).
ExecStart=/bin/sh ` + script + `
ExecStopPost=-/bin/rm -f -- ` + script + `
ExecStopPost=-/bin/rm -rf -- ` + ControlDir + `/cmesh-run@%i.service.d
WorkingDirectory=/
StandardInput=null
# Stopping the unit stops the whole job. A job killed for exceeding MemoryMax= is
# reported by the wrapper (signal KILL), not answered by stopping the unit.
KillMode=control-group
OOMPolicy=continue
TimeoutStopSec=60
CollectMode=inactive-or-failed
`
}

func init() {
	backend.Register(backend.Entry{
		Name: "systemd", Rank: 20,
		New: func(e backend.Env) backend.Backend { return New(e.User, e.UID) },
		Auto: func(be backend.Backend, _ string) (bool, string) {
			if err := be.Check(); err != nil {
				return false, "systemd: " + err.Error()
			}
			return true, "systemd runs as init"
		},
	})
}
