//go:build integration

// Package sudo proves the "run-as and lock-down" setup end to end: `cmesh-run setup --write`
// prepares the machine (run-as user, binary, sudo rule, at permission, setgid state dir,
// config), a real PHP-FPM pool (www-data, clear_env=yes) runs jobs through
// `sudo -n -u cmesh-test /usr/local/bin/cmesh-run`, and everything a caller could use to
// escape the root-owned config is refused with exit 5, runs nothing and is audited.
//
//	CMESH_RUN_BIN=/work/main/cmesh-run go test -tags integration -count=1 -v ./test/sudo/
//
// Needs root, php-fpm8.2, cgi-fcgi, sudo, visudo, at, a running atd, useradd/userdel. Without
// them the test skips loudly; with CMESH_RUN_REQUIRE_INTEGRATION=1 it fails instead.
//
// The suite changes machine-wide things (a user, /etc/sudoers.d/cmesh-run,
// /etc/cmesh-run/config.toml, /usr/local/bin/cmesh-run, /etc/at.deny). Before it touches any
// of them it saves their exact state under /var/tmp/cmesh-sudo-test.backup/ (manifest.json
// is written last, atomically): cleanup puts everything back from there, and a later run that
// finds the manifest (a run that was killed) repairs the machine first.
package sudo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

const (
	sudoBin    = "/usr/bin/sudo"
	visudoBin  = "/usr/sbin/visudo"
	atrmBin    = "/usr/bin/atrm"
	useraddBin = "/usr/sbin/useradd"
	userdelBin = "/usr/sbin/userdel"
	groupdel   = "/usr/sbin/groupdel"

	runAs     = "cmesh-test"
	installed = "/usr/local/bin/cmesh-run"
	sudoers   = "/etc/sudoers.d/cmesh-run"
	confDir   = "/etc/cmesh-run"
	confFile  = "/etc/cmesh-run/config.toml"
	mailSpool = "/var/mail/" + runAs

	backupDir = "/var/tmp/cmesh-sudo-test.backup"
	manifestF = backupDir + "/manifest.json"
	lockFile  = "/var/tmp/cmesh-sudo-test.lock"

	poolSecret = "pool-secret-hunter2"
)

// ---------------------------------------------------------------------------------------------
// Preconditions

// needs is what the suite needs of the machine.
var needs = itest.Needs{
	Binary: true,
	Root:   "runs cmesh-run setup --write: a user, a sudo rule, /etc files",
	Tools: []string{itest.FPMBin, itest.CGIFcgi, sudoBin, visudoBin, itest.AtBin, itest.AtqBin, atrmBin,
		useraddBin, userdelBin, itest.EnvBin},
	Install: "php-fpm php-cli libfcgi-bin at sudo",
	Users:   []string{itest.WebUser},
	Atd:     true,
}

// lockSuite keeps two runs of this suite apart (they would share the user and /etc files).
// The lock file goes at cleanup; a waiter that locked the removed file notices (its inode is
// no longer the path's) and locks the new one.
func lockSuite(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
		itest.Must(t, err)
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if time.Now().After(deadline) {
				t.Fatalf("another run of this suite holds %s", lockFile)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(lockFile)
		if err1 != nil || err2 != nil || !os.SameFile(held, now) {
			f.Close() // locked a file that the previous holder removed: try again
			continue
		}
		t.Cleanup(func() {
			os.Remove(lockFile)
			f.Close()
		})
		return
	}
}

// ---------------------------------------------------------------------------------------------
// Saving and restoring the machine

// saved is the state of one path before the suite ran.
type saved struct {
	Path    string `json:"path"`
	Existed bool   `json:"existed"`
	Dir     bool   `json:"dir"`
	Mode    uint32 `json:"mode"` // os.FileMode
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Copy    string `json:"copy,omitempty"` // the bytes, in backupDir
}

type manifest struct {
	Paths        []saved `json:"paths"`
	GroupExisted bool    `json:"group_existed"`
	Root         string  `json:"root"` // the suite's temp tree
	Started      string  `json:"started"`
}

// managed are the paths the suite (or setup --write) may create or change; directories come
// before what they hold (restore walks the list backwards).
var managed = []string{
	confDir, confFile, sudoers, sudoers + ".tmp", installed, itest.AtDeny, itest.AtAllow, mailSpool,
}

// repairCrashedRun restores the machine when a killed run left its manifest behind.
func repairCrashedRun(t *testing.T) {
	t.Helper()
	raw, err := os.ReadFile(manifestF)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(backupDir); err == nil {
			// Killed before its manifest was written: nothing had been changed yet.
			itest.Must(t, os.RemoveAll(backupDir))
		}
		return
	}
	itest.Must(t, err)
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s is corrupt (%v): repair the machine by hand from %s", manifestF, err, backupDir)
	}
	t.Logf("!!! %s exists: a previous run (started %s) did not clean up; restoring the machine first", manifestF, m.Started)
	if errs := restoreMachine(t.Logf, &m); len(errs) > 0 {
		t.Fatalf("repairing the previous run failed: %v (backups kept in %s)", errs, backupDir)
	}
}

// saveMachine records the state of every managed path, in backupDir, before anything changes.
func saveMachine(t *testing.T, root string) *manifest {
	t.Helper()
	itest.Must(t, os.MkdirAll(backupDir, 0o700))
	m := &manifest{Root: root, Started: time.Now().UTC().Format(time.RFC3339)}
	_, err := user.LookupGroup(runAs)
	m.GroupExisted = err == nil
	for i, p := range managed {
		s := saved{Path: p}
		st, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			t.Fatal(err)
		case st.IsDir():
			s.Existed, s.Dir = true, true
		case st.Mode().IsRegular():
			s.Existed = true
			data, err := os.ReadFile(p)
			itest.Must(t, err)
			s.Copy = filepath.Join(backupDir, fmt.Sprintf("%02d-%s", i, filepath.Base(p)))
			itest.Must(t, itest.WriteSynced(s.Copy, data, 0o600))
		default:
			t.Fatalf("%s is neither a regular file nor a directory (%v): the suite will not touch it", p, st.Mode())
		}
		if s.Existed {
			sys := st.Sys().(*syscall.Stat_t)
			s.Mode, s.UID, s.GID = uint32(st.Mode()), int(sys.Uid), int(sys.Gid)
		}
		m.Paths = append(m.Paths, s)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	itest.Must(t, err)
	// The manifest is the commit point: from now on a killed run is repaired by the next.
	itest.Must(t, itest.WriteSynced(manifestF+".tmp", data, 0o600))
	itest.Must(t, os.Rename(manifestF+".tmp", manifestF))
	itest.SyncDir(backupDir)
	return m
}

// restoreMachine undoes everything the suite and setup --write did: the run-as user's jobs
// end, the user goes, every managed path gets back its bytes, owner and mode (or goes away),
// the temp tree goes. It returns what could not be done; the backups stay then.
func restoreMachine(logf func(string, ...any), m *manifest) []error {
	var errs []error
	fail := func(err error) {
		if err != nil {
			logf("restore: %v", err)
			errs = append(errs, err)
		}
	}

	// 1. The run-as user: its jobs first, then the user.
	if u, err := user.Lookup(runAs); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		stateDir := filepath.Join(m.Root, "state")
		if fi, err := os.Stat(filepath.Join(stateDir, "active")); err == nil && fi.IsDir() {
			ents, _ := os.ReadDir(filepath.Join(stateDir, "active"))
			for _, ent := range ents {
				if !itest.IDPattern.MatchString(ent.Name()) {
					continue
				}
				out, err := rootCommand(15*time.Second, installed, "--state-dir", stateDir, "cancel", "--grace", "1s", ent.Name())
				if err != nil {
					out, err = rootCommand(15*time.Second, os.Getenv("CMESH_RUN_BIN"), "--state-dir", stateDir, "cancel", "--grace", "1s", ent.Name())
				}
				logf("restore: cancel leftover job %s: %v %s", ent.Name(), err, strings.TrimSpace(out))
			}
		}
		jobs, _ := itest.AtJobs(runAs)
		for _, n := range jobs {
			out, err := rootCommand(10*time.Second, atrmBin, n)
			logf("restore: atrm %s (a job of %s): %v %s", n, runAs, err, strings.TrimSpace(out))
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			pids := itest.ProcessesOf(uid)
			if len(pids) == 0 {
				break
			}
			if time.Now().After(deadline) {
				for _, pid := range pids {
					logf("restore: process %d of %s still running: SIGKILL", pid, runAs)
					syscall.Kill(pid, syscall.SIGKILL)
				}
				deadline = time.Now().Add(5 * time.Second)
				if len(itest.ProcessesOf(uid)) > 0 {
					time.Sleep(100 * time.Millisecond)
					continue
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if out, err := rootCommand(15*time.Second, userdelBin, "--remove", runAs); err != nil {
			fail(fmt.Errorf("userdel %s: %v: %s", runAs, err, out))
		}
	}
	if _, err := user.LookupGroup(runAs); err == nil && !m.GroupExisted {
		if out, err := rootCommand(15*time.Second, groupdel, runAs); err != nil {
			fail(fmt.Errorf("groupdel %s: %v: %s", runAs, err, out))
		}
	}

	// 2. Every managed path, innermost first.
	for i := len(m.Paths) - 1; i >= 0; i-- {
		s := m.Paths[i]
		switch {
		case !s.Existed && (s.Path == confDir):
			if _, err := os.Lstat(s.Path); err == nil {
				fail(os.RemoveAll(s.Path))
			}
		case !s.Existed:
			if err := os.Remove(s.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				fail(err)
			}
		case s.Dir:
			if err := os.MkdirAll(s.Path, 0o755); err != nil {
				fail(err)
				continue
			}
			fail(os.Chown(s.Path, s.UID, s.GID))
			fail(os.Chmod(s.Path, fs.FileMode(s.Mode).Perm()|fs.FileMode(s.Mode)&(fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky)))
		default:
			data, err := os.ReadFile(s.Copy)
			if err != nil {
				fail(fmt.Errorf("backup of %s: %v", s.Path, err))
				continue
			}
			fail(putBack(s, data))
		}
	}

	// 3. The temp tree (state dir, audit log, pages, pool), and a pool a killed run left.
	if m.Root != "" && strings.HasPrefix(m.Root, "/var/tmp/cmesh-sudo-test-") {
		stopLeftoverPool(logf, m.Root)
		fail(os.RemoveAll(m.Root))
	}

	// 4. Check, then drop the backups.
	for _, s := range m.Paths {
		if err := checkRestored(s); err != nil {
			fail(err)
		}
	}
	if _, err := user.Lookup(runAs); err == nil {
		fail(fmt.Errorf("user %s still exists", runAs))
	}
	if len(errs) == 0 {
		if err := os.Remove(manifestF); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fail(err)
		}
		itest.SyncDir(backupDir)
		fail(os.RemoveAll(backupDir))
	}
	return errs
}

// stopLeftoverPool stops the php-fpm master (and its process group) that a killed run left
// running: its PID comes from the pool's pid file, and counts only when that process is
// php-fpm started with this tree's config.
func stopLeftoverPool(logf func(string, ...any), root string) {
	raw, err := os.ReadFile(filepath.Join(root, "fpm", "fpm.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(filepath.Join(root, "fpm", "fpm.conf"))) {
		return
	}
	logf("restore: php-fpm %d of the interrupted run is still running: SIGTERM", pid)
	syscall.Kill(pid, syscall.SIGTERM)
	itest.Eventually(5*time.Second, func() bool { return !itest.Alive(pid) })
	if syscall.Kill(-pid, 0) == nil {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// putBack gives path its saved bytes, owner and mode; an existing file keeps its inode.
func putBack(s saved, data []byte) error {
	f, err := os.OpenFile(s.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chown(s.UID, s.GID)
	}
	if err == nil {
		err = f.Chmod(fs.FileMode(s.Mode).Perm())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// checkRestored compares a path with what was saved of it.
func checkRestored(s saved) error {
	st, err := os.Lstat(s.Path)
	if !s.Existed {
		if err == nil {
			return fmt.Errorf("%s exists after restore; it did not before", s.Path)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s was not restored: %v", s.Path, err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != s.UID || int(sys.Gid) != s.GID || st.Mode() != fs.FileMode(s.Mode) {
		return fmt.Errorf("%s restored as %v %d:%d, was %v %d:%d", s.Path, st.Mode(), sys.Uid, sys.Gid, fs.FileMode(s.Mode), s.UID, s.GID)
	}
	if s.Dir {
		return nil
	}
	want, err := os.ReadFile(s.Copy)
	if err != nil {
		return err
	}
	got, err := os.ReadFile(s.Path)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s restored with other bytes than it had", s.Path)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// Root-side commands and machine state

// rootCommand runs a program as root with a clean environment (no SUDO_USER, which would
// make cmesh-run believe it runs under sudo) and returns its combined output.
func rootCommand(timeout time.Duration, prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = []string{"PATH=" + itest.StdPath, "HOME=/root", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

type result struct {
	Exit   int    `json:"exit"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
}

// runAsRoot runs a program as root with exactly env, and captures both streams.
func runAsRoot(t *testing.T, env []string, prog string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env, cmd.Dir = env, "/"
	r, err := itest.Run(cmd)
	if err != nil || r.Exit < 0 {
		t.Fatalf("run %s %q: %v, exit %d (stderr %q)", prog, args, err, r.Exit, r.Stderr)
	}
	return result{Exit: r.Exit, Stdout: r.Stdout, Stderr: r.Stderr}
}

// ---------------------------------------------------------------------------------------------
// PHP-FPM: a pool as www-data with two pages

// pool is the suite's PHP-FPM pool and the tree of its pages.
type pool struct {
	*itest.Pool
	www    string
	secret string
}

func writePool(t *testing.T, root string) *pool {
	t.Helper()
	p := &pool{
		Pool: itest.NewPool(t, filepath.Join(root, "fpm"), itest.PoolConfig{Settings: []string{
			"pm.max_children = 2",
			"request_terminate_timeout = 20s",
			"env[DB_PASSWORD] = " + poolSecret,
		}}),
		www:    filepath.Join(root, "www"),
		secret: "x-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36),
	}
	itest.Must(t, os.MkdirAll(p.www, 0o755))
	itest.CopyPHPClient(t, root)
	itest.Must(t, os.WriteFile(filepath.Join(p.www, "run.php"), []byte(runPage), 0o644))
	itest.Must(t, os.WriteFile(filepath.Join(p.www, "client.php"), []byte(clientPage), 0o644))
	return p
}

// runPage runs one argv with proc_open (no shell) in exactly the environment given, after
// writing the files given (as www-data), and answers with the exit status and both streams.
const runPage = `<?php
declare(strict_types=1);
$req = json_decode(file_get_contents('php://input') ?: '{}', true, 64, JSON_THROW_ON_ERROR);
foreach ($req['write'] ?? [] as $path => $content) {
    file_put_contents($path, $content);
}
$env = $req['env'] ?? [];
$spec = [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']];
$proc = proc_open($req['argv'], $spec, $pipes, '/', $env === [] ? [] : $env);
if (!is_resource($proc)) {
    http_response_code(500);
    exit;
}
$buf = [1 => '', 2 => ''];
$open = [1 => $pipes[1], 2 => $pipes[2]];
foreach ($open as $pipe) {
    stream_set_blocking($pipe, false);
}
while ($open !== []) {
    $read = array_values($open);
    $w = $x = null;
    if (@stream_select($read, $w, $x, 30) === false) {
        usleep(10000);
    }
    foreach ($open as $i => $pipe) {
        $chunk = fread($pipe, 65536);
        if ($chunk !== false) {
            $buf[$i] .= $chunk;
        }
        if (feof($pipe)) {
            fclose($pipe);
            unset($open[$i]);
        }
    }
}
$status = proc_close($proc);
header('Content-Type: application/json');
echo json_encode([
    'exit' => $status, 'stdout' => $buf[1], 'stderr' => $buf[2],
    'euid' => function_exists('posix_geteuid') ? posix_geteuid() : null,
    'pool_secret' => getenv('DB_PASSWORD'),
], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
`

// clientPage calls the PHP client (php/src/Client.php) with sudoUser, as an application would.
const clientPage = `<?php
declare(strict_types=1);
require __DIR__ . '/../php/src/CmeshRunException.php';
require __DIR__ . '/../php/src/Client.php';

use Cmesh\Run\Client;
use Cmesh\Run\CmeshRunException;

$req = json_decode(file_get_contents('php://input') ?: '{}', true, 64, JSON_THROW_ON_ERROR);
$client = new Client(binary: '/usr/local/bin/cmesh-run', sudoUser: $req['sudo_user']);
$out = [];
try {
    $id = (string) ($req['id'] ?? '');
    $out['result'] = match ($req['op'] ?? '') {
        'schedule' => $client->schedule([], $req['options'] ?? []),
        'status' => $client->status($id),
        'log' => $client->log($id, (int) ($req['offset'] ?? 0)),
        'wait' => $client->wait($id, isset($req['timeout']) ? (float) $req['timeout'] : null),
    };
    $out['ok'] = true;
} catch (CmeshRunException $e) {
    $out['ok'] = false;
    $out['error'] = ['code' => $e->getErrorCode(), 'exit_status' => $e->getExitStatus(), 'message' => $e->getMessage()];
}
header('Content-Type: application/json');
echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
`

// request sends one FastCGI request for page, as a web server would: POST with the JSON
// request as its body (a query string cannot carry a 10 KB argument through cgi-fcgi), and
// decodes the JSON answer.
func (p *pool) request(t *testing.T, page string, req map[string]any, out any) {
	t.Helper()
	q, err := json.Marshal(req)
	itest.Must(t, err)
	r := p.Request(itest.Request{Script: filepath.Join(p.www, page), Body: q, Vars: []string{"HTTP_X_SECRET=" + p.secret}}, 25*time.Second)
	if r.Err != nil {
		t.Fatalf("request %s %.300s: %v (stdout %q)", page, q, r.Err, r.Body)
	}
	if r.Status != 200 {
		t.Fatalf("request %s %.300s: HTTP %d: %s", page, q, r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, out); err != nil {
		t.Fatalf("request %s %.300s: bad JSON %q: %v", page, q, r.Body, err)
	}
}

// pageResult is run.php's answer.
type pageResult struct {
	result
	EUID       *int `json:"euid"`
	PoolSecret any  `json:"pool_secret"`
}

// run runs argv from a request (as www-data), in environment env (nil: an empty one).
func (p *pool) run(t *testing.T, argv []string, env map[string]string, write map[string]string) pageResult {
	t.Helper()
	req := map[string]any{"argv": argv}
	if len(env) > 0 {
		req["env"] = env
	}
	if len(write) > 0 {
		req["write"] = write
	}
	var r pageResult
	p.request(t, "run.php", req, &r)
	return r
}

// sudo runs `sudo -n -u cmesh-test /usr/local/bin/cmesh-run ARGS` from a request.
func (p *pool) sudo(t *testing.T, args ...string) pageResult {
	t.Helper()
	return p.run(t, append([]string{sudoBin, "-n", "-u", runAs, installed}, args...), nil, nil)
}

type clientResult struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code       string `json:"code"`
		ExitStatus int    `json:"exit_status"`
		Message    string `json:"message"`
	} `json:"error"`
}

// client calls a PHP client method (sudoUser cmesh-test) from a request.
func (p *pool) client(t *testing.T, req map[string]any, out any) clientResult {
	t.Helper()
	req["sudo_user"] = runAs
	var r clientResult
	p.request(t, "client.php", req, &r)
	if r.OK && out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			t.Fatalf("client %v: result %s: %v", req, r.Result, err)
		}
	}
	return r
}

// ---------------------------------------------------------------------------------------------
// Jobs and audit lines

// job is SPEC.md's job object.
type job = itest.Job

type auditLine map[string]any

func (a auditLine) str(k string) string {
	s, _ := a[k].(string)
	return s
}

// auditLog reads the audit lines appended after byte offset.
func readAudit(t *testing.T, path string, offset int64) ([]auditLine, []string, int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, 0
	}
	itest.Must(t, err)
	if int64(len(data)) < offset {
		t.Fatalf("audit log %s shrank from %d to %d bytes", path, offset, len(data))
	}
	var lines []auditLine
	var raw []string
	for _, l := range strings.Split(string(data[offset:]), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		raw = append(raw, l)
		var a auditLine
		if err := json.Unmarshal([]byte(l), &a); err != nil {
			t.Errorf("audit line is not JSON: %q", l)
			continue
		}
		lines = append(lines, a)
	}
	return lines, raw, int64(len(data))
}

// ---------------------------------------------------------------------------------------------
// Small things

func statOwner(t *testing.T, path string) (fs.FileInfo, int, int) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return st, int(sys.Uid), int(sys.Gid)
}
