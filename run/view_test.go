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
