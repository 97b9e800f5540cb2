package status

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/proc"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir()+"/state", true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// addJob writes a record and an output file made of parts.
func addJob(t *testing.T, s *Store, r *Record, parts ...any) {
	t.Helper()
	lock, err := s.CreateOutput(r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	Unlock(lock)
	f, err := s.OpenAppend(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			f.WriteString(p)
		case Marker:
			f.Write(p.Format(r.Nonce))
		}
	}
	f.Close()
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
}

func rec(id string, st State) *Record {
	return &Record{Job: Job{ID: id, State: st, Attempt: 1, CreatedAt: time.Now().UTC()}, Nonce: nonce}
}

// deadPID returns the PID of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestDeriveRunning(t *testing.T) {
	s := newStore(t)
	self := os.Getpid()
	selfStart, ok := proc.ProcStart(self)
	if !ok {
		t.Fatal("cannot read own start time")
	}
	dead := deadPID(t)

	alive := rec("alive", Running)
	alive.PID, alive.PIDStart, alive.BootID = Ptr(self), selfStart, proc.BootID()
	addJob(t, s, alive, start, "working\n")

	recycled := rec("recycled", Running)
	recycled.PID, recycled.PIDStart = Ptr(self), selfStart+1 // same PID, other process
	addJob(t, s, recycled, start, "x")

	rebooted := rec("rebooted", Running)
	rebooted.PID, rebooted.PIDStart, rebooted.BootID = Ptr(self), selfStart, "another-boot"
	addJob(t, s, rebooted, start)

	gone := rec("gone", Running)
	gone.PID, gone.WrapperPID = Ptr(dead), dead
	addJob(t, s, gone, start, "partial output")

	// The wrapper wrote its end marker and died before the record write;
	// the job had printed a fake end marker saying 0 first.
	ended := rec("ended", Running)
	ended.PID = Ptr(dead)
	addJob(t, s, ended, start, "\n[cmesh-run:"+"ffffffffffffffffffffffffffffffff end attempt=1 exit=0 time=2026-01-01T00:00:00Z]\n", end7)

	for _, c := range []struct {
		id   string
		want State
		exit *int
	}{
		{"alive", Running, nil},
		{"recycled", Lost, nil},
		{"rebooted", Lost, nil},
		{"gone", Lost, nil},
		{"ended", Failed, exit(7)},
	} {
		r, err := s.Load(c.id)
		if err != nil {
			t.Fatal(err)
		}
		j := s.Derive(r, nil)
		if j.State != c.want || (c.exit != nil && (j.ExitCode == nil || *j.ExitCode != *c.exit)) {
			t.Errorf("%s: state %s exit %v, want %s %v", c.id, j.State, j.ExitCode, c.want, c.exit)
		}
	}
}

func TestDeriveQueued(t *testing.T) {
	s := newStore(t)
	addJob(t, s, rec("q", Queued))
	r, _ := s.Load("q")
	if j := s.Derive(r, func(*Record) (Seen, error) { return Held(true), nil }); j.State != Queued {
		t.Errorf("pending job: %s, want queued", j.State)
	}
	if j := s.Derive(r, func(*Record) (Seen, error) { return Held(false), nil }); j.State != Lost {
		t.Errorf("job gone from the queue without starting: %s, want lost", j.State)
	}
	// A scheduler that saw it canceled before it started says so.
	canceled := func(*Record) (Seen, error) {
		return Seen{End: &Marker{Kind: "end", Attempt: 1, Reason: "canceled"}, Why: "slurm: CANCELLED"}, nil
	}
	if j := s.Derive(r, canceled); j.State != Canceled || j.Reason == nil || *j.Reason != "slurm: CANCELLED" {
		t.Errorf("job its scheduler canceled: %s %v, want canceled with the scheduler's reason", j.State, j.Reason)
	}
}

// A job whose wrapper runs on another host is judged by its backend, never
// by this machine's /proc: the PID it recorded is another process here.
func TestDeriveRemote(t *testing.T) {
	s := newStore(t)
	r0 := rec("r", Running)
	// This very process: alive here, under the PID the node recorded.
	r0.WrapperPID = os.Getpid()
	r0.WrapperStart, _ = proc.ProcStart(r0.WrapperPID)
	r0.BootID = proc.BootID()
	r0.Host = Ptr("node-elsewhere")
	addJob(t, s, r0)
	r, _ := s.Load("r")
	held := func(ok bool) Probe { return func(*Record) (Seen, error) { return Held(ok), nil } }
	if j := s.Derive(r, held(true)); j.State != Running {
		t.Errorf("remote job its scheduler still runs: %s, want running", j.State)
	}
	if j := s.Derive(r, held(false)); j.State != Lost {
		t.Errorf("remote job its scheduler no longer knows, no end marker: %s, want lost (a live local PID means nothing)", j.State)
	}
	oom := func(*Record) (Seen, error) {
		return Seen{End: &Marker{Kind: "end", Attempt: 1, Exit: exit(137), Signal: "KILL"}, Why: "slurm: OUT_OF_MEMORY"}, nil
	}
	if j := s.Derive(r, oom); j.State != Failed || j.Signal != "KILL" || j.Reason == nil || *j.Reason != "slurm: OUT_OF_MEMORY" {
		t.Errorf("remote job its scheduler saw killed: %s %s %v, want failed by KILL with the reason", j.State, j.Signal, j.Reason)
	}
	// The same record on its own host: /proc decides.
	r.Host = Ptr(proc.Hostname())
	if j := s.Derive(r, held(false)); j.State != Running {
		t.Errorf("local job with a live wrapper: %s, want running", j.State)
	}
}

func TestApplyEnd(t *testing.T) {
	for _, c := range []struct {
		m    Marker
		want State
	}{
		{Marker{Exit: exit(0)}, Succeeded},
		{Marker{Exit: exit(3)}, Failed},
		{Marker{Exit: exit(137), Signal: "KILL"}, Failed},
		{Marker{Exit: exit(143), Signal: "TERM", Reason: "canceled"}, Canceled},
		{Marker{Exit: exit(143), Signal: "TERM", Reason: "timeout"}, TimedOut},
	} {
		var j Job
		ApplyEnd(&j, c.m)
		if j.State != c.want || j.FinishedAt == nil {
			t.Errorf("ApplyEnd(%+v) = %s, want %s", c.m, j.State, c.want)
		}
	}
}

func TestStoreRejectsPlantedSymlinks(t *testing.T) {
	s := newStore(t)
	addJob(t, s, rec("victim", Queued))
	target := t.TempDir() + "/secret"
	os.WriteFile(target, []byte("secret"), 0o600)
	os.Remove(s.OutputPath("victim"))
	if err := os.Symlink(target, s.OutputPath("victim")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenAppend("victim"); err == nil {
		t.Error("OpenAppend followed a symlink")
	}
	if _, err := OpenOutput(s.OutputPath("victim"), nonce); err == nil {
		t.Error("OpenOutput followed a symlink")
	}
	os.Remove(s.RecordPath("victim"))
	os.Symlink(target, s.RecordPath("victim"))
	if _, err := s.Load("victim"); err == nil {
		t.Error("Load followed a symlink")
	}
}

func TestSaveIsAtomicAndPrivate(t *testing.T) {
	s := newStore(t)
	r := rec("a1", Queued)
	addJob(t, s, r)
	st, err := os.Stat(s.RecordPath("a1"))
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("record mode %v, %v; want 0640", st.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(s.Dir + "/jobs")
	for _, e := range entries {
		if e.Name()[0] == '.' {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
	ids, _ := s.IDs()
	if len(ids) != 1 || ids[0] != "a1" {
		t.Errorf("IDs = %v", ids)
	}
}

func TestOpenRefusesPlantedFolderLink(t *testing.T) {
	s := newStore(t)
	elsewhere := t.TempDir()
	os.RemoveAll(s.Dir + "/jobs")
	if err := os.Symlink(elsewhere, s.Dir+"/jobs"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(s.Dir, true); err == nil {
		t.Error("Open accepted a jobs folder that is a symlink")
	}
}
