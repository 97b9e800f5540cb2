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
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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

const (
	supervisord   = "/usr/bin/supervisord"
	supervisorctl = "/usr/bin/supervisorctl"
	workerUser    = "nobody"

	// disabled is what a locked-down pool's php_admin_value[disable_functions] lists.
	disabled = "exec,shell_exec,system,passthru,proc_open,popen"
)

// ---------------------------------------------------------------------------------------------
// Preconditions

var (
	supervisorOnce sync.Once
	supervisorErr  error
)

// need is what a test needs beyond the binary, root, php and the two users.
type need int

const (
	needFPM need = 1 << iota
	needSupervisor
	needAt
)

// requireIntegration returns the cmesh-run binary under test, or skips (fails with
// CMESH_RUN_REQUIRE_INTEGRATION=1) when this machine cannot run the test.
func requireIntegration(t *testing.T, extra need) string {
	t.Helper()
	n := itest.Needs{
		Binary:  true,
		Root:    "starts php-fpm as www-data, supervisord, workers as nobody",
		Tools:   []string{itest.PHPBin, itest.EnvBin},
		Install: "php-fpm php-cli libfcgi-bin at",
		Users:   []string{itest.WebUser, workerUser},
		Atd:     extra&needAt != 0,
	}
	if extra&needFPM != 0 {
		n.Tools = append(n.Tools, itest.FPMBin, itest.CGIFcgi)
	}
	if extra&needAt != 0 {
		n.Tools = append(n.Tools, itest.AtBin)
	}
	if extra&needSupervisor != 0 {
		n.Checks = append(n.Checks, func() error {
			supervisorOnce.Do(func() { supervisorErr = ensureSupervisor(t) })
			return supervisorErr
		})
	}
	return itest.Require(t, "spool", n)
}

// ensureSupervisor installs the supervisor package when supervisord is missing (root only;
// the package's service does not start here: a policy blocks it, and no test needs it).
func ensureSupervisor(t *testing.T) error {
	missing := itest.Missing([]itest.Need{{File: supervisord, Pkg: "supervisor"}, {File: supervisorctl, Pkg: "supervisor"}})
	if len(missing) == 0 {
		return nil
	}
	t.Logf("supervisor is missing: installing it with apt-get")
	out, err := itest.AptInstall(missing...)
	if err != nil {
		return fmt.Errorf("cannot install supervisor: %v", err)
	}
	t.Logf("installed supervisor:\n%s", out)
	return nil
}

// ---------------------------------------------------------------------------------------------
// Running programs

// result is what a command printed and how it ended.
type result struct {
	stdout, stderr string
	exit           int
	elapsed        time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.exit, itest.Clip(r.stdout), itest.Clip(r.stderr))
}

// asUser makes cmd run as acct (root when nil) with a minimal environment, in dir /.
func asUser(cmd *exec.Cmd, acct *itest.Account) {
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if acct != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: acct.Credential()}
		env = append(env, "HOME="+acct.Home, "USER="+acct.Name, "LOGNAME="+acct.Name)
	} else {
		env = append(env, "HOME=/root", "USER=root", "LOGNAME=root")
	}
	cmd.Env = env
	cmd.Dir = "/"
}

// run runs cmd to its end (itest.Run): the error says it did not.
func run(cmd *exec.Cmd) (result, error) {
	r, err := itest.Run(cmd)
	return result{stdout: r.Stdout, stderr: r.Stderr, exit: r.Exit, elapsed: r.Elapsed}, err
}

// runAs runs a program as acct (root when acct is nil) with a minimal environment, in dir /.
func runAs(t *testing.T, acct *itest.Account, prog string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	asUser(cmd, acct)
	r, err := run(cmd)
	if err != nil {
		t.Fatalf("run %s %q: %v", prog, args, err)
	}
	return r
}

// runQuiet runs a program as root with a minimal environment, without a *testing.T (for
// goroutines).
func runQuiet(prog string, args ...string) (result, error) {
	cmd := exec.Command(prog, args...)
	asUser(cmd, nil)
	return run(cmd)
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
	web      itest.Account
	worker   itest.Account
}

func newWorld(t *testing.T, bin string) *world {
	t.Helper()
	root, err := os.MkdirTemp("", "cmesh-spool-")
	itest.Must(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	itest.Must(t, os.Chmod(root, 0o755))
	w := &world{
		t: t, root: root,
		bin:      filepath.Join(root, "bin", "cmesh-run"),
		www:      filepath.Join(root, "www"),
		stateDir: filepath.Join(root, "state"),
		config:   filepath.Join(root, "etc", "empty.toml"),
		web:      itest.LookupAccount(t, itest.WebUser),
		worker:   itest.LookupAccount(t, workerUser),
	}
	for _, d := range []string{"bin", "www", "etc"} {
		itest.Must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	itest.CopyFile(t, bin, w.bin, 0o755)
	itest.CopyPHPClient(t, root)
	itest.WriteAPIPage(t, w.www)
	itest.Must(t, os.WriteFile(filepath.Join(w.www, "exec.php"), []byte(execPage), 0o644))
	itest.Must(t, os.WriteFile(w.config, []byte("# empty: the defaults\n"), 0o644))
	return w
}

// mkdir makes dir with exactly mode and owner.
func (w *world) mkdir(dir string, mode os.FileMode, uid, gid int) {
	w.t.Helper()
	itest.Must(w.t, os.MkdirAll(dir, 0o755))
	itest.Must(w.t, os.Chown(dir, uid, gid))
	itest.Must(w.t, os.Chmod(dir, mode))
}

// cli runs the test's cmesh-run copy with --config and --state-dir, as acct (root when nil).
func (w *world) cli(acct *itest.Account, args ...string) result {
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
func (w *world) status(acct *itest.Account, id string) job {
	w.t.Helper()
	r := w.cli(acct, "status", "--json", id)
	var j job
	if r.exit != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil || j.ID != id {
		w.t.Fatalf("status --json %s: %v", id, r)
	}
	return j
}

// schedule is `cmesh-run schedule --json ARGS` as acct; it must succeed.
func (w *world) schedule(acct *itest.Account, args ...string) job {
	w.t.Helper()
	r := w.cli(acct, append([]string{"schedule", "--json"}, args...)...)
	var j job
	if r.exit != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil || !itest.IDPattern.MatchString(j.ID) {
		w.t.Fatalf("schedule %q: %v", args, r)
	}
	return j
}

// waitFinished polls status until the job has finished. A spool job must
// never read "lost" on its way to running: that state is final.
func (w *world) waitFinished(acct *itest.Account, id string, timeout time.Duration) job {
	w.t.Helper()
	var j job
	itest.Poll(w.t, timeout, "job "+id+" to finish", func() (bool, string) {
		j = w.status(acct, id)
		return itest.Finished(j.State), j.String()
	})
	return j
}

// record reads a job's record as root: the job object plus the nonce of its markers.
func (w *world) record(id string) (job, string) {
	w.t.Helper()
	raw, err := os.ReadFile(filepath.Join(w.stateDir, "jobs", id+".json"))
	itest.Must(w.t, err)
	var j job
	var priv struct {
		Nonce string `json:"nonce"`
	}
	itest.Must(w.t, json.Unmarshal(raw, &j))
	itest.Must(w.t, json.Unmarshal(raw, &priv))
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
	itest.Must(w.t, err)
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
		w.t.Errorf("job %s: start markers per attempt %v, want exactly one for attempt 1; output:\n%q", id, counts, itest.Clip(string(out)))
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

// newPool writes the config of a pool in root/fpm-NAME (disable_functions when set) that
// serves the world's pages.
func (w *world) newPool(name, disableFunctions string) *itest.Site {
	settings := []string{"pm.max_children = 2", "request_terminate_timeout = 30s"}
	if disableFunctions != "" {
		settings = append(settings, "php_admin_value[disable_functions] = "+disableFunctions)
	}
	return &itest.Site{Pool: itest.NewPool(w.t, filepath.Join(w.root, "fpm-"+name), itest.PoolConfig{Settings: settings}), WWW: w.www}
}

// execPage calls exec(), which a locked-down pool does not have.
const execPage = `<?php
echo "before\n";
echo exec('/bin/echo exec works'), "\n";
`

// ---------------------------------------------------------------------------------------------
// supervisord

type supervisor struct {
	*itest.Server
	w       *world
	dir     string
	conf    string
	sock    string
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
	r := w.cli(nil, "setup", "--web-user", itest.WebUser, "--run-as", w.worker.Name, "--binary", w.bin, "--supervisor", target)
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
		!strings.Contains(printed, "user="+w.worker.Name+"\n") {
		t.Fatalf("setup's program section lacks the section header, %q or user=%s:\n%s", wantCmd, w.worker.Name, printed)
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
	itest.Must(t, os.MkdirAll(s.dir, 0o755))
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
	itest.Must(t, os.WriteFile(s.conf, []byte(conf), 0o600))
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"supervisord.log", "supervisord.out", "worker.log"} {
				if b, err := os.ReadFile(filepath.Join(s.dir, f)); err == nil {
					t.Logf("%s:\n%s", f, itest.LastLines(string(b), 40))
				}
			}
		}
	})
	// supervisord stops the worker first when it gets SIGTERM.
	cmd := exec.Command(supervisord, "-c", s.conf, "-n")
	cmd.Env = os.Environ()
	s.Server = itest.Start(t, "supervisord", cmd, filepath.Join(s.dir, "supervisord.out"), syscall.SIGTERM)
	s.Grace = 15 * time.Second
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
	itest.Poll(t, timeout, "the worker to run under supervisord", func() (bool, string) {
		if s.Exited() {
			t.Fatalf("supervisord exited: %v", s.Cmd.ProcessState)
		}
		st := s.ctl("status", "cmesh-run-worker")
		if !strings.Contains(st.stdout, "RUNNING") {
			return false, st.String()
		}
		pid = s.workerPID()
		if pid <= 0 || pid == old || !itest.Alive(pid) {
			return false, fmt.Sprintf("pid %d (old %d)", pid, old)
		}
		if !itest.HoldsFile(pid, filepath.Join(s.w.stateDir, "private", "worker.lock")) {
			return false, fmt.Sprintf("worker %d does not hold the spool's lock yet", pid)
		}
		return true, ""
	})
	return pid
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
	w.mkdir(w.stateDir, 0o750|os.ModeSetgid, w.worker.UID, w.web.GID)
	w.mkdir(filepath.Dir(s.auditLog), 0o750, w.worker.UID, w.worker.GID)
	w.mkdir(s.workDir, 0o755, 0, 0)
	w.mkdir(filepath.Dir(s.script), 0o755, 0, 0)
	itest.Must(t, os.WriteFile(s.script, []byte(buildScript), 0o755))
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
	itest.Must(t, os.WriteFile(s.config, []byte(config), 0o644))
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
		if json.Unmarshal(raw, &r) != nil || itest.Finished(r.State) {
			continue
		}
		if r.WrapperPID > 0 && itest.ProcStart(r.WrapperPID) == r.WrapperStart {
			syscall.Kill(r.WrapperPID, syscall.SIGKILL)
		}
		if r.PID != nil && *r.PID > 0 && itest.ProcStart(*r.PID) == r.PIDStart {
			syscall.Kill(-*r.PID, syscall.SIGKILL)
			syscall.Kill(*r.PID, syscall.SIGKILL)
		}
	}
}

// php runs a PHP CLI script with the client in spool mode for the test's state dir, as root;
// the script gets $c (the client) and $args (JSON), and its return value is printed as JSON.
func (w *world) php(body string, args any) json.RawMessage {
	w.t.Helper()
	a, err := json.Marshal(args)
	itest.Must(w.t, err)
	script := `<?php
declare(strict_types=1);
require ` + itest.PHPString(filepath.Join(w.root, "php", "src", "CmeshRunException.php")) + `;
require ` + itest.PHPString(filepath.Join(w.root, "php", "src", "Client.php")) + `;
$c = new Cmesh\Run\Client(stateDir: ` + itest.PHPString(w.stateDir) + `, mode: 'spool');
$args = json_decode($argv[1], true);
$f = function ($c, $args) { ` + body + ` };
try {
    echo json_encode(['ok' => true, 'result' => $f($c, $args)], JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\n";
} catch (Cmesh\Run\CmeshRunException $e) {
    echo json_encode(['ok' => false, 'code' => $e->getErrorCode(), 'message' => $e->getMessage()]), "\n";
}
`
	path := filepath.Join(w.root, fmt.Sprintf("cli-%d.php", time.Now().UnixNano()))
	itest.Must(w.t, os.WriteFile(path, []byte(script), 0o644))
	defer os.Remove(path)
	r := runAs(w.t, nil, itest.PHPBin, "-d", "display_errors=stderr", path, string(a))
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
