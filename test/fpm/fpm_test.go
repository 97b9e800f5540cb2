//go:build integration

package fpm

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/test/itest"
)

// (a) A page starts a 20 s build-like job and returns at once; later requests follow its
// status and output until it is done, and the output arrives byte for byte.
func TestRequestReturnsAtOnceAndJobRunsToTheEnd(t *testing.T) {
	bin := itest.Require(t, "fpm", needs)
	itest.AllowAt(t, "fpm", itest.WebUser)
	e := newEnv(t, bin)
	e.site.Start(t)

	argv, want := progressJob(200)
	j, a := e.schedule(argv, map[string]any{"name": "build-20s"})
	if a.Elapsed > 1500*time.Millisecond {
		t.Errorf("the scheduling request took %v; it must return at once", a.Elapsed)
	}
	t.Logf("scheduled %s in %v (PHP side %.3fs)", j.ID, a.Elapsed, a.Seconds)
	if a.PoolSecret != poolEnvPW || a.RequestSecret != e.secret {
		t.Fatalf("the page should see the pool and request secrets (the leak checks rely on it): %s", a.Raw)
	}

	sawRunning := false
	itest.PollEvery(t, pagePoll, 10*time.Second, "job to run", func() (bool, string) {
		s := e.status(j.ID)
		sawRunning = s.State == "running"
		return sawRunning || itest.Finished(s.State), s.State
	})
	if !sawRunning {
		t.Errorf("a 20 s job was never seen running")
	}

	got, final := e.collect(j.ID, 1<<20, 60*time.Second)
	checkSucceeded(t, final, got, want)
}

// (b) The job survives whatever happens to the request, the worker or the whole pool, and ends
// succeeded with all its output.
func TestJobSurvivesFPM(t *testing.T) {
	bin := itest.Require(t, "fpm", needs)
	itest.AllowAt(t, "fpm", itest.WebUser)

	t.Run("worker recycled", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, bin)
		e.site.Start(t)
		argv, want := progressJob(60)
		j, a := e.schedule(argv, nil)
		itest.WaitGone(t, a.PID, "the scheduling worker (pm.max_requests=1)", 5*time.Second)
		if s := e.directStatus(j.ID); itest.Finished(s.State) {
			t.Fatalf("job already over when its worker was gone, proves nothing: %v", s)
		}
		got, final := e.collect(j.ID, 1<<20, 40*time.Second)
		checkSucceeded(t, final, got, want)
	})

	t.Run("request_terminate_timeout kills the worker", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, bin)
		e.site.Start(t)
		argv, want := progressJob(100)
		note := filepath.Join(e.notes, "schedule.json")
		r := e.request(map[string]any{"op": "schedule", "argv": argv, "note": note, "sleep": 30}, 40*time.Second)
		if r.Elapsed > 20*time.Second {
			t.Errorf("request took %v: request_terminate_timeout=5s did not end it", r.Elapsed)
		}
		if r.Err == nil && r.Status == 200 && strings.Contains(string(r.Body), `"ok":true`) {
			t.Fatalf("the page was meant to be killed, yet it answered: %q", r.Body)
		}
		t.Logf("killed request: status %d, err %v, body %q, after %v", r.Status, r.Err, r.Body, r.Elapsed)
		var a itest.APIResult
		raw, err := os.ReadFile(note)
		itest.Must(t, err)
		itest.Must(t, json.Unmarshal(raw, &a))
		var j job
		if !a.OK || json.Unmarshal(a.Result, &j) != nil {
			t.Fatalf("schedule before the sleep failed: %s", raw)
		}
		e.track(j.ID)
		itest.WaitGone(t, a.PID, "the timed-out worker", 5*time.Second)
		if s := e.directStatus(j.ID); itest.Finished(s.State) {
			t.Fatalf("job already over when its worker was killed, proves nothing: %v", s)
		}
		got, final := e.collect(j.ID, 1<<20, 40*time.Second)
		checkSucceeded(t, final, got, want)
	})

	masterCases := []struct {
		name string
		kill func(p *itest.Server) error
	}{
		{"master SIGQUIT", func(p *itest.Server) error { return syscall.Kill(p.PID, syscall.SIGQUIT) }},
		{"master SIGTERM", func(p *itest.Server) error { return syscall.Kill(p.PID, syscall.SIGTERM) }},
		{"SIGKILL to the whole process group", func(p *itest.Server) error { return syscall.Kill(-p.PID, syscall.SIGKILL) }},
	}
	for _, tc := range masterCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, bin)
			p := e.site.Start(t)
			argv, want := progressJob(60)
			j, _ := e.schedule(argv, nil)
			itest.Must(t, tc.kill(p))
			p.WaitExit(t, 10*time.Second)

			s := e.directStatus(j.ID)
			if s.State != "running" && s.State != "queued" {
				t.Fatalf("with the pool gone the job should still be on its way, got %v", s)
			}
			if s.PID != nil && !itest.Alive(*s.PID) {
				t.Fatalf("job's process %d is gone with the pool: %v", *s.PID, s)
			}
			e.site.Start(t) // a new pool, to read the job's progress through pages again
			got, final := e.collect(j.ID, 1<<20, 40*time.Second)
			checkSucceeded(t, final, got, want)
		})
	}
}

// (c) The job holds no descriptor of FPM's, and no request or pool variable reaches it, its
// output, at's spool or the state dir, whether the caller uses the client as meant or hands
// cmesh-run its whole environment.
func TestJobIsolatedFromFPM(t *testing.T) {
	bin := itest.Require(t, "fpm", needs)
	itest.AllowAt(t, "fpm", itest.WebUser)
	for _, leaky := range []bool{false, true} {
		name := "client env"
		if leaky {
			name = "caller passes worker env and request headers"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, bin)
			p := e.site.Start(t)
			secrets := []string{poolEnvPW, e.secret}

			loop, wantTail := progressJob(60)
			argv := []string{"sh", "-c", "env; echo '--- end of env'; " + loop[2]}
			var j job
			a := e.call(map[string]any{"op": "schedule", "argv": argv, "leaky": leaky}, &j)
			e.track(j.ID)
			e.checkNewJob(j, argv)
			if a.PoolSecret != poolEnvPW || a.RequestSecret != e.secret {
				t.Fatalf("the worker should see both secrets, or this test proves nothing: %s", a.Raw)
			}

			// Every socket and pipe FPM has: the worker's during the request (listening
			// socket, the request's connection, the log pipes), the master's and its
			// workers' now.
			fpmFDs := itest.SharedDescriptors(a.PID, a.FDs, p.PID)
			if len(fpmFDs) == 0 {
				t.Fatal("found no socket of FPM's to compare with")
			}

			var running job
			itest.PollEvery(t, pagePoll, 10*time.Second, "job to be running with a pid", func() (bool, string) {
				running = e.status(j.ID)
				if itest.Finished(running.State) {
					t.Fatalf("job ended too soon: %v", running)
				}
				return running.State == "running" && running.PID != nil && itest.Alive(*running.PID), running.String()
			})

			procs := itest.JobProcesses(*running.PID, "atd")
			t.Logf("job %s: processes %v", j.ID, procs)
			for _, pid := range procs {
				comm, _, _ := itest.ProcStat(pid)
				for fd, target := range itest.FDLinks(pid) {
					if from, ok := fpmFDs[target]; ok {
						t.Errorf("job process %d (%s) fd %s is %s, inherited from %s", pid, comm, fd, target, from)
					} else if strings.HasPrefix(target, "socket:") {
						t.Logf("job process %d (%s) fd %s is %s (not FPM's)", pid, comm, fd, target)
					}
				}
				environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
				if err == nil {
					noSecret(t, fmt.Sprintf("environment of job process %d (%s)", pid, comm), environ, secrets)
				}
			}

			spool := spoolFiles(t, j)
			if len(spool) == 0 {
				t.Errorf("found no at spool file for job %v while it runs", running)
			}
			for _, path := range spool {
				data, err := os.ReadFile(path)
				if err == nil {
					noSecret(t, "at spool file "+path, data, secrets)
				}
			}
			stateFilesClean(t, e.stateDir, secrets)

			got, final := e.collect(j.ID, 1<<20, 40*time.Second)
			envPart, tail, ok := strings.Cut(got, "--- end of env\n")
			if !ok || !strings.Contains(envPart, "CMESH_RUN_JOB_ID="+j.ID+"\n") {
				t.Errorf("job's env output lacks CMESH_RUN_JOB_ID=%s:\n%s", j.ID, got)
			}
			t.Logf("job's environment:\n%s", envPart)
			noSecret(t, "job output", []byte(got), secrets)
			for _, bad := range []string{"HTTP_", "DB_PASSWORD", "SCRIPT_FILENAME", "QUERY_STRING"} {
				if strings.Contains(envPart, bad) {
					t.Errorf("job's environment has %s:\n%s", bad, envPart)
				}
			}
			checkSucceeded(t, final, tail, wantTail)
			stateFilesClean(t, e.stateDir, secrets)
		})
	}
}

// (d) With Debian's /etc/at.deny (www-data listed) scheduling fails with status 4, code
// backend_unavailable and a message naming the file and line; nothing is queued.
func TestAtDenyRefusesWithClearError(t *testing.T) {
	bin := itest.Require(t, "fpm", needs)
	line := itest.DenyAt(t, "fpm", itest.WebUser)
	e := newEnv(t, bin)
	e.site.Start(t)

	before, err := itest.AtJobs(itest.WebUser)
	itest.Must(t, err)
	a := e.api(map[string]any{"op": "schedule", "argv": []string{"sh", "-c", "echo should never run"}})
	t.Logf("page answered: %s", a.Raw)
	if a.OK || a.Error == nil {
		t.Fatalf("schedule should fail while %s lists www-data: %s", itest.AtDeny, a.Raw)
	}
	if a.Error.Code != "backend_unavailable" || a.Error.ExitStatus != 4 {
		t.Errorf("got code %q exit %d, want backend_unavailable and 4", a.Error.Code, a.Error.ExitStatus)
	}
	msg := a.Error.Message
	if !strings.Contains(msg, itest.AtDeny) || !strings.Contains(msg, itest.WebUser) {
		t.Errorf("message should name %s and %s: %q", itest.AtDeny, itest.WebUser, msg)
	}
	// The line number can only be known when www-data may read the file; Debian ships it
	// 0640 root:daemon, and then only at (setgid daemon) can.
	hasLine := regexp.MustCompile(`\b` + strconv.Itoa(line) + `\b`).MatchString(msg)
	if _, _, code := e.asWebUser("/usr/bin/test", "-r", itest.AtDeny); code == 0 && !hasLine {
		t.Errorf("message should name line %d of %s, which www-data can read: %q", line, itest.AtDeny, msg)
	} else if code != 0 {
		t.Logf("%s is not readable by %s here, so the message cannot name line %d", itest.AtDeny, itest.WebUser, line)
	}

	after, err := itest.AtJobs(itest.WebUser)
	itest.Must(t, err)
	for _, n := range after {
		if !slices.Contains(before, n) {
			t.Errorf("at job %s of www-data appeared although at was denied", n)
		}
	}
	out, errOut, code := e.direct("status", "--json")
	var live []job
	if code != 0 || json.Unmarshal([]byte(out), &live) != nil {
		t.Fatalf("status --json: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, j := range live {
		if !itest.Finished(j.State) {
			t.Errorf("a refused schedule left a %s job behind: %v", j.State, j)
		}
	}
}

// (e) The PHP client's methods, through the real pool.
func TestPHPClientThroughFPM(t *testing.T) {
	bin := itest.Require(t, "fpm", needs)
	itest.AllowAt(t, "fpm", itest.WebUser)
	e := newEnv(t, bin)
	e.site.Start(t)

	t.Run("schedule options, status, log paged by 7 bytes", func(t *testing.T) {
		e := e.sub(t)
		argv := []string{"sh", "-c", `echo "greeting=$GREETING"; pwd; printf 'caf\303\251 | no newline at the end'`}
		j, _ := e.schedule(argv, map[string]any{
			"name": "client-e1", "env": map[string]string{"GREETING": "hello, it's me"}, "workdir": e.workDir,
		})
		if j.Name == nil || *j.Name != "client-e1" || j.Workdir != e.workDir || j.User != itest.WebUser {
			t.Errorf("job object does not reflect the options: %v", j)
		}
		got, final := e.collect(j.ID, 7, 30*time.Second)
		want := "greeting=hello, it's me\n" + e.workDir + "\ncafé | no newline at the end"
		checkSucceeded(t, final, got, want)
		if s := e.status(j.ID); s.Backend != "at" || s.StartedAt == nil || s.FinishedAt == nil || s.OutputPath == "" {
			t.Errorf("status lacks fields: %v", s)
		}
	})

	t.Run("wait returns the exit code", func(t *testing.T) {
		e := e.sub(t)
		j, _ := e.schedule([]string{"sh", "-c", "echo about to fail; exit 3"}, nil)
		var code int
		e.call(map[string]any{"op": "wait", "id": j.ID, "timeout": 4}, &code)
		if code != 3 {
			t.Errorf("wait: %d, want 3", code)
		}
		if s := e.status(j.ID); s.State != "failed" || s.ExitCode == nil || *s.ExitCode != 3 {
			t.Errorf("status after exit 3: %v", s)
		}
		ok, _ := e.schedule([]string{"true"}, nil)
		e.call(map[string]any{"op": "wait", "id": ok.ID, "timeout": 4}, &code)
		if code != 0 {
			t.Errorf("wait on a job that exits 0: %d", code)
		}
	})

	t.Run("wait timeout, cancel a running job", func(t *testing.T) {
		e := e.sub(t)
		j, _ := e.schedule([]string{"sh", "-c", "echo started; sleep 60; echo not reached"}, nil)
		var s job
		itest.PollEvery(t, pagePoll, 10*time.Second, "job to run", func() (bool, string) {
			s = e.status(j.ID)
			return s.State == "running" && s.PID != nil, s.String()
		})
		procs := itest.JobProcesses(*s.PID, "atd")
		var code int
		a := e.call(map[string]any{"op": "wait", "id": j.ID, "timeout": 0.5}, &code)
		if code != 124 || a.Elapsed > 3*time.Second {
			t.Errorf("wait --timeout 0.5s on a running job: %d after %v, want 124 at once", code, a.Elapsed)
		}
		e.call(map[string]any{"op": "cancel", "id": j.ID, "grace": 1}, nil)
		itest.PollEvery(t, pagePoll, 10*time.Second, "job to be canceled", func() (bool, string) {
			s = e.status(j.ID)
			return s.State == "canceled", s.String()
		})
		for _, pid := range procs {
			if comm, _, err := itest.ProcStat(pid); err == nil && comm != "atd" {
				itest.WaitGone(t, pid, "canceled job's process "+comm, 5*time.Second)
			}
		}
		e.call(map[string]any{"op": "wait", "id": j.ID, "timeout": 2}, &code)
		if code != 125 {
			t.Errorf("wait on a canceled job: %d, want 125", code)
		}
		got, _ := e.collect(j.ID, 1<<20, 10*time.Second)
		if got != "started\n" {
			t.Errorf("canceled job's output: %q", got)
		}
	})

	t.Run("timeout option", func(t *testing.T) {
		e := e.sub(t)
		j, _ := e.schedule([]string{"sh", "-c", "echo before; sleep 30; echo not reached"}, map[string]any{"timeout": 1.5})
		var s job
		itest.PollEvery(t, pagePoll, 15*time.Second, "job to time out", func() (bool, string) {
			s = e.status(j.ID)
			return itest.Finished(s.State), s.String()
		})
		if s.State != "timed_out" {
			t.Errorf("job with timeout 1.5s: %v, want timed_out", s)
		}
		if got, _ := e.collect(j.ID, 1<<20, 10*time.Second); got != "before\n" {
			t.Errorf("timed-out job's output: %q", got)
		}
	})

	t.Run("unique name reuses the live job", func(t *testing.T) {
		e := e.sub(t)
		opts := map[string]any{"name": "only-one", "unique": true}
		first, _ := e.schedule([]string{"sleep", "3"}, opts)
		second, _ := e.schedule([]string{"sleep", "3"}, opts)
		if !second.Reused || second.ID != first.ID {
			t.Errorf("second unique schedule: %v, want reused %s", second, first.ID)
		}
		e.call(map[string]any{"op": "cancel", "id": first.ID, "grace": 1}, nil)
	})

	t.Run("errors", func(t *testing.T) {
		e := e.sub(t)
		unknown := "20000101-000000.000000-abcdef"
		for _, tc := range []struct {
			req    map[string]any
			code   string
			status int
		}{
			{map[string]any{"op": "status", "id": "../../etc/passwd"}, "usage", 2},
			{map[string]any{"op": "log", "id": "a b"}, "usage", 2},
			{map[string]any{"op": "cancel", "id": ""}, "usage", 2},
			{map[string]any{"op": "status", "id": unknown}, "not_found", 3},
			{map[string]any{"op": "log", "id": unknown}, "not_found", 3},
			{map[string]any{"op": "wait", "id": unknown, "timeout": 1}, "not_found", 3},
			{map[string]any{"op": "cancel", "id": unknown}, "not_found", 3},
			{map[string]any{"op": "schedule", "argv": []string{"true"}, "options": map[string]any{"name": "bad name"}}, "usage", 2},
		} {
			a := e.api(tc.req)
			if a.OK || a.Error == nil || a.Error.Code != tc.code || a.Error.ExitStatus != tc.status || a.Error.Message == "" {
				t.Errorf("%v: got %s, want code %s, exit status %d and a message", tc.req, a.Raw, tc.code, tc.status)
			}
		}
	})
}

func checkSucceeded(t *testing.T, final job, got, want string) {
	t.Helper()
	if final.State != "succeeded" || final.ExitCode == nil || *final.ExitCode != 0 {
		t.Errorf("final state: %v, want succeeded with exit_code 0", final)
	}
	if got != want {
		t.Errorf("output differs from what the job printed:\n got %d bytes: %q\nwant %d bytes: %q", len(got), itest.Clip(got), len(want), itest.Clip(want))
	}
}

func noSecret(t *testing.T, where string, data []byte, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(string(data), s) {
			t.Errorf("%s contains the secret %q", where, s)
		}
	}
}

// stateFilesClean checks that no file in the state dir holds a secret.
func stateFilesClean(t *testing.T, dir string, secrets []string) {
	t.Helper()
	n := 0
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return nil // a file removed while walking
		}
		if data, err := os.ReadFile(path); err == nil {
			n++
			noSecret(t, "state file "+path, data, secrets)
		}
		return nil
	})
	itest.Must(t, err)
	if n == 0 {
		t.Errorf("state dir %s holds no file", dir)
	}
}

// spoolFiles returns at's spool files of the job: named by its at job number, or, when
// backend_ref is not a number, mentioning its ID.
func spoolFiles(t *testing.T, j job) []string {
	t.Helper()
	entries, err := os.ReadDir(atSpool)
	itest.Must(t, err)
	var found []string
	for _, ent := range entries {
		name := ent.Name()
		path := filepath.Join(atSpool, name)
		if len(name) < 6 || strings.HasPrefix(name, ".") {
			continue
		}
		if n := atJobNumber(j); n >= 0 {
			if num, err := strconv.ParseInt(name[1:6], 16, 64); err == nil && int(num) == n {
				found = append(found, path)
			}
			continue
		}
		if data, err := os.ReadFile(path); err == nil && strings.Contains(string(data), j.ID) {
			found = append(found, path)
		}
	}
	return found
}
