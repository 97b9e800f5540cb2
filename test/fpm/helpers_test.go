//go:build integration

// Package fpm runs cmesh-run and its PHP client (php/) through a real PHP-FPM pool, the real
// atd and the real /etc/at.deny, as a web application would:
//
//	CMESH_RUN_BIN=/abs/path/to/cmesh-run go test -tags integration ./test/fpm/ -v -count=1
//
// Needs root, php-fpm8.2, cgi-fcgi (libfcgi-bin), at and a running atd. Without them the tests
// skip loudly; with CMESH_RUN_REQUIRE_INTEGRATION=1 they fail instead. Each test starts its own
// pool (pm.max_requests=1, request_terminate_timeout=5s, clear_env=yes, a secret in env[]) in
// its own temp tree, and gives www-data the use of at by editing /etc/at.deny for the duration
// of the test only.
package fpm

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

const (
	atSpool   = "/var/spool/cron/atjobs"
	poolEnvPW = "hunter2-pool-secret"

	// pagePoll is how often a test asks a page: each request costs the pool a worker
	// (pm.max_requests=1), so not every 50 ms.
	pagePoll = 100 * time.Millisecond
)

// needs is what the suite needs of the machine.
var needs = itest.Needs{
	Binary:  true,
	Root:    "starts php-fpm as www-data, edits /etc/at.deny, reads /proc and at's spool",
	Tools:   []string{itest.FPMBin, itest.CGIFcgi, itest.AtBin, itest.AtqBin, itest.EnvBin},
	Install: "php-fpm php-cli libfcgi-bin at",
	Users:   []string{itest.WebUser},
	Atd:     true,
	Checks:  []func() error{func() error { return itest.CheckAtFiles(itest.WebUser, true) }},
}

// ---------------------------------------------------------------------------------------------
// The test tree: binary, PHP client and pages, state dir, pool

// env is one test's world: its own temp tree, state dir and PHP-FPM pool.
type env struct {
	t        *testing.T
	root     string
	bin      string // the copy of cmesh-run www-data runs
	www      string // the pages
	stateDir string // owned by www-data, 0750
	notes    string // where pages leave notes, writable by www-data
	workDir  string // a job workdir owned by www-data
	secret   string // value of the HTTP_X_SECRET request header
	web      itest.Account
	site     *itest.Site // api.php and its pool
	jobs     *jobList    // every job scheduled, canceled at cleanup if still alive
}

type jobList struct {
	mu  sync.Mutex
	ids []string
}

// sub returns e for use by subtest t (helpers fail the test they are given).
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func newEnv(t *testing.T, bin string) *env {
	t.Helper()
	root, err := os.MkdirTemp("", "cmesh-fpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	e := &env{
		t: t, root: root, web: itest.LookupAccount(t, itest.WebUser), jobs: &jobList{},
		bin:      filepath.Join(root, "bin", "cmesh-run"),
		www:      filepath.Join(root, "www"),
		stateDir: filepath.Join(root, "state"),
		notes:    filepath.Join(root, "notes"),
		workDir:  filepath.Join(root, "work dir"),
		secret:   "x-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36),
	}
	itest.Must(t, os.Chmod(root, 0o755))
	itest.Must(t, os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{e.stateDir, 0o750}, {e.notes, 0o755}, {e.workDir, 0o755}} {
		itest.Must(t, os.Mkdir(d.path, d.mode))
		itest.Must(t, os.Chmod(d.path, d.mode))
		itest.Must(t, os.Chown(d.path, e.web.UID, e.web.GID))
	}
	itest.CopyFile(t, bin, e.bin, 0o755)
	itest.CopyPHPClient(t, root)
	pool := itest.NewPool(t, filepath.Join(root, "fpm"), itest.PoolConfig{Settings: []string{
		"pm.max_children = 2",
		"pm.max_requests = 1",
		"request_terminate_timeout = 5s",
		"env[DB_PASSWORD] = " + poolEnvPW,
	}})
	itest.WriteAPIPage(t, e.www)
	itest.WriteAPIConfig(t, e.www, map[string]any{"binary": e.bin, "state_dir": e.stateDir})
	e.site = &itest.Site{Pool: pool, WWW: e.www, Vars: []string{"HTTP_X_SECRET=" + e.secret}, Timeout: 15 * time.Second}
	t.Cleanup(e.cancelLeftovers)
	return e
}

// ---------------------------------------------------------------------------------------------
// Requests, all for api.php, carrying the secret request header

func (e *env) request(req map[string]any, timeout time.Duration) itest.Response {
	e.t.Helper()
	return e.site.Request(e.t, "api.php", req, timeout)
}

func (e *env) api(req map[string]any) itest.APIResult {
	e.t.Helper()
	return e.site.API(e.t, req)
}

func (e *env) call(req map[string]any, out any) itest.APIResult {
	e.t.Helper()
	return e.site.Call(e.t, req, out)
}

// job is SPEC.md's job object.
type job = itest.Job

// atJobNumber is backend_ref as at's job number, or -1.
func atJobNumber(j job) int {
	if j.BackendRef == nil {
		return -1
	}
	n, err := strconv.Atoi(*j.BackendRef)
	if err != nil {
		return -1
	}
	return n
}

// schedule starts a job through the page and checks the answer is a well-formed job object.
func (e *env) schedule(argv []string, options map[string]any) (job, itest.APIResult) {
	e.t.Helper()
	req := map[string]any{"op": "schedule", "argv": argv}
	if options != nil {
		req["options"] = options
	}
	var j job
	a := e.call(req, &j)
	e.track(j.ID)
	e.checkNewJob(j, argv)
	return j, a
}

func (e *env) checkNewJob(j job, argv []string) {
	e.t.Helper()
	if !itest.IDPattern.MatchString(j.ID) {
		e.t.Fatalf("schedule: bad job id in %v", j)
	}
	if j.State != "queued" && j.State != "running" && j.State != "waiting" && j.State != "succeeded" {
		e.t.Errorf("schedule: state %q, want queued or running: %v", j.State, j)
	}
	if argv != nil && strings.Join(j.Command, "\x00") != strings.Join(argv, "\x00") {
		e.t.Errorf("schedule: command %q, want %q", j.Command, argv)
	}
}

func (e *env) track(id string) {
	if id == "" {
		return
	}
	e.jobs.mu.Lock()
	e.jobs.ids = append(e.jobs.ids, id)
	e.jobs.mu.Unlock()
}

func (e *env) status(id string) job {
	e.t.Helper()
	var j job
	e.call(map[string]any{"op": "status", "id": id}, &j)
	if j.ID != id {
		e.t.Fatalf("status %s: got job %v", id, j)
	}
	return j
}

// collect follows a job through api.php until log says done, limit bytes a call, and returns
// the reassembled output and the final job object.
func (e *env) collect(id string, limit int, timeout time.Duration) (string, job) {
	e.t.Helper()
	out, j, _ := e.site.Collect(e.t, id, limit, limit, timeout)
	return out, j
}

// ---------------------------------------------------------------------------------------------
// cmesh-run run directly as www-data (when no pool is up, and for cleanup)

func (e *env) direct(args ...string) (stdout, stderr string, exit int) {
	return e.asWebUser(e.bin, append([]string{"--state-dir", e.stateDir}, args...)...)
}

// asWebUser runs a program as www-data with a minimal environment.
func (e *env) asWebUser(prog string, args ...string) (stdout, stderr string, exit int) {
	r, err := itest.Run(itest.Command(&e.web, itest.WebUserEnv, prog, args...))
	if err != nil {
		e.t.Fatalf("run %s: %v", prog, err)
	}
	return r.Stdout, r.Stderr, r.Exit
}

func (e *env) directStatus(id string) job {
	e.t.Helper()
	return itest.StatusJSON(e.t, e.direct, id)
}

// cancelLeftovers cancels the jobs a failed test left running, so they do not outlive it;
// when cancel fails it kills the job's processes by PID.
func (e *env) cancelLeftovers() {
	e.jobs.mu.Lock()
	ids := e.jobs.ids
	e.jobs.mu.Unlock()
	for _, id := range ids {
		out, _, code := e.direct("status", "--json", id)
		var j job
		if code != 0 || json.Unmarshal([]byte(out), &j) != nil || itest.Finished(j.State) {
			continue
		}
		if _, _, code := e.direct("cancel", "--grace", "1s", id); code == 0 || j.PID == nil {
			continue
		}
		for _, pid := range itest.JobProcesses(*j.PID, "atd") {
			if comm, _, err := itest.ProcStat(pid); err == nil && comm != "atd" {
				e.t.Logf("cleanup: cancel of %s failed, killing its process %d (%s)", id, pid, comm)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// progressJob is a build-like job: n lines, one each 0.1 s.
func progressJob(n int) ([]string, string) {
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "progress $i"; i=$((i+1)); sleep 0.1; done`, n)
	var want strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&want, "progress %d\n", i)
	}
	return []string{"sh", "-c", script}, want.String()
}
