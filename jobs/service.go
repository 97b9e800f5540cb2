// Package jobs is what cmesh-run's commands do, below the command line:
// submit a checked request (policy.Check), read, list, cancel and prune
// jobs, take spool requests and start spool jobs, pick a backend. Each is
// a function with typed inputs and outputs; run/ only parses flags, prints
// and maps errors to exit statuses.
package jobs

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

// Service carries out the commands on one state dir with one config.
type Service struct {
	Cfg      *config.Config
	StateDir string
	Mode     policy.Mode
	Log      *logrus.Logger
	Audit    *Audit
	st       *status.Store // opened once: a command reads a record, then its output
}

// New returns the service for the state dir at stateDir.
func New(cfg *config.Config, stateDir string, mode policy.Mode, log *logrus.Logger, audit *Audit) *Service {
	audit.Configure(cfg, stateDir)
	return &Service{Cfg: cfg, StateDir: stateDir, Mode: mode, Log: log, Audit: audit}
}

// DefaultStateDir is where the state dir is when nobody says: the
// config's, else the system one for root or when the caller may write it,
// else the user's XDG state dir.
func DefaultStateDir(cfg *config.Config) string {
	if cfg.StateDir != "" {
		return cfg.StateDir
	}
	const sys = "/var/lib/cmesh-run"
	if os.Geteuid() == 0 || unix.Access(sys, unix.W_OK|unix.X_OK) == nil {
		return sys
	}
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "cmesh-run")
	}
	home := os.Getenv("HOME")
	if home == "" {
		if u, err := user.Current(); err == nil {
			home = u.HomeDir
		}
	}
	return filepath.Join(home, ".local", "state", "cmesh-run")
}

// Store opens the state dir; only schedule (and the spool's worker)
// creates it. A new state dir gets the config's group and the setgid bit,
// so that everything below it is readable by that group (the web user's,
// typically).
func (s *Service) Store(create bool) (*status.Store, error) {
	if s.st != nil {
		return s.st, nil
	}
	if create && s.Cfg.Group != "" {
		if _, err := os.Stat(s.StateDir); os.IsNotExist(err) {
			g, err := user.LookupGroup(s.Cfg.Group)
			if err != nil {
				return nil, errs.Errorf(errs.Usage, "config group %q: %v", s.Cfg.Group, err).WithHint("set group to an existing group")
			}
			gid, _ := strconv.Atoi(g.Gid)
			if err := os.MkdirAll(s.StateDir, 0o750); err == nil {
				_ = os.Chown(s.StateDir, -1, gid)
				_ = os.Chmod(s.StateDir, 0o750|os.ModeSetgid)
			}
		}
	}
	st, err := status.Open(s.StateDir, create)
	if err == nil {
		s.st = st
	}
	return st, err
}

// AbsStateDir is the state dir as an absolute path.
func (s *Service) AbsStateDir() string {
	abs, err := filepath.Abs(s.StateDir)
	if err != nil {
		return s.StateDir
	}
	return abs
}

// Caller is who runs cmesh-run, as the job will run.
type Caller struct {
	Name, Home, Shell string
	UID               int
}

// CurrentCaller looks the calling user up.
func CurrentCaller() Caller {
	uid := os.Getuid()
	c := Caller{Name: strconv.Itoa(uid), Home: "/", Shell: "/bin/sh", UID: uid}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		c.Name, c.Home = u.Username, u.HomeDir
		c.Shell = loginShell(u.Username)
	}
	return c
}

// loginShell reads the user's shell from /etc/passwd; os/user does not
// expose it.
func loginShell(name string) string {
	data, err := os.ReadFile("/etc/passwd")
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(line, ":")
			if len(f) >= 7 && f[0] == name && f[6] != "" {
				return f[6]
			}
		}
	}
	return "/bin/sh"
}

// RequestedBy is who asked: SUDO_USER under sudo, else the caller.
func RequestedBy(who Caller) string {
	if su := os.Getenv("SUDO_USER"); su != "" {
		return su
	}
	return who.Name
}

// Backend returns the backend called name for the caller; "" is the
// config's.
func (s *Service) Backend(name string, who Caller) (backend.Backend, error) {
	if name == "" {
		name = s.Cfg.Backend
	}
	if name == "auto" {
		be, _ := s.Auto(who)
		return be, nil
	}
	e, ok := backend.Lookup(name)
	if !ok {
		return nil, errs.Errorf(errs.Usage, "unknown backend %q", name).
			WithHint("backends: %s", strings.Join(backend.Names(), ", "))
	}
	return e.New(s.env(who)), nil
}

func (s *Service) env(who Caller) backend.Env {
	return backend.Env{User: who.Name, UID: who.UID, StateDir: s.AbsStateDir(), Slurm: s.Cfg.Slurm}
}

// Auto picks the first backend of the registry that can take a job from
// the caller now (at, then systemd, then the spool when a worker is
// alive, then direct); the reason says why.
func (s *Service) Auto(who Caller) (backend.Backend, string) {
	var why []string
	for _, e := range backend.All() {
		if e.Auto == nil {
			continue
		}
		be := e.New(s.env(who))
		ok, reason := e.Auto(be, who.Name)
		if ok {
			return be, strings.Join(append(why, reason), "; ")
		}
		why = append(why, reason)
	}
	// The registry ends with a backend that always takes the job.
	panic("no backend for auto")
}

// Probe returns the check a reader applies to queued jobs: the probe of
// the backend that took each job.
func (s *Service) Probe() status.Probe {
	// Looked up only when a queued job needs a probe: most reads are of
	// jobs that started, and the lookup reads /etc/passwd twice.
	who := sync.OnceValue(CurrentCaller)
	return backend.Probe(func() backend.Env { return s.env(who()) })
}
