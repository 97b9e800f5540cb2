// Package status is the job model: records, the markers a job's wrapper
// writes into its output file, reading that output, and deriving a job's
// state from the record, the markers and the liveness of its processes.
// It knows nothing of at, of other backends, or of the command line; the
// locks of a state dir are in lock.go, and the error kinds in errs/.
package status

import (
	"time"

	"github.com/cmesh/cmesh-run/proc"
)

// State is one of the states of SPEC.md.
type State string

const (
	Queued    State = "queued"
	Waiting   State = "waiting"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Canceled  State = "canceled"
	TimedOut  State = "timed_out"
	Lost      State = "lost"
)

// AllStates lists every state, in lifecycle order.
var AllStates = []State{Queued, Waiting, Running, Succeeded, Failed, Canceled, TimedOut, Lost}

// Finished reports whether nothing more will happen to a job in state s.
func (s State) Finished() bool {
	switch s {
	case Succeeded, Failed, Canceled, TimedOut, Lost:
		return true
	}
	return false
}

// Job is the public job object of SPEC.md. Fields may be added, never
// change meaning.
type Job struct {
	ID          string     `json:"id"`
	Name        *string    `json:"name"`
	State       State      `json:"state"`
	ExitCode    *int       `json:"exit_code"`
	Signal      string     `json:"signal,omitempty"`
	Command     []string   `json:"command"`
	Profile     string     `json:"profile,omitempty"`
	Workdir     string     `json:"workdir"`
	Backend     string     `json:"backend"`
	BackendRef  *string    `json:"backend_ref"`
	User        string     `json:"user"`
	RequestedBy string     `json:"requested_by,omitempty"`
	PID         *int       `json:"pid"`
	Host        *string    `json:"host"` // where the wrapper runs, or null before it starts
	Attempt     int        `json:"attempt"`
	Retries     int        `json:"retries"`
	Timeout     *string    `json:"timeout"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	OutputPath  string     `json:"output_path"`
	Reused      *bool      `json:"reused,omitempty"`
	// The job system's fields.
	Queue     string     `json:"queue"`
	After     []string   `json:"after"`               // jobs that must finish first, or null
	AfterAny  bool       `json:"after_any,omitempty"` // start whatever they ended as
	NotBefore *time.Time `json:"not_before"`          // not started before then, or null
	RerunOf   *string    `json:"rerun_of"`            // the job this one reruns, or null
	Reason    *string    `json:"reason"`              // why it waits, or why it ended without running
	// Hooks and progress.
	Hook     *HookRun  `json:"hook,omitempty"`     // the job's hook, once one started
	Progress *Progress `json:"progress,omitempty"` // what the job last said of how far it got
}

// HookRun is the outcome of a job's hook (on_finish or on_failure): set
// when it starts, so that it never starts twice; ExitCode and FinishedAt
// once it has ended (128+N when signal N ended it, its timeout's SIGKILL
// too).
type HookRun struct {
	Argv0      string     `json:"program"`
	StartedAt  time.Time  `json:"started_at"`
	ExitCode   *int       `json:"exit_code"`
	Signal     string     `json:"signal,omitempty"`
	TimedOut   bool       `json:"timed_out,omitempty"`
	FinishedAt *time.Time `json:"finished_at"`
}

// Record is what the store keeps for a job: the public object plus what
// only cmesh-run itself needs. The extra fields never leave the state dir.
type Record struct {
	Job
	Nonce string `json:"nonce"`
	// SpecMAC is the spec's MAC over the job's argv (Spec.MAC): the
	// wrapper runs the job only with the argv and spec it was made from.
	SpecMAC string `json:"spec_mac,omitempty"`
	// Processes: the wrapper that will write the end marker, and the
	// job's own process; each with its start time in clock ticks since
	// boot so that a recycled PID never looks alive.
	WrapperPID   int    `json:"wrapper_pid,omitempty"`
	WrapperStart uint64 `json:"wrapper_start,omitempty"`
	PIDStart     uint64 `json:"pid_start,omitempty"`
	BootID       string `json:"boot_id,omitempty"`
	// StartOffset is where the current attempt's start marker begins in
	// the output file: a reader that must look for a missing end marker
	// scans from there, never the whole file.
	StartOffset int64 `json:"start_offset,omitempty"`
	// Cancel is set by cancel for the wrapper to act on.
	Cancel *CancelRequest `json:"cancel,omitempty"`
	// WaitingFor says what a waiting job waits for: "after" (other
	// jobs), "slot" or "pause" (its queue); a job waiting for other jobs
	// holds no place in its queue's order.
	WaitingFor string `json:"waiting_for,omitempty"`
	// What rerun needs besides the public fields: the profile and its
	// arguments, --unique. The --env pairs are in the private folder
	// (RerunEnv): the group reads records, and values may be secrets.
	ProfileName string            `json:"profile_name,omitempty"`
	ProfileArgs map[string]string `json:"profile_args,omitempty"`
	Unique      bool              `json:"unique,omitempty"`
}

// Local tells whether r's processes run on this machine, so that its
// /proc may judge them: a record that names no host is from before hosts
// were recorded, and its backend ran it here.
func (r *Record) Local() bool {
	return r.Host == nil || *r.Host == "" || *r.Host == proc.Hostname()
}

// QueueName is the job's queue, the default one for a record from before
// queues.
func (j *Job) QueueName() string {
	if j.Queue == "" {
		return "default"
	}
	return j.Queue
}

// CancelRequest asks a running job's wrapper to stop it.
type CancelRequest struct {
	At    time.Time     `json:"at"`
	By    string        `json:"by"`
	Grace time.Duration `json:"grace"`
}

// Public returns the job object as callers see it.
func (r *Record) Public() Job { return r.Job }

// NameOrEmpty returns the job's name, or "".
func (j *Job) NameOrEmpty() string {
	if j.Name == nil {
		return ""
	}
	return *j.Name
}

// Ptr returns a pointer to a copy of v, for the nullable fields.
func Ptr[T any](v T) *T { return &v }
