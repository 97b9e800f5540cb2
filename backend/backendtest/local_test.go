package backendtest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/backend/backendtest"
)

// The backends that need no root and no service run the suite in plain go
// test: direct, and the spool with a worker of the test's own.
func TestLocalBackends(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmesh-run and runs jobs")
	}
	bin := build(t)
	for _, name := range []string{"direct", "spool"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			config := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(config, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			cli := func(t *testing.T, args ...string) (int, string, string) {
				t.Helper()
				cmd := exec.Command(bin, append([]string{"--state-dir", state, "--config", config}, args...)...)
				cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				err := cmd.Run()
				var ee *exec.ExitError
				switch {
				case errors.As(err, &ee):
					return ee.ExitCode(), out.String(), errb.String()
				case err != nil:
					t.Fatalf("cmesh-run %q: %v", args, err)
				}
				return 0, out.String(), errb.String()
			}
			if name == "spool" {
				startWorker(t, bin, state, config, dir)
			}
			backendtest.Run(t, backendtest.Harness{Backend: name, CLI: cli, StateDir: state, StartTimeout: 30 * time.Second})
			// No wrapper may still write into the state dir when it goes.
			settle(t, cli)
		})
	}
}

// build compiles cmesh-run from this module into a temp dir.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cmesh-run")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startWorker runs `cmesh-run worker` until the test ends, and stops it by
// its PID.
func startWorker(t *testing.T, bin, state, config, dir string) {
	t.Helper()
	cmd := exec.Command(bin, "--state-dir", state, "--config", config, "worker", "--poll", "100ms")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	// The worker is at work once it says so in spool/worker.pid.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(state, "spool", "worker.pid")); err == nil {
			return
		}
		select {
		case <-done:
			t.Fatal("the worker exited at once")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not start within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle cancels every unfinished job of the state dir.
func settle(t *testing.T, cli func(*testing.T, ...string) (int, string, string)) {
	t.Helper()
	_, out, _ := cli(t, "list", "--state", "queued,waiting,running", "--json", "--limit", "0")
	var jobs []backendtest.Job
	_ = json.Unmarshal([]byte(out), &jobs)
	for _, j := range jobs {
		cli(t, "cancel", "--grace", "1s", j.ID)
	}
}
