// Package doctor checks a machine for what cmesh-run needs, and says for
// each problem the exact command that fixes it.
package doctor

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/atsched"
	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
)

// Verdicts.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// Check is one result.
type Check struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Env is what the checks look at; the command line fills it from the
// machine, tests from temp files.
type Env struct {
	At       *atsched.At
	StateDir string
	// FPMConfs are globs of PHP-FPM config files (pools and globals).
	FPMConfs []string
	// Sudoers is the sudo rule cmesh-run setup writes, checked if present.
	Sudoers string
	// Auto says which backend --backend auto picks now, and why.
	Auto func() (string, string)
	// Backend is the backend jobs (and the probe) go through: the
	// config's, auto resolved; BackendCheck its readiness. at gets its
	// own, finer checks.
	Backend      string
	BackendCheck func() error
	// BackendFindings are the backend's own checks (a cluster's
	// controller, its partition, a shared state dir), if it has any.
	BackendFindings func() []backend.Finding
	// Probe schedules a harmless job and waits for its end marker.
	Probe        func(timeout time.Duration) error
	ProbeTimeout time.Duration
	// AuditLog is the config's audit_log; SyslogListens whether a syslog
	// daemon takes lines on /dev/log.
	AuditLog      string
	SyslogListens bool
	// PatternWarnings are the config's profile arguments that accept a
	// value starting with '-', said as config check says them.
	PatternWarnings []string
}

// Run performs every check, in the order a person would fix them.
func Run(e Env) []Check {
	var out []Check
	add := func(c Check) { out = append(out, c) }
	backendOK := true
	switch {
	case e.Backend == "" || e.Backend == "at":
		backendOK = checkAt(e, add)
	case e.BackendCheck != nil:
		// Another backend takes the jobs here (the config's, or auto's
		// pick): its own check says whether it can, and at is no concern.
		if err := e.BackendCheck(); err != nil {
			add(Check{"backend " + e.Backend, Fail, err.Error(), errs.HintOf(err)})
			backendOK = false
		} else {
			add(Check{"backend " + e.Backend, OK, "can take a job from " + e.At.User + " now", ""})
			if e.BackendFindings != nil {
				for _, f := range e.BackendFindings() {
					add(Check{f.Name, f.Status, f.Message, f.Fix})
					if f.Status == Fail {
						backendOK = false
					}
				}
			}
		}
	}
	stateOK := checkStateDir(e, add)
	if backendOK && stateOK && e.Probe != nil {
		start := time.Now()
		if err := e.Probe(e.ProbeTimeout); err != nil {
			add(Check{"probe job", Fail, err.Error(), errs.HintOf(err)})
		} else {
			add(Check{"probe job", OK, fmt.Sprintf("scheduled, started and ended in %v", time.Since(start).Round(time.Millisecond)), ""})
		}
	} else {
		add(Check{"probe job", Warn, "not run: fix the failures above first", ""})
	}
	if e.Auto != nil {
		name, why := e.Auto()
		add(Check{"backend auto", OK, "picks " + name + ": " + why, ""})
	}
	checkFPM(e, add)
	checkSELinux(add)
	checkSudoers(e, add)
	checkAudit(e, add)
	for _, w := range e.PatternWarnings {
		add(Check{"profile patterns", Warn, w, "change the pattern in the config, then: cmesh-run config check"})
	}
	return out
}

// Failed reports whether any check failed.
func Failed(cs []Check) bool {
	return slices.ContainsFunc(cs, func(c Check) bool { return c.Status == Fail })
}

func checkAt(e Env, add func(Check)) bool {
	a := e.At
	ok := true
	for _, p := range []string{a.At, a.Atq, a.Atrm} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			add(Check{"at installed", Fail, p + " is missing", "apt-get install at"})
			return false
		}
	}
	add(Check{"at installed", OK, a.At, ""})
	if pid, alive := a.AtdPID(); alive {
		add(Check{"atd running", OK, fmt.Sprintf("pid %d", pid), ""})
	} else {
		msg := "no atd pid file"
		if pid > 0 {
			msg = fmt.Sprintf("pid file names %d, which is not a running atd", pid)
		}
		add(Check{"atd running", Fail, msg, "systemctl enable --now atd   (without systemd: /usr/sbin/atd)"})
		ok = false
	}
	name := "at allows " + a.User
	file := a.PermissionFile()
	switch err := a.Permitted(); {
	case err != nil:
		add(Check{name, Fail, err.Error(), errs.HintOf(err)})
		ok = false
	case a.UID == 0:
		add(Check{name, OK, "root may always use at", ""})
	case !a.PermissionKnown():
		add(Check{name, Warn, fmt.Sprintf("%s cannot read %s; the probe job below tells", a.User, file),
			"as root: cmesh-run doctor (reads it), or grep -nx " + a.User + " " + file})
	case file == a.AllowFile:
		add(Check{name, OK, "listed in " + file, ""})
	default:
		add(Check{name, OK, "not listed in " + file, ""})
	}
	return ok
}

// webRoots are folders a web server may serve files from.
var webRoots = []string{"/var/www", "/srv/www", "/usr/share/nginx", "/var/lib/nginx/html"}

func checkStateDir(e Env, add func(Check)) bool {
	dir := e.StateDir
	name := "state dir " + dir
	st, err := os.Stat(dir)
	if err != nil {
		// schedule creates it if it may.
		if unix.Access(filepath.Dir(dir), unix.W_OK|unix.X_OK) == nil {
			add(Check{name, OK, "does not exist yet; schedule will create it (mode 0750)", ""})
		} else {
			add(Check{name, Fail, "does not exist and cannot be created by " + e.At.User,
				fmt.Sprintf("install -d -m 0750 -o %s %s", e.At.User, dir)})
		}
	}
	ok := err == nil || unix.Access(filepath.Dir(dir), unix.W_OK|unix.X_OK) == nil
	if err == nil {
		switch {
		case !st.IsDir():
			add(Check{name, Fail, "is not a directory", "mv " + dir + " " + dir + ".old"})
			return false
		case unix.Access(dir, unix.W_OK|unix.X_OK) != nil:
			add(Check{name, Fail, fmt.Sprintf("not writable by %s (owner uid %d, mode %04o)", e.At.User, owner(st), st.Mode().Perm()),
				fmt.Sprintf("chown %s %s   (or pass a --state-dir %s may write)", e.At.User, dir, e.At.User)})
			ok = false
		case st.Mode().Perm()&0o002 != 0:
			add(Check{name, Fail, fmt.Sprintf("world-writable (mode %04o): anyone could plant or change jobs", st.Mode().Perm()),
				"chmod 0750 " + dir})
			ok = false
		case st.Mode().Perm()&0o004 != 0:
			add(Check{name, Warn, fmt.Sprintf("world-readable (mode %04o): every user can read every job's output", st.Mode().Perm()),
				"chmod 0750 " + dir})
		default:
			add(Check{name, OK, fmt.Sprintf("writable, owner uid %d, mode %04o", owner(st), st.Mode().Perm()), ""})
		}
	}
	abs, _ := filepath.Abs(dir)
	for _, root := range webRoots {
		if abs == root || strings.HasPrefix(abs, root+"/") {
			add(Check{"state dir outside the web root", Warn,
				abs + " lies under " + root + ", which a web server may serve: job output could be downloaded",
				"use /var/lib/cmesh-run (state_dir in /etc/cmesh-run/config.toml)"})
			return ok
		}
	}
	add(Check{"state dir outside the web root", OK, abs, ""})
	return ok
}

func owner(st os.FileInfo) uint32 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Uid
	}
	return 0
}

// pool is one [section] of a PHP-FPM config.
type pool struct {
	name, file string
	values     map[string]string
}

// parseFPM reads the pools of a PHP-FPM ini file. It keeps the last value
// of each key, as php-fpm does.
func parseFPM(file string) ([]pool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pools []pool
	var cur *pool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			name := strings.TrimSpace(line[1 : len(line)-1])
			if name == "global" {
				cur = nil
				continue
			}
			pools = append(pools, pool{name: name, file: file, values: map[string]string{}})
			cur = &pools[len(pools)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || cur == nil {
			continue
		}
		v = strings.TrimSpace(v)
		if i := strings.Index(v, " ;"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		cur.values[strings.TrimSpace(k)] = strings.Trim(v, `"'`)
	}
	return pools, sc.Err()
}

// execFuncs are the ways PHP can start cmesh-run.
var execFuncs = []string{"exec", "shell_exec", "system", "passthru", "proc_open", "popen"}

func checkFPM(e Env, add func(Check)) {
	var files []string
	for _, g := range e.FPMConfs {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	var pools []pool
	for _, f := range files {
		p, err := parseFPM(f)
		if err != nil {
			add(Check{"php-fpm config " + f, Warn, err.Error(), ""})
			continue
		}
		pools = append(pools, p...)
	}
	if len(pools) == 0 {
		add(Check{"php-fpm pools", Warn, "none found in " + strings.Join(e.FPMConfs, " "),
			"nothing to do unless PHP runs cmesh-run; then check where its pools are configured"})
		return
	}
	for _, p := range pools {
		name := fmt.Sprintf("php-fpm pool %s (%s)", p.name, p.file)
		u := p.values["user"]
		var notes []string
		notes = append(notes, "user "+orUnknown(u))
		ce := strings.ToLower(p.values["clear_env"])
		if ce == "" || ce == "yes" || ce == "on" || ce == "true" || ce == "1" {
			notes = append(notes, "clear_env yes: no PATH, call cmesh-run by its absolute path")
		} else {
			notes = append(notes, "clear_env no: the pool's environment reaches PHP, not the jobs")
		}
		disabled := map[string]bool{}
		for _, k := range []string{"php_admin_value[disable_functions]", "php_value[disable_functions]"} {
			for _, f := range strings.Split(p.values[k], ",") {
				disabled[strings.ToLower(strings.TrimSpace(f))] = true
			}
		}
		var off, on []string
		for _, f := range execFuncs {
			if disabled[f] {
				off = append(off, f)
			} else {
				on = append(on, f)
			}
		}
		switch {
		case !disabled["exec"] && !disabled["proc_open"]:
			add(Check{name, OK, strings.Join(notes, "; "), ""})
		case len(on) == 0:
			add(Check{name, Fail, strings.Join(notes, "; ") + "; disable_functions hides every way to run a program (" + strings.Join(off, ",") + ")",
				fmt.Sprintf("remove exec and proc_open from disable_functions in %s, then reload php-fpm", p.file)})
		default:
			add(Check{name, Warn, strings.Join(notes, "; ") + "; disable_functions hides " + strings.Join(off, ",") + "; still allowed: " + strings.Join(on, ","),
				"use one of the allowed functions (the PHP client needs proc_open), or remove them from disable_functions in " + p.file})
		}
		if u != "" && u != e.At.User {
			pa := *e.At
			pa.User, pa.UID = u, -1
			if err := pa.Permitted(); err != nil {
				add(Check{"at allows pool user " + u, Fail, err.Error(), errs.HintOf(err)})
			}
		}
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(not set)"
	}
	return s
}

func checkSELinux(add func(Check)) {
	path, err := exec.LookPath("getenforce")
	if err != nil {
		if _, err := os.Stat("/sys/fs/selinux/enforce"); err != nil {
			add(Check{"SELinux", OK, "not enabled", ""})
			return
		}
	}
	mode := "Enforcing"
	if path != "" {
		out, err := exec.Command(path).Output()
		if err == nil {
			mode = strings.TrimSpace(string(out))
		}
	}
	if mode == "Enforcing" {
		add(Check{"SELinux", Warn, "Enforcing: it may stop the web server from running programs",
			"setsebool -P httpd_execmem 1 and check: ausearch -m avc -ts recent"})
		return
	}
	add(Check{"SELinux", OK, mode, ""})
}

func checkSudoers(e Env, add func(Check)) {
	if e.Sudoers == "" {
		return
	}
	st, err := os.Stat(e.Sudoers)
	if err != nil {
		add(Check{"sudo rule", OK, "none configured (" + e.Sudoers + " absent)", ""})
		return
	}
	if st.Mode().Perm() != 0o440 || owner(st) != 0 {
		add(Check{"sudo rule " + e.Sudoers, Fail, fmt.Sprintf("owner uid %d mode %04o; sudo ignores it unless root-owned 0440", owner(st), st.Mode().Perm()),
			"chown root:root " + e.Sudoers + " && chmod 0440 " + e.Sudoers})
		return
	}
	if visudo, err := exec.LookPath("visudo"); err == nil {
		if out, err := exec.Command(visudo, "-cf", e.Sudoers).CombinedOutput(); err != nil {
			add(Check{"sudo rule " + e.Sudoers, Fail, strings.TrimSpace(string(out)), "visudo -f " + e.Sudoers})
			return
		}
	}
	add(Check{"sudo rule " + e.Sudoers, OK, "root-owned 0440, parses", ""})
}

// checkAudit: the audit trail must go somewhere an admin looks. Without a
// syslog daemon and an audit_log, lines land in the state dir's private
// folder only.
func checkAudit(e Env, add func(Check)) {
	switch {
	case e.AuditLog != "":
		add(Check{"audit trail", OK, "audit_log " + e.AuditLog, ""})
	case e.SyslogListens:
		add(Check{"audit trail", OK, "syslog (authpriv) on /dev/log", ""})
	default:
		add(Check{"audit trail", Warn, "no syslog daemon listens on /dev/log and no audit_log is set: audit lines go only to " + filepath.Join(e.StateDir, "private", "audit.log"),
			`set audit_log = "/var/log/cmesh-run/audit.log" in the config, or run a syslog daemon (apt-get install rsyslog)`})
	}
}
