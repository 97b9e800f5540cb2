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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// Helpers shared with the other integration suites.
var (
	alive        = itest.Alive
	copyFile     = itest.CopyFile
	fdLinks      = itest.FDLinks
	finished     = itest.Finished
	groupMembers = itest.GroupMembers
	must         = itest.Must
	phpString    = itest.PHPString
	sharedKind   = itest.SharedKind
	writeInPlace = itest.WriteInPlace
	writeSynced  = itest.WriteSynced
)

const (
	fpmBin    = "/usr/sbin/php-fpm8.2"
	cgiFcgi   = "/usr/bin/cgi-fcgi"
	atBin     = "/usr/bin/at"
	atqBin    = "/usr/bin/atq"
	atdPID    = "/run/atd.pid"
	atDeny    = "/etc/at.deny"
	atAllow   = "/etc/at.allow"
	atSpool   = "/var/spool/cron/atjobs"
	webUser   = "www-data"
	poolEnvPW = "hunter2-pool-secret"

	// atDenyBackup holds the original /etc/at.deny while a test has changed it, so that a run
	// killed halfway is repaired by the next one.
	atDenyBackup = "/var/tmp/cmesh-run-fpm-test.at.deny.orig"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ---------------------------------------------------------------------------------------------
// Preconditions

var (
	skipBannerOnce sync.Once
	atDenyMu       sync.Mutex // top-level tests run one at a time; this guards against mistakes
)

// requireIntegration returns the cmesh-run binary under test, or skips (fails with
// CMESH_RUN_REQUIRE_INTEGRATION=1) when this machine cannot run the suite.
func requireIntegration(t *testing.T) string {
	t.Helper()
	if err := checkPrerequisites(); err != nil {
		msg := "FPM INTEGRATION TESTS NOT RUN: " + err.Error()
		if os.Getenv("CMESH_RUN_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (CMESH_RUN_REQUIRE_INTEGRATION=1)")
		}
		skipBannerOnce.Do(func() {
			fmt.Fprintf(os.Stderr, "\n!!!!!!!! %s\n!!!!!!!! (set CMESH_RUN_REQUIRE_INTEGRATION=1 to make this a failure)\n\n", msg)
		})
		t.Skip(msg)
	}
	restoreCrashedAtDeny(t)
	return os.Getenv("CMESH_RUN_BIN")
}

func checkPrerequisites() error {
	bin := os.Getenv("CMESH_RUN_BIN")
	if bin == "" {
		return errors.New("CMESH_RUN_BIN is not set (give the absolute path of a built cmesh-run)")
	}
	if !filepath.IsAbs(bin) {
		return fmt.Errorf("CMESH_RUN_BIN=%q is not an absolute path", bin)
	}
	if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("CMESH_RUN_BIN=%q is not an executable file", bin)
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root (starts php-fpm as www-data, edits /etc/at.deny, reads /proc and at's spool)")
	}
	for _, tool := range []string{fpmBin, cgiFcgi, atBin, atqBin, "/usr/bin/env"} {
		if fi, err := os.Stat(tool); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is missing (apt-get install php-fpm php-cli libfcgi-bin at)", tool)
		}
	}
	if _, err := user.Lookup(webUser); err != nil {
		return fmt.Errorf("user %s: %v", webUser, err)
	}
	raw, err := os.ReadFile(atdPID)
	if err != nil {
		return fmt.Errorf("atd is not running: %v (start /usr/sbin/atd)", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 || !alive(pid) {
		return fmt.Errorf("atd is not running: %s names no live process (start /usr/sbin/atd)", atdPID)
	}
	if _, err := os.Stat(atDeny); err != nil {
		return fmt.Errorf("%s: %v (the suite edits it to let www-data use at)", atDeny, err)
	}
	if _, err := os.Stat(atAllow); err == nil {
		return fmt.Errorf("%s exists: the suite only manages %s", atAllow, atDeny)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// /etc/at.deny

// restoreCrashedAtDeny puts back the original /etc/at.deny left behind by a run that died
// before its cleanup.
func restoreCrashedAtDeny(t *testing.T) {
	atDenyMu.Lock()
	defer atDenyMu.Unlock()
	orig, err := os.ReadFile(atDenyBackup)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatalf("read %s: %v", atDenyBackup, err)
	}
	t.Logf("restoring %s from %s, left by an interrupted run", atDeny, atDenyBackup)
	if err := writeInPlace(atDeny, orig); err != nil {
		t.Fatalf("restore %s: %v", atDeny, err)
	}
	if err := os.Remove(atDenyBackup); err != nil {
		t.Fatal(err)
	}
}

// setAtDeny gives /etc/at.deny the content that edit makes of it until t ends, then restores
// the exact original bytes.
func setAtDeny(t *testing.T, edit func(orig []byte) []byte) {
	t.Helper()
	atDenyMu.Lock()
	defer atDenyMu.Unlock()
	orig, err := os.ReadFile(atDeny)
	if err != nil {
		t.Fatal(err)
	}
	want := edit(orig)
	if bytes.Equal(want, orig) {
		return
	}
	if err := writeSynced(atDenyBackup, orig, 0o600); err != nil {
		t.Fatalf("back up %s: %v", atDeny, err)
	}
	t.Cleanup(func() {
		atDenyMu.Lock()
		defer atDenyMu.Unlock()
		if err := writeInPlace(atDeny, orig); err != nil {
			t.Errorf("RESTORE %s BY HAND from %s: %v", atDeny, atDenyBackup, err)
			return
		}
		if err := os.Remove(atDenyBackup); err != nil {
			t.Error(err)
		}
	})
	if err := writeInPlace(atDeny, want); err != nil {
		t.Fatalf("write %s: %v", atDeny, err)
	}
}

// allowAt lets www-data use at for the rest of t: its line goes from /etc/at.deny.
func allowAt(t *testing.T) {
	t.Helper()
	setAtDeny(t, func(orig []byte) []byte {
		var out []byte
		for _, line := range bytes.SplitAfter(orig, []byte("\n")) {
			if string(bytes.TrimSpace(line)) != webUser {
				out = append(out, line...)
			}
		}
		return out
	})
}

// denyAt makes sure /etc/at.deny lists www-data (Debian's default, normally already true) and
// returns the number of its line.
func denyAt(t *testing.T) int {
	t.Helper()
	setAtDeny(t, func(orig []byte) []byte {
		if denyLine(orig) > 0 {
			return orig
		}
		out := append([]byte{}, orig...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		return append(out, webUser+"\n"...)
	})
	content, err := os.ReadFile(atDeny)
	if err != nil {
		t.Fatal(err)
	}
	return denyLine(content)
}

func denyLine(content []byte) int {
	for i, line := range strings.Split(string(content), "\n") {
		if strings.TrimSpace(line) == webUser {
			return i + 1
		}
	}
	return 0
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
	conf     string
	sock     string
	fpmLog   string
	secret   string // value of the HTTP_X_SECRET request header
	uid, gid int
	fpm      *fpmProc
	jobs     *jobList // every job scheduled, canceled at cleanup if still alive
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
	u, err := user.Lookup(webUser)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	root, err := os.MkdirTemp("", "cmesh-fpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	e := &env{
		t: t, root: root, uid: uid, gid: gid, jobs: &jobList{},
		bin:      filepath.Join(root, "bin", "cmesh-run"),
		www:      filepath.Join(root, "www"),
		stateDir: filepath.Join(root, "state"),
		notes:    filepath.Join(root, "notes"),
		workDir:  filepath.Join(root, "work dir"),
		conf:     filepath.Join(root, "fpm", "fpm.conf"),
		sock:     filepath.Join(root, "fpm", "app.sock"),
		fpmLog:   filepath.Join(root, "fpm", "fpm.log"),
		secret:   "x-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36),
	}
	must(t, os.Chmod(root, 0o755))
	for _, d := range []string{"bin", "php/src", "www", "fpm"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{e.stateDir, 0o750}, {e.notes, 0o755}, {e.workDir, 0o755}} {
		must(t, os.Mkdir(d.path, d.mode))
		must(t, os.Chmod(d.path, d.mode))
		must(t, os.Chown(d.path, uid, gid))
	}
	copyFile(t, bin, e.bin, 0o755)
	srcs, err := filepath.Glob("../../php/src/*.php")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("PHP client not found in ../../php/src (%v)", err)
	}
	for _, src := range srcs {
		copyFile(t, src, filepath.Join(root, "php", "src", filepath.Base(src)), 0o644)
	}
	config := fmt.Sprintf("<?php\nreturn ['binary' => %s, 'state_dir' => %s];\n", phpString(e.bin), phpString(e.stateDir))
	must(t, os.WriteFile(filepath.Join(e.www, "config.php"), []byte(config), 0o644))
	must(t, os.WriteFile(filepath.Join(e.www, "api.php"), []byte(apiPage), 0o644))
	must(t, os.WriteFile(e.conf, []byte(e.poolConf()), 0o644))

	t.Cleanup(e.cancelLeftovers)
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(e.fpmLog); err == nil {
				t.Logf("php-fpm log:\n%s", log)
			}
		}
	})
	return e
}

func (e *env) poolConf() string {
	return fmt.Sprintf(`[global]
pid = %[1]s/fpm/fpm.pid
error_log = %[2]s
daemonize = no

[app]
user = www-data
group = www-data
listen = %[3]s
listen.owner = root
listen.group = root
listen.mode = 0660
pm = static
pm.max_children = 2
pm.max_requests = 1
request_terminate_timeout = 5s
clear_env = yes
env[DB_PASSWORD] = %[4]s
catch_workers_output = yes
`, e.root, e.fpmLog, e.sock, poolEnvPW)
}

// apiPage is the one page the tests call: it runs one Client method given as JSON in ?req=
// and answers with JSON, adding what the worker knows about itself (PID, descriptors,
// whether it sees the secrets).
const apiPage = `<?php
declare(strict_types=1);

require __DIR__ . '/../php/src/CmeshRunException.php';
require __DIR__ . '/../php/src/Client.php';

use Cmesh\Run\Client;
use Cmesh\Run\CmeshRunException;

$cfg = require __DIR__ . '/config.php';
$req = json_decode($_GET['req'] ?? '{}', true, 64, JSON_THROW_ON_ERROR);
$t0 = microtime(true);

$fds = [];
foreach (glob('/proc/self/fd/*') ?: [] as $fd) {
    $fds[basename($fd)] = (string) @readlink($fd);
}

// leaky: a careless caller that hands cmesh-run everything the worker and request have.
$clientEnv = [];
if (!empty($req['leaky'])) {
    $clientEnv = getenv();
    foreach ($_SERVER as $k => $v) {
        if (is_string($v) && str_starts_with($k, 'HTTP_')) {
            $clientEnv[$k] = $v;
        }
    }
}
$client = new Client(binary: $cfg['binary'], stateDir: $cfg['state_dir'], env: $clientEnv);

$out = [
    'pid' => getmypid(),
    'fds' => $fds,
    'pool_secret' => getenv('DB_PASSWORD'),
    'request_secret' => $_SERVER['HTTP_X_SECRET'] ?? null,
];
try {
    $id = (string) ($req['id'] ?? '');
    $out['result'] = match ($req['op'] ?? '') {
        'schedule' => $client->schedule($req['argv'] ?? [], $req['options'] ?? []),
        'status' => $client->status($id),
        'log' => $client->log($id, (int) ($req['offset'] ?? 0), (int) ($req['limit'] ?? 1048576)),
        'wait' => $client->wait($id, isset($req['timeout']) ? (float) $req['timeout'] : null),
        'cancel' => $client->cancel($id, isset($req['grace']) ? (float) $req['grace'] : null),
    };
    $out['ok'] = true;
} catch (CmeshRunException $e) {
    $out['ok'] = false;
    $out['error'] = ['code' => $e->getErrorCode(), 'exit_status' => $e->getExitStatus(), 'message' => $e->getMessage()];
}
$out['seconds'] = microtime(true) - $t0;

if (isset($req['note'])) {
    file_put_contents($req['note'] . '.tmp', json_encode($out));
    rename($req['note'] . '.tmp', $req['note']);
}
if (isset($req['sleep'])) {
    sleep((int) $req['sleep']);
}
header('Content-Type: application/json');
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
`

// ---------------------------------------------------------------------------------------------
// PHP-FPM

type fpmProc struct {
	cmd  *exec.Cmd
	pid  int // master; also the process group ID
	done chan struct{}
}

// startFPM starts the pool in its own process group and waits until it answers.
func (e *env) startFPM() *fpmProc {
	t := e.t
	t.Helper()
	if out, err := exec.Command(fpmBin, "-t", "-y", e.conf).CombinedOutput(); err != nil {
		t.Fatalf("%s -t -y %s: %v\n%s", fpmBin, e.conf, err, out)
	}
	os.Remove(e.sock) // left by a pool killed with SIGKILL
	logf, err := os.OpenFile(e.fpmLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	cmd := exec.Command(fpmBin, "-F", "-y", e.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	p := &fpmProc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	e.fpm = p

	poll(t, 10*time.Second, "php-fpm to listen on "+e.sock, func() (bool, string) {
		select {
		case <-p.done:
			t.Fatalf("php-fpm exited at start: %v", cmd.ProcessState)
		default:
		}
		c, err := net.Dial("unix", e.sock)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return p
}

func (p *fpmProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the master to exit and then for its whole process group to be gone.
func (p *fpmProc) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, "php-fpm master and workers to exit", func() (bool, string) {
		if !p.exited() {
			return false, "master still running"
		}
		if err := syscall.Kill(-p.pid, 0); err == nil {
			return false, "process group not empty"
		}
		return true, ""
	})
}

// stop ends the pool by its PID, then kills whatever is left in its process group.
func (p *fpmProc) stop() {
	if !p.exited() {
		syscall.Kill(p.pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	if syscall.Kill(-p.pid, 0) == nil {
		syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	<-p.done
}

// ---------------------------------------------------------------------------------------------
// Requests

type response struct {
	status  int
	headers map[string]string
	body    []byte
	elapsed time.Duration
	err     error // cgi-fcgi failed or the response could not be parsed
}

// request sends one FastCGI request for api.php, the way a web server would, carrying the
// secret request header.
func (e *env) request(req map[string]any, timeout time.Duration) response {
	q, err := json.Marshal(req)
	must(e.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/env", "-i",
		"SCRIPT_FILENAME="+filepath.Join(e.www, "api.php"),
		"SCRIPT_NAME=/api.php",
		"REQUEST_METHOD=GET",
		"QUERY_STRING="+url.Values{"req": {string(q)}}.Encode(),
		"HTTP_X_SECRET="+e.secret,
		cgiFcgi, "-bind", "-connect", e.sock)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	r := response{elapsed: time.Since(start), headers: map[string]string{}, status: 200}
	if err != nil {
		r.err = fmt.Errorf("cgi-fcgi: %v (stderr %q)", err, stderr.String())
	}
	head, body, ok := bytes.Cut(stdout.Bytes(), []byte("\r\n\r\n"))
	if !ok {
		if r.err == nil {
			r.err = fmt.Errorf("no CGI header block in %q", stdout.String())
		}
		r.body = stdout.Bytes()
		return r
	}
	r.body = body
	for _, line := range strings.Split(string(head), "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		r.headers[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if s, ok := r.headers["status"]; ok {
		r.status, _ = strconv.Atoi(strings.Fields(s + " 0")[0])
	}
	return r
}

// apiResult is api.php's answer.
type apiResult struct {
	OK            bool              `json:"ok"`
	PID           int               `json:"pid"`
	FDs           map[string]string `json:"fds"`
	PoolSecret    any               `json:"pool_secret"`
	RequestSecret any               `json:"request_secret"`
	Result        json.RawMessage   `json:"result"`
	Error         *struct {
		Code       string `json:"code"`
		ExitStatus int    `json:"exit_status"`
		Message    string `json:"message"`
	} `json:"error"`
	Seconds float64 `json:"seconds"`

	raw     []byte
	elapsed time.Duration
}

// api sends a request and decodes api.php's JSON answer; ok may be false (a
// CmeshRunException), but the request itself must have worked.
func (e *env) api(req map[string]any) apiResult {
	e.t.Helper()
	r := e.request(req, 15*time.Second)
	if r.err != nil || r.status != 200 {
		e.t.Fatalf("request %v: status %d, err %v, body %q", req, r.status, r.err, r.body)
	}
	var a apiResult
	if err := json.Unmarshal(r.body, &a); err != nil {
		e.t.Fatalf("request %v: bad JSON %q: %v", req, r.body, err)
	}
	a.raw, a.elapsed = r.body, r.elapsed
	return a
}

// call is api for a call that must succeed; it decodes the result into out (when not nil).
func (e *env) call(req map[string]any, out any) apiResult {
	e.t.Helper()
	a := e.api(req)
	if !a.OK {
		e.t.Fatalf("request %v failed: %s", req, a.raw)
	}
	if out != nil {
		if err := json.Unmarshal(a.Result, out); err != nil {
			e.t.Fatalf("request %v: result %s: %v", req, a.Result, err)
		}
	}
	return a
}

// job is SPEC.md's job object.
type job struct{ itest.Job }

func (j job) String() string {
	b, _ := json.Marshal(j)
	return string(b)
}

// atJobNumber is backend_ref as at's job number, or -1.
func (j job) atJobNumber() int {
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
func (e *env) schedule(argv []string, options map[string]any) (job, apiResult) {
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
	if !idPattern.MatchString(j.ID) {
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

type logChunk struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Offset     int64  `json:"offset"`
	NextOffset int64  `json:"next_offset"`
	Data       string `json:"data"`
	Done       bool   `json:"done"`
}

// collect follows a job through pages until log says done: each round asks status and the
// next piece of the log (limit bytes at most), as a web page polling the job would. It returns
// the reassembled output and the final job object.
func (e *env) collect(id string, limit int, timeout time.Duration) (string, job) {
	e.t.Helper()
	var out strings.Builder
	var offset int64
	poll(e.t, timeout, "job "+id+" to finish with all its output read", func() (bool, string) {
		j := e.status(id)
		for {
			var c logChunk
			e.call(map[string]any{"op": "log", "id": id, "offset": offset, "limit": limit}, &c)
			if len(c.Data) > limit {
				e.t.Fatalf("log --limit %d returned %d bytes", limit, len(c.Data))
			}
			if c.NextOffset < offset {
				e.t.Fatalf("log: next_offset %d went back from %d", c.NextOffset, offset)
			}
			out.WriteString(c.Data)
			offset = c.NextOffset
			if c.Done {
				return true, ""
			}
			if c.Data == "" { // caught up: ask again on the next round
				return false, fmt.Sprintf("state %s (log %s), %d bytes so far", j.State, c.State, out.Len())
			}
		}
	})
	j := e.status(id)
	if !finished(j.State) {
		e.t.Errorf("log said done but status says %v", j)
	}
	return out.String(), j
}

// ---------------------------------------------------------------------------------------------
// cmesh-run run directly as www-data (when no pool is up, and for cleanup)

func (e *env) direct(args ...string) (stdout, stderr string, exit int) {
	return e.asWebUser(e.bin, append([]string{"--state-dir", e.stateDir}, args...)...)
}

// asWebUser runs a program as www-data with a minimal environment.
func (e *env) asWebUser(prog string, args ...string) (stdout, stderr string, exit int) {
	cmd := exec.Command(prog, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(e.uid), Gid: uint32(e.gid), Groups: []uint32{uint32(e.gid)},
	}}
	cmd.Env = []string{"HOME=/var/www", "USER=www-data", "LOGNAME=www-data", "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		exit = ee.ExitCode()
	default:
		e.t.Fatalf("run %s: %v", prog, err)
	}
	return o.String(), s.String(), exit
}

func (e *env) directStatus(id string) job {
	e.t.Helper()
	out, errOut, code := e.direct("status", "--json", id)
	var j job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil {
		e.t.Fatalf("cmesh-run status --json %s as www-data: exit %d, stdout %q, stderr %q", id, code, out, errOut)
	}
	return j
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
		if code != 0 || json.Unmarshal([]byte(out), &j) != nil || finished(j.State) {
			continue
		}
		if _, _, code := e.direct("cancel", "--grace", "1s", id); code == 0 || j.PID == nil {
			continue
		}
		for _, pid := range jobProcesses(*j.PID) {
			if comm, _, err := procStat(pid); err == nil && comm != "atd" {
				e.t.Logf("cleanup: cancel of %s failed, killing its process %d (%s)", id, pid, comm)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Processes, descriptors, files

// waitGone waits until pid no longer exists.
func waitGone(t *testing.T, pid int, what string, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, fmt.Sprintf("%s (pid %d) to be gone", what, pid), func() (bool, string) {
		return !alive(pid), ""
	})
}

// procStat returns a process's command name and parent PID.
func procStat(pid int) (comm string, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, fmt.Errorf("odd /proc/%d/stat %q", pid, s)
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 2 {
		return "", 0, fmt.Errorf("odd /proc/%d/stat %q", pid, s)
	}
	ppid, err = strconv.Atoi(fields[1])
	return s[open+1 : end], ppid, err
}

// jobProcesses returns the job's process, the processes above it up to (not including) atd,
// and everything below it.
func jobProcesses(pid int) []int {
	procs := []int{pid}
	for p := pid; ; {
		_, ppid, err := procStat(p)
		if err != nil || ppid <= 1 {
			break
		}
		comm, _, err := procStat(ppid)
		if err != nil || comm == "atd" {
			break
		}
		procs = append(procs, ppid)
		p = ppid
	}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := procStat(p); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			procs = append(procs, c)
			queue = append(queue, c)
		}
	}
	return procs
}

// poll calls check every 100 ms until it returns true, failing t after timeout with the last
// reason check gave.
func poll(t *testing.T, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	itest.PollEvery(t, 100*time.Millisecond, timeout, what, check)
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
