// Package atsched is the only code that talks to at, atq and atrm: it
// hands a job's script to `at now`, so that atd starts the job outside
// the caller's process tree, session and cgroup.
package atsched

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// At is the at backend. Paths are absolute because PHP-FPM hands its
// children no PATH; the zero value is not usable, call New.
type At struct {
	At, Atq, Atrm string
	PidFiles      []string // where atd leaves its pid
	AllowFile     string
	DenyFile      string
	User          string // the calling user, as at will see it
	UID           int
}

// New returns the at backend for the calling user.
func New(user string, uid int) *At {
	return &At{
		At: "/usr/bin/at", Atq: "/usr/bin/atq", Atrm: "/usr/bin/atrm",
		PidFiles:  []string{"/run/atd.pid", "/var/run/atd.pid"},
		AllowFile: "/etc/at.allow", DenyFile: "/etc/at.deny",
		User: user, UID: uid,
	}
}

// Name implements backend.Backend.
func (a *At) Name() string { return "at" }

// Quotas implements backend.Backend: at has no cgroups to offer.
func (a *At) Quotas() bool { return false }

// cleanEnv is all at sees of our environment. at copies its caller's
// environment into the spool file; nothing of the caller's may land there.
var cleanEnv = []string{"PATH=" + proc.CleanPath}

func unavailable(format string, args ...any) *errs.Error {
	return errs.Errorf(errs.Unavailable, format, args...)
}

// Check implements backend.Backend: at installed, atd running, and the
// user allowed by at.allow / at.deny, each with the fix when not.
func (a *At) Check() error {
	if st, err := os.Stat(a.At); err != nil || st.Mode()&0o111 == 0 {
		return unavailable("at is not installed (%s missing)", a.At).
			WithHint("install it: apt-get install at, then start atd")
	}
	if pid, ok := a.AtdPID(); !ok {
		e := unavailable("atd is not running")
		if pid > 0 {
			e.Msg = fmt.Sprintf("atd is not running (stale pid %d in its pid file)", pid)
		}
		return e.WithHint("start it: systemctl enable --now atd (without systemd: /usr/sbin/atd)")
	}
	return a.Permitted()
}

// AtdPID returns atd's pid from its pid file and whether that process is
// alive and is atd.
func (a *At) AtdPID() (int, bool) {
	for _, f := range a.PidFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "atd" {
			return pid, false
		}
		if _, alive := proc.ProcStart(pid); !alive {
			return pid, false
		}
		return pid, true
	}
	return 0, false
}

// Permitted applies at's own rule (at's perm.c): root may always use at;
// when at.allow exists only the users it lists may; otherwise everyone
// but the users at.deny lists. The error names the file and the line to
// change. Debian keeps both files root:daemon 0640, so other users cannot
// read them: then Permitted says nothing and at's own refusal, explained
// by Denied, is the answer.
func (a *At) Permitted() error {
	if a.UID == 0 {
		return nil
	}
	if _, err := os.Stat(a.AllowFile); err == nil {
		line, err := findUser(a.AllowFile, a.User)
		if err != nil || line > 0 {
			return nil
		}
		return a.Denied(0)
	}
	if line, err := findUser(a.DenyFile, a.User); err == nil && line > 0 {
		return a.Denied(line)
	}
	return nil
}

// PermissionFile is the file that decides who may use at: at.allow when
// it exists, else at.deny.
func (a *At) PermissionFile() string {
	if _, err := os.Stat(a.AllowFile); err == nil {
		return a.AllowFile
	}
	return a.DenyFile
}

// PermissionKnown reports whether Permitted could read what decides: root
// may always use at, and a user who cannot read at.allow or at.deny
// (Debian keeps them root:daemon 0640) learns the answer only from at.
func (a *At) PermissionKnown() bool {
	if a.UID == 0 {
		return true
	}
	f, err := os.Open(a.PermissionFile())
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	f.Close()
	return true
}

// Denied is the error for a user whom at refuses; line is at.deny's line
// that lists the user, when known.
func (a *At) Denied(line int) *errs.Error {
	if _, err := os.Stat(a.AllowFile); err == nil {
		return unavailable("user %s may not use at: %s exists and does not list it", a.User, a.AllowFile).
			WithHint("add a line %q to %s (as root: echo %s >> %s)", a.User, a.AllowFile, a.User, a.AllowFile)
	}
	if line > 0 {
		return unavailable("user %s may not use at: line %d of %s lists it", a.User, line, a.DenyFile).
			WithHint("delete the line %q from %s (as root: sed -i '/^%s$/d' %s), or list %s in %s",
				a.User, a.DenyFile, regexp.QuoteMeta(a.User), a.DenyFile, a.User, a.AllowFile)
	}
	// We could not read the file (Debian keeps it root:daemon 0640); at
	// refuses when it lists the user, and also when at itself cannot read
	// it because its owner or mode changed.
	return unavailable("user %s may not use at: %s lists it, or at cannot read it", a.User, a.DenyFile).
		WithHint("delete the line %q from %s (as root: sed -i '/^%s$/d' %s); it must stay root:daemon 0640 (chown root:daemon %s; chmod 0640 %s)",
			a.User, a.DenyFile, regexp.QuoteMeta(a.User), a.DenyFile, a.DenyFile, a.DenyFile)
}

// findUser returns the 1-based line of file that is exactly user.
func findUser(file, user string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == user {
			return n, nil
		}
	}
	return 0, nil
}

// Compiled on first use: only schedule and doctor read at's output.
var jobLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?m)^job (\d+) at `) })

// ParseJobNumber finds at's job number in what at printed on stderr
// ("warning: commands will be executed using /bin/sh\njob 12 at ...").
func ParseJobNumber(stderr []byte) (string, bool) {
	m := jobLine().FindSubmatch(stderr)
	if m == nil {
		return "", false
	}
	return string(m[1]), true
}

// Submit implements backend.Backend: the script goes to `at -M now` on
// stdin, with a clean environment and / as the directory at records; the
// wrapper moves to the job's workdir itself. -M: the wrapper sends
// everything to the output file, nothing is left to mail.
func (a *At) Submit(j backend.Job) (string, error) {
	// TZ=UTC: at reads -t's time in its own zone, When writes it in UTC.
	out, err := proc.RunInput(a.At, append([]string{a.At, "-M"}, When(j.Spec.NotBefore, time.Now())...), append(cleanEnv, "TZ=UTC"), j.Script())
	ref, ok := ParseJobNumber(out)
	msg := strings.TrimSpace(lastLine(out))
	if err != nil || !ok {
		if ok {
			_ = a.Remove(ref)
		}
		if strings.Contains(string(out), "permission to use at") {
			return "", a.Denied(0)
		}
		return "", unavailable("at failed: %s (%v)", msg, err).WithHint("run cmesh-run doctor")
	}
	// at queues the job even when it cannot signal atd; it would then
	// wait until atd next starts. Take it back and say so.
	if bytes.Contains(out, []byte("No atd running")) {
		_ = a.Remove(ref)
		return "", unavailable("atd is not running").
			WithHint("start it: systemctl enable --now atd (without systemd: /usr/sbin/atd)")
	}
	return ref, nil
}

// When is at's time for a job that may start at notBefore: now, or the
// minute notBefore falls in (at counts whole minutes, and starts a job in
// the first seconds of its minute). The wrapper waits for the rest, so the
// job starts neither early nor more than the wrapper's start-up late, and
// at's queue still holds it across a reboot.
func When(notBefore, now time.Time) []string {
	minute := notBefore.Truncate(time.Minute)
	if notBefore.IsZero() || !minute.After(now) {
		return []string{"now"}
	}
	return []string{"-t", minute.UTC().Format("200601021504.05")}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// Remove implements backend.Backend with atrm.
func (a *At) Remove(ref string) error {
	cmd := exec.Command(a.Atrm, ref)
	cmd.Env = cleanEnv
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("atrm %s: %v: %s", ref, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Queue returns the job numbers atq lists for the calling user (root sees
// every user's), waiting and running alike.
func (a *At) Queue() (map[string]bool, error) {
	cmd := exec.Command(a.Atq)
	cmd.Env = cleanEnv
	cmd.Dir = "/"
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	return ParseQueue(out), nil
}

// ParseQueue parses atq's lines ("12\tFri Nov 27 20:40:00 2026 a user").
func ParseQueue(out []byte) map[string]bool {
	q := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			if _, err := strconv.Atoi(f[0]); err == nil {
				q[f[0]] = true
			}
		}
	}
	return q
}

// submitGrace is how long a record may lack at's job number before a
// reader concludes its scheduler died before at took the job.
const submitGrace = time.Minute

// Probe implements backend.Backend. atq runs at most once per Probe, so a
// list of many queued jobs costs one atq.
func (a *At) Probe() status.Probe {
	queue := sync.OnceValues(a.Queue)
	return func(r *status.Record) (status.Seen, error) {
		if a.UID != 0 && r.User != a.User {
			// atq shows other users' jobs to root only.
			return status.Held(true), nil
		}
		if r.BackendRef == nil {
			return status.Held(time.Since(r.CreatedAt) < submitGrace), nil
		}
		q, err := queue()
		if err != nil {
			return status.Held(true), err
		}
		return status.Held(q[*r.BackendRef]), nil
	}
}

func init() {
	backend.Register(backend.Entry{
		Name: "at", Rank: 10,
		New: func(e backend.Env) backend.Backend { return New(e.User, e.UID) },
		Auto: func(be backend.Backend, user string) (bool, string) {
			at := be.(*At)
			if err := at.Check(); err != nil {
				return false, "at: " + err.Error()
			}
			if !at.PermissionKnown() {
				return true, "at is installed and atd runs; " + user + " cannot read at.allow or at.deny, so only at itself can say whether it may use it (the probe job tells)"
			}
			return true, "at is installed, atd runs and lets " + user + " use it"
		},
	})
}
