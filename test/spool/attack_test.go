//go:build integration

package spool

// The attacks of issue 12 that the spool suite can stage, as www-data would after a PHP
// compromise: entries in spool/incoming that are no request at all, requests that try to lift
// a profile's limits, scripts planted in spool/queue, every lock of the state dir held, and
// root's worker, drain and log turned against the site. Each test fails on the code the issue
// was filed against.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// ---------------------------------------------------------------------------------------------
// The site under attack

// attackSite is the layout `setup --run-as nobody` gives (state dir nobody:www-data 2750), with
// a root-owned config that allows profiles only and audits to a file the tests read.
type attackSite struct {
	config   string
	auditLog string
	workDir  string
	markers  string // 0777: a planted script that runs leaves its marker here
}

// attackProfiles: quick answers at once; capped has a timeout and no retries, so its limits
// are what a request may not lift; nap runs long enough to be running when looked at.
const attackProfiles = `
[profiles.quick]
command = ["/bin/echo", "{word}"]
args = { word = "^[a-z][a-z0-9]*$" }

[profiles.capped]
command = ["/bin/true"]
timeout = "1m"

[profiles.nap]
command = ["/bin/sleep", "{secs}"]
args = { secs = "^[0-9]{1,3}$" }
name = "nap-{secs}"
`

// attackSite lays the site out, makes it the config of every w.cli, and has the worker's user
// create the spool the way its first drain does. extra goes into the config's top level.
func (w *world) attackSite(extra string) attackSite {
	t := w.t
	t.Helper()
	s := attackSite{
		config:   filepath.Join(w.root, "etc", "attack.toml"),
		auditLog: filepath.Join(w.root, "audit", "audit.log"),
		workDir:  filepath.Join(w.root, "work"),
		markers:  filepath.Join(w.root, "markers"),
	}
	w.mkdir(w.stateDir, 0o750|os.ModeSetgid, w.worker.UID, w.web.GID)
	w.mkdir(filepath.Dir(s.auditLog), 0o750, w.worker.UID, w.worker.GID)
	w.mkdir(s.workDir, 0o755, 0, 0)
	w.mkdir(s.markers, 0o777, 0, 0)
	config := fmt.Sprintf("allow_free_commands = false\naudit_log = %q\nworkdir = %q\n%s\n%s", s.auditLog, s.workDir, extra, attackProfiles)
	itest.Must(t, os.WriteFile(s.config, []byte(config), 0o644))
	w.config = s.config
	t.Cleanup(w.killLeftovers)
	if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
		t.Fatalf("first drain as %s (creates the spool): %v (killed: %v)", w.worker.Name, r, late)
	}
	return s
}

// cliWithin is w.cli bounded by timeout: late says it had to be killed. The attacks here
// block commands forever on the old code, so no command may wait unbounded.
func (w *world) cliWithin(acct *itest.Account, timeout time.Duration, args ...string) (r result, late bool) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, append([]string{"--config", w.config, "--state-dir", w.stateDir}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	asUser(cmd, acct)
	r, err := run(cmd)
	switch {
	case ctx.Err() != nil:
		return r, true
	case err != nil:
		w.t.Fatalf("run %s %q: %v", w.bin, args, err)
	}
	return r, false
}

// ---------------------------------------------------------------------------------------------
// A worker without supervisor

type workerProc struct {
	*itest.Server
	log string
}

// startWorkerAs starts `cmesh-run worker` (with --poll POLL unless "") as acct (root when
// nil), logging to a file of its own; it is stopped by PID at cleanup (SIGKILL when SIGTERM
// does not end it: a worker blocked in open() never reads its signal channel).
func (w *world) startWorkerAs(acct *itest.Account, pollEvery string) *workerProc {
	t := w.t
	t.Helper()
	args := []string{"--config", w.config, "--state-dir", w.stateDir, "--log-level", "info", "worker"}
	if pollEvery != "" {
		args = append(args, "--poll", pollEvery)
	}
	cmd := exec.Command(w.bin, args...)
	asUser(cmd, acct)
	p := &workerProc{log: filepath.Join(w.root, fmt.Sprintf("worker-%d.log", time.Now().UnixNano()))}
	p.Server = itest.Start(t, "the worker", cmd, p.log, syscall.SIGTERM)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("log of worker %d:\n%s", p.PID, itest.LastLines(string(b), 40))
		}
	})
	return p
}

// ---------------------------------------------------------------------------------------------
// Requests

// spoolAnswer is spool/results/REQUEST_ID.json: the job object, or an error.
type spoolAnswer struct {
	job
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Hint    string `json:"hint"`
	} `json:"error"`
}

// newRequestID is an ID in the PHP client's format (gmdate('Ymd-His') . '-' . 16 hex digits).
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// plant puts an entry named name into spool/incoming the way the request format says (made
// under a name starting with ".", then renamed), owned by www-data, who can write there.
func (w *world) plant(name string, create func(tmp string) error) {
	w.t.Helper()
	dir := filepath.Join(w.stateDir, "spool", "incoming")
	tmp := filepath.Join(dir, "."+name+".tmp")
	itest.Must(w.t, create(tmp))
	itest.Must(w.t, filepath.WalkDir(tmp, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, w.web.UID, w.web.GID)
	}))
	itest.Must(w.t, os.Rename(tmp, filepath.Join(dir, name)))
}

func (w *world) putRequest(id string, req map[string]any) {
	w.t.Helper()
	req["request_id"] = id
	body, err := json.Marshal(req)
	itest.Must(w.t, err)
	w.plant(id+".json", func(tmp string) error { return os.WriteFile(tmp, body, 0o644) })
}

// sendQuick sends a request the worker must accept and returns its ID.
func (w *world) sendQuick() string {
	w.t.Helper()
	id := newRequestID()
	w.putRequest(id, map[string]any{"profile": "quick", "args": map[string]string{"word": "ok"}})
	return id
}

// answer waits for request id's result; a worker that exits meanwhile fails t at once.
func (w *world) answer(wp *workerProc, id string, timeout time.Duration) spoolAnswer {
	w.t.Helper()
	path := filepath.Join(w.stateDir, "spool", "results", id+".json")
	var a spoolAnswer
	itest.Poll(w.t, timeout, "the answer to request "+id, func() (bool, string) {
		if wp != nil && wp.Exited() {
			w.t.Fatalf("worker %d exited (%v) before answering %s", wp.PID, wp.Cmd.ProcessState, id)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return false, err.Error()
		}
		a = spoolAnswer{}
		if err := json.Unmarshal(raw, &a); err != nil {
			return false, fmt.Sprintf("%s: %v", raw, err)
		}
		return true, ""
	})
	return a
}

// answered is answer for a request that must have been accepted.
func (w *world) answered(wp *workerProc, id string, timeout time.Duration) spoolAnswer {
	w.t.Helper()
	a := w.answer(wp, id, timeout)
	if a.Error != nil || !itest.IDPattern.MatchString(a.ID) || a.RequestID != id {
		w.t.Fatalf("request %s: %+v, want a job", id, a)
	}
	return a
}

// ---------------------------------------------------------------------------------------------
// 1. Entries of spool/incoming that are no request

// refusal is an entry the worker must refuse once: moved to spool/rejected, one audit line,
// one result.
type refusal struct {
	name string      // in spool/incoming
	kind fs.FileMode // its type bits (0: a regular file)
	size int64       // a regular file's size
	// stuck: a directory of www-data's, 0755, that the worker may not move to another
	// directory (rename needs write access to it, for its ".."); it must still be refused once.
	stuck bool
}

func (r refusal) stem() string { return strings.TrimSuffix(r.name, ".json") }

// numbered is how spool/rejected names an entry whose name was taken there: NAME.N.
var numbered = regexp.MustCompile(`^(.*)\.[0-9]+$`)

// checkRefusedOnce waits until the worker has taken every entry out of spool/incoming, sends
// three more requests (each answered within 2 s: three more passes over incoming), then checks
// that each entry sits in spool/rejected, was audited exactly once and has its result.
func (w *world) checkRefusedOnce(wp *workerProc, site attackSite, refs []refusal, settle time.Duration) {
	t := w.t
	t.Helper()
	incoming := filepath.Join(w.stateDir, "spool", "incoming")
	itest.Poll(t, settle, "the refused entries to leave spool/incoming", func() (bool, string) {
		left := 0
		for _, r := range refs {
			if _, err := os.Lstat(filepath.Join(incoming, r.name)); err == nil && !r.stuck {
				left++
			}
		}
		return left == 0, fmt.Sprintf("%d of %d still there", left, len(refs))
	})
	for i := 0; i < 3; i++ {
		w.answered(wp, w.sendQuick(), 2*time.Second)
	}

	rejected := map[string][]fs.FileInfo{}
	entries, err := os.ReadDir(filepath.Join(w.stateDir, "spool", "rejected"))
	if err != nil {
		t.Errorf("spool/rejected: %v", err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		base := e.Name()
		if m := numbered.FindStringSubmatch(base); m != nil && strings.HasSuffix(m[1], ".json") {
			base = m[1]
		}
		rejected[base] = append(rejected[base], fi)
	}
	stems := map[string]bool{}
	for _, r := range refs {
		stems[r.stem()] = true
	}
	counts, samples := auditMentions(t, site.auditLog, stems)
	var missing, wrongKind, notOnce, noResult []string
	for _, r := range refs {
		if !r.stuck {
			fis := rejected[r.name]
			switch {
			case len(fis) != 1:
				missing = append(missing, fmt.Sprintf("%s (%d in spool/rejected)", r.name, len(fis)))
			case fis[0].Mode().Type() != r.kind || (r.kind == 0 && fis[0].Size() != r.size):
				wrongKind = append(wrongKind, fmt.Sprintf("%s is %v of %d bytes", r.name, fis[0].Mode(), fis[0].Size()))
			}
		}
		if n := counts[r.stem()]; n != 1 || !strings.Contains(samples[r.stem()], `"outcome":"refused"`) {
			notOnce = append(notOnce, fmt.Sprintf("%s: %d lines, one of them %q", r.name, n, itest.Clip(samples[r.stem()])))
		}
		raw, err := os.ReadFile(filepath.Join(w.stateDir, "spool", "results", r.stem()+".json"))
		var a spoolAnswer
		if err != nil || json.Unmarshal(raw, &a) != nil || a.Error == nil || a.RequestID != r.stem() {
			noResult = append(noResult, fmt.Sprintf("%s: %v %q", r.name, err, itest.Clip(string(raw))))
		}
	}
	report := func(what string, list []string) {
		if len(list) > 0 {
			t.Errorf("%d of %d entries %s, e.g. %s", len(list), len(refs), what, strings.Join(list[:min(len(list), 5)], "; "))
		}
	}
	report("are not in spool/rejected once", missing)
	report("are in spool/rejected as something else than was planted", wrongKind)
	report("do not have exactly one audit line, a refusal", notOnce)
	report("have no result with an error", noResult)
	if wp.Exited() {
		t.Errorf("the worker exited: %v", wp.Cmd.ProcessState)
	}
}

// nameToken is a run of the characters of request IDs, without ".": in "incoming/x1.json.2"
// it finds x1.
var nameToken = regexp.MustCompile(`[A-Za-z0-9_-]+`)

// auditMentions counts, for each of names, the audit lines that name it (as a whole token),
// and keeps one such line.
func auditMentions(t *testing.T, path string, names map[string]bool) (map[string]int, map[string]string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	counts, samples := map[string]int{}, map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		seen := map[string]bool{}
		for _, m := range nameToken.FindAllString(line, -1) {
			if names[m] && !seen[m] {
				seen[m] = true
				counts[m]++
				samples[m] = line
			}
		}
	}
	return counts, samples
}

// A FIFO, a directory, symlinks, a 1 GiB sparse file and 10,000 junk requests in
// spool/incoming: after each, a worker (as its user, nobody) answers the next valid request
// within 2 s, and refuses each entry exactly once, moving it to spool/rejected.
func TestAttackIncomingEntries(t *testing.T) {
	bin := requireIntegration(t, 0)

	type plantCase struct {
		name string
		// plant puts the entries in place and returns them; settle bounds how long the worker
		// may take to move them all out.
		plant  func(w *world) []refusal
		settle time.Duration
	}
	fifo := func(w *world, name string) refusal {
		w.plant(name, func(tmp string) error { return syscall.Mkfifo(tmp, 0o644) })
		return refusal{name: name, kind: fs.ModeNamedPipe}
	}
	cases := []plantCase{
		{name: "fifo", settle: 5 * time.Second, plant: func(w *world) []refusal {
			return []refusal{fifo(w, "x1-fifo.json")}
		}},
		{name: "directory", settle: 5 * time.Second, plant: func(w *world) []refusal {
			dir := func(name string, mode os.FileMode) {
				w.plant(name, func(tmp string) error {
					if err := os.Mkdir(tmp, 0o755); err != nil {
						return err
					}
					if err := os.WriteFile(filepath.Join(tmp, "inside"), []byte("x"), 0o644); err != nil {
						return err
					}
					return os.Chmod(tmp, mode)
				})
			}
			// 0777: the worker can move it. 0755: what PHP's mkdir() gives www-data.
			dir("x2-dir777.json", 0o777)
			dir("x2-dir755.json", 0o755)
			return []refusal{{name: "x2-dir777.json", kind: fs.ModeDir}, {name: "x2-dir755.json", kind: fs.ModeDir, stuck: true}}
		}},
		{name: "symlink", settle: 5 * time.Second, plant: func(w *world) []refusal {
			target := filepath.Join(w.root, "fifo-target")
			itest.Must(w.t, syscall.Mkfifo(target, 0o666))
			itest.Must(w.t, os.Lchown(target, w.web.UID, w.web.GID))
			w.plant("x3-passwd.json", func(tmp string) error { return os.Symlink("/etc/passwd", tmp) })
			w.plant("x3-fifo.json", func(tmp string) error { return os.Symlink(target, tmp) })
			return []refusal{{name: "x3-passwd.json", kind: fs.ModeSymlink}, {name: "x3-fifo.json", kind: fs.ModeSymlink}}
		}},
		{name: "sparse-1GiB", settle: 5 * time.Second, plant: func(w *world) []refusal {
			w.plant("x4-sparse.json", func(tmp string) error {
				f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := f.WriteString(`{"request_id":"x4-sparse","profile":"quick","args":{"word":"ok"}}`); err != nil {
					return err
				}
				return f.Truncate(1 << 30)
			})
			return []refusal{{name: "x4-sparse.json", size: 1 << 30}}
		}},
		// Named to sort before the client's request IDs (which start with the year): a worker
		// that takes incoming in name order meets all of them first.
		{name: "junk-10000", settle: 120 * time.Second, plant: func(w *world) []refusal {
			refs := make([]refusal, 10000)
			for i := range refs {
				body := fmt.Sprintf(`{"request_id":"0junk-%05d", not json`, i)
				refs[i] = refusal{name: fmt.Sprintf("0junk-%05d.json", i), size: int64(len(body))}
				w.plant(refs[i].name, func(tmp string) error { return os.WriteFile(tmp, []byte(body), 0o644) })
			}
			return refs
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, bin)
			site := w.attackSite("")
			wp := w.startWorkerAs(&w.worker, "200ms")
			w.answered(wp, w.sendQuick(), 10*time.Second) // the worker is at work

			start := time.Now()
			refs := tc.plant(w)
			planted := time.Since(start)
			id := w.sendQuick()
			w.answered(wp, id, 2*time.Second)
			t.Logf("%d entries planted in %v; the next request answered %v after them", len(refs), planted, time.Since(start)-planted)
			w.checkRefusedOnce(wp, site, refs, tc.settle)

			if tc.name != "fifo" {
				return
			}
			// A restarted worker meets neither the FIFO it refused nor a new one planted while
			// it was down.
			wp.Stop()
			refs = append(refs, fifo(w, "x1b-fifo.json"))
			wp = w.startWorkerAs(&w.worker, "200ms")
			w.answered(wp, w.sendQuick(), 5*time.Second)
			w.checkRefusedOnce(wp, site, refs, tc.settle)
		})
	}
}

// ---------------------------------------------------------------------------------------------
// 2. Requests that lift a profile's limits

// A request may tighten the profile's timeout, never lift it (0s is no timeout at all), and may
// not add retries the profile does not have.
func TestAttackRequestCeilings(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	site := w.attackSite("")
	cases := []struct {
		what   string
		req    map[string]any
		denied bool
	}{
		{"timeout 0s (none) for a profile of timeout 1m", map[string]any{"timeout": "0s"}, true},
		{"timeout 2m for a profile of timeout 1m", map[string]any{"timeout": "2m"}, true},
		{"retries 3 for a profile without retries", map[string]any{"retries": 3}, true},
		{"timeout 30s for a profile of timeout 1m", map[string]any{"timeout": "30s"}, false},
	}
	ids := make([]string, len(cases))
	for i, tc := range cases {
		ids[i] = newRequestID()
		tc.req["profile"] = "capped"
		w.putRequest(ids[i], tc.req)
	}
	if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
		t.Fatalf("drain: %v (killed: %v)", r, late)
	}
	var accepted []string
	names := map[string]bool{}
	for _, id := range ids {
		names[id] = true
	}
	counts, samples := auditMentions(t, site.auditLog, names)
	for i, tc := range cases {
		a := w.answer(nil, ids[i], 5*time.Second)
		if !tc.denied {
			if a.Error != nil || !itest.IDPattern.MatchString(a.ID) {
				t.Errorf("%s: %+v, want a job", tc.what, a)
				continue
			}
			accepted = append(accepted, a.ID)
			if d, err := time.ParseDuration(a.Timeout); err != nil || d != 30*time.Second {
				t.Errorf("%s: the job's timeout is %q", tc.what, a.Timeout)
			}
			continue
		}
		if a.Error == nil || a.Error.Code != "denied" || a.ID != "" {
			t.Errorf("%s: answered %+v (error %+v), want error code denied and no job", tc.what, a.job, a.Error)
		} else {
			t.Logf("%s: denied: %s (hint: %s)", tc.what, a.Error.Message, a.Error.Hint)
		}
		if counts[ids[i]] != 1 || !strings.Contains(samples[ids[i]], `"outcome":"refused"`) {
			t.Errorf("%s: %d audit lines name the request, want one refusal; e.g. %q", tc.what, counts[ids[i]], samples[ids[i]])
		}
	}
	if n := countFiles(t, filepath.Join(w.stateDir, "jobs", "*.json")); n != len(accepted) {
		t.Errorf("%d job records, want %d (the accepted request's)", n, len(accepted))
	}
	for _, id := range accepted {
		if j := w.waitFinished(&w.worker, id, 20*time.Second); j.State != "succeeded" {
			t.Errorf("accepted job: %v", j)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// 3. Root's worker and drain, scripts planted in the queue

// A root drain or worker on a state dir of another user's would run that user's queue (and
// whatever was planted in it) as root: both refuse, run nothing, and the owner's drain still
// starts the queued job.
func TestAttackRootWorkerAndDrain(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	w.attackSite("")
	q := w.schedule(&w.worker, "--backend", "spool", "--profile", "quick", "--arg", "word=queued")
	for _, args := range [][]string{{"drain"}, {"worker", "--poll", "200ms"}} {
		what := strings.Join(args, " ") + " as root on " + w.worker.Name + "'s state dir"
		r, late := w.cliWithin(nil, 15*time.Second, args...)
		if late {
			t.Errorf("%s ran on until killed after 15 s: %v", what, r)
			continue
		}
		if r.exit != 5 {
			t.Errorf("%s: %v, want exit 5", what, r)
		}
		itest.OneErrorLine(t, what, r.stderr)
		t.Logf("%s: exit %d, %q", what, r.exit, strings.TrimSpace(r.stderr))
	}
	if s := w.status(nil, q.ID); s.State != "queued" {
		t.Errorf("root's drain or worker started the queued job: %v", s)
	}
	if _, err := os.Stat(filepath.Join(w.stateDir, "spool", "queue", q.ID+".sh")); err != nil {
		t.Errorf("the queued job's script: %v", err)
	}
	if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
		t.Fatalf("drain as %s: %v (killed: %v)", w.worker.Name, r, late)
	}
	if j := w.waitFinished(nil, q.ID, 20*time.Second); j.State != "succeeded" {
		t.Errorf("the queued job after its owner's drain: %v", j)
	}
}

// Scripts in spool/queue that belong to no queued record of the worker's own: one with no
// record, one of a finished job, one owned by root for a queued record. Drains as the worker's
// user start none of them (each would touch its marker first thing), and still start a
// legitimate job queued after them.
func TestAttackQueueScripts(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	site := w.attackSite("")
	queue := filepath.Join(w.stateDir, "spool", "queue")

	first := w.schedule(&w.worker, "--backend", "spool", "--profile", "quick", "--arg", "word=first")
	template, err := os.ReadFile(filepath.Join(queue, first.ID+".sh"))
	itest.Must(t, err)
	if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
		t.Fatalf("drain: %v (killed: %v)", r, late)
	}
	if j := w.waitFinished(&w.worker, first.ID, 20*time.Second); j.State != "succeeded" {
		t.Fatalf("a legitimate spool job: %v", j)
	}

	// A copy of a real job's script, for job id, that first touches marker.
	markers := map[string]string{}
	plantScript := func(what, id string, uid, gid int, mode os.FileMode) {
		marker := filepath.Join(site.markers, strings.ReplaceAll(what, " ", "-"))
		markers[what] = marker
		body := "/usr/bin/touch " + marker + "\n" + strings.ReplaceAll(string(template), first.ID, id)
		tmp := filepath.Join(queue, "."+id+".tmp")
		itest.Must(t, os.WriteFile(tmp, []byte(body), mode))
		itest.Must(t, os.Chmod(tmp, mode))
		itest.Must(t, os.Lchown(tmp, uid, gid))
		itest.Must(t, os.Rename(tmp, filepath.Join(queue, id+".sh")))
	}
	plantScript("finished record", first.ID, w.worker.UID, w.worker.GID, 0o600)
	plantScript("no record", time.Now().UTC().Format("20060102-150405.000000")+"-0ff1ce", w.worker.UID, w.worker.GID, 0o600)
	rooted := w.schedule(&w.worker, "--backend", "spool", "--profile", "quick", "--arg", "word=rooted")
	plantScript("root-owned script", rooted.ID, 0, 0, 0o644)
	legit := w.schedule(&w.worker, "--backend", "spool", "--profile", "quick", "--arg", "word=legit")

	checkMarkers := func(when string) {
		t.Helper()
		for what, m := range markers {
			if _, err := os.Stat(m); err == nil {
				t.Fatalf("%s: the script planted with a %s ran (%s exists)", when, what, m)
			}
		}
	}
	for i := 1; i <= 5; i++ {
		if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
			t.Fatalf("drain %d: %v (killed: %v)", i, r, late)
		}
		checkMarkers(fmt.Sprintf("after drain %d", i))
	}
	// The legitimate job sorts after every planted one: once it has run, any planted script a
	// drain started has had its first line run too.
	if j := w.waitFinished(&w.worker, legit.ID, 20*time.Second); j.State != "succeeded" {
		t.Errorf("the legitimate job queued after the planted scripts: %v", j)
	}
	checkMarkers("after the legitimate job ran")
	if s := w.status(&w.worker, rooted.ID); s.State != "queued" {
		t.Errorf("the job whose script root replaced: %v, want it left queued", s)
	}
	if s := w.status(&w.worker, first.ID); s.State != "succeeded" || s.Attempt != 1 {
		t.Errorf("the finished job whose script was planted again: %v", s)
	}
}

// ---------------------------------------------------------------------------------------------
// 4. Every lock www-data can take

// finishes polls job id's state as acct until it is final or timeout passes, without failing
// t: callers go on to the next check when a job never ends.
func (w *world) finishes(acct *itest.Account, id string, timeout time.Duration) (job, bool) {
	w.t.Helper()
	var j job
	for end := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		j = w.status(acct, id)
		if itest.Finished(j.State) || time.Now().After(end) {
			return j, itest.Finished(j.State)
		}
	}
}

// www-data holds every lock it can open in the state dir, on files that exist and on those
// created while it runs. Drain, schedule --unique, the worker, a job that needs one of
// max_running's slots and cancel all still work.
func TestAttackWebUserHoldsLocks(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	w.attackSite("max_running = 1")
	spoolJob := func(args ...string) (job, bool) {
		t.Helper()
		r, late := w.cliWithin(&w.worker, 15*time.Second, append([]string{"schedule", "--json", "--backend", "spool"}, args...)...)
		var j job
		if late || r.exit != 0 || json.Unmarshal([]byte(r.stdout), &j) != nil || !itest.IDPattern.MatchString(j.ID) {
			t.Errorf("schedule %q as %s: %v (killed after 15 s: %v)", args, w.worker.Name, r, late)
			return j, false
		}
		return j, true
	}
	drain := func() {
		t.Helper()
		if r, late := w.cliWithin(&w.worker, 30*time.Second, "drain"); late || r.exit != 0 {
			t.Errorf("drain as %s: %v (killed after 30 s: %v)", w.worker.Name, r, late)
		}
	}
	succeeds := func(what string, j job) {
		t.Helper()
		if f, _ := w.finishes(&w.worker, j.ID, 20*time.Second); f.State != "succeeded" {
			t.Errorf("%s, with the locks held: %v", what, f)
		}
	}

	// Every file a site has after a while: the spool's, the state dir's lock, slots, records
	// and outputs of a finished job.
	before, ok := spoolJob("--profile", "quick", "--arg", "word=before", "--unique", "--name", "before")
	if !ok {
		t.FailNow()
	}
	drain()
	if j := w.waitFinished(&w.worker, before.ID, 20*time.Second); j.State != "succeeded" {
		t.Fatalf("a spool job before the attack: %v", j)
	}

	locker := itest.StartLocker(t, itest.BuildLocker(t, w.root), w.web, w.stateDir)
	t.Logf("as %s, the locker (pid %d) holds:\n%s", w.web.Name, locker.PID, strings.Join(locker.Report(), "\n"))
	if len(locker.Held()) == 0 {
		t.Fatalf("the locker could open nothing in the state dir")
	}

	// drain really drains: the job it starts finishes.
	if j, ok := spoolJob("--profile", "quick", "--arg", "word=drained"); ok {
		drain()
		succeeds("a job drained", j)
	}
	// --unique takes the state dir's lock.
	if j, ok := spoolJob("--profile", "nap", "--arg", "secs=1", "--unique"); ok {
		drain()
		succeeds("a --unique job drained", j)
	}

	// The worker reaches its loop: it holds its lock and answers.
	wp := w.startWorkerAs(&w.worker, "1s")
	lock := filepath.Join(w.stateDir, "private", "worker.lock")
	itest.Poll(t, 10*time.Second, "the worker to hold "+lock, func() (bool, string) {
		if wp.Exited() {
			t.Fatalf("the worker exited: %v", wp.Cmd.ProcessState)
		}
		return itest.HoldsFile(wp.PID, lock), fmt.Sprintf("its descriptors: %v", itest.FDLinks(wp.PID))
	})
	w.answered(wp, w.sendQuick(), 5*time.Second)

	// A job that needs the one slot starts, under the worker.
	if j, ok := spoolJob("--profile", "quick", "--arg", "word=slot"); ok {
		succeeds("a max_running job started by the worker", j)
	}

	// A running job's cancel returns.
	if j, ok := spoolJob("--profile", "nap", "--arg", "secs=60"); ok {
		itest.Poll(t, 20*time.Second, "the long job to run", func() (bool, string) {
			s := w.status(&w.worker, j.ID)
			return s.State == "running", s.String()
		})
		if r, late := w.cliWithin(&w.worker, 30*time.Second, "cancel", "--grace", "2s", j.ID); late || r.exit != 0 {
			t.Errorf("cancel of a running job: %v (killed after 30 s: %v)", r, late)
		}
		if s := w.status(&w.worker, j.ID); s.State != "canceled" {
			t.Errorf("the canceled job: %v", s)
		}
	}

	if locker.Exited() {
		t.Fatalf("the locker died: nothing above was tested with the locks held")
	}
	for _, h := range locker.Held() {
		if h.Path == "private" || strings.HasPrefix(h.Path, "private/") {
			t.Errorf("www-data could open %s", filepath.Join(w.stateDir, h.Path))
		}
	}
}

// ---------------------------------------------------------------------------------------------
// 5. log on a 1 GiB output

// peakSource is peakrss LIMIT_KIB PROG ARGS...: it runs PROG with its own stdin, stdout and
// stderr, kills it once its resident set passes LIMIT_KIB, and writes "EXIT MAXRSS KILLED_AT"
// (KiB) to fd 3. The peak has to be measured by a small parent: Go starts a child with
// vfork, so until exec the child shares its parent's memory, and the kernel counts the
// parent's peak (the test binary's, some 30 MiB) into the child's ru_maxrss. Here that is
// peakrss's few MiB.
const peakSource = `package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func vmRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func main() {
	limit, _ := strconv.ParseInt(os.Args[1], 10, 64)
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(127)
	}
	var killed atomic.Int64
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if rss := vmRSS(cmd.Process.Pid); rss > limit {
					killed.Store(rss)
					cmd.Process.Kill()
					return
				}
			}
		}
	}()
	cmd.Wait()
	close(done)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	fmt.Fprintf(os.NewFile(3, "report"), "%d %d %d\n", cmd.ProcessState.ExitCode(), ru.Maxrss, killed.Load())
}
`

// logRun runs `cmesh-run log ARGS ID` as root under peakrss, with stdout to /dev/null (or into
// a buffer of at most 64 MiB when keep is set), and returns its peak RSS in KiB. Past 256 MiB
// it is killed, so that a log building the whole output in memory fails the test instead of
// the machine.
func (w *world) logRun(peak, id string, keep bool, args ...string) (out []byte, maxRSS int64, r result, why string) {
	t := w.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, peak, append(append([]string{strconv.Itoa(256 << 10), w.bin, "--config", w.config, "--state-dir", w.stateDir, "log"}, args...), id)...)
	asUser(cmd, nil)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var buf capped
	if keep {
		cmd.Stdout = &buf
	} else {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		itest.Must(t, err)
		defer null.Close()
		cmd.Stdout = null
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	rep, repW, err := os.Pipe()
	itest.Must(t, err)
	defer rep.Close()
	cmd.ExtraFiles = []*os.File{repW}
	err = cmd.Start()
	repW.Close()
	itest.Must(t, err)
	cmd.Wait()
	r.stderr = stderr.String()
	if ctx.Err() != nil {
		return buf.b.Bytes(), 0, r, "killed after 60 s"
	}
	report, _ := io.ReadAll(rep)
	var killedAt int64
	if _, err := fmt.Sscanf(string(report), "%d %d %d", &r.exit, &maxRSS, &killedAt); err != nil {
		t.Fatalf("peakrss log %q: report %q: %v; stderr %q", args, report, err, r.stderr)
	}
	switch {
	case killedAt > 0:
		why = fmt.Sprintf("killed at an RSS of %d KiB", killedAt)
	case buf.over:
		why = "printed over 64 MiB"
	}
	return buf.b.Bytes(), maxRSS, r, why
}

// capped keeps the first 64 MiB written to it.
type capped struct {
	b    bytes.Buffer
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if c.b.Len()+len(p) > 64<<20 {
		c.over = true
		return len(p), nil
	}
	return c.b.Write(p)
}

// Every log flag combination on a 1 GiB output (one line without newline: a finished job's
// output extended with zeros) stays within 32 MiB of peak RSS, and --json answers at most
// 4 MiB whatever --limit asks.
func TestAttackLogMemory(t *testing.T) {
	bin := requireIntegration(t, 0)
	w := newWorld(t, bin)
	t.Cleanup(w.killLeftovers)
	w.mkdir(w.stateDir, 0o750, 0, 0)
	j := w.schedule(nil, "--backend", "direct", "--", "sh", "-c", "echo start")
	if f := w.waitFinished(nil, j.ID, 20*time.Second); f.State != "succeeded" {
		t.Fatalf("job: %v", f)
	}
	const size = 1 << 30
	out := filepath.Join(w.stateDir, "jobs", j.ID+".out")
	itest.Must(t, os.Truncate(out, size))

	peak := itest.BuildTool(t, w.root, "peakrss", peakSource)
	const ceiling = 32 << 10 // KiB
	for _, args := range [][]string{
		{}, {"--raw"}, {"--tail", "5"}, {"--tail", "5", "--raw"}, {"--tail", "100000"},
		{"--json"}, {"--json", "--raw"}, {"--json", "--limit", "999999999999"},
		{"--json", "--offset", "500000000", "--limit", "999999999999"},
		{"--offset", "1000"}, {"--limit", "999999999999"}, {"--offset", "1000", "--limit", "100000000"},
	} {
		start := time.Now()
		_, rss, r, why := w.logRun(peak, j.ID, false, args...)
		t.Logf("log %-50s peak RSS %7d KiB in %v %s", strings.Join(args, " "), rss, time.Since(start).Round(time.Millisecond), why)
		switch {
		case why != "":
			t.Errorf("log %q on a 1 GiB output: %s", args, why)
		case r.exit != 0:
			t.Errorf("log %q: exit %d, stderr %q", args, r.exit, r.stderr)
		case rss > ceiling:
			t.Errorf("log %q on a 1 GiB output: peak RSS %d KiB, over %d KiB", args, rss, ceiling)
		}
	}

	data, rss, r, why := w.logRun(peak, j.ID, true, "--json", "--limit", "999999999999")
	if why != "" || r.exit != 0 {
		t.Fatalf("log --json --limit 999999999999: exit %d, %s, stderr %q", r.exit, why, r.stderr)
	}
	var c itest.LogChunk
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("log --json --limit 999999999999: %v in %d bytes: %q", err, len(data), itest.Clip(string(data)))
	}
	// The end marker is the only thing in that range that is not the job's own bytes.
	const marker = 128
	if got := c.NextOffset - c.Offset; got > 4<<20+marker || c.NextOffset >= size || c.Done {
		t.Errorf("log --json --limit 999999999999: offset %d, next_offset %d (%d bytes), done %v, of a %d-byte output; want at most 4 MiB and more to come",
			c.Offset, c.NextOffset, got, c.Done, int64(size))
	}
	t.Logf("log --json --limit 999999999999: %d bytes of output in one answer, %d bytes of JSON, peak RSS %d KiB", c.NextOffset-c.Offset, len(data), rss)
}
