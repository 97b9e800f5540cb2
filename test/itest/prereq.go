//go:build integration

package itest

import (
	"context"
	"errors"
	"fmt"
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
)

// Programs more than one suite needs.
const (
	PHPBin = "/usr/bin/php"
	EnvBin = "/usr/bin/env"
)

// ---------------------------------------------------------------------------------------------
// Skipping

var banners sync.Map // suite → *sync.Once

// Unavailable skips t with a message no one can miss, or fails it when
// CMESH_RUN_REQUIRE_INTEGRATION=1: where the suites must run (make test as root), a machine
// that lacks something must not pass for one that ran them.
func Unavailable(t *testing.T, suite, why string) {
	t.Helper()
	msg := strings.ToUpper(suite) + " INTEGRATION TESTS NOT RUN: " + why
	if os.Getenv("CMESH_RUN_REQUIRE_INTEGRATION") == "1" {
		t.Fatal(msg + " (CMESH_RUN_REQUIRE_INTEGRATION=1)")
	}
	once, _ := banners.LoadOrStore(suite, new(sync.Once))
	once.(*sync.Once).Do(func() {
		fmt.Fprintf(os.Stderr, "\n!!!!!!!! %s\n!!!!!!!! (set CMESH_RUN_REQUIRE_INTEGRATION=1 to make this a failure)\n\n", msg)
	})
	t.Skip(msg)
}

// ---------------------------------------------------------------------------------------------
// What a suite needs of the machine

// Needs is what a suite needs of the machine.
type Needs struct {
	Binary  bool           // CMESH_RUN_BIN: the absolute path of an executable file
	Root    string         // why the suite must run as root ("": it need not)
	Tools   []string       // files that must be executable
	Install string         // the Debian packages that bring Tools, for the message
	Users   []string       // accounts that must exist
	Atd     bool           // a running atd
	Checks  []func() error // whatever else the suite needs, checked last
}

// Check returns the first thing the machine lacks, or nil.
func (n Needs) Check() error {
	if n.Binary {
		if _, err := CheckBinary(); err != nil {
			return err
		}
	}
	if n.Root != "" && os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (%s)", n.Root)
	}
	for _, tool := range n.Tools {
		if fi, err := os.Stat(tool); err != nil || fi.Mode()&0o111 == 0 {
			if n.Install != "" {
				return fmt.Errorf("%s is missing (apt-get install %s)", tool, n.Install)
			}
			return fmt.Errorf("%s is missing", tool)
		}
	}
	for _, u := range n.Users {
		if _, err := user.Lookup(u); err != nil {
			return fmt.Errorf("user %s: %v", u, err)
		}
	}
	if n.Atd {
		if _, ok := AtdPID(); !ok {
			return fmt.Errorf("atd is not running: %s names no live atd (start %s)", AtdPIDFile, AtdBin)
		}
	}
	for _, check := range n.Checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// Require returns CMESH_RUN_BIN once the machine has all of n, and otherwise calls Unavailable.
func Require(t *testing.T, suite string, n Needs) string {
	t.Helper()
	if err := n.Check(); err != nil {
		Unavailable(t, suite, err.Error())
	}
	return os.Getenv("CMESH_RUN_BIN")
}

// CheckBinary returns CMESH_RUN_BIN once it names, by its absolute path, an executable file.
func CheckBinary() (string, error) {
	bin := os.Getenv("CMESH_RUN_BIN")
	if bin == "" {
		return "", errors.New("CMESH_RUN_BIN is not set (give the absolute path of a built cmesh-run)")
	}
	if !filepath.IsAbs(bin) {
		return "", fmt.Errorf("CMESH_RUN_BIN=%q is not an absolute path", bin)
	}
	if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("CMESH_RUN_BIN=%q is not an executable file", bin)
	}
	return bin, nil
}

// Binary returns the cmesh-run under test: CMESH_RUN_BIN when it is set (it must pass
// CheckBinary), else one built from this module (two levels up, where the suites live) into
// dir.
func Binary(dir string) (string, error) {
	if os.Getenv("CMESH_RUN_BIN") != "" {
		return CheckBinary()
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "cmesh-run")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build cmesh-run: %v\n%s", err, out)
	}
	return bin, nil
}

// CloseInheritedFDs marks every descriptor above 2 close-on-exec: what the test process
// inherited (a CI runner's descriptors) must not reach the daemons and jobs it starts.
func CloseInheritedFDs() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Packages

// Need is a file a suite needs (a glob) and the Debian package that brings it.
type Need struct{ File, Pkg string }

// Missing returns the packages whose files are missing, each once, in the order of needs.
func Missing(needs []Need) []string {
	var pkgs []string
	seen := map[string]bool{}
	for _, n := range needs {
		if m, _ := filepath.Glob(n.File); len(m) > 0 || seen[n.Pkg] {
			continue
		}
		seen[n.Pkg] = true
		pkgs = append(pkgs, n.Pkg)
	}
	return pkgs
}

// AptInstall installs pkgs with apt-get (running apt-get update first when the install fails,
// a machine's package lists may be stale or absent) and returns the end of its output.
func AptInstall(pkgs ...string) (string, error) {
	if _, err := os.Stat("/usr/bin/apt-get"); err != nil {
		return "", fmt.Errorf("missing %s and no apt-get to install them", strings.Join(pkgs, " "))
	}
	apt := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/usr/bin/apt-get", append([]string{"-q", "-o", "DPkg::Lock::Timeout=600"}, args...)...)
		cmd.Env = []string{"PATH=" + StdPath, "DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8"}
		out, err := cmd.CombinedOutput()
		return LastLines(string(out), 10), err
	}
	install := append([]string{"-y", "install", "--no-install-recommends"}, pkgs...)
	out, err := apt(15*time.Minute, install...)
	if err == nil {
		return out, nil
	}
	if upd, err := apt(10*time.Minute, "update"); err != nil {
		return "", fmt.Errorf("apt-get update: %v\n%s", err, upd)
	}
	if out, err = apt(15*time.Minute, install...); err != nil {
		return "", fmt.Errorf("apt-get install %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return out, nil
}

// Main runs a suite's tests with what a suite that runs cmesh-run from the shell needs first:
// no descriptor the test process inherited (a CI runner's) reaches the daemons and jobs the
// tests start; *bin is the cmesh-run under test (Binary, into a temp dir); *emptyConfig is an
// empty config file, readable by every user, for CMESH_RUN_CONFIG, so that the machine's
// /etc/cmesh-run/config.toml does not steer the tests. It removes what it made and exits with
// the tests' status.
func Main(m *testing.M, bin, emptyConfig *string) {
	CloseInheritedFDs()
	os.Exit(runMain(m, bin, emptyConfig))
}

func runMain(m *testing.M, bin, emptyConfig *string) int {
	dir, err := os.MkdirTemp("", "cmesh-run-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = Binary(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*emptyConfig = filepath.Join(dir, "empty-config.toml")
	if err := os.WriteFile(*emptyConfig, nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
