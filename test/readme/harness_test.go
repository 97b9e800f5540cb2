//go:build integration

// Package readme runs what README.md shows, so that the README cannot rot:
//
//	go test -tags integration -count=1 -v ./test/readme/
//
// Every fenced sh block runs with bash and every fenced php block with php-cli, against the
// real atd, with placeholders swapped for a temp build script and the binary under test.
// Every command in an inline code span has an entry in spanChecks (spans_test.go) saying how
// it is run, or which suite proves it; a command the table does not know fails the suite.
//
// Needs at and a running atd, php-cli and man. Without them the tests skip loudly; with
// CMESH_RUN_REQUIRE_INTEGRATION=1 they fail instead. Without CMESH_RUN_BIN the binary is built
// from the module root into a temp dir.
package readme

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

var (
	bin         string // the cmesh-run under test
	repoRoot    string
	emptyConfig string // CMESH_RUN_CONFIG of every run: the machine's config must not steer the README's commands
)

// deadline bounds every wait on a job: atd starts jobs within milliseconds, a busy CI machine
// can take seconds.
const deadline = 60 * time.Second

func TestMain(m *testing.M) {
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repoRoot = root
	itest.Main(m, &bin, &emptyConfig)
}

// unavailable skips t loudly, or fails it when integration is required.
func unavailable(t *testing.T, why string) {
	t.Helper()
	itest.Unavailable(t, "readme", why+"; run make test as root")
}

func needAtd(t *testing.T) {
	t.Helper()
	if err := (itest.Needs{Tools: []string{itest.AtBin, itest.AtdBin}, Install: "at", Atd: true}).Check(); err != nil {
		unavailable(t, err.Error())
	}
}

func needPHP(t *testing.T) {
	t.Helper()
	if err := (itest.Needs{Tools: []string{itest.PHPBin}, Install: "php-cli"}).Check(); err != nil {
		unavailable(t, err.Error())
	}
}

// sandbox is where one README example runs: its own temp dir (the working directory), state
// dir, and a stand-in for the build script the README names.
type sandbox struct {
	t      *testing.T
	dir    string
	state  string
	bindir string // holds cmesh-run, first in PATH
	optDir string // replaces /opt/cmesh
}

// pushfinStub stands in for /opt/cmesh/scripts/pushfin.sh: it takes the same options and
// runs for about 1.5 s, long enough that a cancel right after scheduling finds it unfinished.
const pushfinStub = `#!/bin/sh
org= name=
while getopts o:n: opt; do
	case $opt in
	o) org=$OPTARG ;;
	n) name=$OPTARG ;;
	*) exit 2 ;;
	esac
done
echo "pushfin: building $org/$name in $(pwd)"
[ -z "${NODE_OPTIONS:-}" ] || echo "pushfin: NODE_OPTIONS=$NODE_OPTIONS"
for i in 1 2 3 4 5; do
	sleep 0.3
	echo "pushfin: step $i/5"
done
echo "pushfin: done $org/$name"
`

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	dir := t.TempDir()
	sb := &sandbox{t: t, dir: dir, state: filepath.Join(dir, "state"), bindir: filepath.Join(dir, "bin"), optDir: filepath.Join(dir, "opt", "cmesh")}
	itest.Must(t, os.MkdirAll(filepath.Join(sb.optDir, "scripts"), 0o755))
	itest.Must(t, os.WriteFile(filepath.Join(sb.optDir, "scripts", "pushfin.sh"), []byte(pushfinStub), 0o755))
	itest.Must(t, os.MkdirAll(sb.bindir, 0o755))
	itest.Must(t, os.Symlink(bin, filepath.Join(sb.bindir, "cmesh-run")))
	// Runs before the temp dir's removal: no wrapper may still be writing into it.
	t.Cleanup(sb.settle)
	return sb
}

// env is the whole environment of a README command: nothing of the test's own.
func (sb *sandbox) env(extra ...string) []string {
	return append([]string{
		"PATH=" + sb.bindir + ":" + itest.StdPath,
		"CMESH_RUN_STATE_DIR=" + sb.state,
		"CMESH_RUN_CONFIG=" + emptyConfig,
	}, extra...)
}

// rewrite swaps the README's placeholders for the sandbox's stand-ins.
func (sb *sandbox) rewrite(src string) string {
	return strings.NewReplacer(
		"/opt/cmesh", sb.optDir,
		"/usr/local/bin/cmesh-run", bin,
	).Replace(src)
}

type result struct {
	stdout, stderr string
	code           int
}

// execIn runs argv in dir with env; the process group it starts is killed if it outlives limit.
func execIn(t *testing.T, dir string, env []string, limit time.Duration, stdin string, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdin = strings.NewReader(stdin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	r, err := itest.Run(cmd)
	if ctx.Err() != nil {
		t.Fatalf("%q did not end within %v\nstdout:\n%s\nstderr:\n%s", argv, limit, r.Stdout, r.Stderr)
	}
	if err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
	return result{r.Stdout, r.Stderr, r.Exit}
}

// cmesh runs the binary under test in the sandbox.
func (sb *sandbox) cmesh(args ...string) result {
	sb.t.Helper()
	return execIn(sb.t, sb.dir, sb.env(), 2*deadline, "", append([]string{bin}, args...)...)
}

func (sb *sandbox) mustCmesh(args ...string) string {
	sb.t.Helper()
	r := sb.cmesh(args...)
	if r.code != 0 {
		sb.t.Fatalf("cmesh-run %q: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// job is SPEC.md's job object.
type job = itest.Job

func (sb *sandbox) jobs() []job {
	sb.t.Helper()
	var js []job
	out := sb.mustCmesh("list", "--json", "--limit", "0")
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		sb.t.Fatalf("list --json: %v: %s", err, out)
	}
	return js
}

// onlyJob returns the one job of the sandbox.
func (sb *sandbox) onlyJob() job {
	sb.t.Helper()
	js := sb.jobs()
	if len(js) != 1 {
		sb.t.Fatalf("want exactly one job in the state dir, got %+v", js)
	}
	return js[0]
}

// waitOK waits for the job and fails unless it exits 0.
func (sb *sandbox) waitOK(id string) {
	sb.t.Helper()
	r := sb.cmesh("wait", "--timeout", deadline.String(), id)
	if r.code != 0 {
		sb.t.Fatalf("job %s: wait exit %d (124: not done within %v)\n%s\nlog:\n%s", id, r.code, deadline, r.stderr, sb.cmesh("log", id).stdout)
	}
}

// schedule starts argv and returns the job ID.
func (sb *sandbox) schedule(args ...string) string {
	sb.t.Helper()
	return strings.TrimSpace(sb.mustCmesh(append([]string{"schedule"}, args...)...))
}

// settle cancels what is left of the sandbox's jobs (a test that failed halfway) and waits
// until none is unfinished.
func (sb *sandbox) settle() {
	itest.Settle(sb.t, func(args ...string) ([]byte, bool) {
		c := exec.Command(bin, args...)
		c.Env = sb.env()
		out, err := c.Output()
		return out, err == nil
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !itest.EventuallyEvery(20*time.Millisecond, deadline, cond) {
		t.Fatalf("timed out after %v waiting for %s", deadline, what)
	}
}

// goEnv is what make needs to build cmesh-run with the Go toolchain running this test, from
// an environment that is otherwise the README's; goDir goes into PATH.
func goEnv(t *testing.T) (env []string, goDir string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out, err := exec.Command(goBin, "env", "-json", "GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOSUMDB", "GOFLAGS").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	var vars map[string]string
	itest.Must(t, json.Unmarshal(out, &vars))
	home := os.Getenv("HOME")
	if home == "" {
		home = "/root"
	}
	env = []string{"GOTOOLCHAIN=local", "HOME=" + home}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env, filepath.Dir(goBin)
}

// withPath replaces PATH in env.
func withPath(env []string, path string) []string {
	out := []string{}
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PATH=") {
			out = append(out, kv)
		}
	}
	return append(out, "PATH="+path)
}

var unsafeRun = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// safeName is a subtest name made of characters that need no quoting in a shell, since
// t.TempDir's path is made of the test's name and the README's commands run with it.
func safeName(s string) string {
	return strings.Trim(unsafeRun.ReplaceAllString(s, "_"), "_")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	itest.Must(t, err)
	return string(b)
}
