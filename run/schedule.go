package run

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kballard/go-shellquote"
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) scheduleCommand() *cli.Command {
	return &cli.Command{
		Name:      "schedule",
		Usage:     "start a job through the backend and print its ID",
		ArgsUsage: "[-- PROGRAM [ARG...] | --command STRING | --profile NAME --arg KEY=VALUE...]",
		Description: "Records the job, hands a wrapper script to the backend (at now) and returns at once.\n" +
			"The job runs exactly the argv given, in --workdir, with a clean environment.\n\n" +
			"EXAMPLE:\n" +
			"   cmesh-run schedule --name mars-mpvg -- /opt/cmesh/scripts/pushfin.sh -o mars -n mpvg\n" +
			"   cmesh-run schedule --json --command '/opt/cmesh/scripts/pushfin.sh -o mars -n \"m p\"'\n" +
			"   cmesh-run schedule --profile pushfin --arg org=mars --arg name=mpvg",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "command", Usage: "the job as one `STRING`, split into words as sh would, expanding nothing"},
			&cli.StringFlag{Name: "profile", Usage: "run the config's profile `NAME` (the only way under sudo, unless allow_free_commands)"},
			&cli.StringSliceFlag{Name: "arg", KeepSpace: true, Usage: "`KEY=VALUE` for the profile; VALUE must match the profile's pattern for KEY in full (repeatable)"},
			&cli.StringFlag{Name: "name", Usage: "a `NAME` for the job ([A-Za-z0-9][A-Za-z0-9._@+-]{0,127})"},
			&cli.StringFlag{Name: "workdir", Usage: "`DIR` the job starts in", DefaultText: "the config's workdir, else the current directory"},
			&cli.StringSliceFlag{Name: "env", KeepSpace: true, Usage: "set `K=V` in the job's environment (repeatable)"},
			&cli.BoolFlag{Name: "inherit-env", Usage: "pass the caller's whole environment to the job (under the clean one)"},
			&cli.BoolFlag{Name: "unique", Usage: "with --name: when a job of that name is queued, waiting or running, start nothing and print that job (\"reused\": true)"},
			&cli.StringFlag{Name: "timeout", Usage: "stop each attempt after `DUR` (90s, 15m, 2h): SIGTERM to the whole job, SIGKILL after --grace; state timed_out", DefaultText: "the config's timeout, else none"},
			&cli.StringFlag{Name: "grace", Usage: "`DUR` between SIGTERM and SIGKILL when the timeout strikes", DefaultText: "the config's grace, else 10s"},
			&cli.IntFlag{Name: "retries", Usage: "start the job again up to `N` more times after a non-zero exit (never after a cancel or timeout)", DefaultText: "the config's retries, else 0"},
			&cli.StringFlag{Name: "retry-delay", Usage: "wait `DUR` before each retry", DefaultText: "the config's retry_delay, else 10s"},
			&cli.IntFlag{Name: "nice", Usage: "run the job at niceness `N` (-20..19; below 0 needs root)"},
			&cli.Uint64Flag{Name: "limit-cpu", Usage: "RLIMIT_CPU: at most `SECONDS` of CPU time"},
			&cli.Uint64Flag{Name: "limit-nofile", Usage: "RLIMIT_NOFILE: at most `N` open files"},
			&cli.Uint64Flag{Name: "limit-core", Usage: "RLIMIT_CORE: core files up to `BYTES` (0: none)"},
			&cli.StringFlag{Name: "memory-max", Usage: "memory quota (`BYTES`); only a backend that can enforce it accepts it (at cannot: refused)"},
			&cli.StringFlag{Name: "cpu-quota", Usage: "CPU quota (`PERCENT`); only a backend that can enforce it accepts it (at cannot: refused)"},
			&cli.StringFlag{Name: "backend", Usage: "`BACKEND` that starts the job: at, systemd, spool, direct or auto (see BACKENDS)", DefaultText: "the config's backend, else at"},
			&cli.BoolFlag{Name: "json", Usage: "print the job object as one line of JSON instead of the ID"},
		},
		Action: a.schedule,
	}
}

func (a *app) schedule(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	sub, err := a.request(cliInput{c}, a.mode)
	if err != nil {
		if status.KindOf(err) == status.Denied {
			return a.refuse(c, err)
		}
		return err
	}
	rec, reused, err := a.submit(sub)
	if err != nil {
		return err
	}
	if a.jsonOut {
		j := rec.Public()
		j.Reused = status.Ptr(reused)
		return printJSON(a.stdout, j)
	}
	_, err = a.stdout.Write([]byte(rec.ID + "\n"))
	return err
}

// request turns the command line into a submission, applying the
// security rules: under sudo only profiles (unless the config allows free
// commands), no --inherit-env, --env only for keys the profile allows.
func (a *app) request(c input, mode policy.Mode) (submission, error) {
	var sub submission
	sudo := mode.Sudo
	free := policy.FreeCommandsAllowed(a.cfg, mode)
	if sudo && c.Bool("inherit-env") {
		return sub, policy.Deny("--inherit-env is refused %s", mode.Where()).WithHint("pass what the job needs with --env, where the profile allows it")
	}
	var prof *config.Profile
	if name := c.String("profile"); c.IsSet("profile") {
		p, ok := a.cfg.Profiles[name]
		if !ok {
			return sub, policy.Deny("no profile %q", name).WithHint("profiles: %s", strings.Join(a.profileNames(), ", "))
		}
		if c.IsSet("command") || len(c.Argv()) > 0 {
			return sub, status.Errorf(status.Usage, "--profile takes no command").WithHint("pass its arguments with --arg KEY=VALUE")
		}
		args, err := policy.ParseArgs(c.StringSlice("arg"))
		if err != nil {
			return sub, err
		}
		e, err := policy.Expand(name, p, args)
		if err != nil {
			return sub, err
		}
		prof = &p
		sub.argv = e.Argv
		if e.Name != "" {
			if c.IsSet("name") {
				return sub, status.Errorf(status.Usage, "profile %s names its jobs itself", name).WithHint("drop --name")
			}
			sub.name = &e.Name
		}
		sub.profile = policy.Describe(name, args)
	} else {
		if c.IsSet("arg") {
			return sub, status.Errorf(status.Usage, "--arg goes with --profile").WithHint("cmesh-run schedule --profile NAME --arg KEY=VALUE")
		}
		if !free {
			return sub, policy.Deny("only profiles may run here (allow_free_commands is off)").
				WithHint("use --profile NAME; profiles: %s", strings.Join(a.profileNames(), ", "))
		}
		argv, err := jobArgv(c)
		if err != nil {
			return sub, err
		}
		sub.argv = argv
	}
	if n := c.String("name"); c.IsSet("name") {
		if err := status.CheckName(n); err != nil {
			return sub, err
		}
		sub.name = &n
	}
	if sub.name != nil {
		if err := status.CheckName(*sub.name); err != nil {
			return sub, err
		}
	}
	wd := c.String("workdir")
	if c.IsSet("workdir") && sudo && !free {
		return sub, policy.Deny("--workdir is refused %s", mode.Where()).WithHint("set the profile's workdir in %s", a.configPath())
	}
	if wd == "" && prof != nil {
		wd = prof.Workdir
	}
	if wd == "" && sudo && a.cfg.Workdir == "" {
		wd = "/" // the caller's directory means nothing to the user the job runs as
	}
	var err error
	if sub.workdir, err = a.workdir(wd); err != nil {
		return sub, err
	}
	if sub.env, err = envPairs(c.StringSlice("env")); err != nil {
		return sub, err
	}
	if sudo && len(sub.env) > 0 && !free {
		for _, kv := range sub.env {
			k, _, _ := strings.Cut(kv, "=")
			if prof == nil || !slices.Contains(prof.AllowEnv, k) {
				return sub, policy.Deny("--env %s is refused %s: the profile does not allow it", k, mode.Where()).
					WithHint("list %s in the profile's allow_env in %s", k, a.configPath())
			}
		}
	}
	if prof != nil {
		// The profile's environment comes before --env.
		pe := make([]string, 0, len(prof.Env))
		for _, k := range sortedKeys(prof.Env) {
			pe = append(pe, k+"="+prof.Env[k])
		}
		sub.env = append(pe, sub.env...)
	}
	if sub.control, err = a.jobControl(c); err != nil {
		return sub, err
	}
	if prof != nil || sudo {
		if err := a.ceilings(c, &sub, prof); err != nil {
			return sub, err
		}
	}
	sub.unique = c.Bool("unique") || prof != nil && prof.Unique
	if sub.unique && sub.name == nil {
		return sub, status.Errorf(status.Usage, "--unique needs --name").WithHint("name the job: --name NAME --unique")
	}
	sub.inherit = c.Bool("inherit-env")
	sub.backend = c.String("backend")
	return sub, nil
}

// ceilings applies the limits a caller may only tighten: a profile's
// timeout and retries (else the config's), and under sudo or in a spool
// request the config's for free commands too. Unset, the ceiling is the
// job's value; a timeout of 0 (none) or above it, or more retries, is
// refused.
func (a *app) ceilings(c input, sub *submission, prof *config.Profile) error {
	timeout, retries := a.cfg.Timeout.Duration, a.cfg.Retries
	what := "the config's"
	if prof != nil {
		if prof.Timeout.Duration > 0 {
			timeout = prof.Timeout.Duration
		}
		if prof.Retries > 0 {
			retries = prof.Retries
		}
		name, _, _ := strings.Cut(sub.profile, " ")
		what = "profile " + name + "'s"
	}
	switch got := sub.control.Timeout; {
	case !c.IsSet("timeout"):
		sub.control.Timeout = timeout
	case timeout > 0 && (got == 0 || got > timeout):
		return policy.Deny("--timeout %s would lift %s timeout of %s", c.String("timeout"), what, timeout).
			WithHint("give a timeout above 0 and at most %s, or none", timeout)
	}
	switch {
	case !c.IsSet("retries"):
		sub.control.Retries = retries
	case sub.control.Retries > retries:
		return policy.Deny("--retries %d would lift %s retries of %d", sub.control.Retries, what, retries).
			WithHint("give at most %d, or none", retries)
	}
	return nil
}

// configPath names the config file in use, for hints.
func (a *app) configPath() string {
	if a.cfg != nil && a.cfg.File != "" {
		return a.cfg.File
	}
	return config.DefaultPath
}

func (a *app) profileNames() []string {
	names := sortedKeys(a.cfg.Profiles)
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

// input is what a request to schedule says: the command line's flags, or
// a request file's fields (spool/incoming).
type input interface {
	String(name string) string
	Bool(name string) bool
	Int(name string) int
	Uint64(name string) uint64
	IsSet(name string) bool
	StringSlice(name string) []string
	Argv() []string
}

type cliInput struct{ *cli.Context }

func (c cliInput) Argv() []string { return c.Args().Slice() }

// submission is a validated request to start a job.
type submission struct {
	argv    []string
	name    *string
	workdir string
	env     []string
	inherit bool
	backend string
	unique  bool
	control status.Spec // timeout, grace, retries, delay, nice, limits
	profile string      // "NAME key=value ...", for the audit
	asker   string      // who asked, when not the caller (a spool request's owner)
}

// jobControl reads the job-control flags, with the config's defaults.
func (a *app) jobControl(c input) (status.Spec, error) {
	var s status.Spec
	s.MemoryMax, s.CPUQuota = c.String("memory-max"), c.String("cpu-quota")
	dur := func(flag string, def time.Duration) (time.Duration, error) {
		if !c.IsSet(flag) {
			return def, nil
		}
		d, err := config.ParseDuration(c.String(flag))
		if err != nil {
			return 0, status.Errorf(status.Usage, "--%s: %v", flag, err).WithHint("e.g. --%s 15m", flag)
		}
		return d, nil
	}
	var err error
	if s.Timeout, err = dur("timeout", a.cfg.Timeout.Duration); err != nil {
		return s, err
	}
	if s.Grace, err = dur("grace", a.cfg.Grace.Duration); err != nil {
		return s, err
	}
	if s.RetryDelay, err = dur("retry-delay", a.cfg.RetryDelay.Duration); err != nil {
		return s, err
	}
	if !c.IsSet("retry-delay") && a.cfg.RetryDelay.Duration == 0 {
		s.RetryDelay = 10 * time.Second
	}
	s.Retries = a.cfg.Retries
	if c.IsSet("retries") {
		s.Retries = c.Int("retries")
	}
	if s.Retries < 0 || s.Retries > 1000 {
		return s, status.Errorf(status.Usage, "--retries %d: want 0 to 1000", s.Retries).WithHint("e.g. --retries 2")
	}
	s.Nice = c.Int("nice")
	if s.Nice < -20 || s.Nice > 19 {
		return s, status.Errorf(status.Usage, "--nice %d: want -20 to 19", s.Nice).WithHint("e.g. --nice 10")
	}
	for _, l := range []struct{ flag, name string }{{"limit-cpu", "cpu"}, {"limit-nofile", "nofile"}, {"limit-core", "core"}} {
		if c.IsSet(l.flag) {
			s.Limits = append(s.Limits, status.Rlimit{Name: l.name, Value: c.Uint64(l.flag)})
		}
	}
	s.Slots = a.cfg.MaxRunning
	return s, nil
}

// submit records the job and hands it to its backend. On any error it
// leaves nothing behind: no record, no output, nothing queued.
func (a *app) submit(s submission) (*status.Record, bool, error) {
	who := currentCaller()
	bname := s.backend
	if bname == "" {
		bname = a.cfg.Backend
	}
	be, err := a.backendFor(bname, who)
	if err != nil {
		return nil, false, err
	}
	if (s.control.MemoryMax != "" || s.control.CPUQuota != "") && !be.Quotas() {
		return nil, false, status.Errorf(status.Usage, "the %s backend cannot enforce --memory-max or --cpu-quota", be.Name()).
			WithHint("use --backend systemd, or drop them; --limit-cpu, --limit-nofile, --limit-core and --nice work everywhere")
	}
	if err := be.Check(); err != nil {
		return nil, false, err
	}
	st, err := a.store(true)
	if err != nil {
		return nil, false, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, false, err
	}
	if s.unique {
		// The state dir's lock makes "is one running? if not, start one"
		// a single step: of racing callers exactly one starts the job.
		all, err := st.LockAll()
		if err != nil {
			return nil, false, err
		}
		defer status.Unlock(all)
		if r := a.unfinishedNamed(st, *s.name); r != nil {
			a.audit(r, "reused", nil)
			return r, true, nil
		}
	}

	id, lock, err := newJobFiles(st, a.jobFileMode())
	if err != nil {
		return nil, false, err
	}
	defer func() { status.Unlock(lock) }()
	rec := &status.Record{
		Job: status.Job{
			ID: id, Name: s.name, State: status.Queued, Command: s.argv, Workdir: s.workdir,
			Backend: be.Name(), User: who.name, RequestedBy: orElse(s.asker, requestedBy(who)),
			Attempt: 1, CreatedAt: time.Now().UTC(), OutputPath: st.OutputPath(id),
			Retries: s.control.Retries, Profile: s.profile,
		},
		Nonce: status.NewNonce(),
	}
	if s.control.Timeout > 0 {
		rec.Timeout = status.Ptr(s.control.Timeout.String())
	}
	spec := s.control
	spec.Nonce, spec.Workdir, spec.Env = rec.Nonce, s.workdir, a.jobEnv(rec, who, s.env, s.inherit)
	spec.Key = status.NewNonce()
	rec.SpecMAC = spec.MAC(s.argv)
	job := backend.Job{Record: rec, Argv: s.argv, Spec: spec, Exe: exe, StateDir: st.Dir}
	undo := func(err error) (*status.Record, bool, error) {
		_ = st.Remove(id)
		a.audit(rec, "refused", err)
		return nil, false, err
	}
	stateErr := func(err error) error {
		return &status.Error{Kind: status.Internal, Err: err,
			Msg:  fmt.Sprintf("cannot record the job in %s: %v", st.Dir, err),
			Hint: fmt.Sprintf("free space or inodes on its disk (df -h %s; df -i %s), or fix its permissions; nothing was queued", st.Dir, st.Dir)}
	}
	// The indexes are written while the backend takes the job (at needs
	// a few milliseconds), and the record once, after it: one fsync on the
	// caller's path. The job's lock, held until then, keeps the wrapper
	// from reading a record not yet there; readers skip an indexed job
	// without a record. Should this process die before the record is
	// written, the wrapper finds none and runs nothing.
	indexed := make(chan error, 1)
	go func() {
		err := st.SetActive(id, true)
		if err == nil {
			err = st.AddRecent(id)
		}
		indexed <- err
	}()
	ref, err := be.Submit(job)
	ierr := <-indexed
	if err != nil {
		return undo(err)
	}
	if ierr != nil {
		_ = be.Remove(ref)
		return undo(stateErr(ierr))
	}
	rec.BackendRef = &ref
	if err := st.Save(rec); err != nil {
		// The backend has the job; without a record nobody could follow it.
		_ = be.Remove(ref)
		return undo(stateErr(err))
	}
	// The wrapper may go now; the audit line and the retain rule need
	// not hold the job back.
	status.Unlock(lock)
	lock = nil
	a.audit(rec, "scheduled", nil)
	a.retain(st)
	return rec, false, nil
}

// unfinishedNamed returns the newest job called name that is queued,
// waiting or running, if any. The active index keeps this cheap.
func (a *app) unfinishedNamed(st *status.Store, name string) *status.Record {
	ids, err := st.ActiveIDs()
	if err != nil {
		return nil
	}
	probe := a.probe()
	for _, id := range ids {
		r, err := st.Load(id)
		if err != nil || r.NameOrEmpty() != name {
			continue
		}
		if j := st.Derive(r, probe); !j.State.Finished() {
			r.Job = j
			return r
		}
	}
	return nil
}

// jobArgv takes the argv from `-- PROGRAM ARGS` or from --command.
func jobArgv(c input) ([]string, error) {
	args := c.Argv()
	if c.IsSet("command") {
		if len(args) > 0 {
			return nil, status.Errorf(status.Usage, "both --command and a program after -- given").
				WithHint("give one of them")
		}
		words, err := shellquote.Split(c.String("command"))
		if err != nil {
			return nil, status.Errorf(status.Usage, "--command: %v", err).
				WithHint("quote as in sh: 'single', \"double\" or backslash; nothing is expanded")
		}
		args = words
	}
	if len(args) == 0 || args[0] == "" {
		return nil, status.Errorf(status.Usage, "no command to run").
			WithHint("cmesh-run schedule -- PROGRAM [ARG...], or --command 'PROGRAM ARG...'")
	}
	return args, nil
}

func (a *app) workdir(dir string) (string, error) {
	if dir == "" {
		dir = a.cfg.Workdir
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", status.Errorf(status.Usage, "cannot tell the current directory: %v", err).
				WithHint("pass --workdir DIR")
		}
		dir = wd
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil || !st.IsDir() {
		reason := "not a directory"
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			reason = err.Error()
		}
		return "", status.Errorf(status.Usage, "--workdir %s: %s", abs, reason).
			WithHint("pass an existing directory")
	}
	return abs, nil
}

func envPairs(pairs []string) ([]string, error) {
	for _, p := range pairs {
		k, _, ok := strings.Cut(p, "=")
		if !ok || !config.EnvName(k) {
			return nil, status.Errorf(status.Usage, "--env %q: want NAME=VALUE", p).
				WithHint("NAME is letters, digits and _, not starting with a digit")
		}
	}
	return pairs, nil
}

// jobEnv builds the job's environment as SPEC.md orders it: the caller's
// (only with --inherit-env), then the clean base, the config's [env], then
// --env; a later one wins.
func (a *app) jobEnv(r *status.Record, who caller, extra []string, inherit bool) []string {
	var keys []string
	vals := map[string]string{}
	set := func(kv string) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	if inherit {
		for _, kv := range os.Environ() {
			set(kv)
		}
	}
	set("PATH=" + a.cfg.Path)
	set("HOME=" + who.home)
	set("USER=" + who.name)
	set("LOGNAME=" + who.name)
	set("SHELL=" + who.shell)
	set("LANG=" + a.cfg.Lang)
	set("CMESH_RUN_JOB_ID=" + r.ID)
	set("CMESH_RUN_JOB_NAME=" + r.NameOrEmpty())
	cfgKeys := make([]string, 0, len(a.cfg.Env))
	for k := range a.cfg.Env {
		cfgKeys = append(cfgKeys, k)
	}
	slices.Sort(cfgKeys)
	for _, k := range cfgKeys {
		set(k + "=" + a.cfg.Env[k])
	}
	for _, kv := range extra {
		set(kv)
	}
	env := make([]string, len(keys))
	for i, k := range keys {
		env[i] = k + "=" + vals[k]
	}
	return env
}

// newJobFiles picks a fresh ID and claims it by creating its output file,
// which it returns holding the job's lock.
func newJobFiles(st *status.Store, mode os.FileMode) (string, *os.File, error) {
	for range 10 {
		id := status.NewID(time.Now())
		lock, err := st.CreateOutput(id, mode)
		if err == nil {
			return id, lock, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", nil, status.Errorf(status.Internal, "cannot create a job in %s: %v", st.Dir, err).
				WithHint("check that the state dir is writable and its disk not full")
		}
	}
	return "", nil, status.Errorf(status.Internal, "no free job ID in %s", st.Dir)
}

// jobFileMode is the mode of a new job's output and records: a job root
// schedules may run anything and print secrets, so the state dir's group
// (the web user's) may not read it unless the config says so.
func (a *app) jobFileMode() os.FileMode {
	if os.Geteuid() == 0 && !a.cfg.RootJobsReadable {
		return 0o600
	}
	return 0o640
}

func orElse(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

func requestedBy(who caller) string {
	if su := os.Getenv("SUDO_USER"); su != "" {
		return su
	}
	return who.name
}
