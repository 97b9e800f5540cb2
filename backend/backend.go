// Package backend is the small interface every way of starting a job
// implements, the registry of backends (each folder registers itself),
// the script they all run (a few lines of sh that exec the wrapper,
// cmesh-run _wrap, with the job's argv and spec), and the quoting of argv
// for sh and for a terminal.
package backend

import (
	"fmt"
	"strings"

	"github.com/cmesh/cmesh-run/status"
)

// Backend starts wrapper scripts outside the caller's process tree.
type Backend interface {
	// Name is the backend's name as --backend and the record spell it.
	Name() string
	// Check tells whether the backend can take a job from the calling
	// user now; its error says what to fix.
	Check() error
	// Submit hands the job over and returns the backend's reference for
	// it (at's job number, a unit name, ...).
	Submit(j Job) (ref string, err error)
	// Remove takes a job that has not started out of the backend.
	Remove(ref string) error
	// Probe reports whether the backend still holds a job (queued; for a
	// job on another host, running too), and what it saw of its end.
	Probe() status.Probe
	// Quotas tells whether the backend can enforce memory and CPU quotas
	// (Spec.MemoryMax, Spec.CPUQuota); the others refuse them.
	Quotas() bool
}

// Stopper is a backend whose jobs may run where this machine cannot signal
// them (another node): cancel stops them through its scheduler.
type Stopper interface {
	// Stop sends SIGTERM to the whole job: its wrapper, which kills the
	// job's tree after the cancel's grace, and every process of it.
	Stop(ref string) error
	// Kill sends SIGKILL to what is left of it.
	Kill(ref string) error
}

// Diagnoser is a backend with checks of its own for doctor.
type Diagnoser interface {
	Diagnose(stateDir string) []Finding
}

// Finding is one of a backend's doctor checks; Status is ok, warn or fail.
type Finding struct {
	Name, Status, Message, Fix string
}

// Cluster is the config's [slurm] table: the cluster the slurm backend
// submits to. Only the root-owned config sets it, never a caller.
type Cluster struct {
	Conf      string   `toml:"conf"`      // the clients' slurm.conf ("" is Slurm's default)
	Partition string   `toml:"partition"` // sbatch --partition
	Account   string   `toml:"account"`   // sbatch --account
	Options   []string `toml:"options"`   // more sbatch options, e.g. "--cpus-per-task=2"
}

// Job is what a backend gets to start.
type Job struct {
	Record   *status.Record
	Argv     []string
	Spec     status.Spec
	Exe      string // cmesh-run's absolute path
	StateDir string
}

// Script is the sh script for j, as Script builds it.
func (j Job) Script() []byte {
	return Script(j.Exe, j.StateDir, j.Record.ID, j.Argv, j.Spec)
}

// Script returns the sh script that runs job id under the wrapper: exe is
// cmesh-run's absolute path, argv the job's exact argv.
func Script(exe, stateDir, id string, argv []string, spec status.Spec) []byte {
	delim := "CMESH_RUN_SPEC_" + spec.Nonce
	var b strings.Builder
	fmt.Fprintf(&b, "# cmesh-run job %s\n", id)
	b.WriteString("exec " + Quote(exe, "_wrap", "--state-dir", stateDir, "--id", id, "--") + " " + Quote(argv...))
	b.WriteString(" <<'" + delim + "'\n")
	b.Write(spec.Encode())
	b.WriteString(delim + "\n")
	return []byte(b.String())
}
