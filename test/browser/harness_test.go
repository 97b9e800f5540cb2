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
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

const (
	chromiumBin     = "/usr/bin/chromium"
	chromedriverBin = "/usr/bin/chromedriver"
	nginxBin        = "/usr/sbin/nginx"
	fastcgiParams   = "/etc/nginx/fastcgi_params"
)

// ---------------------------------------------------------------------------------------------
// Preconditions and packages

// needs are the files the test needs and the packages that bring them.
var needs = []itest.Need{
	{File: nginxBin, Pkg: "nginx-light"},
	{File: fastcgiParams, Pkg: "nginx-light"},
	{File: "/usr/sbin/php-fpm*", Pkg: "php-fpm"},
	{File: chromiumBin, Pkg: "chromium"},
	{File: chromedriverBin, Pkg: "chromium-driver"},
	{File: itest.AtBin, Pkg: "at"},
	{File: itest.AtdBin, Pkg: "at"},
}

var (
	installOnce sync.Once
	installErr  error
	installLog  string
)

// requireIntegration returns the cmesh-run binary under test once everything the test needs
// is there (installing what is missing), or skips (fails with CMESH_RUN_REQUIRE_INTEGRATION=1).
func requireIntegration(t *testing.T) string {
	t.Helper()
	return itest.Require(t, "browser", itest.Needs{
		Binary: true,
		Root:   "installs packages, starts php-fpm as www-data, edits /etc/at.deny",
		Users:  []string{itest.WebUser},
		Checks: []func() error{
			func() error { return installMissing(t) },
			func() error { _, err := fpmBinary(); return err },
			func() error { return itest.CheckAtFiles(itest.WebUser, false) },
		},
	})
}

// installMissing installs, with apt-get, the packages whose files are missing (once), and
// logs what it installed and how long it took.
func installMissing(t *testing.T) error {
	installOnce.Do(func() {
		pkgs := itest.Missing(needs)
		if len(pkgs) == 0 {
			return
		}
		start := time.Now()
		_, err := itest.AptInstall(pkgs...)
		if i := slices.Index(pkgs, "nginx-light"); err != nil && i >= 0 {
			// nginx-light is gone from some releases: the full package brings the same files.
			pkgs[i] = "nginx"
			_, err = itest.AptInstall(pkgs...)
		}
		if still := itest.Missing(needs); err == nil && len(still) > 0 {
			err = fmt.Errorf("%s still missing after apt-get install %s", strings.Join(still, " "), strings.Join(pkgs, " "))
		}
		installErr = err
		installLog = fmt.Sprintf("installed %s in %.1f s", strings.Join(pkgs, " "), time.Since(start).Seconds())
	})
	if installLog != "" && installErr == nil {
		t.Log(installLog)
	}
	return installErr
}

// fpmBinary is the newest /usr/sbin/php-fpmX.Y.
func fpmBinary() (string, error) {
	m, _ := filepath.Glob("/usr/sbin/php-fpm[0-9]*")
	if len(m) == 0 {
		return "", fmt.Errorf("no /usr/sbin/php-fpmX.Y (apt-get install php-fpm)")
	}
	return m[len(m)-1], nil
}

// ensureAtd starts atd when it is not running, and stops that atd (by its PID) at the end.
func ensureAtd(t *testing.T) {
	t.Helper()
	if _, ok := itest.AtdPID(); ok {
		return
	}
	// atd daemonizes, and hands every descriptor it holds to every job: it gets none but
	// 0-2, all /dev/null (Go's os/exec passes nothing else).
	if err := exec.Command(itest.AtdBin).Run(); err != nil {
		t.Fatalf("start %s: %v", itest.AtdBin, err)
	}
	var pid int
	itest.Poll(t, 5*time.Second, "atd to write "+itest.AtdPIDFile, func() (bool, string) {
		var ok bool
		pid, ok = itest.AtdPID()
		return ok, "no live atd in " + itest.AtdPIDFile
	})
	t.Logf("started atd (pid %d); it stops at the end", pid)
	start := itest.ProcStart(pid)
	t.Cleanup(func() {
		if itest.ProcStart(pid) == start {
			syscall.Kill(pid, syscall.SIGTERM)
			itest.WaitOrKill(t, pid, 5*time.Second)
		}
	})
}

// ---------------------------------------------------------------------------------------------
// The site: a copy of php/ that www-data can read, a state dir, a pool and nginx

type site struct {
	t        *testing.T // fails on error
	root     string     // the temp tree, 0755
	bin      string     // the copy of cmesh-run that www-data runs
	docRoot  string     // php/demo/public
	stateDir string
	conf     string // an empty cmesh-run config: no machine config applies
	web      itest.Account
	pool     *itest.Pool
	url      string // http://127.0.0.1:PORT/
}

func newSite(t *testing.T, bin string) *site {
	t.Helper()
	root, err := os.MkdirTemp("", "cmesh-run-browser-")
	itest.Must(t, err)
	t.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("remove %s: %v", root, err)
		}
	})
	itest.Must(t, os.Chmod(root, 0o755))
	s := &site{
		t: t, root: root, web: itest.LookupAccount(t, itest.WebUser),
		bin:      filepath.Join(root, "bin", "cmesh-run"),
		docRoot:  filepath.Join(root, "php", "demo", "public"),
		stateDir: filepath.Join(root, "state"),
		conf:     filepath.Join(root, "cmesh-run.toml"),
	}
	for _, d := range []string{"bin", "nginx", "chrome"} {
		itest.Must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.stateDir, 0o750}, {filepath.Join(root, "work"), 0o755}} {
		itest.Must(t, os.Mkdir(d.path, d.mode))
		itest.Must(t, os.Chmod(d.path, d.mode))
		itest.Must(t, os.Chown(d.path, s.web.UID, s.web.GID))
	}
	itest.CopyFile(t, bin, s.bin, 0o755)
	itest.Must(t, os.WriteFile(s.conf, nil, 0o644))

	// php/src and php/demo, side by side as in the repository (the demo finds the client
	// at ../src), without a config.local.php of the developer's.
	itest.CopyPHPClient(t, root)
	itest.CopyTree(t, "../../php/demo", filepath.Join(root, "php", "demo"))
	os.Remove(filepath.Join(root, "php", "demo", "config.local.php"))
	local := fmt.Sprintf(`<?php
// Written by test/browser: this copy's binary, state dir and an empty config.
return [
    'binary' => %s,
    'state_dir' => %s,
    'env' => ['CMESH_RUN_CONFIG' => %s],
    'workdir' => %s,
];
`, itest.PHPString(s.bin), itest.PHPString(s.stateDir), itest.PHPString(s.conf), itest.PHPString(filepath.Join(root, "work")))
	itest.Must(t, os.WriteFile(filepath.Join(root, "php", "demo", "config.local.php"), []byte(local), 0o644))

	// A pool as www-data (clear_env = yes, as Debian's) on a socket only www-data (nginx's
	// workers) may use.
	fpm, err := fpmBinary()
	itest.Must(t, err)
	s.pool = itest.NewPool(t, filepath.Join(root, "fpm"), itest.PoolConfig{
		Bin: fpm, Name: "demo", Socket: "demo.sock", SocketOwner: itest.WebUser,
		Settings: []string{
			"pm.max_children = 4",
			"chdir = /",
			"php_admin_flag[display_errors] = off",
			"php_admin_flag[log_errors] = on",
		},
	})
	t.Cleanup(s.settleJobs) // before the tree goes: no wrapper may still write into it
	return s
}

// with returns the site for use by test t (helpers fail the test they are given, and the pool
// it starts stops when t ends).
func (s *site) with(t *testing.T) *site {
	c := *s
	c.t = t
	return &c
}

// settleJobs cancels what is left of the site's jobs and waits until none is unfinished.
func (s *site) settleJobs() {
	itest.Settle(s.t, func(args ...string) ([]byte, bool) {
		out, _, code := s.direct(args...)
		return []byte(out), code == 0
	})
}

// direct runs the site's cmesh-run as www-data with the site's state dir and config.
func (s *site) direct(args ...string) (stdout, stderr string, exit int) {
	env := append(slices.Clone(itest.WebUserEnv), "CMESH_RUN_CONFIG="+s.conf)
	r, err := itest.Run(itest.Command(&s.web, env, s.bin, append([]string{"--state-dir", s.stateDir}, args...)...))
	if err != nil {
		return r.Stdout, r.Stderr + err.Error(), -1
	}
	return r.Stdout, r.Stderr, r.Exit
}

// job is SPEC.md's job object.
type job = itest.Job

// directStatus is the job as cmesh-run itself reports it, run as www-data.
func (s *site) directStatus(id string) job {
	s.t.Helper()
	return itest.StatusJSON(s.t, s.direct, id)
}

// startFPM starts the site's pool; it stops (QUIT by PID) when the site's test ends, if not
// before.
func (s *site) startFPM() *itest.Server {
	s.t.Helper()
	p := s.pool.Start(s.t)
	s.t.Logf("php-fpm pool up (pid %d, %s)", p.PID, s.pool.Sock)
	return p
}

// startNginx serves the demo's public/ on a free loopback port, PHP through the pool.
func (s *site) startNginx() {
	t := s.t
	t.Helper()
	dir := filepath.Join(s.root, "nginx")
	itest.Must(t, os.MkdirAll(filepath.Join(dir, "tmp"), 0o755))
	itest.Must(t, os.Chown(filepath.Join(dir, "tmp"), s.web.UID, s.web.GID))
	errLog := filepath.Join(dir, "error.log")
	var lastErr string
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		conf := filepath.Join(dir, "nginx.conf")
		itest.Must(t, os.WriteFile(conf, []byte(nginxConf(dir, s.docRoot, s.pool.Sock, port)), 0o644))
		if out, err := exec.Command(nginxBin, "-t", "-e", errLog, "-c", conf).CombinedOutput(); err != nil {
			t.Fatalf("nginx -t -c %s: %v\n%s", conf, err, out)
		}
		// QUIT is graceful for nginx.
		p := itest.Start(t, "nginx", exec.Command(nginxBin, "-e", errLog, "-c", conf, "-g", "daemon off;"),
			filepath.Join(dir, "nginx.out"), syscall.SIGQUIT, syscall.SIGTERM)
		up := false
		itest.Eventually(10*time.Second, func() bool {
			if p.Exited() {
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
		if up && !p.Exited() {
			s.url = fmt.Sprintf("http://127.0.0.1:%d/", port)
			t.Logf("nginx up (pid %d) at %s", p.PID, s.url)
			return
		}
		raw, _ := os.ReadFile(errLog)
		lastErr = itest.LastLines(string(raw), 5)
		p.Stop()
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

// freePort returns a loopback TCP port that was free a moment ago (callers retry on a clash).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	itest.Must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
