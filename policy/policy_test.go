package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
)

var build = config.Profile{
	Command: []string{"/opt/cmesh/scripts/pushfin.sh", "-o", "{org}", "-n", "{name}", "--tag={org}-{name}"},
	Args:    map[string]string{"org": "[a-z0-9-]+", "name": "[a-z0-9-]+"},
	Name:    "{org}-{name}",
}

func TestExpand(t *testing.T) {
	e, err := Expand("build", build, map[string]string{"org": "mars", "name": "mpvg"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/opt/cmesh/scripts/pushfin.sh", "-o", "mars", "-n", "mpvg", "--tag=mars-mpvg"}
	if strings.Join(e.Argv, "\x00") != strings.Join(want, "\x00") || e.Name != "mars-mpvg" {
		t.Errorf("Expand = %q %q", e.Argv, e.Name)
	}
}

func TestExpandRefuses(t *testing.T) {
	for _, args := range []map[string]string{
		{"org": "mars;id", "name": "x"},
		{"org": "../..", "name": "x"},
		{"org": "$(id)", "name": "x"},
		{"org": "mars\nid", "name": "x"},
		{"org": "mars\n", "name": "x"}, // $ must not match before a final newline
		{"org": "", "name": "x"},
		{"org": strings.Repeat("a", 10<<10) + ";", "name": "x"},
		{"org": "mars"},                            // missing
		{"org": "mars", "name": "x", "extra": "1"}, // unknown
		{"org": "a b", "name": "x"},
	} {
		_, err := Expand("build", build, args)
		if errs.KindOf(err) != errs.Denied {
			t.Errorf("Expand(%q) = %v, want a refusal", args, err)
		}
	}
}

// A pattern that allows spaces still cannot make two words: the value
// stays inside its argv element.
func TestValueNeverSplits(t *testing.T) {
	p := config.Profile{Command: []string{"echo", "{msg}"}, Args: map[string]string{"msg": ".*"}}
	e, err := Expand("p", p, map[string]string{"msg": "a b; rm -rf / $(id)"})
	if err != nil || len(e.Argv) != 2 || e.Argv[1] != "a b; rm -rf / $(id)" {
		t.Errorf("Expand = %q, %v", e.Argv, err)
	}
}

func TestParseArgs(t *testing.T) {
	if m, err := ParseArgs([]string{"a=1", "b=x=y"}); err != nil || m["a"] != "1" || m["b"] != "x=y" {
		t.Errorf("ParseArgs = %v, %v", m, err)
	}
	for _, bad := range [][]string{{"noequals"}, {"=v"}, {"a=1", "a=2"}} {
		if _, err := ParseArgs(bad); errs.KindOf(err) != errs.Denied {
			t.Errorf("ParseArgs(%q) = %v", bad, err)
		}
	}
}

func TestCheckConfigFile(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to make root-owned files")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	os.WriteFile(p, []byte("backend = \"at\"\n"), 0o644)
	if err := CheckConfigFile(p); err != nil {
		t.Errorf("root 0644: %v", err)
	}
	os.Chmod(p, 0o664)
	if err := CheckConfigFile(p); errs.KindOf(err) != errs.Denied {
		t.Errorf("group-writable: %v", err)
	}
	os.Chmod(p, 0o644)
	os.Chown(p, 33, 33)
	if err := CheckConfigFile(p); errs.KindOf(err) != errs.Denied {
		t.Errorf("owned by uid 33: %v", err)
	}
	l := filepath.Join(dir, "link.toml")
	os.Symlink(p, l)
	if err := CheckConfigFile(l); errs.KindOf(err) != errs.Denied {
		t.Errorf("symlink: %v", err)
	}
	if err := CheckConfigFile(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("missing: %v", err)
	}
}

func TestFreeCommands(t *testing.T) {
	yes, no := true, false
	for _, c := range []struct {
		set  *bool
		sudo bool
		want bool
	}{{nil, false, true}, {nil, true, false}, {&yes, true, true}, {&no, false, false}} {
		if got := FreeCommandsAllowed(&config.Config{AllowFreeCommands: c.set}, Mode{Sudo: c.sudo}); got != c.want {
			t.Errorf("%+v: %v", c, got)
		}
	}
}

// Under sudo a caller may run only what its role needs: never the
// backends' own commands, the spool's worker, setup (unless sudo made it
// root), nor a command that reads a file it names.
func TestCheckCommand(t *testing.T) {
	sudo := Mode{Sudo: true, Asker: "www-data"}
	root := Mode{Sudo: true, Asker: "admin", Root: true}
	plain := Mode{}
	for _, c := range []struct {
		name   string
		files  bool
		mode   Mode
		denied bool
	}{
		{"_wrap", false, sudo, true}, {"_exec", false, sudo, true}, {"_man", false, sudo, true}, {"_hook", false, sudo, true},
		{"_wrap", false, root, true}, {"worker", false, sudo, true}, {"drain", false, sudo, true},
		{"worker", false, root, true}, {"setup", false, sudo, true}, {"setup", false, root, false},
		{"config check", true, sudo, true}, {"config check", false, sudo, false}, {"doctor", true, sudo, true},
		{"doctor", false, sudo, false}, {"schedule", false, sudo, false}, {"status", false, sudo, false},
		{"_wrap", false, plain, false}, {"worker", false, plain, false}, {"config check", true, plain, false},
	} {
		err := CheckCommand(c.name, c.files, c.mode)
		if got := err != nil; got != c.denied {
			t.Errorf("CheckCommand(%q, files=%v, %+v) = %v, want denied=%v", c.name, c.files, c.mode, err, c.denied)
		}
		if err != nil && errs.KindOf(err) != errs.Denied {
			t.Errorf("%s: kind %v, want denied (exit 5)", c.name, errs.KindOf(err))
		}
	}
}
