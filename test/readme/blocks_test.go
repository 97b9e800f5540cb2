//go:build integration

package readme

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// lineOut is what one command line of a block printed.
type lineOut struct{ stdout, stderr string }

// shSpec says how one fenced sh block runs and what it must print. Every command line of the
// block needs an entry in lines (or notRun), so that a line added to the README gets checked.
type shSpec struct {
	// setup returns the working directory and environment; default: the sandbox's.
	setup func(t *testing.T, sb *sandbox) (dir string, env []string)
	// rewrite changes one line beyond the sandbox's placeholders.
	rewrite func(sb *sandbox, line string) string
	// notRun: lines that cannot run here, each checked another way instead.
	notRun map[string]func(t *testing.T)
	// lines: what each command line must print (nil: its exit status 0 is the check).
	lines map[string]func(t *testing.T, sb *sandbox, o lineOut)
	// after checks the sandbox once the block has run.
	after func(t *testing.T, sb *sandbox)
	limit time.Duration
}

var blockSpecs = map[string]shSpec{
	`sh "cmesh-run" #1`: {
		setup: func(t *testing.T, sb *sandbox) (string, []string) {
			genv, goDir := goEnv(t)
			return repoRoot, withPath(append(sb.env(), genv...), sb.bindir+":"+goDir+":"+itest.StdPath)
		},
		notRun: map[string]func(t *testing.T){
			// make test is what runs this suite: checked, not run again.
			"make test": checkMakeTestRunsEverything,
		},
		lines: map[string]func(t *testing.T, sb *sandbox, o lineOut){
			"make demo": checkDemo,
		},
		limit: 10 * time.Minute,
	},
	`sh "Use" #1`: {
		lines: map[string]func(t *testing.T, sb *sandbox, o lineOut){
			`id=$(cmesh-run schedule --name mars-mpvg -- /opt/cmesh/scripts/pushfin.sh -o mars -n mpvg)`: printsNothing,
			`cmesh-run status "$id"`: func(t *testing.T, sb *sandbox, o lineOut) {
				wantMatch(t, o.stdout, `(?m)^id: [A-Za-z0-9][A-Za-z0-9._-]*$`, `(?m)^name: mars-mpvg$`, `(?m)^state: (queued|running|succeeded)$`)
			},
			`cmesh-run log --follow "$id"`: func(t *testing.T, sb *sandbox, o lineOut) {
				if want := pushfinOutput(sb.dir, ""); o.stdout != want {
					t.Errorf("log --follow printed %q, want the job's bytes %q", o.stdout, want)
				}
				wantMatch(t, o.stderr, `succeeded`)
			},
			`cmesh-run wait "$id"; echo $?`: func(t *testing.T, sb *sandbox, o lineOut) {
				if o.stdout != "0\n" {
					t.Errorf("wait; echo $? printed %q, want 0", o.stdout)
				}
			},
			`cmesh-run status`: func(t *testing.T, sb *sandbox, o lineOut) {
				wantMatch(t, o.stdout, `(?m)^ID\s+STATE\s+EXIT\s+NAME`, `(?m)^\S+\s+succeeded\s+0\s+mars-mpvg\s`)
			},
			`cmesh-run list --state failed --limit 5`: func(t *testing.T, sb *sandbox, o lineOut) {
				if strings.Contains(o.stdout, "mars-mpvg") {
					t.Errorf("list --state failed shows the job that succeeded:\n%s", o.stdout)
				}
			},
		},
		after: func(t *testing.T, sb *sandbox) {
			j := sb.onlyJob()
			want := []string{filepath.Join(sb.optDir, "scripts/pushfin.sh"), "-o", "mars", "-n", "mpvg"}
			if j.State != "succeeded" || j.ExitCode == nil || *j.ExitCode != 0 || !slices.Equal(j.Command, want) {
				t.Errorf("job %+v: want succeeded, exit 0, command %q", j, want)
			}
		},
	},
	`sh "Job control" #1`: {
		lines: map[string]func(t *testing.T, sb *sandbox, o lineOut){
			`id=$(cmesh-run schedule --name mars-mpvg --unique --timeout 15m --retries 2 -- /opt/cmesh/scripts/pushfin.sh -o mars -n mpvg)`: printsNothing,
			`cmesh-run cancel --grace 30s "$id"`: func(t *testing.T, sb *sandbox, o lineOut) {
				wantMatch(t, o.stdout, `(?m)^name: mars-mpvg$`, `(?m)^state: canceled$`)
			},
			`cmesh-run prune --older-than 30d --keep 100`: func(t *testing.T, sb *sandbox, o lineOut) {
				wantMatch(t, o.stdout, `removed 0 finished jobs`)
			},
		},
		after: func(t *testing.T, sb *sandbox) {
			j := sb.onlyJob()
			if j.State != "canceled" || j.Name == nil || *j.Name != "mars-mpvg" || j.Timeout != "15m0s" || j.Retries != 2 {
				t.Errorf("job %+v: want canceled, name mars-mpvg, timeout 15m, retries 2", j)
			}
		},
	},
	`sh "Queues, dependencies and schedules" #1`: {
		// The queues are the README's own toml block of the section.
		setup: func(t *testing.T, sb *sandbox) (string, []string) {
			var toml string
			for _, b := range parseReadme(t).blocks {
				if b.lang == "" && b.heading == "Queues, dependencies and schedules" {
					toml = b.text
				}
			}
			if toml == "" {
				t.Fatal("the section has no config block")
			}
			cfg := filepath.Join(sb.dir, "queues.toml")
			itest.Must(t, os.WriteFile(cfg, []byte(toml), 0o644))
			return sb.dir, sb.env("CMESH_RUN_CONFIG=" + cfg)
		},
		lines: map[string]func(t *testing.T, sb *sandbox, o lineOut){
			`build=$(cmesh-run schedule --queue build --name mars-build -- /opt/cmesh/scripts/pushfin.sh -o mars -n mpvg)`:        printsNothing,
			`cmesh-run schedule --queue deploy --after "$build" -- /opt/cmesh/scripts/pushfin.sh -o mars -n deploy`:               printsAnID,
			`cmesh-run schedule --queue build --at 03:00 --name mars-nightly -- /opt/cmesh/scripts/pushfin.sh -o mars -n nightly`: printsAnID,
			`cmesh-run rerun "$build"`:     printsAnID,
			`cmesh-run queue pause deploy`: printsNothing,
			`cmesh-run queue list`: func(t *testing.T, sb *sandbox, o lineOut) {
				wantMatch(t, o.stdout, `(?m)^QUEUE\s+SLOTS\s+RUNNING\s+WAITING\s+PAUSED$`, `(?m)^build\s+2\s`, `(?m)^deploy\s+1\s.*true$`)
			},
			`cmesh-run queue resume deploy`: printsNothing,
		},
		after: func(t *testing.T, sb *sandbox) {
			var build, deploy, nightly, rerun *job
			js := sb.jobs()
			for i := range js {
				j := &js[i]
				switch {
				case j.Name != nil && *j.Name == "mars-nightly":
					nightly = j
				case j.Name != nil && *j.Name == "mars-build" && build == nil:
					rerun = j // newest first: the rerun comes before the build it reruns
					build = j
				case j.Name != nil && *j.Name == "mars-build":
					build = j
				default:
					deploy = j
				}
			}
			if build == nil || deploy == nil || nightly == nil || rerun == nil || build == rerun {
				t.Fatalf("want a build, its rerun, a deploy and a nightly job: %+v", js)
			}
			for _, j := range []*job{build, deploy, rerun} {
				sb.waitOK(j.ID)
			}
			var d struct {
				After   []string   `json:"after"`
				RerunOf *string    `json:"rerun_of"`
				NotBef  *time.Time `json:"not_before"`
				Queue   string     `json:"queue"`
			}
			status := func(id string) {
				d.After, d.RerunOf, d.NotBef = nil, nil, nil
				itest.Must(t, json.Unmarshal([]byte(sb.mustCmesh("status", "--json", id)), &d))
			}
			status(deploy.ID)
			if len(d.After) != 1 || d.After[0] != build.ID || d.Queue != "deploy" {
				t.Errorf("the deploy job: after %v, queue %s; want after %s in deploy", d.After, d.Queue, build.ID)
			}
			status(rerun.ID)
			if d.RerunOf == nil || *d.RerunOf != build.ID {
				t.Errorf("the rerun's rerun_of: %v, want %s", d.RerunOf, build.ID)
			}
			status(nightly.ID)
			if nightly.State != "queued" || d.NotBef == nil || d.NotBef.Local().Format("15:04:05") != "03:00:00" {
				t.Errorf("the nightly job: %s, not_before %v; want queued until 03:00", nightly.State, d.NotBef)
			}
		},
	},
	`sh "Install" #1`: {
		setup: func(t *testing.T, sb *sandbox) (string, []string) {
			// make install builds ./cmesh-run first: it runs in a copy of the tree, so that
			// the checkout's binary is left alone.
			src := filepath.Join(sb.dir, "src")
			copyTree(t, repoRoot, src)
			genv, goDir := goEnv(t)
			// A plain `make install` would write under /usr/local: DESTDIR from the
			// environment keeps it in the sandbox.
			env := append(append(sb.env(), genv...), "DESTDIR="+filepath.Join(sb.dir, "destdir", "env"))
			return src, withPath(env, sb.bindir+":"+goDir+":"+itest.StdPath)
		},
		rewrite: func(sb *sandbox, line string) string {
			return destdirRe.ReplaceAllStringFunc(line, func(m string) string {
				return "DESTDIR=" + sandboxDestdir(sb, m)
			})
		},
		lines: map[string]func(t *testing.T, sb *sandbox, o lineOut){
			"make install": checkInstalled("make install"),
			"make install PREFIX=/usr DESTDIR=/tmp/stage": checkInstalled("make install PREFIX=/usr DESTDIR=/tmp/stage"),
		},
		after: func(t *testing.T, sb *sandbox) {
			// The prose under the block names the files that land.
			sec := parseReadme(t).sections["Install"]
			for _, f := range installedFiles {
				if !strings.Contains(sec, f.rel) {
					t.Errorf("README's Install section does not name %s, which make install installs", f.rel)
				}
			}
		},
		limit: 10 * time.Minute,
	},
}

// TestReadmeEverythingHasACheck needs no atd: a block or command the README gained without a
// check fails even where the suites that run them skip.
func TestReadmeEverythingHasACheck(t *testing.T) {
	r := parseReadme(t)
	seen := map[string]bool{}
	for _, b := range r.blocks {
		seen[b.key()] = true
		_, sh := blockSpecs[b.key()]
		_, php := phpSpecs[b.key()]
		switch {
		case b.lang == "":
		case b.lang == "sh" && !sh:
			t.Errorf("README.md:%d: block %s has no entry in blockSpecs (test/readme/blocks_test.go): say what it must print", b.line, b.key())
		case b.lang == "sh":
			for _, gap := range specGaps(b, blockSpecs[b.key()]) {
				t.Error(gap)
			}
		case b.lang == "php" && !php:
			t.Errorf("README.md:%d: block %s has no entry in phpSpecs (test/readme/blocks_test.go): say what it must do", b.line, b.key())
		case b.lang != "sh" && b.lang != "php":
			t.Errorf("README.md:%d: a ```%s block: nothing runs it; make it ```sh or ```php (run by this suite), or a bare ``` for text", b.line, b.lang)
		}
	}
	for _, specs := range []map[string]bool{keys(blockSpecs), keys(phpSpecs)} {
		for k := range specs {
			if !seen[k] {
				t.Errorf("the specs have %s, which README.md no longer has", k)
			}
		}
	}
	spans := r.commandSpans(subcommands(t))
	for s, line := range spans {
		if _, ok := spanChecks[s]; !ok {
			t.Errorf("README.md:%d: the command `%s` is in no test: add it to spanChecks in test/readme/spans_test.go", line, s)
		}
	}
	for s := range spanChecks {
		if _, ok := spans[s]; !ok {
			t.Errorf("spanChecks has `%s`, which README.md no longer shows as a command: remove the entry", s)
		}
	}
}

func keys[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// specGaps lists the command lines of a block that its spec does not check, and the lines
// the spec checks that the block no longer has.
func specGaps(b block, spec shSpec) []string {
	var gaps []string
	have := map[string]bool{}
	for _, l := range commandLines(b.text) {
		have[l.key] = true
		_, checked := spec.lines[l.key]
		_, skipped := spec.notRun[l.key]
		if !checked && !skipped {
			gaps = append(gaps, fmt.Sprintf("README.md block %s: line %q has no check in blockSpecs", b.key(), l.key))
		}
	}
	for k := range keys(spec.lines) {
		if !have[k] {
			gaps = append(gaps, fmt.Sprintf("blockSpecs[%s] checks the line %q, which the README's block no longer has", b.key(), k))
		}
	}
	for k := range keys(spec.notRun) {
		if !have[k] {
			gaps = append(gaps, fmt.Sprintf("blockSpecs[%s] has notRun %q, which the README's block no longer has", b.key(), k))
		}
	}
	return gaps
}

func TestReadmeShellBlocks(t *testing.T) {
	needAtd(t)
	for _, b := range parseReadme(t).blocks {
		if spec, ok := blockSpecs[b.key()]; ok && b.lang == "sh" {
			t.Run(safeName(b.key()), func(t *testing.T) { runShBlock(t, b, spec) })
		}
	}
}

var lineMarker = regexp.MustCompile(`@@README-LINE (\d+)@@\n`)

func runShBlock(t *testing.T, b block, spec shSpec) {
	sb := newSandbox(t)
	dir, env := sb.dir, sb.env()
	if spec.setup != nil {
		dir, env = spec.setup(t, sb)
	}
	for _, gap := range specGaps(b, spec) {
		t.Error(gap)
	}
	lines := commandLines(b.text)

	// Each command line is preceded by a marker on stdout and stderr, so that what a line
	// printed can be checked on its own.
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	next := 0
	for _, raw := range strings.Split(strings.TrimRight(b.text, "\n"), "\n") {
		if next < len(lines) && raw == lines[next].text {
			l := lines[next]
			next++
			fmt.Fprintf(&script, "printf '@@README-LINE %d@@\\n'; printf '@@README-LINE %d@@\\n' >&2\n", l.n, l.n)
			if _, skip := spec.notRun[l.key]; skip {
				script.WriteString(": " + raw + "\n")
				continue
			}
		}
		line := sb.rewrite(raw)
		if spec.rewrite != nil {
			line = spec.rewrite(sb, line)
		}
		script.WriteString(line + "\n")
	}
	path := filepath.Join(sb.dir, "readme-block.sh")
	itest.Must(t, os.WriteFile(path, []byte(script.String()), 0o644))
	limit := spec.limit
	if limit == 0 {
		limit = 3 * time.Minute
	}
	t0 := time.Now()
	res := execIn(t, dir, env, limit, "", "/bin/bash", path)
	t.Logf("README.md:%d ran in %v (in %s):\n%s", b.line, time.Since(t0).Round(time.Millisecond), dir, script.String())
	if res.code != 0 {
		t.Fatalf("block %s exited %d\nstdout:\n%s\nstderr:\n%s", b.key(), res.code, res.stdout, res.stderr)
	}
	outs, errs := splitByLine(res.stdout), splitByLine(res.stderr)
	for _, l := range lines {
		if check := spec.notRun[l.key]; check != nil {
			t.Run(l.key+" (not run)", check)
		}
		check := spec.lines[l.key]
		if check == nil {
			continue
		}
		t.Run(l.key, func(t *testing.T) {
			check(t, sb, lineOut{outs[l.n], errs[l.n]})
			if t.Failed() {
				t.Logf("stdout of %q:\n%s\nstderr:\n%s", l.key, outs[l.n], errs[l.n])
			}
		})
	}
	if spec.after != nil {
		spec.after(t, sb)
	}
}

// splitByLine maps each line number to what was printed after its marker.
func splitByLine(s string) map[int]string {
	out := map[int]string{}
	ms := lineMarker.FindAllStringSubmatchIndex(s, -1)
	for i, m := range ms {
		n, _ := strconv.Atoi(s[m[2]:m[3]])
		end := len(s)
		if i+1 < len(ms) {
			end = ms[i+1][0]
		}
		out[n] = s[m[1]:end]
	}
	return out
}

func printsAnID(t *testing.T, sb *sandbox, o lineOut) {
	if id := strings.TrimSpace(o.stdout); !itest.IDPattern.MatchString(id) {
		t.Errorf("stdout %q, want a job ID", o.stdout)
	}
}

func printsNothing(t *testing.T, sb *sandbox, o lineOut) {
	if o.stdout != "" {
		t.Errorf("printed %q, want nothing (the ID goes into $id)", o.stdout)
	}
}

func wantMatch(t *testing.T, s string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(s) {
			t.Errorf("output does not match %s:\n%s", p, s)
		}
	}
}

// pushfinOutput is what pushfinStub prints for -o mars -n mpvg run in dir.
func pushfinOutput(dir, nodeOptions string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pushfin: building mars/mpvg in %s\n", dir)
	if nodeOptions != "" {
		fmt.Fprintf(&b, "pushfin: NODE_OPTIONS=%s\n", nodeOptions)
	}
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, "pushfin: step %d/5\n", i)
	}
	b.WriteString("pushfin: done mars/mpvg\n")
	return b.String()
}

// checkMakeTestRunsEverything checks what the README says of make test: the Makefile's test
// target runs scripts/test.sh, which with CMESH_RUN_REQUIRE_INTEGRATION=1 fails on a skipped
// suite, and .ci/run runs make test so.
func checkMakeTestRunsEverything(t *testing.T) {
	if recipe := makeRecipe(t, "test"); !slices.ContainsFunc(recipe, func(l string) bool { return strings.Contains(l, "scripts/test.sh") }) {
		t.Errorf("Makefile's test target does not run scripts/test.sh: %q", recipe)
	}
	wantMatch(t, readFile(t, filepath.Join(repoRoot, "scripts/test.sh")), `"\$\{CMESH_RUN_REQUIRE_INTEGRATION:-\}" = 1`)
	ci := filepath.Join(repoRoot, ".ci/run")
	wantMatch(t, readFile(t, ci), `(?m)^export CMESH_RUN_REQUIRE_INTEGRATION=1$`, `(?m)^(exec )?make test$`)
	if st, err := os.Stat(ci); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf(".ci/run is not executable: %v", err)
	}
}

// makeRecipe returns the recipe lines of a Makefile target, and fails when there is none.
func makeRecipe(t *testing.T, target string) []string {
	t.Helper()
	var recipe []string
	in := false
	for _, l := range strings.Split(readFile(t, filepath.Join(repoRoot, "Makefile")), "\n") {
		switch {
		case strings.HasPrefix(l, target+":"):
			in = true
		case in && strings.HasPrefix(l, "\t"):
			recipe = append(recipe, strings.TrimSpace(l))
		case in:
			in = false
		}
	}
	if len(recipe) == 0 {
		t.Fatalf("Makefile has no %s target with a recipe", target)
	}
	return recipe
}

var demoStateDir = regexp.MustCompile(`(?m)^state dir: (/tmp/cmesh-run-demo\.[A-Za-z0-9]+)$`)

func checkDemo(t *testing.T, sb *sandbox, o lineOut) {
	m := demoStateDir.FindStringSubmatch(o.stdout)
	if m == nil {
		t.Fatalf("make demo did not print its state dir")
	}
	// The demo leaves its state dir for the reader to look at; the test does not.
	t.Cleanup(func() { os.RemoveAll(m[1]) })
	wantMatch(t, o.stdout, `(?m)^step 5/5$`, `(?m)^done$`, `(?m)^\S+\s+succeeded\s+0\s+demo-build\s`)
}

var destdirRe = regexp.MustCompile(`DESTDIR=\S*`)

// sandboxDestdir maps a DESTDIR=PATH of the README to a dir in the sandbox.
func sandboxDestdir(sb *sandbox, assign string) string {
	base := filepath.Base(strings.Trim(strings.TrimPrefix(assign, "DESTDIR="), `"'`))
	if base == "." || base == "/" || base == "env" {
		base = "cmdline"
	}
	return filepath.Join(sb.dir, "destdir", base)
}

// installedFiles are what make install puts under $DESTDIR$PREFIX, and where each comes from.
var installedFiles = []struct {
	rel, src string
	mode     fs.FileMode
}{
	{"bin/cmesh-run", "", 0o755},
	{"share/man/man1/cmesh-run.1", "man/cmesh-run.1", 0o644},
	{"share/bash-completion/completions/cmesh-run", "completions/cmesh-run.bash", 0o644},
	{"share/zsh/site-functions/_cmesh-run", "completions/_cmesh-run", 0o644},
}

var prefixRe = regexp.MustCompile(`(?m)^PREFIX\s*\?=\s*(\S+)\s*$`)

// checkInstalled checks that the README's install line put the four files under its
// (sandboxed) DESTDIR and PREFIX.
func checkInstalled(line string) func(t *testing.T, sb *sandbox, o lineOut) {
	return func(t *testing.T, sb *sandbox, o lineOut) {
		destdir := filepath.Join(sb.dir, "destdir", "env")
		if m := destdirRe.FindString(line); m != "" {
			destdir = sandboxDestdir(sb, m)
		}
		m := prefixRe.FindStringSubmatch(readFile(t, filepath.Join(repoRoot, "Makefile")))
		if m == nil {
			t.Fatalf("Makefile sets no default PREFIX")
		}
		prefix := m[1]
		if p := regexp.MustCompile(`PREFIX=(\S+)`).FindStringSubmatch(line); p != nil {
			prefix = p[1]
		}
		root := filepath.Join(destdir, prefix)
		for _, f := range installedFiles {
			p := filepath.Join(root, f.rel)
			st, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: not installed: %v", line, err)
				continue
			}
			if st.Mode().Perm() != f.mode {
				t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), f.mode)
			}
			if f.src == "" {
				if out, err := exec.Command(p, "version").CombinedOutput(); err != nil {
					t.Errorf("%s version: %v: %s", p, err, out)
				}
				continue
			}
			if readFile(t, p) != readFile(t, filepath.Join(repoRoot, f.src)) {
				t.Errorf("%s differs from %s", p, f.src)
			}
		}
	}
}

// copyTree copies the working tree (not .git, not a built ./cmesh-run) to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == ".git" || rel == "cmesh-run" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, info.Mode().Perm())
		}
		return nil
	})
	itest.Must(t, err)
}

// ---------------------------------------------------------------------------------------------
// PHP

// phpSpec adds, after a php block, the code that checks what the block did; it ends by
// printing `README-PHP-OK {"id","log","state","exit_code"}` for the job the block started.
type phpSpec struct {
	epilogue func(wrapper string) string
	// wantLog is the job's whole output.
	wantLog func(sb *sandbox) string
}

var phpSpecs = map[string]phpSpec{
	`php "From PHP and Drupal" #1`: {
		epilogue: func(wrapper string) string {
			return `
if (\Drupal::messenger()->errors !== []) {
    readme_fail('the catch block ran: ' . implode('; ', \Drupal::messenger()->errors));
}
$readmeCur = \Drupal::state()->get('cmesh_push_content.current');
if (!is_array($readmeCur) || !is_string($readmeCur['id'] ?? null) || $readmeCur['id'] !== $job['id']) {
    readme_fail('the state does not hold the scheduled job: ' . var_export($readmeCur, true));
}
foreach (['data', 'next_offset', 'done', 'state'] as $k) {
    if (!array_key_exists($k, $chunk)) {
        readme_fail("the log chunk has no $k: " . var_export($chunk, true));
    }
}
if (!is_int($chunk['next_offset']) || $readmeCur['offset'] !== $chunk['next_offset']) {
    readme_fail('the state does not hold the chunk\'s next_offset: ' . var_export($readmeCur, true));
}
// The progress endpoint's later requests, until the job is done.
$readmeLog = $chunk['data'];
$readmeStop = microtime(true) + 60;
while (!$chunk['done']) {
    if (microtime(true) > $readmeStop) {
        readme_fail('the job is not done after 60 s');
    }
    usleep(50000);
    $chunk = $run->log($readmeCur['id'], $readmeCur['offset']);
    $readmeCur['offset'] = $chunk['next_offset'];
    $readmeLog .= $chunk['data'];
}
$readmeResult = $run->status($readmeCur['id']);
echo 'README-PHP-OK ', json_encode(['id' => $readmeCur['id'], 'log' => $readmeLog,
    'state' => $readmeResult['state'], 'exit_code' => $readmeResult['exit_code']]), "\n";
`
		},
		// 'workdir' => '/opt/cmesh' and the env option reach the job.
		wantLog: func(sb *sandbox) string { return pushfinOutput(sb.optDir, "--max-old-space-size=8192") },
	},
	`php "From PHP and Drupal" #2`: {
		epilogue: func(wrapper string) string {
			return `
if ($rc !== 0) {
    readme_fail("exec() exit status $rc: " . implode("\n", $out));
}
if (!is_array($job) || isset($job['error']) || !is_string($job['id'] ?? null)
    || preg_match(\Cmesh\Run\Client::ID_PATTERN, $job['id']) !== 1) {
    readme_fail('exec() gave no job: ' . var_export($last, true));
}
$readmeRun = new \Cmesh\Run\Client(binary: ` + itest.PHPString(wrapper) + `);
$readmeCode = $readmeRun->wait($job['id'], 60);
echo 'README-PHP-OK ', json_encode(['id' => $job['id'], 'log' => $readmeRun->log($job['id'])['data'],
    'state' => $readmeRun->status($job['id'])['state'], 'exit_code' => $readmeCode]), "\n";
`
		},
		wantLog: func(sb *sandbox) string { return pushfinOutput(sb.dir, "") },
	},
}

// phpPrelude loads the client and stands in for what a Drupal site provides. Every PHP
// warning or notice is an error: a snippet that only works with its warnings hidden fails.
func phpPrelude() string {
	return `<?php
set_error_handler(static function (int $no, string $msg, string $file, int $line): bool {
    throw new \ErrorException($msg, 0, $no, $file, $line);
});
foreach (glob(` + itest.PHPString(filepath.Join(repoRoot, "php/src")) + ` . '/*.php') as $readmeFile) {
    require_once $readmeFile;
}
function readme_fail(string $why): never
{
    fwrite(STDERR, "README PHP CHECK FAILED: $why\n");
    exit(1);
}
final class ReadmeState
{
    public array $values = [];
    public function get(string $key, mixed $default = null): mixed { return $this->values[$key] ?? $default; }
    public function set(string $key, mixed $value): void { $this->values[$key] = $value; }
}
final class ReadmeMessenger
{
    public array $errors = [];
    public function addError(string|\Stringable $message): static
    {
        fwrite(STDERR, "Drupal messenger: error: $message\n");
        $this->errors[] = (string) $message;
        return $this;
    }
}
final class Drupal
{
    private static ?ReadmeState $state = null;
    private static ?ReadmeMessenger $messenger = null;
    public static function state(): ReadmeState { return self::$state ??= new ReadmeState(); }
    public static function messenger(): ReadmeMessenger { return self::$messenger ??= new ReadmeMessenger(); }
}
$org = 'mars';
$name = 'mpvg';
`
}

func TestReadmePHPBlocks(t *testing.T) {
	needAtd(t)
	needPHP(t)
	for _, b := range parseReadme(t).blocks {
		if spec, ok := phpSpecs[b.key()]; ok && b.lang == "php" {
			t.Run(safeName(b.key()), func(t *testing.T) { runPHPBlock(t, b, spec) })
		}
	}
}

func runPHPBlock(t *testing.T, b block, spec phpSpec) {
	sb := newSandbox(t)
	// The client gives cmesh-run only the environment its constructor names, so the
	// sandbox's state dir and config cannot come from PHP's environment: the binary PHP
	// calls pins them, then runs the binary under test.
	wrapper := filepath.Join(sb.dir, "php-bin", "cmesh-run")
	itest.Must(t, os.MkdirAll(filepath.Dir(wrapper), 0o755))
	itest.Must(t, os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\nCMESH_RUN_STATE_DIR=%s CMESH_RUN_CONFIG=%s exec %s \"$@\"\n",
		shQuote(sb.state), shQuote(emptyConfig), shQuote(bin))), 0o755))
	snippet := strings.NewReplacer("/opt/cmesh", sb.optDir, "/usr/local/bin/cmesh-run", wrapper).Replace(b.text)
	prog := phpPrelude() + fmt.Sprintf("\n// README.md:%d\n", b.line) + snippet + "\n// checks\n" + spec.epilogue(wrapper)
	path := filepath.Join(sb.dir, "readme-block.php")
	itest.Must(t, os.WriteFile(path, []byte(prog), 0o644))
	res := execIn(t, sb.dir, sb.env(), 3*time.Minute, "", itest.PHPBin, "-d", "display_errors=stderr", path)
	if res.code != 0 {
		t.Fatalf("php exited %d\nstdout:\n%s\nstderr:\n%s\nprogram:\n%s", res.code, res.stdout, res.stderr, prog)
	}
	var got struct {
		ID       string `json:"id"`
		Log      string `json:"log"`
		State    string `json:"state"`
		ExitCode *int   `json:"exit_code"`
	}
	i := strings.LastIndex(res.stdout, "README-PHP-OK ")
	if i < 0 {
		t.Fatalf("the checks after the block did not finish:\n%s%s", res.stdout, res.stderr)
	}
	itest.Must(t, json.Unmarshal([]byte(res.stdout[i+len("README-PHP-OK "):]), &got))
	if got.State != "succeeded" || got.ExitCode == nil || *got.ExitCode != 0 {
		t.Errorf("job %s ended %s, exit %v; want succeeded, 0", got.ID, got.State, got.ExitCode)
	}
	if want := spec.wantLog(sb); got.Log != want {
		t.Errorf("job's output %q, want %q", got.Log, want)
	}
	if j := sb.onlyJob(); j.ID != got.ID {
		t.Errorf("the state dir holds job %s, not the block's %s", j.ID, got.ID)
	}
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
