package run

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kballard/go-shellquote"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) scheduleCommand() *cli.Command {
	return &cli.Command{
		Name:      "schedule",
		Usage:     "start a job through the backend and print its ID",
		ArgsUsage: "-- PROGRAM [ARG...]",
		Description: "Records the job, hands a wrapper script to the backend (at now) and returns at once.\n" +
			"The job runs exactly the argv given, in --workdir, with a clean environment.\n\n" +
			"EXAMPLE:\n" +
			"   cmesh-run schedule --name mars-mpvg -- /opt/cmesh/scripts/pushfin.sh -o mars -n mpvg\n" +
			"   cmesh-run schedule --json --command '/opt/cmesh/scripts/pushfin.sh -o mars -n \"m p\"'",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "command", Usage: "the job as one `STRING`, split into words as sh would, expanding nothing"},
			&cli.StringFlag{Name: "name", Usage: "a `NAME` for the job ([A-Za-z0-9][A-Za-z0-9._@+-]{0,127})"},
			&cli.StringFlag{Name: "workdir", Usage: "`DIR` the job starts in", DefaultText: "the config's workdir, else the current directory"},
			&cli.StringSliceFlag{Name: "env", Usage: "set `K=V` in the job's environment (repeatable)"},
			&cli.BoolFlag{Name: "inherit-env", Usage: "pass the caller's whole environment to the job (under the clean one)"},
			&cli.StringFlag{Name: "backend", Usage: "`BACKEND` that starts the job: at (auto means at in this build)", DefaultText: "the config's backend, else at"},
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
	argv, err := jobArgv(c)
	if err != nil {
		return err
	}
	var name *string
	if n := c.String("name"); c.IsSet("name") {
		if err := status.CheckName(n); err != nil {
			return err
		}
		name = &n
	}
	workdir, err := a.workdir(c.String("workdir"))
	if err != nil {
		return err
	}
	extra, err := envPairs(c.StringSlice("env"))
	if err != nil {
		return err
	}
	rec, err := a.submit(submission{
		argv: argv, name: name, workdir: workdir, env: extra,
		inherit: c.Bool("inherit-env"), backend: c.String("backend"),
	})
	if err != nil {
		return err
	}
	if a.jsonOut {
		j := rec.Public()
		j.Reused = status.Ptr(false)
		return printJSON(a.stdout, j)
	}
	_, err = a.stdout.Write([]byte(rec.ID + "\n"))
	return err
}

// submission is a validated request to start a job.
type submission struct {
	argv    []string
	name    *string
	workdir string
	env     []string
	inherit bool
	backend string
}

// submit records the job and hands it to its backend. On any error it
// leaves nothing behind: no record, no output, nothing queued.
func (a *app) submit(s submission) (*status.Record, error) {
	who := currentCaller()
	bname := s.backend
	if bname == "" {
		bname = a.cfg.Backend
	}
	be, err := a.backendFor(bname, who)
	if err != nil {
		return nil, err
	}
	if err := be.Check(); err != nil {
		return nil, err
	}
	st, err := a.store(true)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}

	id, err := newJobFiles(st)
	if err != nil {
		return nil, err
	}
	lock, err := st.Lock(id)
	if err != nil {
		_ = st.Remove(id)
		return nil, err
	}
	defer status.Unlock(lock)
	rec := &status.Record{
		Job: status.Job{
			ID: id, Name: s.name, State: status.Queued, Command: s.argv, Workdir: s.workdir,
			Backend: be.Name(), User: who.name, RequestedBy: requestedBy(who),
			Attempt: 1, CreatedAt: time.Now().UTC(), OutputPath: st.OutputPath(id),
		},
		Nonce: status.NewNonce(),
	}
	env := a.jobEnv(rec, who, s.env, s.inherit)
	script := backend.Script(exe, st.Dir, id, s.argv, status.Spec{Nonce: rec.Nonce, Workdir: s.workdir, Env: env})
	undo := func(err error) (*status.Record, error) {
		_ = st.Remove(id)
		a.audit(rec, "refused", err)
		return nil, err
	}
	if err := st.SetActive(id, true); err != nil {
		return undo(err)
	}
	if err := st.Save(rec); err != nil {
		return undo(err)
	}
	ref, err := be.Submit(rec, script)
	if err != nil {
		return undo(err)
	}
	rec.BackendRef = &ref
	if err := st.Save(rec); err != nil {
		// The backend has the job; without a record nobody could follow it.
		_ = be.Remove(ref)
		return undo(err)
	}
	a.audit(rec, "scheduled", nil)
	return rec, nil
}

// jobArgv takes the argv from `-- PROGRAM ARGS` or from --command.
func jobArgv(c *cli.Context) ([]string, error) {
	args := c.Args().Slice()
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

// newJobFiles picks a fresh ID and claims it by creating its output file.
func newJobFiles(st *status.Store) (string, error) {
	for range 10 {
		id := status.NewID(time.Now())
		err := st.CreateOutput(id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", status.Errorf(status.Internal, "cannot create a job in %s: %v", st.Dir, err).
				WithHint("check that the state dir is writable and its disk not full")
		}
	}
	return "", status.Errorf(status.Internal, "no free job ID in %s", st.Dir)
}

func requestedBy(who caller) string {
	if su := os.Getenv("SUDO_USER"); su != "" {
		return su
	}
	return who.name
}

// audit leaves one line per schedule, refusal and cancel.
func (a *app) audit(r *status.Record, outcome string, err error) {
	f := logrus.Fields{
		"audit": true, "id": r.ID, "requested_by": r.RequestedBy, "user": r.User,
		"command": r.Command, "backend": r.Backend, "outcome": outcome,
	}
	if err != nil {
		f["error"] = err.Error()
	}
	a.log.WithFields(f).Info("job " + outcome)
}
