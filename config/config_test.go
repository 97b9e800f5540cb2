package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseErrorsNameLineAndKey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"backend = \"at\"\nbogus = 1\n", `line 2: unknown key "bogus"`},
		{"backend = \"cron\"\n", `line 1: key "backend"`},
		{"path = \"/bin\"\nmax_running = -1\n", `line 2: key "max_running"`},
		{"workdir = \"rel\"\n", `line 1: key "workdir"`},
		{"[env]\nA = \"1\"\n\"B-C\" = \"2\"\n", `key "env.B-C"`},
		{"backend = \n", "line 1"},
		{"[profiles.x]\ncommand = [\"a\"]\nnope = 1\n", `line 3: unknown key "profiles.x.nope"`},
		// sbatch options that would undo what the slurm backend relies on.
		{"[slurm]\noptions = [\"--output=/tmp/x\"]\n", `line 2: key "slurm.options": --output is cmesh-run's to set`},
		{"[slurm]\noptions = [\"-o/tmp/x\"]\n", `give sbatch options in their long form`},
		{"[slurm]\noptions = [\"-vo/tmp/x\"]\n", `give sbatch options in their long form`},
		{"[slurm]\noptions = [\"--ou=/tmp/x\"]\n", `--ou is cmesh-run's to set (--output)`},
		{"[slurm]\noptions = [\"--op=truncate\"]\n", `--op is cmesh-run's to set (--open-mode)`},
		{"[slurm]\noptions = [\"--export-f=/tmp/e\"]\n", `--export-f is cmesh-run's to set`},
		{"[slurm]\noptions = [\"--req\"]\n", `--req is cmesh-run's to set (--requeue)`},
		{"[slurm]\noptions = [\"--mem=1G\"]\n", `--mem is cmesh-run's to set`},
		{"[slurm]\noptions = [\"--job-name=x\"]\n", `--job-name is cmesh-run's to set`},
		{"[slurm]\noptions = [\"--export=ALL\"]\n", `--export is cmesh-run's to set`},
		{"[slurm]\noptions = [\"--requeue\"]\n", `--requeue is cmesh-run's to set`},
		{"[slurm]\noptions = [\"cpus=2\"]\n", `give sbatch options in their long form`},
		{"[slurm]\npartition = \"a b\"\n", `key "slurm.partition"`},
		{"[slurm]\nconf = \"slurm.conf\"\n", `key "slurm.conf": must be an absolute path`},
		// Hooks are argvs of programs by absolute path, never shell strings.
		{"on_finish = [\"curl\", \"-d\", \"x\"]\n", `line 1: key "on_finish": must be an argv`},
		{"on_failure = \"mail -s x root\"\n", `line 1`},
		{"[profiles.x]\ncommand = [\"/bin/true\"]\non_failure = [\"\"]\n", `key "profiles.x.on_failure"`},
	} {
		var cfg Config
		err := Parse([]byte(c.in), &cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestParseSlurm(t *testing.T) {
	var cfg Config
	in := "backend = \"slurm\"\n[slurm]\nconf = \"/etc/slurm/slurm.conf\"\npartition = \"build\"\naccount = \"web\"\noptions = [\"--cpus-per-task=2\", \"--qos=build\"]\n"
	if err := Parse([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Slurm.Partition != "build" || cfg.Slurm.Account != "web" || len(cfg.Slurm.Options) != 2 || cfg.Slurm.Conf != "/etc/slurm/slurm.conf" {
		t.Errorf("[slurm]: %+v", cfg.Slurm)
	}
}

func TestHooksFor(t *testing.T) {
	var cfg Config
	in := "on_finish = [\"/bin/a\"]\non_failure = [\"/bin/b\"]\nhook_timeout = \"5s\"\n" +
		"[profiles.p]\ncommand = [\"/bin/true\"]\non_finish = [\"/bin/c\", \"x\"]\n[profiles.q]\ncommand = [\"/bin/true\"]\nhook_timeout = \"1m\"\n"
	if err := Parse([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if h := cfg.HooksFor(""); h.OnFinish[0] != "/bin/a" || h.OnFailure[0] != "/bin/b" || h.Timeout != 5*time.Second {
		t.Errorf("no profile: %+v", h)
	}
	if h := cfg.HooksFor("p"); h.OnFinish[0] != "/bin/c" || h.OnFailure[0] != "/bin/b" {
		t.Errorf("profile p: %+v, want its own on_finish and the config's on_failure", h)
	}
	if h := cfg.HooksFor("q"); h.OnFinish[0] != "/bin/a" || h.Timeout != time.Minute {
		t.Errorf("profile q: %+v", h)
	}
	if h := (&Config{}).HooksFor(""); h.OnFinish != nil || h.Timeout != DefaultHookTimeout {
		t.Errorf("empty config: %+v", h)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(path, []byte("state_dir = \"/srv/s\"\n[env]\nNODE_OPTIONS = \"--max-old-space-size=8192\"\n"), 0o644)
	c, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/srv/s" || c.Env["NODE_OPTIONS"] == "" || c.Path != DefaultJobPath || c.Lang != "C.UTF-8" || c.Backend != "at" {
		t.Errorf("Load = %+v", c)
	}
	if _, err := Load(path+".missing", true); err == nil {
		t.Error("a missing required config loaded")
	}
	if c, err := Load(path+".missing", false); err != nil || c.File != "" {
		t.Errorf("a missing default config: %v", err)
	}
}

// A day count beyond what a Duration holds must not wrap around to a
// negative duration (a negative timeout is none: a way past a ceiling).
func TestParseDurationDaysOverflow(t *testing.T) {
	for _, s := range []string{"106752d", "9999999999d", "-1d"} {
		if d, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", s, d)
		}
	}
	if d, err := ParseDuration("30d"); err != nil || d != 30*24*time.Hour {
		t.Errorf("30d: %v, %v", d, err)
	}
}
