package policy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
)

// Every rule of the man page's SECURITY and SPOOL REQUESTS sections, with
// an example it refuses and one it lets pass. A rule that stops refusing,
// or starts refusing what it should not, fails here.
func TestEveryRuleRefusesAndPasses(t *testing.T) {
	yes := true
	cfg := func(free *bool) *config.Config {
		return &config.Config{
			AllowFreeCommands: free,
			Profiles: map[string]config.Profile{
				"build": {
					Command:  []string{"/bin/build", "-o", "{org}"},
					Args:     map[string]string{"org": "[a-z][a-z0-9-]*"},
					AllowEnv: []string{"FLAVOR"},
					Timeout:  config.Duration{Duration: time.Minute},
					Retries:  1,
				},
			},
		}
	}
	str := func(s string) *string { return &s }
	dur := func(d time.Duration) *time.Duration { return &d }
	num := func(n int) *int { return &n }
	prof := func(from Source) Request {
		return Request{From: from, Profile: str("build"), Args: []string{"org=mars"}}
	}
	with := func(r Request, f func(*Request)) Request { f(&r); return r }

	dir := t.TempDir()
	writable := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(writable, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(writable, 0o666); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.toml")
	if err := os.Symlink("/etc/passwd", link); err != nil {
		t.Fatal(err)
	}

	sudo := Mode{Sudo: true, Asker: "www-data"}
	rules := []struct {
		rule           string
		refused, allow func() error
	}{
		{"under sudo the config must be root's and not writable by group or others",
			func() error { return CheckConfigFile(writable) }, func() error { return CheckConfigFile("/etc/passwd") }},
		{"under sudo the config is no symlink",
			func() error { return CheckConfigFile(link) }, func() error { return CheckConfigFile(filepath.Join(dir, "absent")) }},
		{"under sudo --config is refused",
			func() error { return CheckOverrides(sudo, "/tmp/x.toml", "") }, func() error { return CheckOverrides(sudo, "", "") }},
		{"under sudo --state-dir is refused",
			func() error { return CheckOverrides(sudo, "", "/tmp/s") }, func() error { return CheckOverrides(Mode{}, "", "/tmp/s") }},
		{"under sudo a malformed job ID is refused",
			func() error { return CheckJobID("../../etc/passwd", sudo) }, func() error { return CheckJobID("20261204-030000.000000-abcdef", sudo) }},
		{"under sudo --inherit-env is refused",
			func() error { return check(with(prof(Sudo), func(r *Request) { r.Inherit = true }), cfg(nil)) },
			func() error { return check(prof(Sudo), cfg(nil)) }},
		{"under sudo only profiles run",
			func() error { return check(Request{From: Sudo, Argv: []string{"id"}}, cfg(nil)) },
			func() error { return check(Request{From: Sudo, Argv: []string{"id"}}, cfg(&yes)) }},
		{"under sudo --workdir is refused",
			func() error { return check(with(prof(Sudo), func(r *Request) { r.Workdir = str("/tmp") }), cfg(nil)) },
			func() error {
				return check(with(prof(CommandLine), func(r *Request) { r.Workdir = str("/tmp") }), cfg(nil))
			}},
		{"under sudo --env only for the profile's allow_env",
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Env = []string{"LD_PRELOAD=/x.so"} }), cfg(nil))
			},
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Env = []string{"FLAVOR=fast"} }), cfg(nil))
			}},
		{"a profile argument must match its pattern in full",
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Args = []string{"org=mars;id"} }), cfg(nil))
			},
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Args = []string{"org=mars-2"} }), cfg(nil))
			}},
		{"a profile argument is taken byte for byte",
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Args = []string{"org=mars\n"} }), cfg(nil))
			},
			func() error { return check(prof(Sudo), cfg(nil)) }},
		{"an unknown profile is refused",
			func() error { return check(Request{From: Sudo, Profile: str("nope")}, cfg(nil)) },
			func() error { return check(prof(Sudo), cfg(nil)) }},
		{"a profile's timeout is a ceiling: none (0s) is refused",
			func() error { return check(with(prof(Sudo), func(r *Request) { r.Timeout = dur(0) }), cfg(nil)) },
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Timeout = dur(30 * time.Second) }), cfg(nil))
			}},
		{"a profile's timeout is a ceiling: longer is refused, whoever asks",
			func() error {
				return check(with(prof(CommandLine), func(r *Request) { r.Timeout = dur(2 * time.Minute) }), cfg(nil))
			},
			func() error {
				return check(with(prof(CommandLine), func(r *Request) { r.Timeout = dur(time.Minute) }), cfg(nil))
			}},
		{"a profile's retries are a ceiling",
			func() error { return check(with(prof(Spool), func(r *Request) { r.Retries = num(2) }), cfg(nil)) },
			func() error { return check(with(prof(Spool), func(r *Request) { r.Retries = num(1) }), cfg(nil)) }},
		{"in a spool request only profiles run",
			func() error { return check(Request{From: Spool, Argv: []string{"id"}}, cfg(nil)) },
			func() error { return check(prof(Spool), cfg(nil)) }},
		{"in a spool request --inherit-env is refused",
			func() error { return check(with(prof(Spool), func(r *Request) { r.Inherit = true }), cfg(&yes)) },
			func() error { return check(Request{From: Spool, Argv: []string{"id"}}, cfg(&yes)) }},
		{"a plain caller runs free commands unless the config says no",
			func() error { no := false; return check(Request{From: CommandLine, Argv: []string{"id"}}, cfg(&no)) },
			func() error { return check(Request{From: CommandLine, Argv: []string{"id"}}, cfg(nil)) }},
		{"under sudo the backends' own commands are refused",
			func() error { return CheckCommand("_wrap", false, sudo) }, func() error { return CheckCommand("schedule", false, sudo) }},
		{"under sudo worker and drain are refused",
			func() error { return CheckCommand("drain", false, sudo) }, func() error { return CheckCommand("drain", false, Mode{}) }},
		{"under sudo setup is refused unless sudo made the caller root",
			func() error { return CheckCommand("setup", false, sudo) }, func() error { return CheckCommand("setup", false, Mode{Sudo: true, Root: true}) }},
		{"under sudo a command that reads a file the caller names is refused",
			func() error { return CheckCommand("config check", true, sudo) }, func() error { return CheckCommand("config check", false, sudo) }},
		{"under sudo queue pause and resume need allow_queue_control",
			func() error { return CheckQueueControl(sudo, cfg(nil)) },
			func() error { c := cfg(nil); c.AllowQueueControl = true; return CheckQueueControl(sudo, c) }},
		{"under sudo only a profile job may be rerun",
			func() error { return check(Request{From: Sudo, Argv: []string{"id"}, RerunOf: "x"}, cfg(&yes)) },
			func() error { return check(with(prof(Sudo), func(r *Request) { r.RerunOf = "x" }), cfg(nil)) }},
		{"a profile that names a queue keeps its jobs there",
			func() error {
				c := cfg(nil)
				p := c.Profiles["build"]
				p.Queue = "build"
				c.Profiles["build"] = p
				c.Queues = map[string]config.Queue{"build": {MaxRunning: 1}, "other": {}}
				return check(with(prof(Sudo), func(r *Request) { r.Queue = str("other") }), c)
			},
			func() error {
				c := cfg(nil)
				c.Queues = map[string]config.Queue{"other": {}}
				return check(with(prof(CommandLine), func(r *Request) { r.Queue = str("other") }), c)
			}},
		{"under sudo a profile's jobs stay in its queue, default when it names none",
			func() error {
				c := cfg(nil)
				c.Queues = map[string]config.Queue{"other": {}}
				return check(with(prof(Sudo), func(r *Request) { r.Queue = str("other") }), c)
			},
			func() error { return check(with(prof(Sudo), func(r *Request) { r.Queue = str("default") }), cfg(nil)) }},
		{"a timeout that wrapped around to below zero is no way past the ceiling",
			func() error {
				return check(with(prof(CommandLine), func(r *Request) { r.Timeout = dur(-time.Hour) }), cfg(nil))
			},
			func() error {
				return check(with(prof(CommandLine), func(r *Request) { r.Timeout = dur(time.Second) }), cfg(nil))
			}},
		{"under sudo the grace is a ceiling",
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Grace = dur(1000 * time.Hour) }), cfg(nil))
			},
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.Grace = dur(5 * time.Second) }), cfg(nil))
			}},
		{"in a spool request the retry delay is a ceiling",
			func() error {
				return check(with(prof(Spool), func(r *Request) { r.RetryDelay = dur(1000 * time.Hour) }), cfg(nil))
			},
			func() error {
				return check(with(prof(CommandLine), func(r *Request) { r.RetryDelay = dur(1000 * time.Hour) }), cfg(nil))
			}},
		{"under sudo a malformed --after ID is refused",
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.After = []string{"../x"} }), cfg(nil))
			},
			func() error {
				return check(with(prof(Sudo), func(r *Request) { r.After = []string{"20261204-030000.000000-abcdef"} }), cfg(nil))
			}},
		{"a worker or drain as root refuses another user's state dir",
			func() error { return CheckWorkerStateDir("/s", 0, 1000, "cmesh") }, func() error { return CheckWorkerStateDir("/s", 1000, 1000, "cmesh") }},
	}
	for _, r := range rules {
		if err := r.refused(); errs.KindOf(err) != errs.Denied {
			t.Errorf("%s: the refused example got %v (kind %v), want a refusal (exit 5)", r.rule, err, errs.KindOf(err))
		}
		if err := r.allow(); err != nil {
			t.Errorf("%s: the allowed example was refused: %v", r.rule, err)
		}
	}
}

func check(r Request, cfg *config.Config) error {
	_, err := Check(r, cfg)
	return err
}
