package policy

import (
	"slices"
	"strings"
	"time"

	"github.com/kballard/go-shellquote"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/status"
)

// Source is where a request to schedule came from; it decides which
// rules apply.
type Source int

const (
	// CommandLine is a caller running cmesh-run as itself: it could run
	// the command itself, so only the profile ceilings bind it.
	CommandLine Source = iota
	// Sudo is a caller lent another user's rights (see Detect).
	Sudo
	// Spool is a request file of spool/incoming: whoever wrote it, it is
	// untrusted, exactly as under sudo.
	Spool
)

// Untrusted tells whether the source gets sudo mode's rules.
func (s Source) Untrusted() bool { return s != CommandLine }

func (s Source) where() string {
	if s == Spool {
		return "in a spool request"
	}
	return "under sudo"
}

// Request is what a caller asks schedule for, decoded from the command
// line's flags or from a spool request's JSON, and not yet checked. A nil
// pointer is a value the caller did not give.
type Request struct {
	From    Source
	Asker   string // who asked, when not the caller: a spool request's owner
	Profile *string
	Args    []string // KEY=VALUE for the profile; nil when none were given
	Argv    []string // the program and its arguments
	Command *string  // one string, split as sh would
	Name    *string
	Unique  bool
	Workdir *string
	Env     []string // K=V
	Inherit bool     // --inherit-env

	Timeout, Grace, RetryDelay *time.Duration
	Retries                    *int
	Nice                       int
	Limits                     []status.Rlimit
	MemoryMax, CPUQuota        string
	Backend                    string

	// The job system: a queue of the config's, jobs to wait for, a time
	// not to start before, the job this one reruns.
	Queue     *string
	After     []string
	AfterAny  bool
	NotBefore *time.Time     // --at
	In        *time.Duration // --in: counted from the job's created_at
	RerunOf   string
}

// Submission is a request that passed Check: what to start, and how.
type Submission struct {
	Argv    []string
	Name    *string
	Workdir string // "" for the config's workdir, else the caller's directory
	Env     []string
	Inherit bool
	Backend string
	Unique  bool
	Control status.Spec // timeout, grace, retries, delay, nice, limits, quotas, slots
	Profile string      // "NAME key=value ...", for the audit
	Asker   string

	CallerEnv   []string          // --env as given, for rerun
	ProfileName string            // for rerun
	ProfileArgs map[string]string // for rerun
	Queue       string
	After       []string
	AfterAny    bool
	NotBefore   *time.Time
	In          *time.Duration
	RerunOf     string
}

// Check applies every rule of a request to schedule: under sudo and in
// spool requests (see Source) only profiles unless the config allows free
// commands, no --inherit-env, no --workdir, --env only for keys the
// profile allows; for every source, profile arguments match their
// patterns and a profile's timeout and retries are ceilings.
func Check(r Request, cfg *config.Config) (Submission, error) {
	var sub Submission
	untrusted := r.From.Untrusted()
	free := FreeCommandsAllowed(cfg, Mode{Sudo: untrusted})
	where := r.From.where()
	if untrusted && r.Inherit {
		return sub, Deny("--inherit-env is refused %s", where).WithHint("pass what the job needs with --env, where the profile allows it")
	}
	if untrusted && r.RerunOf != "" && r.Profile == nil {
		return sub, Deny("only a profile job may be rerun %s", where).WithHint("rerun a job that was scheduled with --profile")
	}
	var prof *config.Profile
	if r.Profile != nil {
		name := *r.Profile
		p, ok := cfg.Profiles[name]
		if !ok {
			return sub, Deny("no profile %q", name).WithHint("profiles: %s", strings.Join(profileNames(cfg), ", "))
		}
		if r.Command != nil || len(r.Argv) > 0 {
			return sub, errs.Errorf(errs.Usage, "--profile takes no command").WithHint("pass its arguments with --arg KEY=VALUE")
		}
		args, err := ParseArgs(r.Args)
		if err != nil {
			return sub, err
		}
		e, err := Expand(name, p, args)
		if err != nil {
			return sub, err
		}
		prof = &p
		sub.Argv = e.Argv
		if e.Name != "" {
			if r.Name != nil {
				return sub, errs.Errorf(errs.Usage, "profile %s names its jobs itself", name).WithHint("drop --name")
			}
			sub.Name = &e.Name
		}
		sub.Profile = Describe(name, args)
		sub.ProfileName, sub.ProfileArgs = name, args
	} else {
		if r.Args != nil {
			return sub, errs.Errorf(errs.Usage, "--arg goes with --profile").WithHint("cmesh-run schedule --profile NAME --arg KEY=VALUE")
		}
		if !free {
			return sub, Deny("only profiles may run here (allow_free_commands is off)").
				WithHint("use --profile NAME; profiles: %s", strings.Join(profileNames(cfg), ", "))
		}
		argv, err := jobArgv(r)
		if err != nil {
			return sub, err
		}
		sub.Argv = argv
	}
	if r.Name != nil {
		if err := status.CheckName(*r.Name); err != nil {
			return sub, err
		}
		sub.Name = r.Name
	}
	if sub.Name != nil {
		if err := status.CheckName(*sub.Name); err != nil {
			return sub, err
		}
	}
	if r.Workdir != nil {
		if untrusted && !free {
			return sub, Deny("--workdir is refused %s", where).WithHint("set the profile's workdir in %s", configPath(cfg))
		}
		sub.Workdir = *r.Workdir
	}
	if sub.Workdir == "" && prof != nil {
		sub.Workdir = prof.Workdir
	}
	if sub.Workdir == "" && untrusted && cfg.Workdir == "" {
		sub.Workdir = "/" // the caller's directory means nothing to the user the job runs as
	}
	if err := envPairs(r.Env); err != nil {
		return sub, err
	}
	sub.Env = r.Env
	sub.CallerEnv = r.Env
	if untrusted && len(r.Env) > 0 && !free {
		for _, kv := range r.Env {
			k, _, _ := strings.Cut(kv, "=")
			if prof == nil || !slices.Contains(prof.AllowEnv, k) {
				return sub, Deny("--env %s is refused %s: the profile does not allow it", k, where).
					WithHint("list %s in the profile's allow_env in %s", k, configPath(cfg))
			}
		}
	}
	if prof != nil {
		// The profile's environment comes before --env.
		pe := make([]string, 0, len(prof.Env))
		for _, k := range sortedKeys(prof.Env) {
			pe = append(pe, k+"="+prof.Env[k])
		}
		sub.Env = append(pe, sub.Env...)
	}
	var err error
	if sub.Control, err = control(r, cfg); err != nil {
		return sub, err
	}
	if prof != nil || untrusted {
		if err := ceilings(r, &sub, prof, cfg); err != nil {
			return sub, err
		}
	}
	sub.Unique = r.Unique || prof != nil && prof.Unique
	if sub.Unique && sub.Name == nil {
		return sub, errs.Errorf(errs.Usage, "--unique needs --name").WithHint("name the job: --name NAME --unique")
	}
	sub.Inherit = r.Inherit
	sub.Backend = r.Backend
	sub.Asker = r.Asker
	if err := jobSystem(r, &sub, prof, cfg); err != nil {
		return sub, err
	}
	return sub, nil
}

// jobSystem checks and fills in the queue, the dependencies and the start
// time. A profile that names a queue keeps its jobs there.
func jobSystem(r Request, sub *Submission, prof *config.Profile, cfg *config.Config) error {
	sub.Queue = config.DefaultQueue
	if prof != nil && prof.Queue != "" {
		sub.Queue = prof.Queue
	}
	if r.Queue != nil && *r.Queue != sub.Queue {
		// A profile's jobs run in its queue (default when it names none):
		// a caller lent rights may not move them into one with more slots,
		// nor fill a queue others wait in.
		if prof != nil && (prof.Queue != "" || r.From.Untrusted()) {
			return Deny("profile %s runs in queue %s, not %s", sub.ProfileName, sub.Queue, *r.Queue).WithHint("drop --queue")
		}
		sub.Queue = *r.Queue
	}
	slots, ok := cfg.QueueSlots(sub.Queue)
	if !ok {
		return errs.Errorf(errs.Usage, "no queue %q", sub.Queue).
			WithHint("queues: %s; add [queues.%s] to %s", strings.Join(cfg.QueueNames(), ", "), sub.Queue, configPath(cfg))
	}
	sub.Control.Slots = slots
	sub.Control.Queue = sub.Queue
	for _, id := range r.After {
		if err := CheckJobID(id, Mode{Sudo: r.From.Untrusted()}); err != nil {
			return err
		}
	}
	if r.AfterAny && len(r.After) == 0 {
		return errs.Errorf(errs.Usage, "--after-any goes with --after").WithHint("--after ID[,ID...] --after-any")
	}
	sub.After, sub.AfterAny = r.After, r.AfterAny
	sub.Control.After, sub.Control.AfterAny = r.After, r.AfterAny
	if r.NotBefore != nil && r.In != nil {
		return errs.Errorf(errs.Usage, "--at and --in both given").WithHint("give one of them")
	}
	if r.NotBefore != nil {
		t := r.NotBefore.UTC()
		sub.NotBefore = &t
	}
	sub.In = r.In
	sub.RerunOf = r.RerunOf
	return nil
}

// control fills in the job-control values, with the config's defaults.
func control(r Request, cfg *config.Config) (status.Spec, error) {
	s := status.Spec{MemoryMax: r.MemoryMax, CPUQuota: r.CPUQuota, Nice: r.Nice, Limits: r.Limits}
	or := func(v *time.Duration, def time.Duration) time.Duration {
		if v != nil {
			return *v
		}
		return def
	}
	s.Timeout = or(r.Timeout, cfg.Timeout.Duration)
	s.Grace = or(r.Grace, cfg.Grace.Duration)
	s.RetryDelay = or(r.RetryDelay, cfg.RetryDelay.Duration)
	if r.RetryDelay == nil && cfg.RetryDelay.Duration == 0 {
		s.RetryDelay = status.DefaultRetryDelay
	}
	s.Retries = cfg.Retries
	if r.Retries != nil {
		s.Retries = *r.Retries
	}
	if s.Retries < 0 || s.Retries > 1000 {
		return s, errs.Errorf(errs.Usage, "--retries %d: want 0 to 1000", s.Retries).WithHint("e.g. --retries 2")
	}
	if s.Nice < -20 || s.Nice > 19 {
		return s, errs.Errorf(errs.Usage, "--nice %d: want -20 to 19", s.Nice).WithHint("e.g. --nice 10")
	}
	return s, nil
}

// ceilings applies the limits a caller may only tighten: a profile's
// timeout and retries (else the config's), and under sudo or in a spool
// request the config's for free commands too. Unset, the ceiling is the
// job's value; a timeout of 0 (none) or above it, or more retries, is
// refused.
func ceilings(r Request, sub *Submission, prof *config.Profile, cfg *config.Config) error {
	timeout, retries := cfg.Timeout.Duration, cfg.Retries
	what := "the config's"
	if prof != nil {
		if prof.Timeout.Duration > 0 {
			timeout = prof.Timeout.Duration
		}
		if prof.Retries > 0 {
			retries = prof.Retries
		}
		name, _, _ := strings.Cut(sub.Profile, " ")
		what = "profile " + name + "'s"
	}
	switch got := sub.Control.Timeout; {
	case r.Timeout == nil:
		sub.Control.Timeout = timeout
	case got < 0 || timeout > 0 && (got == 0 || got > timeout):
		return Deny("--timeout %s would lift %s timeout of %s", durationText(got), what, timeout).
			WithHint("give a timeout above 0 and at most %s, or none", timeout)
	}
	switch {
	case r.Retries == nil:
		sub.Control.Retries = retries
	case sub.Control.Retries > retries:
		return Deny("--retries %d would lift %s retries of %d", sub.Control.Retries, what, retries).
			WithHint("give at most %d, or none", retries)
	}
	// Under sudo and in spool requests the grace and the retry delay are
	// ceilings too: a longer grace lets a job that ignores SIGTERM
	// outlive its timeout, a longer delay holds a queue's slot.
	if r.From.Untrusted() {
		for _, c := range []struct {
			flag      string
			got, ceil time.Duration
		}{{"grace", sub.Control.Grace, orDefault(cfg.Grace.Duration, status.DefaultGrace)},
			{"retry-delay", sub.Control.RetryDelay, orDefault(cfg.RetryDelay.Duration, status.DefaultRetryDelay)}} {
			if c.got < 0 || c.got > c.ceil {
				return Deny("--%s %s would lift the config's %s of %s", c.flag, durationText(c.got), c.flag, c.ceil).
					WithHint("give at most %s", c.ceil)
			}
		}
	}
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// durationText writes d as a caller writes it: 0s, 90s, 15m, 2h.
func durationText(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// jobArgv takes the argv from `-- PROGRAM ARGS` or from --command.
func jobArgv(r Request) ([]string, error) {
	args := r.Argv
	if r.Command != nil {
		if len(args) > 0 {
			return nil, errs.Errorf(errs.Usage, "both --command and a program after -- given").
				WithHint("give one of them")
		}
		words, err := shellquote.Split(*r.Command)
		if err != nil {
			return nil, errs.Errorf(errs.Usage, "--command: %v", err).
				WithHint("quote as in sh: 'single', \"double\" or backslash; nothing is expanded")
		}
		args = words
	}
	if len(args) == 0 || args[0] == "" {
		return nil, errs.Errorf(errs.Usage, "no command to run").
			WithHint("cmesh-run schedule -- PROGRAM [ARG...], or --command 'PROGRAM ARG...'")
	}
	return args, nil
}

func envPairs(pairs []string) error {
	for _, p := range pairs {
		k, _, ok := strings.Cut(p, "=")
		if !ok || !config.EnvName(k) {
			return errs.Errorf(errs.Usage, "--env %q: want NAME=VALUE", p).
				WithHint("NAME is letters, digits and _, not starting with a digit")
		}
	}
	return nil
}

// configPath names the config file in use, for hints.
func configPath(cfg *config.Config) string {
	if cfg != nil && cfg.File != "" {
		return cfg.File
	}
	return config.DefaultPath
}

func profileNames(cfg *config.Config) []string {
	names := sortedKeys(cfg.Profiles)
	if len(names) == 0 {
		return []string{"(none configured)"}
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
