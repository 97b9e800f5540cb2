//go:build integration

package browser

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// The demo's build (php/demo/build.sh) as the page starts it: 24 steps of 0.15 s; the
// failing variant breaks at step 24*2/5 = 9 and exits 2.
const (
	buildSteps  = 24
	failStep    = 9
	failExit    = "2"
	failMessage = "src/module-9.c:42:17: error: expected ';' before '}' token"
)

var (
	idPattern       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	durationPattern = regexp.MustCompile(`^(\d+\.\d) s$`)
)

// TestDemoInBrowser serves php/demo with nginx and a PHP-FPM pool as www-data, and clicks
// through it in headless Chromium: a build whose log grows live and ends "succeeded", a
// build canceled halfway, and a build that fails with its exit code and last lines.
func TestDemoInBrowser(t *testing.T) {
	t0 := time.Now()
	bin := requireIntegration(t)
	ensureAtd(t)
	itest.AllowAt(t, "browser", itest.WebUser)

	s := newSite(t, bin)
	fpm := s.startFPM()
	s.startNginx()

	// Without a browser first: the page renders, an endpoint refuses a bad ID with JSON.
	if code, body := s.get("/"); code != 200 || !strings.Contains(body, `id="build"`) {
		t.Fatalf("GET / through nginx: status %d, body %.300q", code, body)
	}
	if code, body := s.get("/poll.php?id=..%2Fetc&offset=0"); code != 400 || !strings.Contains(body, `"code":"usage"`) {
		t.Fatalf("GET /poll.php with a bad ID: status %d, body %.300q, want 400 and a usage error", code, body)
	}

	shots := newShots(t)
	d := startDriver(t, filepath.Join(s.root, "chrome"))
	b := d.newSession(t, filepath.Join(s.root, "chrome", "profile"))
	b.setWindowSize(1100, 1100)
	b.navigate(s.url)
	if got := b.visibleText("h1"); got != "cmesh-run demo" {
		t.Fatalf("page heading %q, want %q", got, "cmesh-run demo")
	}
	t.Logf("setup (packages when missing, site, pool, nginx, chromedriver, Chromium) took %.1f s", time.Since(t0).Seconds())

	var lastID string

	t.Run("build succeeds, log growing live", func(t *testing.T) {
		b := b.with(t)
		start := time.Now()
		b.click("#build")

		// The job runs and its first lines are on the page...
		p1 := b.waitPage(20*time.Second, "the build to run with output on the page", func(p page) bool {
			return p.State == "running" && p.Log != ""
		})
		if !idPattern.MatchString(p1.JobID) {
			t.Fatalf("job id on the page %q does not look like a job ID", p1.JobID)
		}
		lastID = p1.JobID
		// ...then a later poll brings more of them while the job still runs.
		p2 := b.waitPage(10*time.Second, "the log to grow at a later poll", func(p page) bool {
			return p.Polls > p1.Polls && len(p.Log) > len(p1.Log)
		})
		if p2.State != "running" {
			t.Fatalf("the log grew from %d to %d bytes, but the state is %q by then (want running): the build is too short to watch", len(p1.Log), len(p2.Log), p2.State)
		}
		if !strings.HasPrefix(p2.Log, p1.Log) {
			t.Fatalf("the log changed instead of growing:\nbefore %q\nafter  %q", p1.Log, p2.Log)
		}
		t.Logf("live: poll %d showed %d lines, poll %d showed %d lines, state %s",
			p1.Polls, lineCount(p1.Log), p2.Polls, lineCount(p2.Log), p2.State)
		// The build reports its progress: the bar shows, and grows while it runs.
		b1 := b.waitPage(10*time.Second, "the progress bar", func(p page) bool { return p.ProgressShown && p.State == "running" })
		b2 := b.waitPage(10*time.Second, "the progress bar to grow", func(p page) bool { return p.Percent > b1.Percent })
		t.Logf("progress bar: %d%% (%q), then %d%% (%q)", b1.Percent, b1.ProgressText, b2.Percent, b2.ProgressText)
		shots.take(t, b, "build-running")

		p := b.waitPage(30*time.Second, "the build's result", func(p page) bool { return p.ResultShown })
		if p.JobID != lastID || p.ResultState != "succeeded" || p.Exit != "0" {
			t.Fatalf("result: job %s state %q exit %q, want job %s succeeded with exit 0\nlog:\n%s", p.JobID, p.ResultState, p.Exit, lastID, p.Log)
		}
		if !p.ProgressShown || p.Percent != 100 {
			t.Errorf("the succeeded build's progress bar: shown %v at %d%% (%q), want 100%%", p.ProgressShown, p.Percent, p.ProgressText)
		}
		checkDuration(t, p.Duration, 0.15*buildSteps, time.Since(start).Seconds())
		checkBuildLog(t, p.Log, buildSteps, 0)
		if p.TailShown {
			t.Errorf("a build that succeeded shows its last lines: %q", p.Tail)
		}
		if p.Polls < 5 {
			t.Errorf("the page polled %d times during a %.0f s build, want one poll every ~300 ms", p.Polls, 0.15*buildSteps)
		}
		if got := b.visibleText("#result-title"); got != "Build succeeded" {
			t.Errorf("result title %q, want %q", got, "Build succeeded")
		}
		if got := b.visibleText("#state"); got != "succeeded" {
			t.Errorf("state badge %q, want succeeded", got)
		}
		if j := s.directStatus(lastID); j.State != "succeeded" || j.ExitCode == nil || *j.ExitCode != 0 {
			t.Errorf("cmesh-run status says %+v, want succeeded with exit 0", j)
		}
		t.Logf("job %s: succeeded in %s after %d polls", lastID, p.Duration, p.Polls)
		shots.take(t, b, "build-succeeded")
	})

	t.Run("cancel", func(t *testing.T) {
		b := b.with(t)
		b.click("#build")
		p1 := b.waitPage(20*time.Second, "a new build to run with its first lines", func(p page) bool {
			return p.JobID != lastID && p.State == "running" && strings.Contains(p.Log, "[1/")
		})
		id := p1.JobID
		lastID = id
		running := s.directStatus(id)
		b.click("#cancel")

		p := b.waitPage(20*time.Second, "the canceled build's result", func(p page) bool { return p.JobID == id && p.ResultShown })
		if p.ResultState != "canceled" {
			t.Fatalf("result state %q after Cancel, want canceled\nlog:\n%s", p.ResultState, p.Log)
		}
		if strings.Contains(p.Log, "build: finished") {
			t.Fatalf("the canceled build ran to its end:\n%s", p.Log)
		}
		if !p.TailShown || !strings.Contains(p.Tail, "got SIGTERM") {
			t.Errorf("last lines of the canceled build %q, want the build's own SIGTERM line", p.Tail)
		}
		if !durationPattern.MatchString(p.Duration) {
			t.Errorf("duration %q, want like \"1.2 s\"", p.Duration)
		}
		if got := b.visibleText("#result-title"); got != "Build canceled" {
			t.Errorf("result title %q, want %q", got, "Build canceled")
		}
		if j := s.directStatus(id); j.State != "canceled" {
			t.Errorf("cmesh-run status says %+v, want canceled", j)
		}
		if running.PID != nil {
			pid := *running.PID
			if !itest.Eventually(5*time.Second, func() bool { st := itest.ProcState(pid); return st == "" || st == "Z" }) {
				t.Errorf("the canceled job's process %d is still alive", pid)
			}
		}
		t.Logf("job %s: canceled after %d lines (exit code shown: %s, took %s)", id, lineCount(p.Log), p.Exit, p.Duration)
		shots.take(t, b, "build-canceled")
	})

	t.Run("failing build shows its exit code and last lines", func(t *testing.T) {
		b := b.with(t)
		b.click("#build-fail")
		p := b.waitPage(30*time.Second, "the failing build's result", func(p page) bool {
			return p.JobID != lastID && p.ResultShown
		})
		id := p.JobID
		if p.ResultState != "failed" || p.Exit != failExit {
			t.Fatalf("result: state %q exit %q, want failed with exit %s\nlog:\n%s", p.ResultState, p.Exit, failExit, p.Log)
		}
		checkBuildLog(t, p.Log, buildSteps, failStep)
		if !p.TailShown {
			t.Fatal("a failed build does not show its last lines")
		}
		tail := strings.Split(p.Tail, "\n")
		if len(tail) == 0 || tail[len(tail)-1] != fmt.Sprintf("build: failed at step %d of %d", failStep, buildSteps) || !strings.Contains(p.Tail, failMessage) {
			t.Errorf("last lines:\n%s\nwant the compiler error and the failure line at the end", p.Tail)
		}
		if got := b.visibleText("#result-exit"); got != failExit {
			t.Errorf("visible exit code %q, want %s", got, failExit)
		}
		if got := b.visibleText("#tail"); !strings.Contains(got, failMessage) {
			t.Errorf("visible last lines %q lack %q", got, failMessage)
		}
		if got := b.visibleText("#result-title"); got != "Build failed" {
			t.Errorf("result title %q, want %q", got, "Build failed")
		}
		if j := s.directStatus(id); j.State != "failed" || j.ExitCode == nil || strconv.Itoa(*j.ExitCode) != failExit {
			t.Errorf("cmesh-run status says %+v, want failed with exit %s", j, failExit)
		}
		t.Logf("job %s: failed with exit %s in %s; last lines:\n%s", id, p.Exit, p.Duration, p.Tail)
		shots.take(t, b, "build-failed")
	})

	t.Run("a job that reports no progress: no bar, the page works", func(t *testing.T) {
		b := b.with(t)
		out, stderr, code := s.with(t).direct("schedule", "--workdir", "/", "--", "sh", "-c", "echo quiet job; sleep 1")
		id := strings.TrimSpace(out)
		if code != 0 || !idPattern.MatchString(id) {
			t.Fatalf("schedule: exit %d %q %q", code, out, stderr)
		}
		// A new query string makes it a new page load, which reads the #job= hash.
		b.navigate(s.url + "?follow=" + id + "#job=" + id)
		p := b.waitPage(30*time.Second, "the quiet job's result", func(p page) bool { return p.JobID == id && p.ResultShown })
		if p.ResultState != "succeeded" || p.Log != "quiet job\n" || p.ProgressShown {
			t.Errorf("a job without progress: %v, bar shown %v (%q)", p, p.ProgressShown, p.ProgressText)
		}
	})

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors in the browser console:\n%s", strings.Join(errs, "\n"))
	}
	if p := b.page(); p.Error != "" {
		t.Errorf("the page shows an error: %q", p.Error)
	}

	t.Run("build survives a php-fpm restart, page follows it again", func(t *testing.T) {
		b := b.with(t)
		const steps = 40 // 6 s: time to stop and start the pool halfway
		b.typeInto("#steps", strconv.Itoa(steps))
		b.click("#build")
		p1 := b.waitPage(20*time.Second, "a new build to run with its first lines", func(p page) bool {
			return p.JobID != lastID && p.State == "running" && strings.Contains(p.Log, "[2/")
		})
		id := p1.JobID

		fpm.Stop() // QUIT by PID: the pool and its workers go; the build runs under atd
		down := b.waitPage(10*time.Second, "the page to show its polls failing", func(p page) bool { return p.Error != "" })
		if !strings.Contains(down.Error, "502") {
			t.Errorf("error shown while the pool is down: %q, want the HTTP 502 of nginx", down.Error)
		}
		if j := s.directStatus(id); j.State != "running" {
			t.Fatalf("with the pool down, cmesh-run status says %+v, want running", j)
		}
		shots.take(t, b, "pool-down")
		fpm = s.with(t).startFPM()

		p := b.waitPage(30*time.Second, "the build's result after the restart", func(p page) bool { return p.ResultShown })
		if p.JobID != id || p.ResultState != "succeeded" || p.Exit != "0" {
			t.Fatalf("result: job %s state %q exit %q, want job %s succeeded with exit 0\nlog:\n%s", p.JobID, p.ResultState, p.Exit, id, p.Log)
		}
		if p.Error != "" {
			t.Errorf("the page still shows %q once the pool answers again", p.Error)
		}
		checkBuildLog(t, p.Log, steps, 0)
		for _, e := range b.consoleErrors() {
			if !strings.Contains(e, "502") {
				t.Errorf("console error other than the pool's 502s: %s", e)
			}
		}
		t.Logf("job %s: ran through the restart, succeeded in %s with all %d lines", id, p.Duration, lineCount(p.Log))
		shots.take(t, b, "after-restart")
	})

	t.Logf("test body took %.1f s", time.Since(t0).Seconds())
}

// ---------------------------------------------------------------------------------------------
// The page as the test reads it

// page is what the demo page shows at one moment, read in one script run.
type page struct {
	JobID       string `json:"jobId"`
	State       string `json:"state"`
	Elapsed     string `json:"elapsed"`
	Log         string `json:"log"`
	Polls       int    `json:"polls"`
	ResultShown bool   `json:"resultShown"`
	ResultState string `json:"resultState"`
	Exit        string `json:"exit"`
	Duration    string `json:"duration"`
	TailShown   bool   `json:"tailShown"`
	Tail        string `json:"tail"`
	Error       string `json:"error"`
	// The progress bar: shown, and its percent.
	ProgressShown bool   `json:"progressShown"`
	Percent       int    `json:"percent"`
	ProgressText  string `json:"progressText"`
}

func (p page) String() string {
	return fmt.Sprintf("job %q state %q (%s), %d lines after %d polls, result shown %v (%q, exit %q), error %q",
		p.JobID, p.State, p.Elapsed, lineCount(p.Log), p.Polls, p.ResultShown, p.ResultState, p.Exit, p.Error)
}

const readPage = `
const $ = (id) => document.getElementById(id);
return {
  jobId: $('job-id').textContent,
  state: $('state').dataset.state,
  elapsed: $('elapsed').textContent,
  log: $('log').textContent,
  polls: Number($('log').dataset.polls),
  resultShown: !$('result').hidden,
  resultState: $('result-state').textContent,
  exit: $('result-exit').textContent,
  duration: $('result-duration').textContent,
  tailShown: !$('result-tail').hidden && !$('result').hidden,
  tail: $('tail').textContent,
  error: $('error').hidden ? '' : $('error').textContent,
  progressShown: !$('progress').hidden,
  percent: Number($('progress-bar').dataset.percent),
  progressText: $('progress-text').textContent,
};`

func (s *session) page() page {
	s.t.Helper()
	var p page
	s.script(readPage, &p)
	return p
}

// waitPage reads the page until cond holds, failing after timeout with what it showed last.
func (s *session) waitPage(timeout time.Duration, what string, cond func(page) bool) page {
	s.t.Helper()
	var p page
	itest.Poll(s.t, timeout, what, func() (bool, string) {
		p = s.page()
		return cond(p), "the page shows " + p.String()
	})
	return p
}

// with returns the session for use by test t (helpers fail the test they are given).
func (s *session) with(t *testing.T) *session {
	c := *s
	c.t = t
	return &c
}

// checkBuildLog checks the output the page shows is build.sh's, every line once, in order:
// nothing lost or doubled between polls.
func checkBuildLog(t *testing.T, log string, steps, failAt int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], fmt.Sprintf("build: %d steps, running as www-data in ", steps)) {
		t.Fatalf("first line %q, want build.sh's start line run as www-data\nlog:\n%s", lines[0], log)
	}
	var want []string
	last := steps
	if failAt > 0 {
		last = failAt
	}
	for i := 1; i <= last; i++ {
		want = append(want, fmt.Sprintf("[%d/%d] compiling src/module-%d.c", i, steps, i))
	}
	if failAt > 0 {
		want = append(want, failMessage, fmt.Sprintf("build: failed at step %d of %d", failAt, steps))
	} else {
		want = append(want, "linking build/app ... done", fmt.Sprintf("build: finished, %d modules", steps))
	}
	if got := strings.Join(lines[1:], "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("log on the page:\n%s\nwant after the first line:\n%s", got, strings.Join(want, "\n"))
	}
}

// checkDuration checks the shown duration is "N.N s", at least what the build sleeps and at
// most the time since the click.
func checkDuration(t *testing.T, shown string, min, max float64) {
	t.Helper()
	m := durationPattern.FindStringSubmatch(shown)
	if m == nil {
		t.Fatalf("duration %q, want like \"3.9 s\"", shown)
	}
	secs, _ := strconv.ParseFloat(m[1], 64)
	if secs < min-0.1 || secs > max+0.1 {
		t.Errorf("duration %s, want between %.1f s (the build's sleeps) and %.1f s (since the click)", shown, min, max)
	}
}

func lineCount(s string) int {
	if s == "" {
		return 0
	}
	return strings.Count(strings.TrimSuffix(s, "\n"), "\n") + 1
}

// ---------------------------------------------------------------------------------------------
// Screenshots

// shots keeps the screenshots of a run in a directory of their own that outlives the test
// (its paths are logged), and copies them to testdata/screenshots/ when
// CMESH_RUN_SAVE_SCREENSHOTS=1.
type shots struct {
	dir  string
	n    int
	keep string // testdata/screenshots, or ""
}

func newShots(t *testing.T) *shots {
	t.Helper()
	dir, err := os.MkdirTemp("", "cmesh-run-browser-shots-")
	itest.Must(t, err)
	sh := &shots{dir: dir}
	if os.Getenv("CMESH_RUN_SAVE_SCREENSHOTS") == "1" {
		sh.keep = filepath.Join("testdata", "screenshots")
		itest.Must(t, os.MkdirAll(sh.keep, 0o755))
	}
	t.Logf("screenshots go to %s", dir)
	return sh
}

// take saves a screenshot of the page as NN-name.png and checks it is a real picture.
func (sh *shots) take(t *testing.T, b *session, name string) {
	t.Helper()
	data := b.screenshot()
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil || cfg.Width < 200 || cfg.Height < 200 {
		t.Fatalf("screenshot %s: not a usable PNG (%v, %dx%d)", name, err, cfg.Width, cfg.Height)
	}
	sh.n++
	file := fmt.Sprintf("%02d-%s.png", sh.n, name)
	path := filepath.Join(sh.dir, file)
	itest.Must(t, os.WriteFile(path, data, 0o644))
	t.Logf("screenshot: %s (%dx%d)", path, cfg.Width, cfg.Height)
	if sh.keep != "" {
		itest.Must(t, os.WriteFile(filepath.Join(sh.keep, file), data, 0o644))
		t.Logf("screenshot copied to test/browser/%s", filepath.Join(sh.keep, file))
	}
}
