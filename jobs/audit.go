package jobs

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/cmesh/cmesh-run/config"

	"github.com/cmesh/cmesh-run/status"
)

// Every schedule, refusal and cancel leaves one audit line: JSON with who
// asked, as whom, what, and the outcome. It goes to the config's
// audit_log file, else to syslog (authpriv), else to STATE_DIR/private/
// audit.log, and only when none of them takes it to the debug log. A line
// is at most maxAuditLine bytes: syslog daemons drop longer ones (so a
// long argument could hide a schedule), and a caller must not be able to
// fill the log with one call.

const maxAuditLine = 4096

// auditFallback is the state dir's own audit file, in its private folder.
const auditFallback = "audit.log"

// Audit writes the audit lines of one run of cmesh-run. Configure tells it
// the config and state dir once they are known; a refusal that comes
// before (under sudo, before any flag is read) finds them itself.
type Audit struct {
	Log      *logrus.Logger // diagnostics: each line is also logged at info
	cfg      *config.Config
	stateDir string
	logger   *logrus.Logger
	// Done is set once a refusal of this run is in the audit.
	Done bool
}

// NewAudit returns the audit of a run whose diagnostics go to log.
func NewAudit(log *logrus.Logger) *Audit { return &Audit{Log: log} }

// Configure says where the audit goes: the config's audit_log, and the
// state dir for the fallback.
func (a *Audit) Configure(cfg *config.Config, stateDir string) {
	a.cfg, a.stateDir = cfg, stateDir
}

// Configured tells whether Configure was called.
func (a *Audit) Configured() bool { return a.cfg != nil }

func (a *Audit) auditor() *logrus.Logger {
	if a.logger != nil {
		return a.logger
	}
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetLevel(logrus.InfoLevel)
	l.SetOutput(&auditWriter{a: a})
	a.logger = l
	return l
}

// auditWriter hands each line to the first destination that takes it.
type auditWriter struct {
	a      *Audit
	file   *os.File
	syslog *syslogWriter
	tried  bool
}

func (w *auditWriter) Write(p []byte) (int, error) {
	a := w.a
	if !w.tried {
		w.tried = true
		if a.cfg != nil && a.cfg.AuditLog != "" {
			f, err := os.OpenFile(a.cfg.AuditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o640)
			if err != nil {
				a.Log.Warnf("audit log %s: %v; auditing to syslog", a.cfg.AuditLog, err)
			} else {
				w.file = f
			}
		}
		if w.file == nil {
			w.syslog, _ = dialSyslog(syslogSockets, logAuthprivInfo, "cmesh-run")
		}
	}
	if w.file != nil {
		if _, err := w.file.Write(p); err == nil {
			return len(p), nil
		}
	}
	if w.syslog != nil {
		if _, err := w.syslog.Write(p); err == nil {
			return len(p), nil
		}
	}
	if err := a.toStateDir(p); err == nil {
		return len(p), nil
	}
	a.Log.Debug("audit: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// toStateDir appends line to STATE_DIR/private/audit.log, which only the
// state dir's owner may read. It never creates a state dir.
func (a *Audit) toStateDir(line []byte) error {
	if a.stateDir == "" {
		return errors.New("no state dir")
	}
	dir, err := filepath.Abs(a.stateDir)
	if err != nil {
		return err
	}
	st := &status.Store{Dir: dir}
	if _, err := os.Stat(st.Dir); err != nil {
		return err
	}
	f, err := st.OpenPrivate(auditFallback, os.O_WRONLY|os.O_APPEND)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(line)
	return err
}

// Job records what happened to job r; canceledBy names who canceled it.
func (a *Audit) Job(r *status.Record, outcome string, err error) {
	f := logrus.Fields{
		"id": r.ID, "requested_by": r.RequestedBy, "user": r.User,
		"command": r.Command, "backend": r.Backend, "outcome": outcome,
	}
	if r.Profile != "" {
		f["profile"] = r.Profile
	}
	if outcome == "canceled" {
		f["canceled_by"] = RequestedBy(CurrentCaller())
	}
	if err != nil {
		f["error"] = err.Error()
	}
	if outcome == "refused" {
		a.Done = true
	}
	a.Line(f, "job "+outcome, "cmesh-run "+outcome)
}

// Line writes one bounded line to the audit, and the same to the
// diagnostics (seen at --log-level info) as logMsg.
func (a *Audit) Line(f logrus.Fields, logMsg, msg string) {
	f = boundFields(f, maxAuditLine-160) // level, msg and time around them
	// The audit first: the diagnostics go to a stderr the caller holds.
	a.auditor().WithFields(f).Info(msg)
	a.Log.WithFields(f).Info(logMsg)
}

// Refused records a refusal of what the command line (args) asked; command
// is the command refused, "" when unknown.
func (a *Audit) Refused(command string, args []string, err error) {
	c := CurrentCaller()
	f := logrus.Fields{"requested_by": RequestedBy(c), "user": c.Name, "outcome": "refused", "error": err.Error(), "args": redact(args)}
	if command != "" {
		f["command_name"] = command
	}
	a.Done = true
	a.Line(f, "refused", "cmesh-run refused")
}

// redact hides the values of --env, which may be secrets.
func redact(args []string) []string {
	out := make([]string, len(args))
	hide := false
	for i, s := range args {
		switch {
		case hide:
			k, _, _ := strings.Cut(s, "=")
			s = k + "=(hidden)"
			hide = false
		case s == "--env" || s == "-env":
			hide = true
		case strings.HasPrefix(s, "--env="):
			k, _, _ := strings.Cut(strings.TrimPrefix(s, "--env="), "=")
			s = "--env=" + k + "=(hidden)"
		}
		out[i] = s
	}
	return out
}

// boundFields cuts the values of f until the fields encode to at most
// budget bytes of JSON: strings to a few hundred bytes and lists to a few
// of their first elements, each saying how much was left out. Budgets
// halve until the line fits: escaping can make a short string long.
func boundFields(f logrus.Fields, budget int) logrus.Fields {
	for str, list := 512, 2048; ; str, list = str/2, list/2 {
		out := make(logrus.Fields, len(f))
		for k, v := range f {
			switch v := v.(type) {
			case string:
				out[k] = clip(v, str)
			case []string:
				out[k] = clipList(v, str, list)
			default:
				out[k] = v
			}
		}
		if b, err := json.Marshal(out); err != nil || len(b) <= budget || str < 8 {
			return out
		}
	}
}

// clip cuts s to n bytes, saying how long it was.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "...(" + strconv.Itoa(len(s)) + " bytes)"
}

// clipList keeps the first elements of l within total bytes, each cut to
// n, and says how many elements and bytes it left out.
func clipList(l []string, n, total int) []string {
	out := make([]string, 0, min(len(l), 16))
	used := 0
	for i, s := range l {
		s = clip(s, n)
		if used+len(s) > total && i > 0 {
			rest := 0
			for _, r := range l[i:] {
				rest += len(r)
			}
			return append(out, "...("+strconv.Itoa(len(l)-i)+" more arguments, "+strconv.Itoa(rest)+" bytes)")
		}
		used += len(s)
		out = append(out, s)
	}
	return out
}

// SyslogListens tells whether a syslog daemon takes lines on one of the
// sockets (doctor's check).
func SyslogListens() bool {
	fd, err := dialSyslogFd(syslogSockets)
	if err != nil {
		return false
	}
	syscall.Close(fd)
	return true
}
