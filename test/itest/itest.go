//go:build integration

// Package itest holds the harness the integration suites under test/ share, each piece once:
// what a suite needs of the machine and the loud skip when it lacks it (prereq.go), the guard
// of /etc/at.deny (atdeny.go), processes and the servers a test starts and stops by PID
// (proc.go), PHP-FPM pools and FastCGI requests (fpm.go), the page that drives the PHP client
// (page.go), users and commands (user.go), small Go tools built for a test, the locker among
// them (tools.go), and files (files.go). Like the suites, it is built only with the
// integration tag.
package itest

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	// WebUser is the user PHP-FPM's pools run as, on Debian.
	WebUser = "www-data"

	// StdPath is the PATH of a root shell on Debian: what the suites give the programs they
	// start, so that nothing of the test's own environment steers them.
	StdPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// IDPattern is SPEC.md's pattern of a job ID.
var IDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ---------------------------------------------------------------------------------------------
// Tests

// Must fails t when err is not nil, reported at the caller's line, so that a step whose failure
// leaves nothing to test takes one line.
func Must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Poll calls check every 50 ms until it returns true, failing t after timeout with the last
// reason check gave, so that a timeout says what was still wrong and not only that time ran
// out.
func Poll(t *testing.T, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	PollEvery(t, 50*time.Millisecond, timeout, what, check)
}

// PollEvery is Poll with check called every interval.
func PollEvery(t *testing.T, interval, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(interval)
	}
}

// Eventually calls check every 50 ms until it returns true or timeout passes, and says which:
// for a caller that decides itself what a timeout means.
func Eventually(timeout time.Duration, check func() bool) bool {
	return EventuallyEvery(50*time.Millisecond, timeout, check)
}

// EventuallyEvery is Eventually with check called every interval.
func EventuallyEvery(interval, timeout time.Duration, check func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if check() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// Job is SPEC.md's job object, as status, list and schedule print it with --json, with the
// record's retries and timeout. A field a suite does not read costs it nothing; a time that is
// not RFC 3339 fails the decoding. Written from SPEC.md, not taken from status.Job: a renamed
// JSON field in the code must fail these suites, not follow along.
type Job struct {
	ID          string     `json:"id"`
	Name        *string    `json:"name"`
	State       string     `json:"state"`
	ExitCode    *int       `json:"exit_code"`
	Signal      string     `json:"signal"`
	Command     []string   `json:"command"`
	Workdir     string     `json:"workdir"`
	Backend     string     `json:"backend"`
	BackendRef  *string    `json:"backend_ref"`
	User        string     `json:"user"`
	RequestedBy string     `json:"requested_by"`
	PID         *int       `json:"pid"`
	Attempt     int        `json:"attempt"`
	Retries     int        `json:"retries"`
	Timeout     string     `json:"timeout"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	OutputPath  string     `json:"output_path"`
	Reused      bool       `json:"reused"`
}

// String is the job as JSON: what a failure message shows of it.
func (j Job) String() string {
	b, _ := json.Marshal(j)
	return string(b)
}

// LogChunk is one answer of `log --json` (and of the PHP client's log()).
type LogChunk struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Offset     int64  `json:"offset"`
	NextOffset int64  `json:"next_offset"`
	Data       string `json:"data"`
	Done       bool   `json:"done"`
}

// Finished reports whether nothing more will happen to a job in state (SPEC.md's final
// states). The suites test cmesh-run from outside, so they spell the states out rather than
// import its status package.
func Finished(state string) bool {
	switch state {
	case "succeeded", "failed", "canceled", "timed_out", "lost":
		return true
	}
	return false
}

// Settle cancels every unfinished job that `list` shows and waits, 20 s at most each, until it
// has finished: a wrapper still running would write into the state dir its test is about to
// remove. cli runs cmesh-run with args for that state dir, and returns its stdout and whether
// it exited 0.
func Settle(t *testing.T, cli func(args ...string) ([]byte, bool)) {
	out, ok := cli("list", "--json", "--limit", "0")
	if !ok {
		return
	}
	var jobs []Job
	json.Unmarshal(out, &jobs)
	for _, j := range jobs {
		if Finished(j.State) {
			continue
		}
		t.Logf("cleanup: canceling job %s (%s)", j.ID, j.State)
		cli("cancel", "--grace", "1s", j.ID)
		EventuallyEvery(20*time.Millisecond, 20*time.Second, func() bool {
			out, _ := cli("status", "--json", j.ID)
			var now Job
			return json.Unmarshal(out, &now) != nil || Finished(now.State)
		})
	}
}

// OneErrorLine fails t unless stderr is what cmesh-run prints when it refuses or fails: one
// "cmesh-run: error:" line, perhaps a hint (its continuation lines indented), and nothing
// else: no diagnostics of its own. what says which call printed it.
func OneErrorLine(t *testing.T, what, stderr string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "cmesh-run: error: "):
			n++
		case strings.HasPrefix(line, "hint: "), strings.HasPrefix(line, " "):
		default:
			t.Errorf("%s: stderr line %q is neither the error nor its hint", what, line)
		}
	}
	if n != 1 {
		t.Errorf("%s: %d \"cmesh-run: error:\" lines on stderr, want 1: %q", what, n, stderr)
	}
}

// Median is the middle one of vs (the mean of the two in the middle, for an even count), 0
// when there are none: what the suites' latency tables print.
func Median[T ~int64 | ~float64](vs []T) T {
	s := slices.Clone(vs)
	slices.Sort(s)
	switch {
	case len(s) == 0:
		return 0
	case len(s)%2 == 1:
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
