//go:build integration

// Package browser clicks through the demo site (php/demo) in a real browser, as a person
// would: headless Chromium, driven through chromedriver's WebDriver HTTP API, opens the page
// that nginx serves through a PHP-FPM pool running as www-data; the page schedules real
// jobs through the PHP client and cmesh-run's at backend (the real atd).
//
//	CMESH_RUN_BIN=/work/main/cmesh-run go test -tags integration -count=1 -v ./test/browser/
//
// Needs root. Installs what is missing (nginx-light, php-fpm, chromium, chromium-driver, at)
// with apt-get and starts atd when it is not running. Without them (not root, no mirror) the
// test skips loudly; with CMESH_RUN_REQUIRE_INTEGRATION=1 it fails instead.
//
// Everything runs in a temp tree that goes away at the end: the site, the state dir, the pool
// and nginx (their own config files, nginx on a free loopback port), Chromium's profile.
// Every process the test starts is stopped by its PID. For the length of the test www-data's
// line leaves /etc/at.deny (Debian's default denies it at); the exact bytes, owner and mode
// come back at the end, or at the next run when this one was killed.
//
// Screenshots go to a directory of their own under $TMPDIR that stays (its path is logged);
// with CMESH_RUN_SAVE_SCREENSHOTS=1 they are also copied to test/browser/testdata/screenshots/.
package browser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
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
	copyFile     = itest.CopyFile
	finished     = itest.Finished
	must         = itest.Must
	phpString    = itest.PHPString
	poll         = itest.Poll
	writeInPlace = itest.WriteInPlace
	writeSynced  = itest.WriteSynced
)

const (
	chromiumBin     = "/usr/bin/chromium"
	chromedriverBin = "/usr/bin/chromedriver"
	nginxBin        = "/usr/sbin/nginx"
	fastcgiParams   = "/etc/nginx/fastcgi_params"
	atBin           = "/usr/bin/at"
	atdBin          = "/usr/sbin/atd"
	atdPID          = "/run/atd.pid"
	atDeny          = "/etc/at.deny"
	atAllow         = "/etc/at.allow"
	webUser         = "www-data"

	// atDenyBackup holds the original /etc/at.deny while the test has changed it, so that a
	// run killed halfway is repaired by the next one.
	atDenyBackup = "/var/tmp/cmesh-run-browser-test.at.deny.orig"
)

// ---------------------------------------------------------------------------------------------
// Preconditions and packages

// pkgNeed is a file the test needs and the Debian package that brings it.
type pkgNeed struct {
	path string // a glob
	pkg  string
}

var needs = []pkgNeed{
	{nginxBin, "nginx-light"},
	{fastcgiParams, "nginx-light"},
	{"/usr/sbin/php-fpm*", "php-fpm"},
	{chromiumBin, "chromium"},
	{chromedriverBin, "chromium-driver"},
	{atBin, "at"},
	{atdBin, "at"},
}

var (
	installOnce sync.Once
	installErr  error
	installLog  string
	skipBanner  sync.Once
)

// requireIntegration returns the cmesh-run binary under test once everything the test needs
// is there (installing what is missing), or skips (fails with CMESH_RUN_REQUIRE_INTEGRATION=1).
func requireIntegration(t *testing.T) string {
	t.Helper()
	err := prerequisites(t)
	if err == nil {
		return os.Getenv("CMESH_RUN_BIN")
	}
	msg := "BROWSER INTEGRATION TEST NOT RUN: " + err.Error()
	if os.Getenv("CMESH_RUN_REQUIRE_INTEGRATION") == "1" {
		t.Fatal(msg + " (CMESH_RUN_REQUIRE_INTEGRATION=1)")
	}
	skipBanner.Do(func() {
		fmt.Fprintf(os.Stderr, "\n!!!!!!!! %s\n!!!!!!!! (set CMESH_RUN_REQUIRE_INTEGRATION=1 to make this a failure)\n\n", msg)
	})
	t.Skip(msg)
	return ""
}

func prerequisites(t *testing.T) error {
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
		return errors.New("must run as root (installs packages, starts php-fpm as www-data, edits /etc/at.deny)")
	}
	if _, err := user.Lookup(webUser); err != nil {
		return fmt.Errorf("user %s: %v", webUser, err)
	}
	installOnce.Do(func() { installLog, installErr = installMissing() })
	if installLog != "" {
		t.Log(installLog)
	}
	if installErr != nil {
		return installErr
	}
	if _, err := fpmBinary(); err != nil {
		return err
	}
	if fi, err := os.Stat(atAllow); err == nil && fi.Mode().IsRegular() {
		if data, _ := os.ReadFile(atAllow); !hasLine(data, webUser) {
			return fmt.Errorf("%s exists and does not list %s: the test only manages %s", atAllow, webUser, atDeny)
		}
	}
	if _, err := os.Stat(atDeny); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %v", atDeny, err)
	}
	return nil
}

// installMissing installs, with apt-get, the packages whose files are missing. It returns a
// line saying what it installed and how long it took.
func installMissing() (string, error) {
	var pkgs []string
	seen := map[string]bool{}
	for _, n := range needs {
		if m, _ := filepath.Glob(n.path); len(m) > 0 || seen[n.pkg] {
			continue
		}
		seen[n.pkg] = true
		pkgs = append(pkgs, n.pkg)
	}
	if len(pkgs) == 0 {
		return "", nil
	}
	if _, err := os.Stat("/usr/bin/apt-get"); err != nil {
		return "", fmt.Errorf("missing %s and no apt-get to install them", strings.Join(pkgs, " "))
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	apt := func(args ...string) (string, error) {
		cmd := exec.Command("/usr/bin/apt-get", append([]string{"-q", "-o", "DPkg::Lock::Timeout=600"}, args...)...)
		cmd.Env = env
		cmd.Stdin = nil
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	start := time.Now()
	if out, err := apt("update"); err != nil {
		return "", fmt.Errorf("apt-get update: %v: %s", err, lastLines(out, 5))
	}
	updated := time.Since(start)
	out, err := apt(append([]string{"-y", "install", "--no-install-recommends"}, pkgs...)...)
	if err != nil && seen["nginx-light"] {
		// nginx-light is gone from some releases: the full package brings the same files.
		for i, p := range pkgs {
			if p == "nginx-light" {
				pkgs[i] = "nginx"
			}
		}
		out, err = apt(append([]string{"-y", "install", "--no-install-recommends"}, pkgs...)...)
	}
	if err != nil {
		return "", fmt.Errorf("apt-get install %s: %v: %s", strings.Join(pkgs, " "), err, lastLines(out, 5))
	}
	for _, n := range needs {
		if m, _ := filepath.Glob(n.path); len(m) == 0 {
			return "", fmt.Errorf("%s still missing after apt-get install %s", n.path, strings.Join(pkgs, " "))
		}
	}
	return fmt.Sprintf("installed %s in %.1f s (apt-get update %.1f s, install %.1f s)",
		strings.Join(pkgs, " "), time.Since(start).Seconds(), updated.Seconds(), (time.Since(start) - updated).Seconds()), nil
}

// fpmBinary is the newest /usr/sbin/php-fpmX.Y.
func fpmBinary() (string, error) {
	m, _ := filepath.Glob("/usr/sbin/php-fpm[0-9]*")
	if len(m) == 0 {
		return "", errors.New("no /usr/sbin/php-fpmX.Y (apt-get install php-fpm)")
	}
	return m[len(m)-1], nil
}

// ensureAtd starts atd when it is not running, and stops that atd (by its PID) at the end.
func ensureAtd(t *testing.T) {
	t.Helper()
	if pid := atdRunning(); pid > 0 {
		return
	}
	// atd daemonizes, and hands every descriptor it holds to every job: it gets none but
	// 0-2, all /dev/null (Go's os/exec passes nothing else).
	if err := exec.Command(atdBin).Run(); err != nil {
		t.Fatalf("start %s: %v", atdBin, err)
	}
	var pid int
	poll(t, 5*time.Second, "atd to write "+atdPID, func() (bool, string) {
		pid = atdRunning()
		return pid > 0, "no live atd in " + atdPID
	})
	t.Logf("started atd (pid %d); it stops at the end", pid)
	start := procStart(pid)
	t.Cleanup(func() {
		if procStart(pid) == start {
			syscall.Kill(pid, syscall.SIGTERM)
			waitOrKill(t, pid, 5*time.Second)
		}
	})
}

func atdRunning() int {
	raw, err := os.ReadFile(atdPID)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0
	}
	if comm, _, err := procStat(pid); err != nil || comm != "atd" {
		return 0
	}
	return pid
}

// ---------------------------------------------------------------------------------------------
// /etc/at.deny

// restoreCrashedAtDeny puts back the original /etc/at.deny left behind by a run that died
// before its cleanup.
func restoreCrashedAtDeny(t *testing.T) {
	t.Helper()
	orig, err := os.ReadFile(atDenyBackup)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	must(t, err)
	t.Logf("restoring %s from %s, left by an interrupted run", atDeny, atDenyBackup)
	must(t, writeInPlace(atDeny, orig))
	must(t, os.Remove(atDenyBackup))
}

// allowAt takes www-data's line out of /etc/at.deny until t ends, then puts back the exact
// original bytes, owner and mode.
func allowAt(t *testing.T) {
	t.Helper()
	restoreCrashedAtDeny(t)
	orig, err := os.ReadFile(atDeny)
	if errors.Is(err, fs.ErrNotExist) {
		return // no at.deny: nobody is denied
	}
	must(t, err)
	if !hasLine(orig, webUser) {
		return
	}
	fi, err := os.Stat(atDeny)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	mode, uid, gid := fi.Mode().Perm(), int(st.Uid), int(st.Gid)

	var want []byte
	for _, line := range bytes.SplitAfter(orig, []byte("\n")) {
		if string(bytes.TrimSpace(line)) != webUser {
			want = append(want, line...)
		}
	}
	must(t, writeSynced(atDenyBackup, orig, 0o600))
	t.Cleanup(func() {
		if err := writeInPlace(atDeny, orig); err != nil {
			t.Errorf("RESTORE %s BY HAND from %s: %v", atDeny, atDenyBackup, err)
			return
		}
		// writeInPlace keeps the inode, so owner and mode never changed; make sure anyway.
		if err := os.Chown(atDeny, uid, gid); err != nil {
			t.Errorf("chown %s: %v", atDeny, err)
		}
		if err := os.Chmod(atDeny, mode); err != nil {
			t.Errorf("chmod %s: %v", atDeny, err)
		}
		now, err := os.ReadFile(atDeny)
		fi, serr := os.Stat(atDeny)
		switch {
		case err != nil || serr != nil:
			t.Errorf("check %s: %v %v", atDeny, err, serr)
		case !bytes.Equal(now, orig):
			t.Errorf("%s differs from its original after restore (backup kept in %s)", atDeny, atDenyBackup)
		case fi.Mode().Perm() != mode || int(fi.Sys().(*syscall.Stat_t).Uid) != uid || int(fi.Sys().(*syscall.Stat_t).Gid) != gid:
			t.Errorf("%s: owner or mode not restored (backup kept in %s)", atDeny, atDenyBackup)
		default:
			os.Remove(atDenyBackup)
			t.Logf("restored %s (%d bytes, %d:%d, %v)", atDeny, len(orig), uid, gid, mode)
		}
	})
	must(t, writeInPlace(atDeny, want))
	t.Logf("%s: %s's line removed for the test", atDeny, webUser)
}

func hasLine(content []byte, line string) bool {
	for _, l := range strings.Split(string(content), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------------------------
// The site: a copy of php/ that www-data can read, a state dir, a pool and nginx

type site struct {
	t        *testing.T // fails on error
	owner    *testing.T // owns the servers: they stop when it ends
	root     string     // the temp tree, 0755
	bin      string     // the copy of cmesh-run that www-data runs
	docRoot  string     // php/demo/public
	stateDir string
	conf     string // an empty cmesh-run config: no machine config applies
	uid, gid int
	fpmSock  string
	fpmLog   string
	url      string // http://127.0.0.1:PORT/
}

func newSite(t *testing.T, bin string) *site {
	t.Helper()
	u, err := user.Lookup(webUser)
	must(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	root, err := os.MkdirTemp("", "cmesh-run-browser-")
	must(t, err)
	t.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("remove %s: %v", root, err)
		}
	})
	must(t, os.Chmod(root, 0o755))
	s := &site{
		t: t, owner: t, root: root, uid: uid, gid: gid,
		bin:      filepath.Join(root, "bin", "cmesh-run"),
		docRoot:  filepath.Join(root, "php", "demo", "public"),
		stateDir: filepath.Join(root, "state"),
		conf:     filepath.Join(root, "cmesh-run.toml"),
		fpmSock:  filepath.Join(root, "fpm", "demo.sock"),
		fpmLog:   filepath.Join(root, "fpm", "fpm.log"),
	}
	for _, d := range []string{"bin", "fpm", "nginx", "chrome"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.stateDir, 0o750}, {filepath.Join(root, "work"), 0o755}} {
		must(t, os.Mkdir(d.path, d.mode))
		must(t, os.Chmod(d.path, d.mode))
		must(t, os.Chown(d.path, uid, gid))
	}
	copyFile(t, bin, s.bin, 0o755)
	must(t, os.WriteFile(s.conf, nil, 0o644))

	// php/src and php/demo, side by side as in the repository (the demo finds the client
	// at ../src), without a config.local.php of the developer's.
	copyTree(t, "../../php/src", filepath.Join(root, "php", "src"))
	copyTree(t, "../../php/demo", filepath.Join(root, "php", "demo"))
	os.Remove(filepath.Join(root, "php", "demo", "config.local.php"))
	local := fmt.Sprintf(`<?php
// Written by test/browser: this copy's binary, state dir and an empty config.
return [
    'binary' => %s,
    'state_dir' => %s,
    'env' => ['CMESH_RUN_CONFIG' => %s],
    'workdir' => %s,
];
`, phpString(s.bin), phpString(s.stateDir), phpString(s.conf), phpString(filepath.Join(root, "work")))
	must(t, os.WriteFile(filepath.Join(root, "php", "demo", "config.local.php"), []byte(local), 0o644))
	t.Cleanup(s.settleJobs) // before the tree goes: no wrapper may still write into it
	return s
}

// with returns the site for use by test t (helpers fail the test they are given); the
// servers it starts still belong to the test that made the site.
func (s *site) with(t *testing.T) *site {
	c := *s
	c.t = t
	return &c
}

// settleJobs cancels what is left of the site's jobs and waits until none is unfinished.
func (s *site) settleJobs() {
	out, _, code := s.asWebUser(s.bin, "--state-dir", s.stateDir, "list", "--json", "--limit", "0")
	if code != 0 {
		return
	}
	var jobs []job
	json.Unmarshal([]byte(out), &jobs)
	for _, j := range jobs {
		if finished(j.State) {
			continue
		}
		s.t.Logf("cleanup: canceling job %s (%s)", j.ID, j.State)
		s.asWebUser(s.bin, "--state-dir", s.stateDir, "cancel", "--grace", "1s", j.ID)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			out, _, _ := s.asWebUser(s.bin, "--state-dir", s.stateDir, "status", "--json", j.ID)
			var now job
			if json.Unmarshal([]byte(out), &now) != nil || finished(now.State) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// asWebUser runs a program as www-data with a minimal environment.
func (s *site) asWebUser(prog string, args ...string) (stdout, stderr string, exit int) {
	cmd := exec.Command(prog, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(s.uid), Gid: uint32(s.gid), Groups: []uint32{uint32(s.gid)},
	}}
	cmd.Env = []string{"HOME=/var/www", "USER=www-data", "LOGNAME=www-data", "PATH=/usr/bin:/bin", "CMESH_RUN_CONFIG=" + s.conf}
	cmd.Dir = "/"
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		exit = ee.ExitCode()
	default:
		exit = -1
		e.WriteString(err.Error())
	}
	return o.String(), e.String(), exit
}

// job is SPEC.md's job object.
type job = itest.Job

// directStatus is the job as cmesh-run itself reports it, run as www-data.
func (s *site) directStatus(id string) job {
	s.t.Helper()
	out, errOut, code := s.asWebUser(s.bin, "--state-dir", s.stateDir, "status", "--json", id)
	var j job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil {
		s.t.Fatalf("cmesh-run status --json %s as www-data: exit %d, stdout %q, stderr %q", id, code, out, errOut)
	}
	return j
}

// startFPM starts a pool as www-data (clear_env = yes, as Debian's) on a socket that only
// www-data (nginx's workers) may use.
func (s *site) startFPM() *proc {
	t := s.t
	t.Helper()
	fpm, err := fpmBinary()
	must(t, err)
	conf := filepath.Join(s.root, "fpm", "fpm.conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[global]
pid = %[1]s/fpm/fpm.pid
error_log = %[2]s
daemonize = no

[demo]
user = www-data
group = www-data
listen = %[3]s
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
pm = static
pm.max_children = 4
clear_env = yes
chdir = /
catch_workers_output = yes
php_admin_flag[display_errors] = off
php_admin_flag[log_errors] = on
`, s.root, s.fpmLog, s.fpmSock)), 0o644))
	if out, err := exec.Command(fpm, "-t", "-y", conf).CombinedOutput(); err != nil {
		t.Fatalf("%s -t -y %s: %v\n%s", fpm, conf, err, out)
	}
	p := startProcess(t, s.owner, "php-fpm", filepath.Join(s.root, "fpm", "fpm.out"), fpm, "-F", "-y", conf)
	s.owner.Cleanup(func() {
		if s.owner.Failed() {
			if log, err := os.ReadFile(s.fpmLog); err == nil {
				s.owner.Logf("php-fpm log:\n%s", lastLines(string(log), 40))
			}
		}
	})
	poll(t, 10*time.Second, "php-fpm to listen on "+s.fpmSock, func() (bool, string) {
		if p.exited() {
			out, _ := os.ReadFile(filepath.Join(s.root, "fpm", "fpm.out"))
			t.Fatalf("php-fpm exited at start: %v\n%s", p.cmd.ProcessState, out)
		}
		c, err := net.Dial("unix", s.fpmSock)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	t.Logf("php-fpm pool up (pid %d, %s)", p.pid, s.fpmSock)
	return p
}

// startNginx serves the demo's public/ on a free loopback port, PHP through the pool.
func (s *site) startNginx() {
	t := s.t
	t.Helper()
	dir := filepath.Join(s.root, "nginx")
	must(t, os.MkdirAll(filepath.Join(dir, "tmp"), 0o755))
	must(t, os.Chown(filepath.Join(dir, "tmp"), s.uid, s.gid))
	errLog := filepath.Join(dir, "error.log")
	var lastErr string
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		conf := filepath.Join(dir, "nginx.conf")
		must(t, os.WriteFile(conf, []byte(nginxConf(dir, s.docRoot, s.fpmSock, port)), 0o644))
		if out, err := exec.Command(nginxBin, "-t", "-e", errLog, "-c", conf).CombinedOutput(); err != nil {
			t.Fatalf("nginx -t -c %s: %v\n%s", conf, err, out)
		}
		p := startProcess(t, s.owner, "nginx", filepath.Join(dir, "nginx.out"), nginxBin, "-e", errLog, "-c", conf, "-g", "daemon off;")
		up := false
		pollQuiet(10*time.Second, func() bool {
			if p.exited() {
				return true
			}
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return false
			}
			c.Close()
			_, err = os.Stat(filepath.Join(dir, "nginx.pid"))
			up = err == nil
			return up
		})
		if up && !p.exited() {
			s.url = fmt.Sprintf("http://127.0.0.1:%d/", port)
			t.Logf("nginx up (pid %d) at %s", p.pid, s.url)
			return
		}
		raw, _ := os.ReadFile(errLog)
		lastErr = lastLines(string(raw), 5)
		p.stop()
		t.Logf("nginx did not come up on port %d (attempt %d): %s", port, attempt+1, lastErr)
	}
	t.Fatalf("nginx did not start: %s", lastErr)
}

func nginxConf(dir, docRoot, sock string, port int) string {
	return fmt.Sprintf(`# Written by test/browser: serves php/demo/public as php/demo/README.md says.
user www-data www-data;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;

events { worker_connections 64; }

http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/tmp/body;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    proxy_temp_path %[1]s/tmp/proxy;
    types {
        text/html html;
        text/css css;
        application/javascript js;
        image/png png;
    }
    default_type application/octet-stream;

    server {
        listen 127.0.0.1:%[4]d;
        server_name localhost;
        root %[2]s;
        index index.php;

        location / {
            try_files $uri $uri/ =404;
        }
        location ~ \.php$ {
            try_files $uri =404;
            include %[5]s;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:%[3]s;
        }
    }
}
`, dir, docRoot, sock, port, fastcgiParams)
}

// get fetches a page of the site without a browser (a first check that nginx and PHP work).
func (s *site) get(path string) (int, string) {
	s.t.Helper()
	c := http.Client{Timeout: 15 * time.Second}
	res, err := c.Get(strings.TrimSuffix(s.url, "/") + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// ---------------------------------------------------------------------------------------------
// Processes

// proc is a server the test started (php-fpm, nginx) in the foreground.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	pid  int
	done chan struct{}
}

// startProcess starts a server; t fails when it cannot start, owner stops it when it ends.
func startProcess(t, owner *testing.T, name, outPath, prog string, args ...string) *proc {
	t.Helper()
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	defer out.Close()
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // no terminal signal reaches it
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: owner, name: name, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	owner.Cleanup(p.stop)
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the server by its PID: QUIT (graceful for both nginx and php-fpm), TERM, KILL;
// then any worker of it still alive, by PID.
func (p *proc) stop() {
	workers := descendants(p.pid)
	stopPID(p.pid, p.done, syscall.SIGQUIT, 5*time.Second)
	for _, w := range workers {
		waitOrKill(p.t, w, 3*time.Second)
	}
}

// stopPID sends sig to pid and waits for done; then TERM, then KILL.
func stopPID(pid int, done chan struct{}, sig syscall.Signal, grace time.Duration) {
	for _, s := range []syscall.Signal{sig, syscall.SIGTERM, syscall.SIGKILL} {
		select {
		case <-done:
			return
		default:
		}
		syscall.Kill(pid, s)
		select {
		case <-done:
			return
		case <-time.After(grace):
		}
	}
	<-done
}

// waitOrKill waits until the process is gone and kills it by PID (SIGKILL) when it is still
// there after timeout. A PID reused by another process meanwhile is left alone.
func waitOrKill(t *testing.T, pid int, timeout time.Duration) {
	start := procStart(pid)
	if start == "" {
		return
	}
	gone := func() bool {
		s := procStart(pid)
		return s == "" || s != start || procState(pid) == "Z"
	}
	if pollQuiet(timeout, gone) {
		return
	}
	comm, _, _ := procStat(pid)
	t.Logf("cleanup: %s (pid %d) still alive after %v: SIGKILL", comm, pid, timeout)
	syscall.Kill(pid, syscall.SIGKILL)
	pollQuiet(5*time.Second, gone)
}

// procStat returns a process's command name and parent PID.
func procStat(pid int) (comm string, ppid int, err error) {
	fields, comm, err := statFields(pid)
	if err != nil {
		return "", 0, err
	}
	ppid, err = strconv.Atoi(fields[1])
	return comm, ppid, err
}

// statFields are the fields of /proc/PID/stat after the command name (fields[0] is the state).
func statFields(pid int) ([]string, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, "", err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return nil, "", fmt.Errorf("odd /proc/%d/stat %q", pid, s)
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 20 {
		return nil, "", fmt.Errorf("odd /proc/%d/stat %q", pid, s)
	}
	return fields, s[open+1 : end], nil
}

// procStart is the process's start time in clock ticks since boot ("" when it is gone): with
// the PID it names one process, whatever PIDs are reused later.
func procStart(pid int) string {
	f, _, err := statFields(pid)
	if err != nil {
		return ""
	}
	return f[19]
}

func procState(pid int) string {
	f, _, err := statFields(pid)
	if err != nil {
		return ""
	}
	return f[0]
}

// descendants returns every process below pid.
func descendants(pid int) []int {
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
	var out []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// processesMentioning returns the processes whose command line contains s.
func processesMentioning(s string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		p, err := strconv.Atoi(ent.Name())
		if err != nil || p == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, p)
		}
	}
	return out
}

// freePort returns a loopback TCP port that was free a moment ago (callers retry on a clash).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ---------------------------------------------------------------------------------------------
// Small helpers

// pollQuiet is poll that reports instead of failing.
func pollQuiet(timeout time.Duration, check func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if check() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyTree copies a directory of regular files: directories 0755, files 0644 (0755 when
// executable), all owned by root, so www-data can read but not change them.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if fi.Mode()&0o111 != 0 {
			mode = 0o755
		}
		copyFile(t, path, target, mode)
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}
