package atsched

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/errs"
)

func TestParseJobNumber(t *testing.T) {
	for in, want := range map[string]string{
		"warning: commands will be executed using /bin/sh\njob 12 at Fri Nov 27 20:40:00 2026\n": "12",
		"job 7 at Fri Nov 27 20:40:00 2026": "7",
		"Can't open /var/run/atd.pid to signal atd. No atd running?\njob 3 at Fri Nov 27 2026\n": "3",
	} {
		if got, ok := ParseJobNumber([]byte(in)); !ok || got != want {
			t.Errorf("ParseJobNumber(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "You do not have permission to use at.", "garbage job x at"} {
		if got, ok := ParseJobNumber([]byte(in)); ok {
			t.Errorf("ParseJobNumber(%q) = %q, want none", in, got)
		}
	}
}

func TestParseQueue(t *testing.T) {
	q := ParseQueue([]byte("12\tFri Nov 27 20:40:00 2026 a root\n13\tFri Nov 27 20:40:00 2026 = www-data\n"))
	if !q["12"] || !q["13"] || len(q) != 2 {
		t.Errorf("ParseQueue = %v", q)
	}
}

func TestPermitted(t *testing.T) {
	dir := t.TempDir()
	allow, deny := filepath.Join(dir, "at.allow"), filepath.Join(dir, "at.deny")
	a := &At{AllowFile: allow, DenyFile: deny, User: "www-data", UID: 33}

	if err := a.Permitted(); err != nil {
		t.Errorf("no files: %v, want allowed", err)
	}
	os.WriteFile(deny, []byte("alias\nbackup\nwww-data\nnobody\n"), 0o644)
	err := a.Permitted()
	if errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), deny) || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("denied: %v, want backend unavailable naming %s line 3", err, deny)
	}
	if h := errs.HintOf(err); !strings.Contains(h, `sed -i '/^www-data$/d' `+deny) {
		t.Errorf("hint %q does not give the sed command", h)
	}
	// Unreadable files (Debian: root:daemon 0640): no verdict, at decides.
	os.Chmod(deny, 0)
	if os.Getuid() != 0 {
		if err := a.Permitted(); err != nil {
			t.Errorf("unreadable at.deny: %v, want no verdict", err)
		}
	}
	if d := a.Denied(0); !strings.Contains(d.Error(), deny+" lists it, or at cannot read it") || !strings.Contains(d.Hint, "root:daemon 0640") {
		t.Errorf("Denied(0) = %v", d)
	}
	os.Chmod(deny, 0o644)
	root := &At{AllowFile: allow, DenyFile: deny, User: "root", UID: 0}
	if err := root.Permitted(); err != nil {
		t.Errorf("root: %v, want allowed", err)
	}
	os.WriteFile(allow, []byte("cmesh\n"), 0o644)
	if err := a.Permitted(); err == nil || !strings.Contains(err.Error(), allow) {
		t.Errorf("at.allow without the user: %v", err)
	}
	os.WriteFile(allow, []byte("cmesh\nwww-data\n"), 0o644)
	if err := a.Permitted(); err != nil {
		t.Errorf("at.allow lists the user (at.deny ignored then): %v", err)
	}
}

func TestCheckNames(t *testing.T) {
	a := New("nobody", 65534)
	a.At = "/nonexistent/at"
	if err := a.Check(); errs.KindOf(err) != errs.Unavailable || !strings.Contains(errs.HintOf(err), "apt-get install at") {
		t.Errorf("missing at: %v (hint %q)", err, errs.HintOf(err))
	}
	a = New("nobody", 65534)
	a.At = "/bin/sh"
	a.PidFiles = []string{filepath.Join(t.TempDir(), "atd.pid")}
	if err := a.Check(); errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "atd is not running") {
		t.Errorf("atd down: %v", err)
	}
	os.WriteFile(a.PidFiles[0], []byte("1\n"), 0o644) // PID 1 is not atd
	if err := a.Check(); errs.KindOf(err) != errs.Unavailable || !strings.Contains(err.Error(), "stale") {
		t.Errorf("stale pid file: %v", err)
	}
}

// at counts minutes: a start time within the current minute is now, a
// later one is its minute, never a later minute (the wrapper waits the
// seconds left).
func TestWhen(t *testing.T) {
	now := time.Date(2026, 12, 4, 3, 0, 20, 0, time.UTC)
	for _, c := range []struct {
		nb   time.Time
		want []string
	}{
		{time.Time{}, []string{"now"}},
		{now.Add(3 * time.Second), []string{"now"}},
		{now.Add(-time.Hour), []string{"now"}},
		{now.Add(50 * time.Second), []string{"-t", "202612040301.00"}},
		{now.Add(2 * time.Hour), []string{"-t", "202612040500.00"}},
	} {
		if got := When(c.nb, now); !slices.Equal(got, c.want) {
			t.Errorf("When(%v) = %q, want %q", c.nb, got, c.want)
		}
	}
}
