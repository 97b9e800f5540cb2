package backend

import (
	"slices"
	"sync"

	"github.com/cmesh/cmesh-run/status"
)

// Env is what a backend is made for: the user the job runs as (the
// caller) and the state dir.
type Env struct {
	User     string
	UID      int
	StateDir string
	Slurm    Cluster // the config's [slurm]
}

// Entry is one backend in the registry: every backend's folder registers
// one from its init, and everything that names backends (config
// validation, --backend, auto, hints, doctor) asks the registry.
type Entry struct {
	Name string
	// Rank orders auto's choice: the lowest rank that can take the job
	// now wins. The last backend must always be able to.
	Rank int
	New  func(Env) Backend
	// Auto tells whether auto may pick be now, with the reason either
	// way, in words for doctor ("atd runs and lets www-data use it").
	Auto func(be Backend, user string) (ok bool, why string)
	// Remote: the backend's probe can tell of a job whose wrapper runs
	// on another host (a cluster's scheduler can). Another backend's
	// probe sees only this machine: for such a job it is not asked.
	Remote bool
}

var (
	mu       sync.Mutex
	registry []Entry
)

// Register adds a backend; a name registered twice is a programming error.
func Register(e Entry) {
	mu.Lock()
	defer mu.Unlock()
	for _, r := range registry {
		if r.Name == e.Name {
			panic("backend " + e.Name + " registered twice")
		}
	}
	registry = append(registry, e)
	slices.SortStableFunc(registry, func(a, b Entry) int { return a.Rank - b.Rank })
}

// All returns the registered backends in auto's order.
func All() []Entry {
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(registry)
}

// Lookup finds the backend called name.
func Lookup(name string) (Entry, bool) {
	for _, e := range All() {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// Names lists the names --backend takes: the registered backends in
// auto's order, then auto.
func Names() []string {
	var out []string
	for _, e := range All() {
		out = append(out, e.Name)
	}
	return append(out, "auto")
}

// Known tells whether --backend takes name.
func Known(name string) bool { return slices.Contains(Names(), name) }

// Probe is the readers' check of jobs, through the backend that took
// each (made for env, looked up on the first job of each backend that
// needs it): what status.Derive asks. A backend it does not know is
// taken at its word: it holds the job.
func Probe(env func() Env) status.Probe {
	probes := map[string]status.Probe{}
	return func(r *status.Record) (status.Seen, error) {
		p, ok := probes[r.Backend]
		if !ok {
			if e, found := Lookup(r.Backend); found {
				p = e.New(env()).Probe()
				if !e.Remote {
					p = localOnly(p)
				}
			}
			probes[r.Backend] = p
		}
		if p == nil {
			return status.Held(true), nil
		}
		return p(r)
	}
}

// localOnly is the probe of a backend that sees only this machine: a job
// whose wrapper runs on another host (a state dir other hosts share) is
// taken as held, since nothing here can tell.
func localOnly(p status.Probe) status.Probe {
	return func(r *status.Record) (status.Seen, error) {
		if !r.Local() {
			return status.Held(true), nil
		}
		return p(r)
	}
}
