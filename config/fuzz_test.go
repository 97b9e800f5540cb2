package config

import (
	"regexp"
	"testing"
)

// Any input: no panic, and every error names a line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"backend = \"at\"\n",
		"[profiles.p]\ncommand = [\"a\", \"{x}\"]\nargs = { x = \"[a-z]+\" }\n",
		"[retain]\nmax_age = \"30d\"\n",
		"timeout = \"x\"\n",
		"[env]\n\"A B\" = \"1\"\n",
		"max_running = -1\n",
		"[profiles.p]\ncommand = []\n",
		"[profiles.p]\ncommand = [\"a\"]\nargs = { x = \"(\" }\n",
		"[env]\n\" \"=0",
		"[env]\n\"\"=0",
		"[profiles]\n0=[]",
	} {
		f.Add(s)
	}
	line := regexp.MustCompile(`^line \d+: `)
	f.Fuzz(func(t *testing.T, s string) {
		var c Config
		err := Parse([]byte(s), &c)
		if err != nil && !line.MatchString(err.Error()) {
			t.Errorf("Parse(%q): error without a line: %v", s, err)
		}
	})
}
