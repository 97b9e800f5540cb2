//go:build integration

// Package systemd proves, under a real systemd, that a job scheduled from a PHP-FPM request
// through cmesh-run survives `systemctl restart php8.2-fpm`, while a job started from the same
// kind of page with `exec('... > log 2>&1 &')` does not:
//
//	CMESH_RUN_BIN=/abs/path/to/cmesh-run go test -tags integration -count=1 -v ./test/systemd/
//
// systemd is not PID 1 on the machines this runs on, so the test boots one: an overlay of the
// host's / (a tmpfs upper layer, so nothing reaches the host's disk) becomes the root of a
// systemd-nspawn container, started from a private mount namespace, in which the stock
// php8.2-fpm.service and atd.service run. Everything the test changes (at.deny, the binary,
// the PHP pages, masked units) is written into the overlay only.
//
// Needs root. Missing packages (systemd-container, at, php-fpm, php-cli, libfcgi-bin) are
// installed with apt-get. When something cannot be had the test skips loudly; with
// CMESH_RUN_REQUIRE_INTEGRATION=1 it fails instead. Without CMESH_RUN_BIN the binary is built
// from the module root.
package systemd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

const (
	// tempPrefix names every directory a run creates under os.TempDir(); a run that finds
	// one whose owner is dead cleans it up (stale mounts, a lingering container).
	tempPrefix = "cmesh-run-systemd-test-"

	bootTimeout     = 60 * time.Second
	poweroffTimeout = 30 * time.Second
)

// ---------------------------------------------------------------------------------------------
// Preconditions

// unavailable skips t with a loud message, or fails it when CMESH_RUN_REQUIRE_INTEGRATION=1.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	itest.Unavailable(t, "systemd", fmt.Sprintf(format, args...))
}

// required are the files the test needs and the Debian packages that bring them.
var required = []itest.Need{
	{File: "/lib/systemd/systemd", Pkg: "systemd"},
	{File: "/usr/bin/systemd-nspawn", Pkg: "systemd-container"},
	{File: itest.AtdBin, Pkg: "at"},
	{File: itest.FPMBin, Pkg: "php-fpm"},
	{File: itest.PHPBin, Pkg: "php-cli"},
	{File: itest.CGIFcgi, Pkg: "libfcgi-bin"},
	{File: "/usr/bin/nsenter", Pkg: "util-linux"},
	{File: "/usr/bin/unshare", Pkg: "util-linux"},
	{File: "/usr/bin/setpriv", Pkg: "util-linux"},
}

const fpmUnitFile = "/lib/systemd/system/php8.2-fpm.service"

// ensurePrerequisites installs what is missing (as root) and returns why the test cannot run,
// or "".
func ensurePrerequisites(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return "must run as root (mounts an overlay, boots a container with systemd-nspawn)"
	}
	if missing := itest.Missing(required); len(missing) > 0 {
		t.Logf("installing %s", strings.Join(missing, " "))
		if _, err := itest.AptInstall(missing...); err != nil {
			return fmt.Sprintf("cannot install %s: %v", strings.Join(missing, " "), err)
		}
		if still := itest.Missing(required); len(still) > 0 {
			return fmt.Sprintf("still missing after apt-get install: %s", strings.Join(still, " "))
		}
	}
	if _, err := os.Stat(fpmUnitFile); err != nil {
		return fmt.Sprintf("%s: %v (the stock php8.2-fpm unit is what this test restarts)", fpmUnitFile, err)
	}
	if _, err := os.Stat(itest.AtBin); err != nil {
		return itest.AtBin + " missing"
	}
	return ""
}

// binary returns the cmesh-run under test: $CMESH_RUN_BIN, else one built from the module.
func binary(t *testing.T) string {
	t.Helper()
	bin, err := itest.Binary(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// ---------------------------------------------------------------------------------------------
// The container

// container is a systemd booted by systemd-nspawn on an overlay of the host's /.
type container struct {
	t       *testing.T
	name    string
	base    string // os.TempDir()/cmesh-run-systemd-test-XXXX: owner, up/, root/, console.log
	up      string // tmpfs: the overlay's upper and work dirs
	root    string // the overlay: the container's /, seen from the host
	console *os.File

	cmd    *exec.Cmd     // unshare → sh → systemd-nspawn (exec'd: same PID, own process group)
	exited chan struct{} // closed when cmd has been waited for
	init   int           // host PID of the container's systemd (its PID 1), 0 until known

	upMounted, rootMounted bool

	// memcg is the host's cgroup v1 memory cgroup made for the container (see
	// bootOptions.memory), removed with it; "" when none.
	memcg string
}

// bootOptions are what a test may ask of its container beyond the defaults.
type bootOptions struct {
	// memory makes MemoryMax= work inside the container on a host whose memory controller
	// sits on a cgroup v1 hierarchy: nspawn mounts that hierarchy read-only in the container,
	// and its systemd then ignores MemoryMax=. The container gets a memory cgroup of its own
	// (a child of the test's), its mount of the hierarchy is made writable after the boot
	// and systemd re-executed to notice. On a cgroup v2 host nothing is needed or done.
	memory bool
}

// bootContainer boots systemd in a fresh container and returns once it is running (or
// degraded). Everything is undone by t.Cleanup, also when the test fails halfway.
func bootContainer(t *testing.T, prepare func(c *container)) *container {
	t.Helper()
	return bootContainerWith(t, bootOptions{}, prepare)
}

// bootContainerWith is bootContainer with options.
func bootContainerWith(t *testing.T, bo bootOptions, prepare func(c *container)) *container {
	t.Helper()
	cleanStale(t)

	base, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		t.Fatal(err)
	}
	c := &container{t: t, name: "cmesh-" + randHex(4), base: base,
		up: filepath.Join(base, "up"), root: filepath.Join(base, "root")}
	t.Cleanup(c.destroy)
	if err := os.WriteFile(filepath.Join(base, "owner"), []byte(selfIdentity()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{c.up, c.root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mount("tmpfs", c.up, "tmpfs", 0, "mode=0755"); err != nil {
		unavailable(t, "mount tmpfs on %s: %v", c.up, err)
	}
	c.upMounted = true
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(c.up, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s,workdir=%s", filepath.Join(c.up, "upper"), filepath.Join(c.up, "work"))
	if err := syscall.Mount("overlay", c.root, "overlay", 0, opts); err != nil {
		unavailable(t, "mount an overlay of / on %s: %v", c.root, err)
	}
	c.rootMounted = true
	if !isMountPoint(c.root) {
		t.Fatalf("%s is not a mount point after mounting the overlay", c.root)
	}

	prepare(c)

	c.console, err = os.Create(filepath.Join(base, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	// The private mount namespace keeps nspawn's mounts (and its tmpfs on /run/systemd, which
	// it insists on since the host's systemd is not running) off the host.
	script := fmt.Sprintf("mount --make-rprivate / && mount -t tmpfs tmpfs /run/systemd && "+
		"exec systemd-nspawn -D %s --private-network --register=no --keep-unit --link-journal=no -M %s -b --console=pipe",
		shellQuote(c.root), c.name)
	if bo.memory {
		if c.memcg = makeMemoryCgroup(t, c.name); c.memcg != "" {
			script = "echo $$ > " + shellQuote(filepath.Join(c.memcg, "cgroup.procs")) + " && " + script
		}
	}
	c.cmd = exec.Command("unshare", "--mount", "sh", "-c", script)
	c.cmd.Env = []string{"PATH=" + itest.StdPath, "LANG=C.UTF-8"}
	c.cmd.Stdout, c.cmd.Stderr = c.console, c.console
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := c.cmd.Start(); err != nil {
		unavailable(t, "start systemd-nspawn: %v", err)
	}
	c.exited = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.exited) }()

	// The container's PID 1: nspawn's child in another PID namespace.
	deadline := time.Now().Add(20 * time.Second)
	for c.init == 0 {
		if c.hasExited() {
			unavailable(t, "systemd-nspawn exited at once (%v):\n%s", c.cmd.ProcessState, c.consoleTail())
		}
		if time.Now().After(deadline) {
			unavailable(t, "no container init under systemd-nspawn (PID %d) after 20s:\n%s", c.cmd.Process.Pid, c.consoleTail())
		}
		c.init = containerInit(c.cmd.Process.Pid)
		if c.init == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Poll until the boot is over.
	deadline = time.Now().Add(bootTimeout)
	last := ""
	for {
		if c.hasExited() {
			unavailable(t, "the container stopped while booting (%v):\n%s", c.cmd.ProcessState, c.consoleTail())
		}
		out, _, _ := c.run(5*time.Second, "systemctl", "is-system-running")
		last = strings.TrimSpace(out)
		if last == "running" || last == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			unavailable(t, "systemd in the container is still %q after %v:\n%s", last, bootTimeout, c.consoleTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("container %s: systemd (host PID %d) %s after %v", c.name, c.init, last, time.Since(start).Round(time.Millisecond))
	if last == "degraded" {
		out, _, _ := c.run(10*time.Second, "systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
		t.Logf("degraded: failed units:\n%s", out)
	}
	if c.memcg != "" {
		c.enableMemory()
	}
	return c
}

// makeMemoryCgroup creates, on a host whose memory controller is on a cgroup v1 hierarchy,
// a child of the test's own memory cgroup for the container, and returns its path; "" when
// the host has no such hierarchy (cgroup v2: the container's systemd gets its memory
// controller delegated by nspawn) or it cannot be done (then MemoryMax tests skip).
func makeMemoryCgroup(t *testing.T, name string) string {
	mnt, root := v1MemoryMount()
	if mnt == "" {
		return ""
	}
	own := ""
	b, _ := os.ReadFile("/proc/self/cgroup")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "memory") {
			own = f[2]
		}
	}
	rel, err := filepath.Rel(root, own)
	if own == "" || err != nil || strings.HasPrefix(rel, "..") {
		t.Logf("memory cgroup: cannot place the container under %q (hierarchy root %q)", own, root)
		return ""
	}
	dir := filepath.Join(mnt, rel, tempPrefix+name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Logf("memory cgroup: %v", err)
		return ""
	}
	return dir
}

// v1MemoryMount returns the mount point and root of the cgroup v1 hierarchy that holds the
// memory controller, "" when there is none.
func v1MemoryMount() (string, string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) > 4 && len(g) > 2 && g[0] == "cgroup" && slices.Contains(strings.Split(g[2], ","), "memory") {
			return unescapeMount(f[4]), unescapeMount(f[3])
		}
	}
	return "", ""
}

// enableMemory makes the container's view of the memory hierarchy writable and re-executes
// its systemd, which only looks at the controllers it may write when it starts.
func (c *container) enableMemory() {
	t := c.t
	if _, errOut, err := c.run(10*time.Second, "mount", "-o", "remount,bind,rw", "/sys/fs/cgroup/memory"); err != nil {
		t.Logf("memory cgroup: remount rw inside the container: %v %s", err, errOut)
		return
	}
	if _, errOut, err := c.run(30*time.Second, "systemctl", "daemon-reexec"); err != nil {
		t.Fatalf("systemctl daemon-reexec: %v %s", err, errOut)
	}
	last := ""
	if !itest.Eventually(30*time.Second, func() bool {
		out, _, _ := c.run(5*time.Second, "systemctl", "is-system-running")
		last = strings.TrimSpace(out)
		return last == "running" || last == "degraded"
	}) {
		t.Fatalf("systemd is %q 30s after daemon-reexec", last)
	}
}

// removeMemoryCgroup removes the container's memory cgroup and what its systemd left below
// it (cgroup v1 directories outlive their processes), deepest first.
func removeMemoryCgroup(t *testing.T, dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		var err error
		itest.Eventually(5*time.Second, func() bool { err = syscall.Rmdir(d); return err == nil || errors.Is(err, fs.ErrNotExist) })
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cleanup: rmdir %s: %v", d, err)
		}
	}
}

func (c *container) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

func (c *container) consoleTail() string {
	b, _ := os.ReadFile(filepath.Join(c.base, "console.log"))
	return itest.LastLines(string(b), 30)
}

// run runs argv inside the container (all its namespaces, its root) as root, with a clean
// environment, and returns stdout, stderr and the error (an *exec.ExitError on exit != 0).
func (c *container) run(timeout time.Duration, argv ...string) (string, string, error) {
	return c.runIn(timeout, nil, argv...)
}

// runAs runs argv inside the container as user (by name, resolved in the container).
func (c *container) runAs(timeout time.Duration, user string, argv ...string) (string, string, error) {
	return c.runIn(timeout, nil, append([]string{"/usr/bin/setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups", "--"}, argv...)...)
}

// runIn runs argv inside the container with env (besides PATH and LANG) and nothing else.
func (c *container) runIn(timeout time.Duration, env []string, argv ...string) (string, string, error) {
	if c.init == 0 {
		return "", "", errors.New("container not started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"-t", strconv.Itoa(c.init), "-a", "/usr/bin/env", "-i", "PATH=" + itest.StdPath, "LANG=C.UTF-8"}
	args = append(append(args, env...), argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = []string{"PATH=" + itest.StdPath}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%q timed out after %v: %w", argv, timeout, ctx.Err())
	}
	return so.String(), se.String(), err
}

// must runs argv inside the container and fails the test unless it exits 0.
func (c *container) must(timeout time.Duration, argv ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(timeout, argv...)
	if err != nil {
		c.t.Fatalf("in the container: %q: %v\nstdout: %s\nstderr: %s", argv, err, out, errOut)
	}
	return out
}

// path returns the host path of a file inside the running container, through its PID 1's
// root (which also sees mounts made inside the container, such as a tmpfs on /tmp).
func (c *container) path(p string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", c.init), p)
}

// overlay returns the host path of p in the container's root before it boots.
func (c *container) overlay(p string) string {
	return filepath.Join(c.root, p)
}

// destroy powers the container off, kills what is left of it, unmounts and removes base.
func (c *container) destroy() {
	t := c.t
	if t.Failed() && c.cmd != nil {
		// The console stays empty with --console=pipe (no status output without a tty): the
		// journal has the story.
		t.Logf("container console (last lines):\n%s", c.consoleTail())
		if c.init != 0 && !c.hasExited() {
			out, _, _ := c.run(15*time.Second, "journalctl", "-b", "--no-pager", "-n", "80")
			t.Logf("container journal (last 80 lines):\n%s", out)
		}
	}
	if c.cmd != nil && c.cmd.Process != nil && !c.hasExited() {
		stop := time.Now()
		defer func() { t.Logf("cleanup: container stopped in %v", time.Since(stop).Round(time.Millisecond)) }()
		if c.init != 0 {
			if _, errOut, err := c.run(15*time.Second, "systemctl", "poweroff"); err != nil {
				t.Logf("cleanup: systemctl poweroff: %v %s", err, errOut)
			}
		}
		select {
		case <-c.exited:
		case <-time.After(poweroffTimeout):
			t.Logf("cleanup: the container did not stop within %v of poweroff; killing it", poweroffTimeout)
			if c.init != 0 {
				syscall.Kill(c.init, syscall.SIGKILL) // kills its whole PID namespace
			}
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("cleanup: systemd-nspawn (PID %d) still running after SIGKILL", c.cmd.Process.Pid)
			}
		}
	}
	if c.console != nil {
		c.console.Close()
	}
	if c.rootMounted {
		if err := unmount(c.root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if c.upMounted {
		if err := unmount(c.up); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if c.memcg != "" && (c.cmd == nil || c.cmd.Process == nil || c.hasExited()) {
		removeMemoryCgroup(t, c.memcg)
	}
	removeBase(t, c.base)
}

// removeBase removes a run's directory, never while anything is mounted under it.
func removeBase(t *testing.T, base string) {
	if m := mountsUnder(base); len(m) > 0 {
		t.Errorf("cleanup: not removing %s: still mounted: %s", base, strings.Join(m, " "))
		return
	}
	if err := os.RemoveAll(base); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// unmount unmounts target, retrying while busy, lazily as a last resort.
func unmount(target string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Unmount(target, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) && !isMountPoint(target) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			if err2 := syscall.Unmount(target, syscall.MNT_DETACH); err2 == nil {
				return fmt.Errorf("umount %s: %v; detached it lazily", target, err)
			}
			return fmt.Errorf("umount %s: %v", target, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------------------------
// Leftovers of a crashed run

// selfIdentity names this process so that a later run can tell whether it is still alive:
// "PID STARTTIME".
func selfIdentity() string {
	return fmt.Sprintf("%d %d", os.Getpid(), itest.ProcStart(os.Getpid()))
}

// cleanStale removes what runs that died before their cleanup left behind: their container,
// their mounts and their directory. Directories of a run still in progress are left alone.
func cleanStale(t *testing.T) {
	t.Helper()
	bases, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, m := range mountsUnder(filepath.Join(os.TempDir())) {
		if rel, err := filepath.Rel(os.TempDir(), m); err == nil && strings.HasPrefix(rel, tempPrefix) {
			b := filepath.Join(os.TempDir(), strings.SplitN(rel, string(filepath.Separator), 2)[0])
			if !slices.Contains(bases, b) {
				bases = append(bases, b)
			}
		}
	}
	for _, base := range bases {
		owner, _ := os.ReadFile(filepath.Join(base, "owner"))
		if f := strings.Fields(string(owner)); len(f) == 2 {
			if pid, _ := strconv.Atoi(f[0]); pid > 0 && strconv.FormatUint(itest.ProcStart(pid), 10) == f[1] {
				t.Logf("leaving %s alone: its run (PID %d) is still going", base, pid)
				continue
			}
		}
		t.Logf("cleaning up %s, left by a run that died", base)
		killUnder(t, base)
		m := mountsUnder(base)
		sort.Slice(m, func(i, j int) bool { return len(m[i]) > len(m[j]) }) // deepest first
		for _, p := range m {
			if err := unmount(p); err != nil {
				t.Logf("stale: %v", err)
			}
		}
		removeBase(t, base)
	}
}

// killUnder kills the processes of a stale run: every container PID 1 whose mounts name base
// (its overlay; killing it kills its whole PID namespace), then the nspawn whose command line
// names base. (/proc/PID/root of a container's process reads "/": useless here.)
func killUnder(t *testing.T, base string) {
	var inits, others []int
	for _, pid := range itest.PIDs() {
		if pid == os.Getpid() || pid == 1 {
			continue
		}
		if nsPID(pid) == 1 {
			mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
			if bytes.Contains(mi, []byte(base+"/")) {
				inits = append(inits, pid)
			}
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte(base+"/")) {
			others = append(others, pid)
		}
	}
	victims := append(inits, others...)
	for _, pid := range victims {
		t.Logf("stale: killing PID %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range victims {
		for itest.ProcStart(pid) != 0 && !isZombie(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// /proc and mountinfo

// nsPID returns the PID of pid in its innermost PID namespace (NSpid's last field).
func nsPID(pid int) int {
	f := strings.Fields(itest.StatusField(pid, "NSpid"))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[len(f)-1])
	return n
}

func isZombie(pid int) bool {
	return itest.ProcState(pid) == "Z"
}

// parentPID returns the PPid of pid, 0 when gone.
func parentPID(pid int) int {
	n, _ := strconv.Atoi(itest.StatusField(pid, "PPid"))
	return n
}

// containerInit returns the host PID of the PID 1 that nspawn (PID nspawn) started, or 0.
func containerInit(nspawn int) int {
	for _, pid := range itest.PIDs() {
		if parentPID(pid) == nspawn && nsPID(pid) == 1 {
			return pid
		}
	}
	return 0
}

// hostPID returns the host PID of the process that the container (PID 1 = init) knows as pid,
// or 0 when there is none (zombies count as gone).
func hostPID(init, pid int) int {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		return 0
	}
	for _, p := range itest.PIDs() {
		if nsPID(p) != pid || isZombie(p) {
			continue
		}
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); ns == want {
			return p
		}
	}
	return 0
}

// cgroupOf returns the systemd cgroup of host PID pid: the name=systemd hierarchy on a hybrid
// host, else the unified one. "" when gone.
func cgroupOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	unified := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "name=systemd" {
			return f[2]
		}
		if f[0] == "0" {
			unified = f[2]
		}
	}
	return unified
}

// mounts returns every mount point of this mount namespace.
func mounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points strictly below dir.
func mountsUnder(dir string) []string {
	var out []string
	for _, m := range mounts() {
		if strings.HasPrefix(m, strings.TrimSuffix(dir, "/")+"/") {
			out = append(out, m)
		}
	}
	return out
}

func isMountPoint(p string) bool {
	return slices.Contains(mounts(), p)
}

// ---------------------------------------------------------------------------------------------
// Small helpers

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeFile writes data to path (in the overlay) with mode, creating parents 0755.
func writeFile(t *testing.T, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Remove(path) // replace, never write through to a copy-up of someone else's file mode
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask
		t.Fatal(err)
	}
}
