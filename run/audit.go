package run

import (
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/status"
)

// Every schedule, refusal and cancel leaves one audit line: JSON with who
// asked, as whom, what, and the outcome. It goes to the config's
// audit_log file, else to syslog (authpriv), else only to the debug log.

func (a *app) auditor() *logrus.Logger {
	if a.auditLog != nil {
		return a.auditLog
	}
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetLevel(logrus.InfoLevel)
	switch {
	case a.cfg != nil && a.cfg.AuditLog != "":
		f, err := os.OpenFile(a.cfg.AuditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
		if err != nil {
			a.log.Warnf("audit log %s: %v; auditing to syslog", a.cfg.AuditLog, err)
			l.SetOutput(syslogOr(a))
		} else {
			l.SetOutput(f)
		}
	default:
		l.SetOutput(syslogOr(a))
	}
	a.auditLog = l
	return l
}

type debugWriter struct{ log *logrus.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug("audit: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

func syslogOr(a *app) interface{ Write([]byte) (int, error) } {
	if w, err := dialSyslog(syslogSockets, logAuthprivInfo, "cmesh-run"); err == nil {
		return w
	}
	return debugWriter{a.log}
}

func (a *app) who() (asker, user string) {
	c := currentCaller()
	return requestedBy(c), c.name
}

// audit records what happened to job r.
func (a *app) audit(r *status.Record, outcome string, err error) {
	f := logrus.Fields{
		"id": r.ID, "requested_by": r.RequestedBy, "user": r.User,
		"command": r.Command, "backend": r.Backend, "outcome": outcome,
	}
	if r.Profile != "" {
		f["profile"] = r.Profile
	}
	if err != nil {
		f["error"] = clip(err.Error(), 512)
	}
	a.log.WithFields(f).Info("job " + outcome)
	a.auditor().WithFields(f).Info("cmesh-run " + outcome)
}

// refuse records a refusal of what the command line asked, and returns
// err unchanged.
func (a *app) refuse(c *cli.Context, err error) error {
	asker, user := a.who()
	f := logrus.Fields{"requested_by": asker, "user": user, "outcome": "refused", "error": clip(err.Error(), 512), "args": redact(os.Args[1:])}
	if c != nil && c.Command != nil {
		f["command_name"] = c.Command.Name
	}
	a.log.WithFields(f).Info("refused")
	a.auditor().WithFields(f).Info("cmesh-run refused")
	return err
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
		out[i] = clip(s, 256)
	}
	return out
}

// clip bounds what a caller can make one audit line hold.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "...(" + strconv.Itoa(len(s)) + " bytes)"
}
