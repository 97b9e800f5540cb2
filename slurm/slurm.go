// Package slurm is the only code that talks to Slurm's clients (sbatch,
// squeue, scontrol, scancel, sacct): it hands a job's script to sbatch,
// so that the cluster runs it once on some node, and asks the cluster
// what became of a job whose wrapper runs where this machine cannot see
// it. The state dir must be on a file system that the submit hosts and
// every node share, at the same path; cmesh-run at the same path too.
package slurm

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// Slurm is the slurm backend. Paths are absolute: PHP-FPM hands its
// children no PATH.
type Slurm struct {
	Sbatch, Squeue, Scontrol, Scancel, Sacct string
	Cfg                                      backend.Cluster
	User                                     string
	UID                                      int
}

// New returns the slurm backend for the calling user and the config's
// [slurm] table.
func New(e backend.Env) *Slurm {
	return &Slurm{
		Sbatch: "/usr/bin/sbatch", Squeue: "/usr/bin/squeue", Scontrol: "/usr/bin/scontrol",
		Scancel: "/usr/bin/scancel", Sacct: "/usr/bin/sacct",
		Cfg: e.Slurm, User: e.User, UID: e.UID,
	}
}

// Name implements backend.Backend.
func (s *Slurm) Name() string { return "slurm" }

// Quotas implements backend.Backend: --memory-max maps onto --mem where
// the cluster enforces it; Submit refuses what it cannot map.
func (s *Slurm) Quotas() bool { return true }

// DefaultConf is where Slurm's clients look when the config names none.
const DefaultConf = "/etc/slurm/slurm.conf"

// ConfPath is the slurm.conf the clients read.
func (s *Slurm) ConfPath() string {
	if s.Cfg.Conf != "" {
		return s.Cfg.Conf
	}
	return DefaultConf
}

// env is all the clients see of ours: the job's own environment travels
// in its spec, so nothing of the caller's reaches Slurm, and sbatch's
// default --export=ALL exports only this (no login shell per job, as
// --export=NONE would cost).
func (s *Slurm) env() []string {
	env := []string{"PATH=" + proc.CleanPath, "TZ=UTC"}
	if s.Cfg.Conf != "" {
		env = append(env, "SLURM_CONF="+s.Cfg.Conf)
	}
	return env
}

func (s *Slurm) command(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Env = s.env()
	cmd.Dir = "/"
	return cmd
}

func unavailable(format string, args ...any) *errs.Error {
	return errs.Errorf(errs.Unavailable, format, args...)
}

// Check implements backend.Backend: the clients are installed and the
// cluster's config is there. Whether the controller answers, sbatch
// itself says (doctor asks scontrol ping).
func (s *Slurm) Check() error {
	if st, err := os.Stat(s.Sbatch); err != nil || st.Mode()&0o111 == 0 {
		return unavailable("Slurm's clients are not installed (%s missing)", s.Sbatch).
			WithHint("install them: apt-get install slurm-client munge, with the cluster's slurm.conf and munge key")
	}
	if _, err := os.Stat(s.ConfPath()); err != nil {
		return unavailable("no Slurm config: %v", err).
			WithHint("copy the cluster's slurm.conf to %s, or set [slurm] conf in cmesh-run's config", DefaultConf)
	}
	return nil
}

// Ref is a job's backend_ref: Slurm's job ID and the cluster's name
// ("12@main"). Slurm starts IDs at 1 again with a fresh controller state,
// so an ID alone may name another job later: every Slurm job carries the
// comment "cmesh-run:ID", and the probe takes a Slurm job for this job
// only when that comment (or, once the controller forgot it, the name and
// submit time in its completion record) matches.
type Ref struct {
	JobID   string
	Cluster string
}

func (r Ref) String() string { return r.JobID + "@" + r.Cluster }

// ParseRef parses a backend_ref; a bare job ID is a ref too.
func ParseRef(s string) (Ref, bool) {
	id, cluster, _ := strings.Cut(s, "@")
	if id == "" || strings.Trim(id, "0123456789") != "" || len(id) > 12 {
		return Ref{}, false
	}
	return Ref{JobID: id, Cluster: cluster}, true
}

// Comment is what the Slurm job of cmesh-run job id carries in --comment.
func Comment(id string) string { return "cmesh-run:" + id }

// ClusterName reads ClusterName from the clients' slurm.conf; "" when
// it cannot.
func (s *Slurm) ClusterName() string {
	data, err := os.ReadFile(s.ConfPath())
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "ClusterName") {
			return strings.Fields(v + " x")[0]
		}
	}
	return ""
}

// Margin is added to the time the wrapper needs for its own timeout
// before Slurm's --time strikes: Slurm's limit is the backstop for a
// wrapper that hangs, never the job's timeout.
const Margin = 30 * time.Second

// Args returns sbatch's arguments for job j: the script comes on stdin.
// The config's extra options come last but cannot undo these (Parse
// refuses the ones that would).
func (s *Slurm) Args(j backend.Job, memory string) []string {
	name := j.Record.NameOrEmpty()
	if name == "" {
		name = "cmesh-run"
	}
	args := []string{
		"--parsable",
		"--job-name=" + name,
		"--comment=" + Comment(j.Record.ID),
		"--output=" + j.Record.OutputPath,
		"--open-mode=append",
		"--no-requeue",
		"--chdir=/",
		"--ntasks=1",
	}
	if s.Cfg.Partition != "" {
		args = append(args, "--partition="+s.Cfg.Partition)
	}
	if s.Cfg.Account != "" {
		args = append(args, "--account="+s.Cfg.Account)
	}
	if m := TimeLimit(j.Spec, time.Now()); m > 0 {
		args = append(args, "--time="+strconv.Itoa(m))
	}
	if memory != "" {
		args = append(args, "--mem="+memory)
	}
	if begin := j.Spec.NotBefore.Add(-BeginAhead); !j.Spec.NotBefore.IsZero() && begin.After(time.Now()) {
		// Held by the controller, not on a node, until shortly before its
		// time: Slurm's scheduler starts a job some seconds after its
		// --begin (its next pass), the wrapper's own wait is exact.
		args = append(args, "--begin="+begin.UTC().Format("2006-01-02T15:04:05"))
	}
	return append(args, s.Cfg.Options...)
}

// BeginAhead is how long before its not_before time a delayed job is let
// go to a node: more than a pass of Slurm's scheduler (sched_interval,
// 60 s by default). A shorter delay waits on its node.
const BeginAhead = 90 * time.Second

// TimeLimit is Slurm's --time for spec, submitted at now, in whole
// minutes: the longest the wrapper can take when every attempt runs into
// its timeout, plus Margin, plus what a delayed job waits on its node
// (up to BeginAhead, and a scheduler pass), rounded up; 0 (the
// partition's limit) without a timeout, or when the job may wait on its
// node (for a slot, other jobs) for as long as it takes.
func TimeLimit(spec status.Spec, now time.Time) int {
	if spec.Timeout <= 0 || spec.Slots > 0 || len(spec.After) > 0 {
		return 0
	}
	var early time.Duration
	if !spec.NotBefore.IsZero() {
		early = min(max(spec.NotBefore.Sub(now), 0), BeginAhead) + time.Minute
	}
	g := spec.Grace
	if g <= 0 {
		g = status.DefaultGrace
	}
	n := time.Duration(spec.Retries + 1)
	d := n*(spec.Timeout+g) + time.Duration(spec.Retries)*spec.RetryDelay + Margin + early
	return int(math.Ceil(d.Minutes()))
}

// memory maps --memory-max onto sbatch's --mem, and refuses what the
// cluster would not enforce: Slurm enforces --mem only with task/cgroup
// or JobAcctGatherParams=OverMemoryKill. --cpu-quota has no Slurm
// counterpart (Slurm limits whole CPUs, and only with task/cgroup).
func (s *Slurm) memory(spec status.Spec) (string, error) {
	if spec.CPUQuota != "" {
		return "", errs.Errorf(errs.Usage, "the slurm backend cannot enforce --cpu-quota: Slurm gives a job whole CPUs, not a share of one").
			WithHint("drop --cpu-quota, or ask for CPUs with a [slurm] options entry such as \"--cpus-per-task=2\"")
	}
	if spec.MemoryMax == "" {
		return "", nil
	}
	mem, ok := MemoryArg(spec.MemoryMax)
	if !ok {
		return "", errs.Errorf(errs.Usage, "--memory-max %q: the slurm backend wants bytes with an optional K, M, G or T suffix", spec.MemoryMax).
			WithHint("e.g. --memory-max 512M")
	}
	cfg, err := s.Config()
	if err != nil {
		return "", unavailable("cannot read the cluster's config (scontrol show config): %v", err).
			WithHint("check that the controller answers: scontrol ping")
	}
	if !EnforcesMemory(cfg) {
		return "", errs.Errorf(errs.Usage, "this Slurm cluster does not enforce --mem (TaskPlugin=%s, JobAcctGatherParams=%s), so --memory-max would be ignored",
			cfg["TaskPlugin"], cfg["JobAcctGatherParams"]).
			WithHint("drop --memory-max, or have the cluster enforce memory: TaskPlugin=task/cgroup with ConstrainRAMSpace=yes, or JobAcctGatherParams=OverMemoryKill")
	}
	return mem, nil
}

var memoryPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([0-9]+)([KMGT]?)$`) })

// MemoryArg renders a --memory-max value as --mem's argument, in whole
// KiB (sbatch reads a bare number as MiB).
func MemoryArg(v string) (string, bool) {
	m := memoryPattern().FindStringSubmatch(strings.ToUpper(v))
	if m == nil {
		return "", false
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || n == 0 {
		return "", false
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	if n > math.MaxUint64>>shift {
		return "", false
	}
	bytes := n << shift
	return strconv.FormatUint((bytes+1023)/1024, 10) + "K", true
}

// EnforcesMemory tells from `scontrol show config` (which prints
// cgroup.conf's settings too) whether --mem is a limit on this cluster:
// task/cgroup limits memory only with ConstrainRAMSpace=yes.
func EnforcesMemory(cfg map[string]string) bool {
	return strings.Contains(cfg["TaskPlugin"], "task/cgroup") && strings.EqualFold(cfg["ConstrainRAMSpace"], "yes") ||
		strings.Contains(cfg["JobAcctGatherParams"], "OverMemoryKill")
}

// Config reads `scontrol show config` as keys and values.
func (s *Slurm) Config() (map[string]string, error) {
	out, err := s.command(s.Scontrol, "show", "config").Output()
	if err != nil {
		return nil, err
	}
	cfg := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if ok {
			cfg[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return cfg, nil
}

// Submit implements backend.Backend: the script goes to sbatch on stdin
// with a clean environment; the job's output file, which schedule made,
// is its --output, opened for appending.
func (s *Slurm) Submit(j backend.Job) (string, error) {
	mem, err := s.memory(j.Spec)
	if err != nil {
		return "", err
	}
	script := append([]byte("#!/bin/sh\n"), j.Script()...)
	out, err := proc.RunInput(s.Sbatch, append([]string{s.Sbatch}, s.Args(j, mem)...), s.env(), script)
	id, ok := ParseJobID(out)
	if err != nil || !ok {
		if ok {
			_ = s.Remove(id)
		}
		msg := strings.TrimSpace(lastLine(out))
		if msg == "" && err != nil {
			msg = err.Error()
		}
		return "", unavailable("sbatch failed: %s", msg).
			WithHint("check the cluster: scontrol ping, sinfo; and run cmesh-run doctor")
	}
	cluster := s.ClusterName()
	if cluster == "" {
		cluster = "slurm"
	}
	return Ref{JobID: id, Cluster: cluster}.String(), nil
}

// ParseJobID finds the job ID in what `sbatch --parsable` printed
// ("12" or "12;cluster", after any warnings).
func ParseJobID(out []byte) (string, bool) {
	for _, l := range slices.Backward(strings.Split(strings.TrimSpace(string(out)), "\n")) {
		id, _, _ := strings.Cut(strings.TrimSpace(l), ";")
		if r, ok := ParseRef(id); ok {
			return r.JobID, true
		}
	}
	return "", false
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// Remove implements backend.Backend with scancel.
func (s *Slurm) Remove(ref string) error {
	r, ok := ParseRef(ref)
	if !ok {
		return fmt.Errorf("not a Slurm job: %q", ref)
	}
	return s.scancel(r.JobID)
}

// Stop asks Slurm to send SIGTERM to the whole job: the wrapper (which
// reads the cancel's grace from the record and kills the job's tree after
// it) and every process of the job, on whichever node it runs.
func (s *Slurm) Stop(ref string) error {
	r, ok := ParseRef(ref)
	if !ok {
		return fmt.Errorf("not a Slurm job: %q", ref)
	}
	return s.scancel("--full", "--signal=TERM", r.JobID)
}

// Kill ends the job through Slurm: SIGKILL to all of it, for a wrapper
// that did not end within the cancel's grace.
func (s *Slurm) Kill(ref string) error {
	r, ok := ParseRef(ref)
	if !ok {
		return fmt.Errorf("not a Slurm job: %q", ref)
	}
	return s.scancel("--full", "--signal=KILL", r.JobID)
}

func (s *Slurm) scancel(args ...string) error {
	out, err := s.command(s.Scancel, append([]string{"--quiet"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scancel %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// submitGrace is how long a record may lack its Slurm job ID before a
// reader concludes that its scheduler died before sbatch took the job.
const submitGrace = time.Minute

// Probe implements backend.Backend. squeue runs at most once per Probe
// (one call for a list of many jobs); scontrol or sacct only for a job
// that Slurm says has ended, to learn how.
func (s *Slurm) Probe() status.Probe {
	queue := sync.OnceValues(s.Queue)
	// A reader asks twice of a job that ended (is it held? how did it
	// end?): scontrol and sacct run once per job.
	ended := map[string]status.Seen{}
	return func(r *status.Record) (status.Seen, error) {
		if seen, ok := ended[r.ID]; ok {
			return seen, nil
		}
		seen, err := s.probe(r, queue)
		if err == nil && !seen.Held {
			ended[r.ID] = seen
		}
		return seen, err
	}
}

// probe is one answer of Probe's, with queue the controller's list.
func (s *Slurm) probe(r *status.Record, queue func() (map[string]Job, error)) (status.Seen, error) {
	if r.BackendRef == nil {
		return status.Held(time.Since(r.CreatedAt) < submitGrace), nil
	}
	ref, ok := ParseRef(*r.BackendRef)
	if !ok {
		return status.Held(false), nil
	}
	q, err := queue()
	if err != nil {
		return status.Held(true), err
	}
	if e, ok := q[ref.JobID]; ok && e.Comment == Comment(r.ID) {
		if !Ended(e.State) {
			return status.Seen{Held: true, Why: pendingWhy(e)}, nil
		}
		if info, err := s.Show(ref.JobID); err == nil && info.Comment == Comment(r.ID) {
			return SeenEnd(r, info), nil
		}
		return SeenEnd(r, e), nil
	}
	if info, ok := s.Completion(ref.JobID, r); ok {
		return SeenEnd(r, info), nil
	}
	if s.UID != 0 && r.User != s.User {
		// With PrivateData=jobs Slurm hides other users' jobs: not
		// seeing one says nothing.
		return status.Held(true), nil
	}
	return status.Held(false), nil
}

// pendingWhy is Slurm's reason for a job it holds back for something that
// may never come (a time limit over the partition's, a missing account),
// for the job's reason; "" for the usual waits.
func pendingWhy(j Job) string {
	switch j.Reason {
	case "", "None", "Priority", "Resources", "BeginTime", "Dependency", "JobHeldUser", "Prolog", "ReqNodeNotAvail":
		return ""
	}
	if strings.HasPrefix(j.State, "PENDING") {
		return "slurm: PENDING (" + j.Reason + ")"
	}
	return ""
}

// Job is what Slurm says of one job.
type Job struct {
	ID, State, Reason, Nodes, Comment, Name string
	// ExitCode is Slurm's "code:signal"; "" when not known.
	ExitCode string
	Submit   time.Time
}

// Ended tells whether a Slurm job state is final: nothing more runs. Only
// the states Slurm documents as final count; anything else (a state or
// flag this code does not know) is taken as still held, never as gone.
func Ended(state string) bool {
	switch strings.TrimSuffix(strings.Fields(state + " x")[0], "+") {
	case "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "REVOKED":
		return true
	}
	return false
}

// Queue lists the jobs the controller knows (every user's, finished ones
// until MinJobAge), by job ID.
func (s *Slurm) Queue() (map[string]Job, error) {
	// --all: jobs of hidden partitions, and of partitions closed to the
	// caller's group, are jobs too.
	out, err := s.command(s.Squeue, "--all", "--noheader", "--states=all", "--format=%i|%T|%r|%N|%k").Output()
	if err != nil {
		return nil, fmt.Errorf("squeue: %v", err)
	}
	return ParseQueue(out), nil
}

// ParseQueue parses squeue's "%i|%T|%r|%N|%k" lines.
func ParseQueue(out []byte) map[string]Job {
	q := map[string]Job{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.SplitN(strings.TrimSpace(l), "|", 5)
		if len(f) == 5 {
			q[f[0]] = Job{ID: f[0], State: f[1], Reason: f[2], Nodes: f[3], Comment: f[4]}
		}
	}
	return q
}

// Show asks scontrol for one job, exit code included.
func (s *Slurm) Show(id string) (Job, error) {
	out, err := s.command(s.Scontrol, "--oneliner", "show", "job", id).Output()
	if err != nil {
		return Job{}, fmt.Errorf("scontrol show job %s: %v", id, err)
	}
	return ParseShow(out), nil
}

// ParseShow parses one line of `scontrol -o show job`: KEY=VALUE words.
// The values cmesh-run reads hold no spaces (its comment has none).
func ParseShow(out []byte) Job {
	kv := map[string]string{}
	for _, w := range strings.Fields(string(out)) {
		if k, v, ok := strings.Cut(w, "="); ok {
			if _, seen := kv[k]; !seen {
				kv[k] = v
			}
		}
	}
	j := Job{ID: kv["JobId"], State: kv["JobState"], Reason: kv["Reason"], Nodes: kv["NodeList"],
		Comment: kv["Comment"], Name: kv["JobName"], ExitCode: kv["ExitCode"]}
	j.Submit, _ = time.ParseInLocation("2006-01-02T15:04:05", kv["SubmitTime"], time.UTC) // the clients run with TZ=UTC
	return j
}

// Completion reads what the cluster's completion log (JobCompType=
// jobcomp/filetxt, through sacct --completion) kept of a job the
// controller has forgotten. It is this job's only when the name and the
// submit time fit the record: the comment is not kept there.
func (s *Slurm) Completion(id string, r *status.Record) (Job, bool) {
	if _, err := os.Stat(s.Sacct); err != nil {
		return Job{}, false
	}
	out, err := s.command(s.Sacct, "--completion", "--parsable2", "--noheader", "--jobs="+id,
		"--format=jobid,state,exitcode,nodelist,jobname,submit").Output()
	if err != nil {
		return Job{}, false
	}
	name := r.NameOrEmpty()
	if name == "" {
		name = "cmesh-run"
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(l), "|")
		if len(f) != 6 || f[0] != id || f[4] != name {
			continue
		}
		j := Job{ID: f[0], State: f[1], ExitCode: f[2], Nodes: f[3], Name: f[4]}
		if t, err := time.ParseInLocation("2006-01-02T15:04:05", f[5], time.UTC); err == nil {
			// Slurm keeps whole seconds; the record was made just before
			// sbatch ran, never long before.
			if t.Before(r.CreatedAt.Truncate(time.Second)) || t.After(r.CreatedAt.Add(submitGrace)) {
				continue
			}
			j.Submit = t
		}
		return j, true
	}
	return Job{}, false
}

// SeenEnd turns how Slurm saw job r end into the end that stands in for
// the end marker its wrapper could not write (a node that died, a wrapper
// killed for memory or by Slurm's time limit, a launch that failed).
func SeenEnd(r *status.Record, j Job) status.Seen {
	state := strings.TrimSuffix(strings.Fields(j.State + " x")[0], "+")
	why := "slurm: " + state
	if j.ExitCode != "" {
		why += " " + j.ExitCode
	}
	// Slurm gives a batch script killed by a signal the reason
	// JobLaunchFailure even when it ran for hours: said only for a job
	// that never started.
	started := r.State != status.Queued && r.State != status.Waiting
	if j.Reason != "" && j.Reason != "None" && !(started && j.Reason == "JobLaunchFailure") {
		why += " (" + j.Reason + ")"
	}
	if j.Nodes != "" && j.Nodes != "(null)" {
		why += " on " + j.Nodes
	}
	end := &status.Marker{Kind: "end", Attempt: r.Attempt, Time: time.Now().UTC()}
	code, sig := exitCode(j.ExitCode)
	switch {
	case state == "CANCELLED" || r.Cancel != nil:
		end.Reason = "canceled"
	case r.State == status.Queued || r.State == status.Waiting:
		// Its wrapper never ran: nothing of the job did.
		if state == "FAILED" || state == "BOOT_FAIL" {
			why += ": the node could not start it; is the state dir shared with that node, at the same path, and cmesh-run installed there?"
		}
		return status.Seen{Why: why}
	case state == "TIMEOUT" || state == "DEADLINE":
		end.Reason = "timeout"
	case state == "NODE_FAIL" || state == "BOOT_FAIL" || state == "PREEMPTED":
		return status.Seen{Why: why}
	case state == "OUT_OF_MEMORY" || sig > 0:
		if sig <= 0 {
			sig = 9
		}
		end.Exit = status.Ptr(128 + sig)
		end.Signal = signalName(sig)
	case code > 0:
		end.Exit = status.Ptr(code)
	default:
		// Slurm saw the script end well, but without the wrapper's end
		// marker nothing says how the job itself ended.
		return status.Seen{Why: why + ": the wrapper ended without writing the job's end"}
	}
	return status.Seen{End: end, Why: why}
}

// exitCode parses Slurm's "code:signal".
func exitCode(s string) (code, sig int) {
	c, g, _ := strings.Cut(s, ":")
	code, _ = strconv.Atoi(c)
	sig, _ = strconv.Atoi(g)
	return code, sig
}

func signalName(sig int) string {
	names := map[int]string{1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 6: "ABRT", 7: "BUS", 8: "FPE", 9: "KILL",
		10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM", 24: "XCPU", 25: "XFSZ"}
	if n, ok := names[sig]; ok {
		return n
	}
	return strconv.Itoa(sig)
}

func init() {
	backend.Register(backend.Entry{
		Name: "slurm", Rank: 50, Remote: true,
		New: func(e backend.Env) backend.Backend { return New(e) },
		// auto never sends a job off this machine: a cluster is chosen by
		// name, in the config or with --backend.
	})
}

// Diagnose implements backend.Diagnoser: what doctor checks of the
// cluster from this machine.
func (s *Slurm) Diagnose(stateDir string) []backend.Finding {
	var out []backend.Finding
	add := func(name, st, msg, fix string) {
		out = append(out, backend.Finding{Name: name, Status: st, Message: msg, Fix: fix})
	}
	ping, err := s.command(s.Scontrol, "ping").CombinedOutput()
	if err != nil || !bytes.Contains(ping, []byte("is UP")) {
		add("slurm controller", "fail", "scontrol ping: "+strings.TrimSpace(lastLine(ping)),
			"start slurmctld on the controller host, and check SlurmctldHost in "+s.ConfPath())
		return out
	}
	add("slurm controller", "ok", strings.TrimSpace(lastLine(ping)), "")
	cfg, err := s.Config()
	if err == nil {
		{
			sock := authSocket(cfg["AuthInfo"])
			args := []string{}
			if sock != "" {
				args = append(args, "--socket="+sock)
			}
			cred, err := exec.Command("/usr/bin/munge", append(args, "--no-input")...).Output()
			var back []byte
			if err == nil {
				cmd := exec.Command("/usr/bin/unmunge", args...)
				cmd.Stdin = bytes.NewReader(cred)
				back, err = cmd.CombinedOutput()
			}
			if err != nil || !bytes.Contains(back, []byte("STATUS:")) || !bytes.Contains(back, []byte("Success")) {
				add("munge", "fail", fmt.Sprintf("munge cannot make and check a credential: %v %s", err, strings.TrimSpace(string(back))),
					"start munged with the cluster's key (/etc/munge/munge.key, the same on every host)")
			} else {
				add("munge", "ok", "makes and checks credentials", "")
			}
		}
	}
	part := s.Cfg.Partition
	args := []string{"--noheader", "--format=%P|%a|%D|%T"}
	if part != "" {
		args = append(args, "--partition="+part)
	}
	info, err := s.command("/usr/bin/sinfo", args...).Output()
	switch {
	case err != nil:
		add("slurm partition", "fail", fmt.Sprintf("sinfo: %v", err), "check the cluster: sinfo")
	case len(bytes.TrimSpace(info)) == 0:
		add("slurm partition", "fail", fmt.Sprintf("no partition %q", part), "set [slurm] partition to one that sinfo lists")
	default:
		add("slurm partition", "ok", strings.ReplaceAll(strings.TrimSpace(string(info)), "\n", "; "), "")
	}
	if fs, shared := SharedFS(stateDir); shared {
		add("state dir shared", "ok", stateDir+" is on "+fs+", which the nodes can mount", "")
	} else {
		add("state dir shared", "warn", stateDir+" is on a local file system ("+fs+"): a node other than this machine cannot see it",
			"put the state dir on a file system every submit host and node mounts at the same path (NFS), and set state_dir in the config")
	}
	return out
}

// authSocket finds munge's socket in AuthInfo ("socket=/run/munge/munge.socket.2").
func authSocket(info string) string {
	for _, p := range strings.Split(info, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "socket="); ok {
			return v
		}
	}
	return ""
}
