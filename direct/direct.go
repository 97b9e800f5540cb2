// Package direct is the backend for machines with neither atd nor
// systemd: the job's script is started detached (new session, double
// fork, no inherited descriptor, no terminal) straight from schedule.
//
// What still kills such a job: anything that kills the caller's whole
// cgroup, such as `systemctl restart php8.2-fpm` under systemd
// (KillMode=control-group), since the job stays in the caller's cgroup;
// and a reboot. Use at or systemd where they exist.
package direct

import (
	"strconv"
	"syscall"
	"time"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// Direct is the direct backend.
type Direct struct{}

// Name implements backend.Backend.
func (Direct) Name() string { return "direct" }

// Check implements backend.Backend: nothing to check, fork works.
func (Direct) Check() error { return nil }

// Quotas implements backend.Backend.
func (Direct) Quotas() bool { return false }

// Submit implements backend.Backend; the reference is the wrapper's PID.
func (Direct) Submit(j backend.Job) (string, error) {
	pid, err := proc.Detach(j.Script())
	if err != nil {
		return "", errs.Errorf(errs.Unavailable, "cannot start the job detached: %v", err).
			WithHint("check that %s is executable and /bin/sh exists", j.Exe)
	}
	return strconv.Itoa(pid), nil
}

// Remove implements backend.Backend. A queued direct job is a wrapper that
// has not taken the job's lock yet; once it does, it finds the job
// canceled and exits, so there is nothing to remove.
func (Direct) Remove(string) error { return nil }

// startGrace is how long a detached wrapper may take to record its start.
const startGrace = time.Minute

// Probe implements backend.Backend: a queued job is pending while its
// wrapper process lives.
func (Direct) Probe() status.Probe {
	return func(r *status.Record) (status.Seen, error) {
		if r.BackendRef == nil {
			return status.Held(time.Since(r.CreatedAt) < startGrace), nil
		}
		pid, err := strconv.Atoi(*r.BackendRef)
		if err != nil {
			return status.Held(false), nil
		}
		err = syscall.Kill(pid, 0)
		return status.Held(err == nil || err == syscall.EPERM || time.Since(r.CreatedAt) < time.Second), nil
	}
}

func init() {
	backend.Register(backend.Entry{
		Name: "direct", Rank: 100,
		New: func(backend.Env) backend.Backend { return Direct{} },
		Auto: func(backend.Backend, string) (bool, string) {
			return true, "so direct (it dies with the caller's cgroup)"
		},
	})
}
