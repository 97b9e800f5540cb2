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
	} {
		var cfg Config
		err := Parse([]byte(c.in), &cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want %q", c.in, err, c.want)
		}
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
