// Package config reads cmesh-run's TOML config file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/cmesh/cmesh-run/backend"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/proc"
	"github.com/cmesh/cmesh-run/status"
)

// DefaultPath is where the config lives when nobody says otherwise.
const DefaultPath = "/etc/cmesh-run/config.toml"

// SudoersPath is the sudo rule setup writes and doctor checks.
const SudoersPath = "/etc/sudoers.d/cmesh-run"

// DefaultJobPath is the PATH of every job unless the config sets one.
const DefaultJobPath = proc.CleanPath

// Config is the file's content. Keys are documented in the man page.
type Config struct {
	Backend           string             `toml:"backend"`
	Workdir           string             `toml:"workdir"`
	Path              string             `toml:"path"`
	Lang              string             `toml:"lang"`
	StateDir          string             `toml:"state_dir"`
	AllowFreeCommands *bool              `toml:"allow_free_commands"`
	MaxRunning        int                `toml:"max_running"`
	Queues            map[string]Queue   `toml:"queues"`
	AllowQueueControl bool               `toml:"allow_queue_control"`
	Timeout           Duration           `toml:"timeout"`
	Grace             Duration           `toml:"grace"`
	Retries           int                `toml:"retries"`
	RetryDelay        Duration           `toml:"retry_delay"`
	Retain            Retain             `toml:"retain"`
	AuditLog          string             `toml:"audit_log"`
	Group             string             `toml:"group"`
	RootJobsReadable  bool               `toml:"root_jobs_readable"`
	Env               map[string]string  `toml:"env"`
	Profiles          map[string]Profile `toml:"profiles"`
	Slurm             backend.Cluster    `toml:"slurm"`
	OnFinish          []string           `toml:"on_finish"`
	OnFailure         []string           `toml:"on_failure"`
	HookTimeout       Duration           `toml:"hook_timeout"`

	File string `toml:"-"` // where it was read from, "" for none
}

// Retain is what schedule prunes on the way: finished jobs older than
// MaxAge, and finished jobs beyond the newest MaxJobs.
type Retain struct {
	MaxAge  Duration `toml:"max_age"`
	MaxJobs int      `toml:"max_jobs"`
}

// Duration is a TOML string such as "90s", "15m", "2h" or "30d".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	d.Duration = v
	return err
}

// MarshalText implements encoding.TextMarshaler, for config show.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// ParseDuration is time.ParseDuration plus whole days ("30d").
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		// A day count beyond what a Duration holds would wrap around to
		// a negative one, and a negative timeout is none.
		if err != nil || days < 0 || days > int(math.MaxInt64/int64(24*time.Hour)) {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q (want e.g. 90s, 15m, 2h, 30d)", s)
	}
	return d, nil
}

// DefaultQueue is the queue of a job that names none; the top-level
// max_running is its.
const DefaultQueue = "default"

// Queue is a [queues.NAME] table: jobs of one queue start in creation
// order, at most MaxRunning at once (0: no limit).
type Queue struct {
	MaxRunning int `toml:"max_running"`
}

// QueueSlots returns queue name's max_running, and false when the config
// has no such queue.
func (c *Config) QueueSlots(name string) (int, bool) {
	if name == "" || name == DefaultQueue {
		return c.MaxRunning, true
	}
	q, ok := c.Queues[name]
	return q.MaxRunning, ok
}

// QueueNames lists the queues: default first, then the config's, sorted.
func (c *Config) QueueNames() []string {
	names := []string{DefaultQueue}
	for n := range c.Queues {
		if n != DefaultQueue {
			names = append(names, n)
		}
	}
	slices.Sort(names[1:])
	return names
}

// ValidQueueName tells whether name can name a queue: its pause file is
// named after it.
func ValidQueueName(name string) bool { return queueName().MatchString(name) }

var queueName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`) })

// Profile is a named, pre-approved command.
type Profile struct {
	Command  []string          `toml:"command"`
	Args     map[string]string `toml:"args"`
	Name     string            `toml:"name"`
	Unique   bool              `toml:"unique"`
	Timeout  Duration          `toml:"timeout"`
	Retries  int               `toml:"retries"`
	Workdir  string            `toml:"workdir"`
	Env      map[string]string `toml:"env"`
	AllowEnv []string          `toml:"allow_env"`
	Queue    string            `toml:"queue"`
	// A profile's hooks replace the config's.
	OnFinish    []string `toml:"on_finish"`
	OnFailure   []string `toml:"on_failure"`
	HookTimeout Duration `toml:"hook_timeout"`
}

// DefaultHookTimeout is the hook_timeout of a config that sets none.
const DefaultHookTimeout = status.DefaultHookTimeout

// Hooks are the programs to run when a job ends: OnFinish after every
// end, OnFailure instead after a failed, timed out or lost one; each an
// argv, never a shell string.
type Hooks struct {
	OnFinish, OnFailure []string
	Timeout             time.Duration
}

// HooksFor returns the hooks of a job of profile ("" for none): the
// profile's own where it names them, else the config's.
func (c *Config) HooksFor(profile string) Hooks {
	h := Hooks{OnFinish: c.OnFinish, OnFailure: c.OnFailure, Timeout: c.HookTimeout.Duration}
	if p, ok := c.Profiles[profile]; ok && profile != "" {
		if len(p.OnFinish) > 0 {
			h.OnFinish = p.OnFinish
		}
		if len(p.OnFailure) > 0 {
			h.OnFailure = p.OnFailure
		}
		if p.HookTimeout.Duration > 0 {
			h.Timeout = p.HookTimeout.Duration
		}
	}
	if h.Timeout <= 0 {
		h.Timeout = DefaultHookTimeout
	}
	return h
}

func checkHook(key string, argv []string, data []byte) error {
	if argv == nil {
		return nil
	}
	if len(argv) == 0 || !strings.HasPrefix(argv[0], "/") {
		return fmt.Errorf("line %d: key %q: must be an argv whose first word is a program's absolute path (not a shell string)", lineOf(data, key), key)
	}
	return nil
}

// The patterns are compiled on first use, not at start: most commands load no
// config at all and should not pay for them.
var placeholder = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)\}`) })

// Substitute replaces every {key} in s by args[key].
func Substitute(s string, args map[string]string) string {
	return placeholder().ReplaceAllStringFunc(s, func(m string) string { return args[m[1:len(m)-1]] })
}

// Placeholders lists the {keys} of the profile's command and name.
func (p Profile) Placeholders() []string {
	var out []string
	for _, w := range append(append([]string{}, p.Command...), p.Name) {
		for _, m := range placeholder().FindAllStringSubmatch(w, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// Pattern compiles an argument pattern, anchored at both ends: a value
// must match it in full.
func Pattern(p string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + p + `)$`)
}

func (p Profile) check(name string, data []byte) error {
	at := func(key string) int { return lineOf(data, "profiles."+name) }
	if len(p.Command) == 0 || p.Command[0] == "" {
		return fmt.Errorf("line %d: key \"profiles.%s.command\": must name a program", at("command"), name)
	}
	for k, pat := range p.Args {
		if !envName().MatchString(k) {
			return fmt.Errorf("line %d: key \"profiles.%s.args.%s\": not a valid argument name", lineOf(data, k), name, k)
		}
		if _, err := Pattern(pat); err != nil {
			return fmt.Errorf("line %d: key \"profiles.%s.args.%s\": %v", lineOf(data, k), name, k, err)
		}
	}
	for _, k := range p.Placeholders() {
		if _, ok := p.Args[k]; !ok {
			return fmt.Errorf("line %d: key \"profiles.%s\": {%s} has no pattern in args", lineContaining(data, "{"+k+"}"), name, k)
		}
	}
	if p.Workdir != "" && !strings.HasPrefix(p.Workdir, "/") {
		return fmt.Errorf("line %d: key \"profiles.%s.workdir\": must be an absolute path", lineOf(data, "workdir"), name)
	}
	for k := range p.Env {
		if !envName().MatchString(k) {
			return fmt.Errorf("line %d: key \"profiles.%s.env.%s\": not a valid variable name", lineOf(data, k), name, k)
		}
	}
	if p.Retries < 0 {
		return fmt.Errorf("line %d: key \"profiles.%s.retries\": must be 0 or more", lineOf(data, "retries"), name)
	}
	return nil
}

var decodeErr = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?s)^toml: line (\d+)(.*)$`) })

var envName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })

// Load reads path. A missing file is an error only when required.
func Load(path string, required bool) (*Config, error) {
	c := &Config{}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !required {
			return c.withDefaults(), nil
		}
		return nil, errs.Errorf(errs.Usage, "config %s: %v", path, unwrap(err)).
			WithHint("pass an existing --config file, or none")
	}
	if err := Parse(data, c); err != nil {
		return nil, errs.Errorf(errs.Usage, "config %s: %v", path, err).
			WithHint("fix %s; the man page lists every key", path)
	}
	c.File = path
	return c.withDefaults(), nil
}

// Parse decodes data strictly: unknown keys and bad values are errors
// that name the line and the key.
func Parse(data []byte, c *Config) error {
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			msg := pe.Message
			if pe.LastKey != "" {
				msg = fmt.Sprintf("key %q: %s", pe.LastKey, msg)
			}
			return fmt.Errorf("line %d: %s", pe.Position.Line, msg)
		}
		// Type mismatches come as plain errors: "toml: line 2 (last key
		// "x"): type mismatch ...", sometimes without the line.
		if m := decodeErr().FindStringSubmatch(err.Error()); m != nil {
			return fmt.Errorf("line %s: %s", m[1], strings.TrimPrefix(strings.TrimSpace(m[2]), ": "))
		}
		msg := strings.TrimPrefix(err.Error(), "toml: ")
		return fmt.Errorf("line %d: %s", keyLine(data, msg), msg)
	}
	if und := md.Undecoded(); len(und) > 0 {
		key := und[0].String()
		return fmt.Errorf("line %d: unknown key %q", lineOf(data, und[0][len(und[0])-1]), key)
	}
	if c.Backend != "" && !backend.Known(c.Backend) {
		return fmt.Errorf("line %d: key \"backend\": %q is not a backend (%s)", lineOf(data, "backend"), c.Backend, strings.Join(backend.Names(), ", "))
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"max_running", c.MaxRunning}, {"retries", c.Retries}, {"max_jobs", c.Retain.MaxJobs}} {
		if n.v < 0 {
			return fmt.Errorf("line %d: key %q: must be 0 or more", lineOf(data, n.key), n.key)
		}
	}
	for k := range c.Env {
		if !envName().MatchString(k) {
			return fmt.Errorf("line %d: key \"env.%s\": not a valid variable name", lineOf(data, k), k)
		}
	}
	for name, q := range c.Queues {
		if name == DefaultQueue {
			return fmt.Errorf("line %d: key \"queues.default\": the default queue's max_running is the top-level max_running", lineOf(data, "queues."+name))
		}
		if !ValidQueueName(name) {
			return fmt.Errorf("line %d: key \"queues.%s\": not a valid queue name ([a-z0-9][a-z0-9_-]*)", lineOf(data, "queues."+name), name)
		}
		if q.MaxRunning < 0 {
			return fmt.Errorf("line %d: key \"queues.%s.max_running\": must be 0 or more", lineOf(data, "queues."+name), name)
		}
	}
	for name, p := range c.Profiles {
		if err := p.check(name, data); err != nil {
			return err
		}
		if _, ok := c.QueueSlots(p.Queue); !ok {
			return fmt.Errorf("line %d: key \"profiles.%s.queue\": no [queues.%s] in the config", lineOf(data, "profiles."+name), name, p.Queue)
		}
	}
	if err := checkSlurm(c.Slurm, data); err != nil {
		return err
	}
	for _, h := range []struct {
		key  string
		argv []string
	}{{"on_finish", c.OnFinish}, {"on_failure", c.OnFailure}} {
		if err := checkHook(h.key, h.argv, data); err != nil {
			return err
		}
	}
	for name, p := range c.Profiles {
		if err := checkHook("profiles."+name+".on_finish", p.OnFinish, data); err != nil {
			return err
		}
		if err := checkHook("profiles."+name+".on_failure", p.OnFailure, data); err != nil {
			return err
		}
	}
	for _, p := range []struct{ key, v string }{{"workdir", c.Workdir}, {"state_dir", c.StateDir}, {"audit_log", c.AuditLog}, {"slurm.conf", c.Slurm.Conf}} {
		if p.v != "" && !strings.HasPrefix(p.v, "/") {
			return fmt.Errorf("line %d: key %q: must be an absolute path", lineOf(data, p.key), p.key)
		}
	}
	return nil
}

// slurmOwned are the sbatch options the slurm backend sets itself, or
// that would undo what its records rely on: the output file, the
// environment, the requeue rule, the job's identity (name, comment,
// cluster), its limits (--memory-max, the timeout's --time) and its start.
var slurmOwned = []string{"--output", "--error", "--open-mode", "--export", "--export-file", "--requeue", "--no-requeue",
	"--comment", "--parsable", "--wrap", "--chdir", "--uid", "--gid", "--input", "--array", "--wait", "--get-user-env",
	"--job-name", "--clusters", "--cluster-constraint", "--mem", "--mem-per-cpu", "--mem-per-gpu", "--time", "--time-min",
	"--begin", "--hold", "--signal", "--deadline", "--kill-on-invalid-dep", "--ntasks", "--test-only", "--quiet"}

func checkSlurm(s backend.Cluster, data []byte) error {
	for _, o := range s.Options {
		name, _, _ := strings.Cut(o, "=")
		if !strings.HasPrefix(o, "--") || len(name) < 3 {
			return fmt.Errorf("line %d: key \"slurm.options\": %q: give sbatch options in their long form, --name=value (e.g. \"--cpus-per-task=2\")", lineOf(data, "options"), o)
		}
		// sbatch takes any unambiguous start of a long option ("--ou" is
		// --output): a name that starts one of ours is one of ours.
		for _, own := range slurmOwned {
			if strings.HasPrefix(own, name) {
				return fmt.Errorf("line %d: key \"slurm.options\": %s is cmesh-run's to set (%s)", lineOf(data, "options"), name, own)
			}
		}
	}
	for _, v := range []struct{ key, v string }{{"partition", s.Partition}, {"account", s.Account}} {
		if strings.ContainsAny(v.v, " \t\n=") {
			return fmt.Errorf("line %d: key \"slurm.%s\": %q is not a Slurm name", lineOf(data, v.key), v.key, v.v)
		}
	}
	return nil
}

// lineOf finds the first line that sets key, for error messages.
func lineOf(data []byte, key string) int {
	for i, line := range bytes.Split(data, []byte("\n")) {
		l := strings.TrimSpace(string(line))
		if strings.HasPrefix(l, key) || strings.HasPrefix(l, `"`+key+`"`) || strings.Contains(l, "."+key) || strings.Contains(l, "["+key) {
			return i + 1
		}
	}
	return 0
}

var lastKey = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\(last key "(.*)"\)`) })

// keyLine guesses the line of the key an error names: the line of its
// last part, else of its table, else 1.
func keyLine(data []byte, msg string) int {
	m := lastKey().FindStringSubmatch(msg)
	if m == nil {
		return 1
	}
	parts := strings.Split(m[1], ".")
	if last := strings.Trim(parts[len(parts)-1], `\"`); last != "" {
		if n := lineContaining(data, last); n > 0 {
			return n
		}
	}
	if n := lineContaining(data, "["+parts[0]); n > 0 {
		return n
	}
	return 1
}

func lineContaining(data []byte, s string) int {
	for i, line := range bytes.Split(data, []byte("\n")) {
		if bytes.Contains(line, []byte(s)) {
			return i + 1
		}
	}
	return 0
}

func (c *Config) withDefaults() *Config {
	if c.Backend == "" {
		c.Backend = "at"
	}
	if c.Path == "" {
		c.Path = DefaultJobPath
	}
	if c.Lang == "" {
		c.Lang = "C.UTF-8"
	}
	return c
}

func unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// EnvName reports whether name can be an environment variable's name.
func EnvName(name string) bool { return envName().MatchString(name) }
