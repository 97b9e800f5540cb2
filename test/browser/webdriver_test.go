//go:build integration

package browser

// A small client of the W3C WebDriver HTTP API, as chromedriver serves it: just what the test
// needs (a session, navigation, elements, clicks, a script, screenshots). Stdlib only.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// elementKey is the W3C name of an element reference in JSON.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

// chromeArgs are the flags known to work for Debian's Chromium as root on these machines
// (see the machine notes): without the background-networking ones Chromium keeps trying to
// reach Google's hosts through a closed network.
var chromeArgs = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
}

// driver is a running chromedriver.
type driver struct {
	*itest.Server
	base    string // http://127.0.0.1:PORT
	logPath string
}

// webDriverError is an error answer of the WebDriver API.
type webDriverError struct {
	Status  int
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *webDriverError) Error() string {
	return fmt.Sprintf("webdriver: HTTP %d %s: %s", e.Status, e.Code, firstLine(e.Message))
}

// startDriver starts chromedriver on a free loopback port and waits until it says it is ready.
func startDriver(t *testing.T, dir string) *driver {
	t.Helper()
	// Chromium's crash handlers daemonize: make their orphans this process's to reap. It
	// must be set before chromedriver starts (descendants learn of a subreaper at fork).
	if err := becomeSubreaper(); err != nil {
		t.Logf("prctl(PR_SET_CHILD_SUBREAPER): %v (Chromium's exited helpers are left to PID 1)", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		d, err := tryStartDriver(dir, freePort(t))
		if err == nil {
			t.Cleanup(d.Stop) // TERM, then KILL, by its PID
			return d
		}
		lastErr = err
		t.Logf("chromedriver did not start (attempt %d): %v", attempt+1, err)
	}
	t.Fatalf("chromedriver: %v", lastErr)
	return nil
}

func tryStartDriver(dir string, port int) (*driver, error) {
	d := &driver{
		base:    fmt.Sprintf("http://127.0.0.1:%d", port),
		logPath: filepath.Join(dir, "chromedriver.log"),
	}
	out := filepath.Join(dir, "chromedriver.out")
	cmd := exec.Command(chromedriverBin, "--port="+strconv.Itoa(port), "--log-path="+d.logPath)
	cmd.Env = []string{"PATH=" + itest.StdPath, "HOME=" + dir, "LANG=C.UTF-8"}
	var err error
	if d.Server, err = itest.Launch("chromedriver", cmd, out, syscall.SIGTERM); err != nil {
		return nil, err
	}

	deadline := time.Now().Add(15 * time.Second)
	for {
		if d.Exited() {
			raw, _ := os.ReadFile(out)
			return nil, fmt.Errorf("exited at start: %v: %s", cmd.ProcessState, itest.LastLines(string(raw), 5))
		}
		var st struct {
			Ready bool `json:"ready"`
		}
		if err := d.request(http.MethodGet, "/status", nil, &st); err == nil && st.Ready {
			return d, nil
		} else if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("not ready after 15 s (last: ready=%v, %v)", st.Ready, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// request sends one WebDriver command and decodes its "value" into out (when not nil).
func (d *driver) request(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, d.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	client := http.Client{Timeout: 60 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("webdriver %s %s: HTTP %d, not JSON: %.200q", method, path, res.StatusCode, raw)
	}
	if res.StatusCode != http.StatusOK {
		e := &webDriverError{Status: res.StatusCode}
		if json.Unmarshal(env.Value, e) != nil || e.Code == "" {
			e.Code, e.Message = "unknown error", string(raw)
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(env.Value, out)
}

// session is one browser: a chromedriver session driving Chromium.
type session struct {
	t       *testing.T
	d       *driver
	id      string
	profile string // Chromium's --user-data-dir, unique to this session
}

// newSession starts headless Chromium through chromedriver with a new empty profile.
func (d *driver) newSession(t *testing.T, profile string) *session {
	t.Helper()
	itest.Must(t, os.MkdirAll(profile, 0o700))
	caps := map[string]any{
		"capabilities": map[string]any{
			"alwaysMatch": map[string]any{
				"browserName":       "chrome",
				"pageLoadStrategy":  "normal",
				"goog:loggingPrefs": map[string]any{"browser": "ALL"},
				"goog:chromeOptions": map[string]any{
					"binary": chromiumBin,
					"args":   append(append([]string{}, chromeArgs...), "--user-data-dir="+profile),
				},
			},
		},
	}
	var created struct {
		SessionID    string         `json:"sessionId"`
		Capabilities map[string]any `json:"capabilities"`
	}
	if err := d.request(http.MethodPost, "/session", caps, &created); err != nil {
		if log, rerr := os.ReadFile(d.logPath); rerr == nil {
			t.Logf("chromedriver log (end):\n%s", itest.LastLines(string(log), 40))
		}
		t.Fatalf("new WebDriver session: %v", err)
	}
	s := &session{t: t, d: d, id: created.SessionID, profile: profile}
	t.Logf("browser: %v %v (chromedriver %s)", created.Capabilities["browserName"], created.Capabilities["browserVersion"], d.base)
	t.Cleanup(s.close)
	return s
}

// close ends the session (Chromium quits), then kills by PID any Chromium process still
// alive: those below chromedriver, and those using this session's profile.
func (s *session) close() {
	// Before the session ends: its processes, and Chromium's crash handlers, which run
	// detached (found by the paths under the test's chrome dir in their command lines).
	var chromium []int
	seen := map[int]bool{s.d.PID: true}
	for _, pid := range append(itest.Descendants(s.d.PID), itest.ProcessesWith(filepath.Dir(s.profile))...) {
		if !seen[pid] {
			seen[pid] = true
			chromium = append(chromium, pid)
		}
	}
	if err := s.d.request(http.MethodDelete, "/session/"+s.id, nil, nil); err != nil {
		s.t.Logf("delete session: %v", err)
	}
	for _, pid := range chromium {
		itest.WaitOrKill(s.t, pid, 5*time.Second)
	}
	// Orphans come to this process (a child subreaper, see startDriver), which reaps them
	// rather than leave zombies for PID 1 (here it reaps only every few seconds).
	for _, pid := range chromium {
		itest.Eventually(2*time.Second, func() bool {
			switch itest.ProcState(pid) {
			case "":
				return true
			case "Z":
				if _, ppid, err := itest.ProcStat(pid); err == nil && ppid == os.Getpid() {
					var ws syscall.WaitStatus
					syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
				}
			}
			return false
		})
	}
}

// becomeSubreaper makes this process the one that inherits the orphans of its descendants
// (prctl PR_SET_CHILD_SUBREAPER), so that it can reap Chromium's.
func becomeSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}

func (s *session) cmd(method, path string, body, out any) error {
	return s.d.request(method, "/session/"+s.id+path, body, out)
}

func (s *session) must(method, path string, body, out any) {
	s.t.Helper()
	if err := s.cmd(method, path, body, out); err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
}

func (s *session) setWindowSize(width, height int) {
	s.t.Helper()
	s.must(http.MethodPost, "/window/rect", map[string]any{"width": width, "height": height}, nil)
}

func (s *session) navigate(url string) {
	s.t.Helper()
	s.must(http.MethodPost, "/url", map[string]any{"url": url}, nil)
}

// find returns the reference of the element that the CSS selector matches.
func (s *session) find(css string) string {
	s.t.Helper()
	var el map[string]string
	s.must(http.MethodPost, "/element", map[string]any{"using": "css selector", "value": css}, &el)
	if el[elementKey] == "" {
		s.t.Fatalf("find %s: no element reference in %v", css, el)
	}
	return el[elementKey]
}

// click clicks the element as a user would: it waits until the element is enabled, then
// asks the browser for a real click at its position.
func (s *session) click(css string) {
	s.t.Helper()
	el := s.find(css)
	itest.Poll(s.t, 10*time.Second, css+" to be enabled", func() (bool, string) {
		var enabled bool
		s.must(http.MethodGet, "/element/"+el+"/enabled", nil, &enabled)
		return enabled, "disabled"
	})
	s.must(http.MethodPost, "/element/"+el+"/click", map[string]any{}, nil)
}

// typeInto replaces the text of an input field as a user would type it.
func (s *session) typeInto(css, text string) {
	s.t.Helper()
	el := s.find(css)
	s.must(http.MethodPost, "/element/"+el+"/clear", map[string]any{}, nil)
	s.must(http.MethodPost, "/element/"+el+"/value", map[string]any{"text": text}, nil)
}

// visibleText is the element's text as rendered (empty when the element is hidden).
func (s *session) visibleText(css string) string {
	s.t.Helper()
	var text string
	s.must(http.MethodGet, "/element/"+s.find(css)+"/text", nil, &text)
	return text
}

// script runs JavaScript in the page and decodes its return value into out.
func (s *session) script(js string, out any, args ...any) {
	s.t.Helper()
	if args == nil {
		args = []any{}
	}
	s.must(http.MethodPost, "/execute/sync", map[string]any{"script": js, "args": args}, out)
}

// screenshot returns the page as a PNG.
func (s *session) screenshot() []byte {
	s.t.Helper()
	var b64 string
	s.must(http.MethodGet, "/screenshot", nil, &b64)
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		s.t.Fatalf("screenshot: bad base64: %v", err)
	}
	return png
}

// consoleErrors is what the page logged at level SEVERE (JS errors, failed requests), when
// chromedriver can tell.
func (s *session) consoleErrors() []string {
	var entries []struct {
		Level   string `json:"level"`
		Message string `json:"message"`
	}
	if err := s.cmd(http.MethodPost, "/se/log", map[string]any{"type": "browser"}, &entries); err != nil {
		var we *webDriverError
		if errors.As(err, &we) {
			return nil // not offered by this chromedriver
		}
		return []string{err.Error()}
	}
	var out []string
	for _, e := range entries {
		if e.Level == "SEVERE" {
			out = append(out, e.Message)
		}
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
