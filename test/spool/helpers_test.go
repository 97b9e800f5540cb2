//go:build integration

// Package spool runs cmesh-run's spool backend (worker under a real supervisord, drain), its
// direct backend and the PHP client's spool mode through real PHP-FPM pools:
//
//	CMESH_RUN_BIN=/abs/path/to/cmesh-run go test -tags integration -count=1 -v ./test/spool/
//
// Needs root, php-fpm8.2, php (CLI), cgi-fcgi (libfcgi-bin), at with a running atd (for the
// latency table only) and supervisor, which is installed with apt-get when missing. Without
// them the tests skip loudly; with CMESH_RUN_REQUIRE_INTEGRATION=1 they fail instead.
//
// Nothing in /etc is touched: the pools and supervisord get config files in each test's own
// temp tree, jobs run as www-data (direct backend), nobody (the spool worker's user) or root.
//
// Who runs the spool worker: nobody, the way `cmesh-run setup --run-as USER` lays it out. The
// state dir is nobody:www-data 2750, so the pool's user can read every record and output file
// (group, inherited through setgid) and write only spool/incoming (0770, made by the worker);
// it cannot write spool/queue, whose scripts the worker runs. A state dir writable by
// www-data (2770) or a worker running as www-data would let the web user hand the worker
// scripts directly, past the request checks; nobody avoids creating a user in /etc/passwd.
package spool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
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
	poll         = itest.Poll
	sharedKind   = itest.SharedKind
)

const (
	fpmBin        = "/usr/sbin/php-fpm8.2"
	phpBin        = "/usr/bin/php"
	cgiFcgi       = "/usr/bin/cgi-fcgi"
	supervisord   = "/usr/bin/supervisord"
	supervisorctl = "/usr/bin/supervisorctl"
	atBin         = "/usr/bin/at"
	atdPID        = "/run/atd.pid"
	webUser       = "www-data"
	workerUser    = "nobody"

	// disabled is what a locked-down pool's php_admin_value[disable_functions] lists.
	disabled = "exec,shell_exec,system,passthru,proc_open,popen"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ---------------------------------------------------------------------------------------------
// Preconditions

var (
	skipBannerOnce sync.Once
	supervisorOnce sync.Once
	supervisorErr  error
)

type need int

const (
	needFPM need = 1 << iota
	needSupervisor
	needAt
)

// requireIntegration returns the cmesh-run binary under test, or skips (fails with
// CMESH_RUN_REQUIRE_INTEGRATION=1) when this machine cannot run the test.
func requireIntegration(t *testing.T, needs need) string {
	t.Helper()
	err := checkPrerequisites(needs)
	if err == nil && needs&needSupervisor != 0 {
		supervisorOnce.Do(func() { supervisorErr = ensureSupervisor(t) })
		err = supervisorErr
	}
	if err != nil {
		msg := "SPOOL INTEGRATION TESTS NOT RUN: " + err.Error()
		if os.Getenv("CMESH_RUN_REQUIRE_INTEGRATION") == "1" {
			t.Fatal(msg + " (CMESH_RUN_REQUIRE_INTEGRATION=1)")
		}
		skipBannerOnce.Do(func() {
			fmt.Fprintf(os.Stderr, "\n!!!!!!!! %s\n!!!!!!!! (set CMESH_RUN_REQUIRE_INTEGRATION=1 to make this a failure)\n\n", msg)
		})
		t.Skip(msg)
	}
	return os.Getenv("CMESH_RUN_BIN")
}

func checkPrerequisites(needs need) error {
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
		return errors.New("must run as root (starts php-fpm as www-data, supervisord, workers as nobody)")
	}
	tools := []string{phpBin, "/usr/bin/env"}
	if needs&needFPM != 0 {
		tools = append(tools, fpmBin, cgiFcgi)
	}
	if needs&needAt != 0 {
		tools = append(tools, atBin)
	}
	for _, tool := range tools {
		if fi, err := os.Stat(tool); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is missing (apt-get install php-fpm php-cli libfcgi-bin at)", tool)
		}
	}
	for _, u := range []string{webUser, workerUser} {
		if _, err := user.Lookup(u); err != nil {
			return fmt.Errorf("user %s: %v", u, err)
		}
	}
	if needs&needAt != 0 {
		raw, err := os.ReadFile(atdPID)
		if err != nil {
			return fmt.Errorf("atd is not running: %v (start /usr/sbin/atd)", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || pid <= 0 || !alive(pid) {
			return fmt.Errorf("atd is not running: %s names no live process (start /usr/sbin/atd)", atdPID)
		}
	}
	return nil
}

// ensureSupervisor installs the supervisor package when supervisord is missing (root only;
// the package's service does not start here: a policy blocks it, and no test needs it).
func ensureSupervisor(t *testing.T) error {
	if haveSupervisor() {
		return nil
	}
	t.Logf("supervisor is missing: installing it with apt-get")
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "supervisor")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	out, err := install()
	if err != nil {
		t.Logf("apt-get install supervisor: %v; running apt-get update first", err)
		upd := exec.Command("apt-get", "-o", "DPkg::Lock::Timeout=600", "update")
		upd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if o, err := upd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get update: %v\n%s", err, tailOf(o))
		}
		out, err = install()
	}
	if err != nil || !haveSupervisor() {
		return fmt.Errorf("cannot install supervisor: %v\n%s", err, tailOf(out))
	}
	t.Logf("installed supervisor:\n%s", tailOf(out))
	return nil
}

func haveSupervisor() bool {
	for _, p := range []string{supervisord, supervisorctl} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func tailOf(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// ---------------------------------------------------------------------------------------------
// Users

type account struct {
	name     string
	uid, gid int
	home     string
}

func lookupAccount(t *testing.T, name string) account {
	t.Helper()
	u, err := user.Lookup(name)
	must(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return account{name: name, uid: uid, gid: gid, home: u.HomeDir}
}

// result is what a command printed and how it ended.
type result struct {
	stdout, stderr string
	exit           int
	elapsed        time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.exit, clip(r.stdout), clip(r.stderr))
}

// runAs runs a program as acct (root when acct is nil) with a minimal environment, in dir /.
func runAs(t *testing.T, acct *account, prog string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if acct != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: uint32(acct.uid), Gid: uint32(acct.gid), Groups: []uint32{uint32(acct.gid)},
		}}
		env = append(env, "HOME="+acct.home, "USER="+acct.name, "LOGNAME="+acct.name)
	} else {
		env = append(env, "HOME=/root", "USER=root", "LOGNAME=root")
	}
	cmd.Env = env
	cmd.Dir = "/"
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: o.String(), stderr: e.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		t.Fatalf("run %s %q: %v", prog, args, err)
	}
	return r
}

// runQuiet runs a program as root with a minimal environment, without a *testing.T (for
// goroutines).
func runQuiet(prog string, args ...string) (result, error) {
	cmd := exec.Command(prog, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root", "USER=root", "LOGNAME=root"}
	cmd.Dir = "/"
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: o.String(), stderr: e.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.exit, err = ee.ExitCode(), nil
	}
	return r, err
}

// ---------------------------------------------------------------------------------------------
// The test tree

// world is one test's temp tree: a copy of the binary, the PHP client, pages, a state dir.
type world struct {
	t        *testing.T
	root     string
	bin      string
	www      string
	stateDir string
	config   string // passed with --config to every command: /etc/cmesh-run/config.toml never applies
	web      account
	worker   account
}

func newWorld(t *testing.T, bin string) *world {
	t.Helper()
	root, err := os.MkdirTemp("", "cmesh-spool-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	must(t, os.Chmod(root, 0o755))
	w := &world{
		t: t, root: root,
		bin:      filepath.Join(root, "bin", "cmesh-run"),
		www:      filepath.Join(root, "www"),
		stateDir: filepath.Join(root, "state"),
		config:   filepath.Join(root, "etc", "empty.toml"),
		web:      lookupAccount(t, webUser),
		worker:   lookupAccount(t, workerUser),
	}
	for _, d := range []string{"bin", "php/src", "www", "etc"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	copyFile(t, bin, w.bin, 0o755)
	srcs, err := filepath.Glob("../../php/src/*.php")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("PHP client not found in ../../php/src (%v)", err)
	}
	for _, src := range srcs {
		copyFile(t, src, filepath.Join(root, "php", "src", filepath.Base(src)), 0o644)
	}
	must(t, os.WriteFile(filepath.Join(w.www, "api.php"), []byte(apiPage), 0o644))
	must(t, os.WriteFile(filepath.Join(w.www, "exec.php"), []byte(execPage), 0o644))
	must(t, os.WriteFile(w.config, []byte("# empty: the defaults\n"), 0o644))
	return w
}

// mkdir makes dir with exactly mode and owner.
func (w *world) mkdir(dir string, mode os.FileMode, uid, gid int) {
	w.t.Helper()
	must(w.t, os.MkdirAll(dir, 0o755))
	must(w.t, os.Chown(dir, uid, gid))
	must(w.t, os.Chmod(dir, mode))
}

// writeConfig writes PHP's config.php: how the page builds its Client.
func (w *world) writeConfig(cfg map[string]any) {
	w.t.Helper()
	b, err := json.Marshal(cfg)
	must(w.t, err)
	php := "<?php\nreturn json_decode(" + phpString(string(b)) + ", true);\n"
	must(w.t, os.WriteFile(filepath.Join(w.www, "config.php"), []byte(php), 0o644))
}

// cli runs the test's cmesh-run copy with --config and --state-dir, as acct (root when nil).
func (w *world) cli(acct *account, args ...string) result {
	w.t.Helper()
	return runAs(w.t, acct, w.bin, append([]string{"--config", w.config, "--state-dir", w.stateDir}, args...)...)
}

// job is SPEC.md's job object, with the request it answered (spool requests only).
type job struct {
	itest.Job
	RequestID string `json:"request_id"`
}

func (j job) String() string {
	b, _ := json.Marshal(j)
	return string(b)
}

// status is `cmesh-run status --json ID` as acct.
func (w *world) status(acct *account, id string) job {
	w.t.Helper()
	r := w.cli(acct, "status", "--json", id)
	var j job
	if r.exit != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil || j.ID != id {
		w.t.Fatalf("status --json %s: %v", id, r)
	}
	return j
}

// schedule is `cmesh-run schedule --json ARGS` as acct; it must succeed.
func (w *world) schedule(acct *account, args ...string) job {
	w.t.Helper()
	r := w.cli(acct, append([]string{"schedule", "--json"}, args...)...)
	var j job
	if r.exit != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil || !idPattern.MatchString(j.ID) {
		w.t.Fatalf("schedule %q: %v", args, r)
	}
	return j
}

// waitFinished polls status until the job has finished. A spool job must
// never read "lost" on its way to running: that state is final.
func (w *world) waitFinished(acct *account, id string, timeout time.Duration) job {
	w.t.Helper()
	var j job
	poll(w.t, timeout, "job "+id+" to finish", func() (bool, string) {
		j = w.status(acct, id)
		return finished(j.State), j.String()
	})
	return j
}

// record reads a job's record as root: the job object plus the nonce of its markers.
func (w *world) record(id string) (job, string) {
	w.t.Helper()
	raw, err := os.ReadFile(filepath.Join(w.stateDir, "jobs", id+".json"))
	must(w.t, err)
	var j job
	var priv struct {
		Nonce string `json:"nonce"`
	}
	must(w.t, json.Unmarshal(raw, &j))
	must(w.t, json.Unmarshal(raw, &priv))
	if priv.Nonce == "" {
		w.t.Fatalf("record of %s has no nonce: %s", id, raw)
	}
	return j, priv.Nonce
}

// startMarkers counts the start markers of each attempt in a job's output file.
func (w *world) startMarkers(id string) (map[int]int, []byte) {
	w.t.Helper()
	_, nonce := w.record(id)
	out, err := os.ReadFile(filepath.Join(w.stateDir, "jobs", id+".out"))
	must(w.t, err)
	re := regexp.MustCompile(`\n\[cmesh-run:` + regexp.QuoteMeta(nonce) + ` start attempt=(\d+) `)
	counts := map[int]int{}
	for _, m := range re.FindAllSubmatch(out, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		counts[n]++
	}
	return counts, out
}

// checkOneStart fails t unless the job's output holds exactly one start marker, for attempt 1.
func (w *world) checkOneStart(id string) {
	w.t.Helper()
	counts, out := w.startMarkers(id)
	if len(counts) != 1 || counts[1] != 1 {
		w.t.Errorf("job %s: start markers per attempt %v, want exactly one for attempt 1; output:\n%q", id, counts, clip(string(out)))
	}
}

// log is the job's whole output without markers, as root through the CLI.
func (w *world) log(id string) string {
	w.t.Helper()
	r := w.cli(nil, "log", id)
	if r.exit != 0 {
		w.t.Fatalf("log %s: %v", id, r)
	}
	return r.stdout
}

// ---------------------------------------------------------------------------------------------
// PHP-FPM

type pool struct {
	w    *world
	dir  string
	conf string
	sock string
	log  string
	proc *fpmProc
}

type fpmProc struct {
	cmd  *exec.Cmd
	pid  int // master; also the process group ID
	done chan struct{}
}

// newPool writes a pool config in dir: www-data, clear_env, and disable_functions when set.
func (w *world) newPool(name, disableFunctions string) *pool {
	p := &pool{w: w, dir: filepath.Join(w.root, "fpm-"+name)}
	must(w.t, os.MkdirAll(p.dir, 0o755))
	p.conf = filepath.Join(p.dir, "fpm.conf")
	p.sock = filepath.Join(p.dir, "app.sock")
	p.log = filepath.Join(p.dir, "fpm.log")
	conf := fmt.Sprintf(`[global]
pid = %[1]s/fpm.pid
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
request_terminate_timeout = 30s
clear_env = yes
catch_workers_output = yes
`, p.dir, p.log, p.sock)
	if disableFunctions != "" {
		conf += "php_admin_value[disable_functions] = " + disableFunctions + "\n"
	}
	must(w.t, os.WriteFile(p.conf, []byte(conf), 0o644))
	w.t.Cleanup(func() {
		if w.t.Failed() {
			if b, err := os.ReadFile(p.log); err == nil {
				w.t.Logf("php-fpm log of pool %s:\n%s", name, tailOf(b))
			}
		}
	})
	return p
}

// start starts the pool in its own process group and waits until it answers.
func (p *pool) start() *fpmProc {
	t := p.w.t
	t.Helper()
	if out, err := exec.Command(fpmBin, "-t", "-y", p.conf).CombinedOutput(); err != nil {
		t.Fatalf("%s -t -y %s: %v\n%s", fpmBin, p.conf, err, out)
	}
	os.Remove(p.sock)
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	cmd := exec.Command(fpmBin, "-F", "-y", p.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	f := &fpmProc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { cmd.Wait(); close(f.done) }()
	t.Cleanup(f.stop)
	p.proc = f
	poll(t, 10*time.Second, "php-fpm to listen on "+p.sock, func() (bool, string) {
		if f.exited() {
			t.Fatalf("php-fpm exited at start: %v", cmd.ProcessState)
		}
		c, err := net.Dial("unix", p.sock)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return f
}

func (f *fpmProc) exited() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the master to exit and then for its whole process group to be gone.
func (f *fpmProc) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, "php-fpm master and workers to exit", func() (bool, string) {
		if !f.exited() {
			return false, "master still running"
		}
		if err := syscall.Kill(-f.pid, 0); err == nil {
			return false, fmt.Sprintf("process group %d not empty: %v", f.pid, groupMembers(f.pid))
		}
		return true, ""
	})
}

// stop ends the pool by its PID, then kills whatever is left in its process group.
func (f *fpmProc) stop() {
	if !f.exited() {
		syscall.Kill(f.pid, syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(5 * time.Second):
		}
	}
	if syscall.Kill(-f.pid, 0) == nil {
		syscall.Kill(-f.pid, syscall.SIGKILL)
	}
	<-f.done
}

type response struct {
	status  int
	body    []byte
	stderr  string
	elapsed time.Duration
	err     error
}

// request sends one FastCGI request for page (api.php, exec.php), as a web server would.
func (p *pool) request(page string, req map[string]any, timeout time.Duration) response {
	q, err := json.Marshal(req)
	must(p.w.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/env", "-i",
		"SCRIPT_FILENAME="+filepath.Join(p.w.www, page),
		"SCRIPT_NAME=/"+page,
		"REQUEST_METHOD=GET",
		"QUERY_STRING="+url.Values{"req": {string(q)}}.Encode(),
		cgiFcgi, "-bind", "-connect", p.sock)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	r := response{elapsed: time.Since(start), status: 200, stderr: stderr.String()}
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
		if strings.EqualFold(strings.TrimSpace(k), "status") {
			r.status, _ = strconv.Atoi(strings.Fields(v + " 0")[0])
		}
	}
	return r
}

// apiResult is api.php's answer.
type apiResult struct {
	OK     bool              `json:"ok"`
	PID    int               `json:"pid"`
	FDs    map[string]string `json:"fds"`
	Result json.RawMessage   `json:"result"`
	Error  *struct {
		Code       string `json:"code"`
		ExitStatus int    `json:"exit_status"`
		Message    string `json:"message"`
		Hint       string `json:"hint"`
	} `json:"error"`
	Disabled map[string]bool `json:"disabled"`
	Seconds  float64         `json:"seconds"`

	raw     []byte
	elapsed time.Duration
}

// api sends a request to api.php; ok may be false (a CmeshRunException), but the page must
// have answered.
func (p *pool) api(req map[string]any) apiResult {
	p.w.t.Helper()
	r := p.request("api.php", req, 30*time.Second)
	if r.err != nil || r.status != 200 {
		p.w.t.Fatalf("request %v: status %d, err %v, body %q", req, r.status, r.err, r.body)
	}
	var a apiResult
	if err := json.Unmarshal(r.body, &a); err != nil {
		p.w.t.Fatalf("request %v: bad JSON %q: %v", req, r.body, err)
	}
	a.raw, a.elapsed = r.body, r.elapsed
	return a
}

// call is api for a call that must succeed; it decodes the result into out (when not nil).
func (p *pool) call(req map[string]any, out any) apiResult {
	p.w.t.Helper()
	a := p.api(req)
	if !a.OK {
		p.w.t.Fatalf("request %v failed: %s", req, a.raw)
	}
	if out != nil {
		if err := json.Unmarshal(a.Result, out); err != nil {
			p.w.t.Fatalf("request %v: result %s: %v", req, a.Result, err)
		}
	}
	return a
}

type logChunk struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Offset     int64  `json:"offset"`
	NextOffset int64  `json:"next_offset"`
	Data       string `json:"data"`
	Done       bool   `json:"done"`
}

// collect follows a job through pages until log says done, as a web page polling the job
// would: each round asks status, then the log from the last next_offset, limit bytes at a
// time. It returns the reassembled output, the final job object and the states seen.
func (p *pool) collect(id string, limit int, timeout time.Duration) (string, job, []string) {
	t := p.w.t
	t.Helper()
	var out strings.Builder
	var offset int64
	var states []string
	poll(t, timeout, "job "+id+" to finish with all its output read", func() (bool, string) {
		var j job
		p.call(map[string]any{"op": "status", "id": id}, &j)
		if len(states) == 0 || states[len(states)-1] != j.State {
			states = append(states, j.State)
		}
		for {
			var c logChunk
			p.call(map[string]any{"op": "log", "id": id, "offset": offset, "limit": limit}, &c)
			if len(c.Data) > limit*3 { // U+FFFD is 3 bytes for 1
				t.Fatalf("log limit %d returned %d bytes", limit, len(c.Data))
			}
			if c.NextOffset < offset {
				t.Fatalf("log: next_offset %d went back from %d", c.NextOffset, offset)
			}
			out.WriteString(c.Data)
			offset = c.NextOffset
			if c.Done {
				return true, ""
			}
			if c.Data == "" {
				return false, fmt.Sprintf("state %s (log %s), %d bytes so far", j.State, c.State, out.Len())
			}
		}
	})
	var j job
	p.call(map[string]any{"op": "status", "id": id}, &j)
	if !finished(j.State) {
		t.Errorf("log said done but status says %v", j)
	}
	return out.String(), j, states
}

// apiPage runs one Client method given as JSON in ?req= and answers with JSON. config.php
// says how to build the client (exec or spool mode).
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
$disabled = [];
foreach (['exec', 'shell_exec', 'system', 'passthru', 'proc_open', 'popen'] as $f) {
    $disabled[$f] = !function_exists($f);
}
$out = ['pid' => getmypid(), 'fds' => $fds, 'disabled' => $disabled];
try {
    $client = new Client(
        binary: $cfg['binary'] ?? '/usr/local/bin/cmesh-run',
        stateDir: $cfg['state_dir'],
        env: $cfg['env'] ?? [],
        mode: $cfg['mode'] ?? 'exec',
        spoolTimeout: (float) ($req['spool_timeout'] ?? $cfg['spool_timeout'] ?? 10),
    );
    $id = (string) ($req['id'] ?? '');
    $out['result'] = match ($req['op'] ?? '') {
        'schedule' => $client->schedule($req['argv'] ?? [], $req['options'] ?? []),
        'status' => $client->status($id),
        'log' => $client->log($id, (int) ($req['offset'] ?? 0), (int) ($req['limit'] ?? 1048576)),
        'wait' => $client->wait($id, isset($req['timeout']) ? (float) $req['timeout'] : null),
        'cancel' => $client->cancel($id),
        'result' => $client->result((string) ($req['request_id'] ?? '')),
        'probe' => null,
    };
    $out['ok'] = true;
} catch (CmeshRunException $e) {
    $out['ok'] = false;
    $out['error'] = ['code' => $e->getErrorCode(), 'exit_status' => $e->getExitStatus(), 'message' => $e->getMessage(), 'hint' => $e->getHint()];
}
$out['seconds'] = microtime(true) - $t0;
header('Content-Type: application/json');
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
`

// execPage calls exec(), which a locked-down pool does not have.
const execPage = `<?php
echo "before\n";
echo exec('/bin/echo exec works'), "\n";
`

// ---------------------------------------------------------------------------------------------
// supervisord

type supervisor struct {
	w       *world
	dir     string
	conf    string
	sock    string
	cmd     *exec.Cmd
	pid     int
	done    chan struct{}
	program string // the [program:cmesh-run-worker] section as used
}

// workerProgram returns the [program:cmesh-run-worker] section that `cmesh-run setup
// --supervisor FILE` prints (without --write it only prints), adapted to the test: the worker
// gets the test's config with --config (and --log-level info), and logs to a file in the
// temp tree instead of syslog (no syslog daemon here).
func (w *world) workerProgram(configFile, logFile string) (printed, used string) {
	t := w.t
	t.Helper()
	target := filepath.Join(w.root, "sup", "cmesh-run-worker.conf")
	r := w.cli(nil, "setup", "--web-user", webUser, "--run-as", w.worker.name, "--binary", w.bin, "--supervisor", target)
	if r.exit != 0 {
		t.Fatalf("setup --supervisor: %v", r)
	}
	if _, err := os.Stat(target); err == nil {
		t.Fatalf("setup without --write wrote %s", target)
	}
	// install -D -m 0644 /dev/stdin 'TARGET' <<'EOF'\n...EOF
	start := strings.Index(r.stdout, "/dev/stdin '"+target+"' <<'EOF'\n")
	if start < 0 {
		t.Fatalf("setup --supervisor %s printed no step for it:\n%s", target, r.stdout)
	}
	body := r.stdout[start:]
	body = body[strings.Index(body, "\n")+1:]
	end := strings.Index(body, "EOF\n")
	if end < 0 {
		t.Fatalf("setup --supervisor: unterminated here-document:\n%s", r.stdout)
	}
	printed = body[:end]
	wantCmd := "command=" + w.bin + " --state-dir " + w.stateDir + " worker\n"
	if !strings.Contains(printed, "[program:cmesh-run-worker]\n") || !strings.Contains(printed, wantCmd) ||
		!strings.Contains(printed, "user="+w.worker.name+"\n") {
		t.Fatalf("setup's program section lacks the section header, %q or user=%s:\n%s", wantCmd, w.worker.name, printed)
	}
	used = strings.Replace(printed, wantCmd,
		"command="+w.bin+" --config "+configFile+" --log-level info --state-dir "+w.stateDir+" worker\n", 1)
	used = regexp.MustCompile(`(?m)^stdout_logfile=.*$`).ReplaceAllString(used, "stdout_logfile="+logFile)
	return printed, used
}

// startSupervisor writes a supervisord config around the worker's program section and starts
// `supervisord -c CONF -n` in its own process group; it waits until the worker runs.
func (w *world) startSupervisor(configFile string) *supervisor {
	t := w.t
	t.Helper()
	s := &supervisor{w: w, dir: filepath.Join(w.root, "sup")}
	must(t, os.MkdirAll(s.dir, 0o755))
	s.conf = filepath.Join(s.dir, "supervisord.conf")
	s.sock = filepath.Join(s.dir, "supervisor.sock")
	workerLog := filepath.Join(s.dir, "worker.log")
	printed, used := w.workerProgram(configFile, workerLog)
	s.program = used
	t.Logf("setup printed this program section (used with --config, --log-level info, stdout_logfile=%s):\n%s", workerLog, printed)
	conf := fmt.Sprintf(`[supervisord]
logfile=%[1]s/supervisord.log
pidfile=%[1]s/supervisord.pid
childlogdir=%[1]s
user=root

[unix_http_server]
file=%[2]s
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%[2]s

%[3]s`, s.dir, s.sock, used)
	must(t, os.WriteFile(s.conf, []byte(conf), 0o600))
	logf, err := os.OpenFile(filepath.Join(s.dir, "supervisord.out"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	cmd := exec.Command(supervisord, "-c", s.conf, "-n")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	s.cmd, s.pid, s.done = cmd, cmd.Process.Pid, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"supervisord.log", "supervisord.out", "worker.log"} {
				if b, err := os.ReadFile(filepath.Join(s.dir, f)); err == nil {
					t.Logf("%s:\n%s", f, tailOf(b))
				}
			}
		}
	})
	s.waitWorker(0, 15*time.Second)
	return s
}

// ctl runs supervisorctl -c CONF ARGS.
func (s *supervisor) ctl(args ...string) result {
	s.w.t.Helper()
	return runAs(s.w.t, nil, supervisorctl, append([]string{"-c", s.conf}, args...)...)
}

// workerPID is the worker's PID as supervisorctl reports it (0 when it is not running).
func (s *supervisor) workerPID() int {
	s.w.t.Helper()
	r := s.ctl("pid", "cmesh-run-worker")
	pid, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil {
		return 0
	}
	return pid
}

// waitWorker waits until supervisor says the worker runs with a PID other than old, and that
// process holds the spool's lock; it returns the PID.
func (s *supervisor) waitWorker(old int, timeout time.Duration) int {
	t := s.w.t
	t.Helper()
	var pid int
	poll(t, timeout, "the worker to run under supervisord", func() (bool, string) {
		select {
		case <-s.done:
			t.Fatalf("supervisord exited: %v", s.cmd.ProcessState)
		default:
		}
		st := s.ctl("status", "cmesh-run-worker")
		if !strings.Contains(st.stdout, "RUNNING") {
			return false, st.String()
		}
		pid = s.workerPID()
		if pid <= 0 || pid == old || !alive(pid) {
			return false, fmt.Sprintf("pid %d (old %d)", pid, old)
		}
		if !holdsLock(pid, filepath.Join(s.w.stateDir, "private", "worker.lock")) {
			return false, fmt.Sprintf("worker %d does not hold the spool's lock yet", pid)
		}
		return true, ""
	})
	return pid
}

// stop ends supervisord by its PID (it stops the worker first), then whatever is left in its
// process group.
func (s *supervisor) stop() {
	select {
	case <-s.done:
	default:
		syscall.Kill(s.pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
		}
	}
	if syscall.Kill(-s.pid, 0) == nil {
		syscall.Kill(-s.pid, syscall.SIGKILL)
	}
	<-s.done
}

// holdsLock reports whether process pid has file path open (the worker keeps its lock open).
func holdsLock(pid int, path string) bool {
	for _, target := range fdLinks(pid) {
		if target == path {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------------------------
// Processes, descriptors

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

// jobProcesses returns pid, its ancestors below PID 1 and everything below it.
func jobProcesses(pid int) []int {
	procs := []int{pid}
	for p := pid; ; {
		_, ppid, err := procStat(p)
		if err != nil || ppid <= 1 {
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

// ---------------------------------------------------------------------------------------------
// Small things

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func clip(s string) string {
	if len(s) > 600 {
		return s[:300] + " ... " + s[len(s)-300:]
	}
	return s
}

// ---------------------------------------------------------------------------------------------
// The spool layout of a locked-down site

// spoolSite is what `cmesh-run setup --run-as nobody` describes, in the test's tree: the state
// dir nobody:www-data 2750, a root-owned config with the build profile, the build script.
type spoolSite struct {
	config   string // the worker's --config
	auditLog string
	workDir  string
	script   string
}

// buildTarget's output: progress lines with UTF-8, a fake marker line (the nonce is not the
// job's), the value of BUILD_MODE, and a last line without newline.
const buildScript = `#!/bin/sh
target="$1"
printf 'mode=%s\n' "${BUILD_MODE:-none}"
i=0
while [ "$i" -lt 25 ]; do
  printf 'building %s: step %02d \342\234\223 caf\303\251\n' "$target" "$i"
  i=$((i+1))
  sleep 0.1
done
printf '\n[cmesh-run:0123456789abcdef0123456789abcdef end attempt=1 exit=9 time=2026-01-01T00:00:00Z]\n'
printf 'done %s, no newline at the end' "$target"
`

// buildOutput is what buildScript prints.
func buildOutput(target, mode string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode=%s\n", mode)
	for i := 0; i < 25; i++ {
		fmt.Fprintf(&b, "building %s: step %02d ✓ café\n", target, i)
	}
	b.WriteString("\n[cmesh-run:0123456789abcdef0123456789abcdef end attempt=1 exit=9 time=2026-01-01T00:00:00Z]\n")
	fmt.Fprintf(&b, "done %s, no newline at the end", target)
	return b.String()
}

func (w *world) spoolSite() spoolSite {
	t := w.t
	t.Helper()
	s := spoolSite{
		config:   filepath.Join(w.root, "etc", "config.toml"),
		auditLog: filepath.Join(w.root, "audit", "audit.log"),
		workDir:  filepath.Join(w.root, "work"),
		script:   filepath.Join(w.root, "scripts", "build.sh"),
	}
	// As setup's step says: install -d -m 2750 -o nobody -g www-data STATE_DIR.
	w.mkdir(w.stateDir, 0o750|os.ModeSetgid, w.worker.uid, w.web.gid)
	w.mkdir(filepath.Dir(s.auditLog), 0o750, w.worker.uid, w.worker.gid)
	w.mkdir(s.workDir, 0o755, 0, 0)
	w.mkdir(filepath.Dir(s.script), 0o755, 0, 0)
	must(t, os.WriteFile(s.script, []byte(buildScript), 0o755))
	config := fmt.Sprintf(`# the worker's config: requests are checked as under sudo
allow_free_commands = false
audit_log = %q
workdir = %q

[profiles.build]
command = ["/bin/sh", %q, "{target}"]
args = { target = "^[a-z0-9-]+$" }
name = "build-{target}"
allow_env = ["BUILD_MODE"]
`, s.auditLog, s.workDir, s.script)
	must(t, os.WriteFile(s.config, []byte(config), 0o644))
	if r := runAs(t, nil, w.bin, "--config", s.config, "config", "check"); r.exit != 0 {
		t.Logf("config check %s: %v", s.config, r)
	}
	t.Cleanup(w.killLeftovers)
	return s
}

// killLeftovers kills the processes of jobs a failed test left unfinished: the wrapper and the
// job's process group, each only when its start time is still the recorded one.
func (w *world) killLeftovers() {
	paths, _ := filepath.Glob(filepath.Join(w.stateDir, "jobs", "*.json"))
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r struct {
			State        string `json:"state"`
			PID          *int   `json:"pid"`
			PIDStart     uint64 `json:"pid_start"`
			WrapperPID   int    `json:"wrapper_pid"`
			WrapperStart uint64 `json:"wrapper_start"`
		}
		if json.Unmarshal(raw, &r) != nil || finished(r.State) {
			continue
		}
		if r.WrapperPID > 0 && procStart(r.WrapperPID) == r.WrapperStart {
			syscall.Kill(r.WrapperPID, syscall.SIGKILL)
		}
		if r.PID != nil && *r.PID > 0 && procStart(*r.PID) == r.PIDStart {
			syscall.Kill(-*r.PID, syscall.SIGKILL)
			syscall.Kill(*r.PID, syscall.SIGKILL)
		}
	}
}

// procStart is field 22 of /proc/PID/stat, 0 when there is no such process.
func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// php runs a PHP CLI script with the client in spool mode for the test's state dir, as root;
// the script gets $c (the client) and $args (JSON), and its return value is printed as JSON.
func (w *world) php(body string, args any) json.RawMessage {
	w.t.Helper()
	a, err := json.Marshal(args)
	must(w.t, err)
	script := `<?php
declare(strict_types=1);
require ` + phpString(filepath.Join(w.root, "php", "src", "CmeshRunException.php")) + `;
require ` + phpString(filepath.Join(w.root, "php", "src", "Client.php")) + `;
$c = new Cmesh\Run\Client(stateDir: ` + phpString(w.stateDir) + `, mode: 'spool');
$args = json_decode($argv[1], true);
$f = function ($c, $args) { ` + body + ` };
try {
    echo json_encode(['ok' => true, 'result' => $f($c, $args)], JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\n";
} catch (Cmesh\Run\CmeshRunException $e) {
    echo json_encode(['ok' => false, 'code' => $e->getErrorCode(), 'message' => $e->getMessage()]), "\n";
}
`
	path := filepath.Join(w.root, fmt.Sprintf("cli-%d.php", time.Now().UnixNano()))
	must(w.t, os.WriteFile(path, []byte(script), 0o644))
	defer os.Remove(path)
	r := runAs(w.t, nil, phpBin, "-d", "display_errors=stderr", path, string(a))
	var out struct {
		OK      bool            `json:"ok"`
		Result  json.RawMessage `json:"result"`
		Code    string          `json:"code"`
		Message string          `json:"message"`
	}
	if r.exit != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		w.t.Fatalf("php: %v", r)
	}
	if !out.OK {
		w.t.Fatalf("php: CmeshRunException %s: %s", out.Code, out.Message)
	}
	return out.Result
}
