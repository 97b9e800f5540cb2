package wrapper

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLookJobPath(t *testing.T) {
	dir := t.TempDir()
	bin1, bin2, work := filepath.Join(dir, "bin1"), filepath.Join(dir, "bin2"), filepath.Join(dir, "work")
	for _, d := range []string{bin1, bin2, work, filepath.Join(work, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, mode os.FileMode) {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
	}
	write(filepath.Join(bin1, "tool"), 0o644) // not runnable: the lookup goes on
	write(filepath.Join(bin2, "tool"), 0o755)
	write(filepath.Join(bin1, "first"), 0o755)
	write(filepath.Join(bin2, "first"), 0o755)
	write(filepath.Join(work, "sub", "local"), 0o755)
	os.Mkdir(filepath.Join(bin2, "adir"), 0o755)
	env := []string{"HOME=/x", "PATH=" + bin1 + ":" + bin2}
	cases := []struct {
		argv0, workdir string
		env            []string
		want           string
		ok             bool
	}{
		{"tool", work, env, filepath.Join(bin2, "tool"), true},
		{"first", work, env, filepath.Join(bin1, "first"), true},
		{"sub/local", work, env, filepath.Join(work, "sub", "local"), true},
		{filepath.Join(bin2, "tool"), work, env, filepath.Join(bin2, "tool"), true},
		{"missing", work, env, "", false},
		{"adir", work, env, "", false},
		{filepath.Join(bin1, "tool"), work, env, "", false},
		{"tool", filepath.Join(dir, "gone"), env, "", false},
		{"tool", work, []string{"PATH=:" + bin2}, "", false}, // a relative entry: _exec's case
		{"tool", work, nil, "", false},
		{"", work, env, "", false},
	}
	for _, c := range cases {
		got, ok := lookJobPath([]string{c.argv0, "arg"}, c.env, c.workdir)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("lookJobPath(%q, %v, %s) = %q, %v; want %q, %v", c.argv0, c.env, c.workdir, got, ok, c.want, c.ok)
		}
	}
}

// A traced exec does not get set-ID bits or file capabilities: such a
// program must start through _exec.
func TestPrivileged(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		mode os.FileMode
		want bool
	}{
		{0o755, false},
		{0o755 | os.ModeSetuid, true},
		{0o755 | os.ModeSetgid, true},
	} {
		p := filepath.Join(dir, c.mode.String())
		if err := os.WriteFile(p, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		if got := privileged(p); got != c.want {
			t.Errorf("privileged(%v) = %v, want %v", c.mode, got, c.want)
		}
	}
	if !privileged(filepath.Join(dir, "missing")) {
		t.Error("a file that cannot be looked at must take the careful path")
	}
}
