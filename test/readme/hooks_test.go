//go:build integration

package readme

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// TestReadmeHooks runs the README's hook configuration ("Hooks and progress") against the real
// atd: a failed job mails (to a sendmail stand-in that keeps its arguments and message), a job
// that ends posts itself to a webhook (curl, to a server on loopback), and the profile's
// drush-style command line runs with the job's ID in its environment.
func TestReadmeHooks(t *testing.T) {
	needAtd(t)
	if _, err := os.Stat("/usr/bin/curl"); err != nil {
		unavailable(t, "curl is missing (apt-get install curl)")
	}
	var toml string
	for _, b := range parseReadme(t).blocks {
		if b.lang == "" && b.heading == "Hooks and progress" {
			toml = b.text
		}
	}
	if !strings.Contains(toml, "on_failure") || !strings.Contains(toml, "/usr/sbin/sendmail") ||
		!strings.Contains(toml, "https://hooks.example.org/cmesh") || !strings.Contains(toml, "/usr/local/bin/drush") {
		t.Fatalf("the section's config block no longer has the three examples:\n%s", toml)
	}

	dir := t.TempDir()
	itest.Must(t, os.Chmod(dir, 0o755))
	stand := func(name, body string) string {
		p := filepath.Join(dir, name)
		itest.Must(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
		return p
	}
	// Each stand-in keeps what it was given, one file per job.
	sendmail := stand("sendmail", `f="$(dirname "$0")/mail.$CMESH_RUN_JOB_ID"; echo "$*" > "$f"; cat >> "$f"`+"\n")
	drush := stand("drush", `f="$(dirname "$0")/drush.$CMESH_RUN_JOB_ID"; echo "$*" > "$f"; echo "$CMESH_RUN_JOB_STATE $CMESH_RUN_JOB_EXIT_CODE" >> "$f"`+"\n")
	pushfin := stand("pushfin.sh", `echo "pushfin $*"`+"\n")

	var mu sync.Mutex
	posts := map[string]map[string]any{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var j map[string]any
		if r.Method != http.MethodPost || r.URL.Path != "/cmesh" || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &j) != nil {
			http.Error(w, "bad hook request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		posts[j["id"].(string)] = j
		mu.Unlock()
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("the webhook listens on %s, not on loopback", srv.URL)
	}
	cfg := strings.NewReplacer("/usr/sbin/sendmail", sendmail, "https://hooks.example.org/cmesh", srv.URL+"/cmesh",
		"/usr/local/bin/drush", drush, "/opt/cmesh/scripts/pushfin.sh", pushfin).Replace(toml)
	cfgFile := filepath.Join(dir, "config.toml")
	itest.Must(t, os.WriteFile(cfgFile, []byte(cfg), 0o644))
	state := filepath.Join(dir, "state")
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--state-dir", state}, args...)...)
		cmd.Env = []string{"PATH=" + itest.StdPath, "CMESH_RUN_CONFIG=" + cfgFile}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cmesh-run %q: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	hookDone := func(id string) {
		t.Helper()
		itest.Poll(t, 60*time.Second, "the hook of "+id, func() (bool, string) {
			var j struct {
				Hook *struct {
					ExitCode   *int       `json:"exit_code"`
					FinishedAt *time.Time `json:"finished_at"`
				} `json:"hook"`
			}
			out := cli("status", "--json", id)
			_ = json.Unmarshal([]byte(out), &j)
			return j.Hook != nil && j.Hook.FinishedAt != nil && j.Hook.ExitCode != nil && *j.Hook.ExitCode == 0, out
		})
	}

	failed := cli("schedule", "--", "sh", "-c", "exit 4")
	ok := cli("schedule", "--", "true")
	build := cli("schedule", "--profile", "pushfin", "--arg", "org=mars", "--arg", "name=mpvg")
	for _, id := range []string{failed, ok, build} {
		hookDone(id)
	}

	mail, _ := os.ReadFile(filepath.Join(dir, "mail."+failed))
	if !strings.HasPrefix(string(mail), "-i admin@example.org\nSubject: build "+failed+" failed\n\n{") || !strings.Contains(string(mail), `"exit_code":4`) {
		t.Errorf("the mail of the failed job:\n%s", mail)
	}
	mu.Lock()
	post := posts[ok]
	mu.Unlock()
	if post == nil || post["state"] != "succeeded" {
		t.Errorf("the webhook got %v for job %s, want the job object, succeeded", post, ok)
	}
	if _, err := os.Stat(filepath.Join(dir, "mail."+ok)); err == nil {
		t.Errorf("a job that succeeded was mailed: on_failure is for failures")
	}
	d, _ := os.ReadFile(filepath.Join(dir, "drush."+build))
	if string(d) != "--root=/var/www/site cmesh:build-done\nsucceeded 0\n" {
		t.Errorf("the drush-style hook of the profile got %q", d)
	}
	mu.Lock()
	_, posted := posts[build]
	mu.Unlock()
	if posted {
		t.Errorf("the profile's own on_finish must replace the config's: the webhook was called for %s too", build)
	}
}
