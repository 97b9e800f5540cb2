//go:build integration

package itest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PHP-FPM and the FastCGI client the suites use.
const (
	FPMBin  = "/usr/sbin/php-fpm8.2"
	CGIFcgi = "/usr/bin/cgi-fcgi"
)

// ---------------------------------------------------------------------------------------------
// Pools

// PoolConfig is what a suite's pool has beyond what every one has: the user www-data, a
// socket of its own, pm = static, clear_env = yes (Debian's default) and the workers' output
// in the log.
type PoolConfig struct {
	Bin         string   // php-fpm: FPMBin unless set
	Name        string   // the pool's section: "app" unless set
	Socket      string   // the socket's name in the pool's directory: "app.sock" unless set
	SocketOwner string   // the user and group that may connect: root unless set
	Settings    []string // more lines of the pool's section ("pm.max_children = 2", ...)
}

// Pool is a PHP-FPM pool of a test's own: its config, pid file, log and socket in one
// directory, its master started and stopped by PID.
type Pool struct {
	Dir  string
	Conf string
	Sock string
	Log  string
	bin  string
}

// NewPool writes the config of a pool into dir (made 0755) and returns it, not yet started.
// When t fails, the end of the pool's log goes into t's log.
func NewPool(t *testing.T, dir string, c PoolConfig) *Pool {
	t.Helper()
	if c.Bin == "" {
		c.Bin = FPMBin
	}
	if c.Name == "" {
		c.Name = "app"
	}
	if c.Socket == "" {
		c.Socket = "app.sock"
	}
	if c.SocketOwner == "" {
		c.SocketOwner = "root"
	}
	p := &Pool{Dir: dir, Conf: filepath.Join(dir, "fpm.conf"), Sock: filepath.Join(dir, c.Socket), Log: filepath.Join(dir, "fpm.log"), bin: c.Bin}
	Must(t, os.MkdirAll(dir, 0o755))
	conf := fmt.Sprintf(`[global]
pid = %[1]s
error_log = %[2]s
daemonize = no

[%[3]s]
user = %[4]s
group = %[4]s
listen = %[5]s
listen.owner = %[6]s
listen.group = %[6]s
listen.mode = 0660
pm = static
clear_env = yes
catch_workers_output = yes
`, filepath.Join(dir, "fpm.pid"), p.Log, c.Name, WebUser, p.Sock, c.SocketOwner)
	for _, s := range c.Settings {
		conf += s + "\n"
	}
	Must(t, os.WriteFile(p.Conf, []byte(conf), 0o644))
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(p.Log); err == nil {
				t.Logf("php-fpm log of %s (end):\n%s", dir, LastLines(string(b), 60))
			}
		}
	})
	return p
}

// Start checks the config, starts the master in a process group of its own and waits until
// the pool answers. Its Stop (at t's end, or earlier) sends QUIT, then TERM, by its PID.
func (p *Pool) Start(t *testing.T) *Server {
	t.Helper()
	if out, err := exec.Command(p.bin, "-t", "-y", p.Conf).CombinedOutput(); err != nil {
		t.Fatalf("%s -t -y %s: %v\n%s", p.bin, p.Conf, err, out)
	}
	os.Remove(p.Sock) // left by a pool killed with SIGKILL
	s := Start(t, "php-fpm", exec.Command(p.bin, "-F", "-y", p.Conf), p.Log, syscall.SIGQUIT, syscall.SIGTERM)
	Poll(t, 10*time.Second, "php-fpm to listen on "+p.Sock, func() (bool, string) {
		if s.Exited() {
			b, _ := os.ReadFile(p.Log)
			t.Fatalf("php-fpm exited at start: %v\n%s", s.Cmd.ProcessState, LastLines(string(b), 20))
		}
		c, err := net.Dial("unix", p.Sock)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return s
}

// Request sends one FastCGI request to the pool.
func (p *Pool) Request(r Request, timeout time.Duration) Response {
	return FastCGI(p.Sock, r, timeout)
}

// SharedDescriptors maps every socket and pipe of a pool's to where it was seen: the worker's
// during a request (fds as the page read them from /proc/self/fd) and, now, those of every
// process in the master's process group. A job holding one of them inherited it.
func SharedDescriptors(worker int, fds map[string]string, master int) map[string]string {
	shared := map[string]string{}
	for fd, target := range fds {
		if SharedKind(target) {
			shared[target] = fmt.Sprintf("worker %d fd %s", worker, fd)
		}
	}
	for _, pid := range GroupMembers(master) {
		for fd, target := range FDLinks(pid) {
			if SharedKind(target) {
				shared[target] = fmt.Sprintf("fpm pid %d fd %s", pid, fd)
			}
		}
	}
	return shared
}

// ---------------------------------------------------------------------------------------------
// FastCGI requests

// Request is one request as a web server would pass it to PHP-FPM.
type Request struct {
	Script string   // SCRIPT_FILENAME; SCRIPT_NAME is "/" and its base name
	Query  string   // a GET's QUERY_STRING
	Body   []byte   // a POST's body, sent as JSON; nil for a GET
	Vars   []string // more CGI variables, request headers among them ("HTTP_X_SECRET=...")
}

// Params are the CGI variables of r, as cgi-fcgi takes them from its environment.
func (r Request) Params() []string {
	params := []string{"SCRIPT_FILENAME=" + r.Script, "SCRIPT_NAME=/" + filepath.Base(r.Script)}
	if r.Body != nil {
		params = append(params, "REQUEST_METHOD=POST", "CONTENT_TYPE=application/json", "CONTENT_LENGTH="+strconv.Itoa(len(r.Body)))
	} else {
		params = append(params, "REQUEST_METHOD=GET", "QUERY_STRING="+r.Query)
	}
	return append(params, r.Vars...)
}

// Response is PHP-FPM's answer to a Request.
type Response struct {
	Status  int               // 200 unless a Status header says otherwise
	Header  map[string]string // by lower-case name
	Body    []byte
	Stderr  string // cgi-fcgi's: what the worker wrote to stderr, too
	Elapsed time.Duration
	Err     error // cgi-fcgi failed, or its output has no CGI header block
}

// FastCGI sends r to the socket with cgi-fcgi, in nothing but r's CGI variables, and gives up
// after timeout.
func FastCGI(sock string, r Request, timeout time.Duration) Response {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, EnvBin, append(append([]string{"-i"}, r.Params()...), CGIFcgi, "-bind", "-connect", sock)...)
	var stdout, stderr bytes.Buffer
	if r.Body != nil {
		cmd.Stdin = bytes.NewReader(r.Body)
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	resp := ParseCGI(stdout.Bytes())
	resp.Elapsed, resp.Stderr = time.Since(start), stderr.String()
	if err != nil {
		resp.Err = fmt.Errorf("cgi-fcgi: %v (stderr %q)", err, stderr.String())
	}
	return resp
}

// ParseCGI splits what a FastCGI client printed into the CGI header block and the body.
func ParseCGI(out []byte) Response {
	r := Response{Status: 200, Header: map[string]string{}}
	head, body, ok := bytes.Cut(out, []byte("\r\n\r\n"))
	if !ok {
		r.Body, r.Err = out, fmt.Errorf("no CGI header block in %q", out)
		return r
	}
	r.Body = body
	for _, line := range strings.Split(string(head), "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		r.Header[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if s, ok := r.Header["status"]; ok {
		r.Status, _ = strconv.Atoi(strings.Fields(s + " 0")[0])
	}
	return r
}
