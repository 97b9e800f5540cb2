package run

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/status"
)

func TestAgo(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		-time.Second: "just now", 12 * time.Second: "12s ago", 5 * time.Minute: "5m ago",
		3 * time.Hour: "3h ago", 47 * time.Hour: "47h ago", 72 * time.Hour: "3d ago",
	} {
		if got := ago(now, now.Add(-d)); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
}

// Not a terminal (a buffer), or NO_COLOR: no escape codes.
func TestNoColorOffTerminal(t *testing.T) {
	var b bytes.Buffer
	j := status.Job{ID: "a", State: status.Failed, Command: []string{"x"}, CreatedAt: time.Now()}
	if err := printTable(&b, []status.Job{j}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "\x1b[") {
		t.Errorf("escape codes in %q", b.String())
	}
	if got := paint("failed", status.Failed, true); got != "\x1b[31mfailed\x1b[0m" {
		t.Errorf("paint = %q", got)
	}
	t.Setenv("NO_COLOR", "")
	if useColor(nil) {
		t.Error("NO_COLOR set but colour on")
	}
}

// The pre-parse must name the command urfave/cli will run, whatever the
// global flags before it: a refusal under sudo depends on it.
func TestCommandOf(t *testing.T) {
	for _, c := range []struct {
		args  []string
		name  string
		files bool
	}{
		{[]string{"x", "_wrap", "--id", "a"}, "_wrap", false},
		{[]string{"x", "--state-dir", "/s", "_exec", "--", "sh"}, "_exec", false},
		{[]string{"x", "--state-dir=/s", "--log-level", "debug", "worker"}, "worker", false},
		{[]string{"x", "-config", "/c", "drain"}, "drain", false},
		{[]string{"x", "config", "check", "/home/u/secret"}, "config check", true},
		{[]string{"x", "config", "check"}, "config check", false},
		{[]string{"x", "config", "show"}, "config show", false},
		{[]string{"x", "doctor", "--fpm-conf", "/etc/x"}, "doctor", true},
		{[]string{"x", "doctor", "--fpm-conf=/etc/x"}, "doctor", true},
		{[]string{"x", "doctor", "--json"}, "doctor", false},
		{[]string{"x", "--", "_wrap"}, "", false},
		{[]string{"x"}, "", false},
	} {
		name, files := commandOf(c.args)
		if name != c.name || files != c.files {
			t.Errorf("commandOf(%q) = %q, %v; want %q, %v", c.args, name, files, c.name, c.files)
		}
	}
}

// A command argument that carries terminal escapes or a fake "key: value"
// line must reach the text output escaped (issue: status printed it raw).
func TestTextOutputEscapesControls(t *testing.T) {
	nasty := []string{"/bin/echo", "\x1b[31mred\nstate: succeeded", "\r\x07bell", "\u202eevil", "bad\xffbyte", "it's", `back\slash`, "fine\uFFFD"}
	j := status.Job{ID: "20261204T030000Z-abc", State: status.Failed, Command: nasty, Workdir: "/tmp/\x1b]0;title\x07", CreatedAt: time.Now()}
	var b bytes.Buffer
	if err := printJob(&b, j); err != nil {
		t.Fatal(err)
	}
	var tb bytes.Buffer
	if err := printTable(&tb, []status.Job{j}); err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{"status": b.String(), "list": tb.String()} {
		if strings.ContainsAny(out, "\x1b\x07\r\u202e") || strings.Contains(out, "\xff") {
			t.Errorf("%s output holds a raw control character: %q", name, out)
		}
	}
	lines := 0
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "state:") {
			lines++
		}
	}
	if lines != 1 {
		t.Errorf("want exactly one state line:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "fine\uFFFD") {
		t.Errorf("a real U+FFFD was escaped: %s", b.String())
	}
}
