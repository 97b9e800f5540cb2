package backend

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kballard/go-shellquote"

	"github.com/cmesh/cmesh-run/status"
)

// nasty is argv that has broken naive quoting somewhere.
var nasty = [][]string{
	{"true"},
	{"prog", ""},
	{"prog", "a b", "  lead", "trail  "},
	{"prog", "it's", `"`, `\`, `\\n`, "'"},
	{"#x", "#", "a#b"},
	{"FOO=bar", "x=y", "~", "~root", "a=~/x", "a:~/x"},
	{"prog", "line1\nline2", "\t", "\r"},
	{"prog", "$(id)", "`id`", "${HOME}", "$HOME", "$", "$$"},
	{"prog", "*", "?", "[a]", "{a,b}", "a;b", "a|b", "a&b", "a>b", "<", "(", ")", "!"},
	{"prog", "\xff\xfe", "caf\xc3", "\x80", "ü", "日本"},
	{"if", "then", "fi", "}", "{", "!", "done"},
	{"-e", "-n", "--", "-"},
	{"prog", strings.Repeat("x'\"$ \n", 100<<10/6)},
}

// shArgv runs words through a real shell and returns the argv it built.
func shArgv(t testing.TB, shell string, words string) []string {
	t.Helper()
	// The script goes on stdin, as at feeds it: a -c argument is limited
	// to 128 KiB, a quoted 100 KB argument is not.
	cmd := exec.Command(shell)
	cmd.Stdin = strings.NewReader(`exec printf '%s\0' ` + words + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c: %v", shell, err)
	}
	parts := strings.Split(string(out), "\x00")
	return parts[:len(parts)-1]
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func shells(t testing.TB) []string {
	var s []string
	for _, sh := range []string{"/bin/sh", "/bin/dash", "/bin/bash"} {
		if _, err := os.Stat(sh); err == nil {
			s = append(s, sh)
		}
	}
	if len(s) == 0 {
		t.Skip("no shell")
	}
	return s
}

func TestQuoteRoundTripThroughShells(t *testing.T) {
	for _, sh := range shells(t) {
		for _, argv := range nasty {
			got := shArgv(t, sh, Quote(argv...))
			if !equal(got, argv) {
				t.Errorf("%s: Quote(%q) = %s\nsplit back to %q", sh, argv, Quote(argv...), got)
			}
		}
	}
}

// The job's argv[0] comes first on the line after exec: a NAME=value or a
// '#word' there must still be the program, not an assignment or comment.
func TestQuoteCommandPosition(t *testing.T) {
	for _, w := range []string{"FOO=bar", "#x", "if", "!"} {
		q := Quote(w)
		out, _ := exec.Command("/bin/sh", "-c", "exec "+q+" 2>&1; echo unreached").CombinedOutput()
		if !strings.Contains(string(out), "not found") && !strings.Contains(string(out), "No such file") {
			t.Errorf("exec %s: want the shell to look for a program named %q, got %q", q, w, out)
		}
	}
}

func TestQuoteAgreesWithShellquoteSplit(t *testing.T) {
	for _, argv := range nasty {
		valid := true
		for _, a := range argv {
			valid = valid && utf8.ValidString(a)
		}
		if !valid {
			continue // Split decodes runes; sh is the authority for raw bytes
		}
		got, err := shellquote.Split(Quote(argv...))
		if err != nil || !equal(got, argv) {
			t.Errorf("Split(Quote(%q)) = %q, %v", argv, got, err)
		}
	}
}

func FuzzQuote(f *testing.F) {
	for _, argv := range nasty {
		if len(argv) >= 2 && len(argv[1]) < 1000 {
			f.Add(argv[0], argv[1])
		}
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if strings.ContainsRune(a, 0) || strings.ContainsRune(b, 0) {
			t.Skip("argv cannot hold NUL")
		}
		argv := []string{a, b}
		q := Quote(argv...)
		if utf8.ValidString(a) && utf8.ValidString(b) {
			got, err := shellquote.Split(q)
			if err != nil || !equal(got, argv) {
				t.Fatalf("Split(Quote(%q)) = %q, %v", argv, got, err)
			}
		}
		if got := shArgv(t, "/bin/sh", q); !equal(got, argv) {
			t.Fatalf("sh split Quote(%q) = %s back to %q", argv, q, got)
		}
	})
}

// The whole script: sh must hand the wrapper exactly the argv, and the
// spec on stdin exactly as encoded.
func TestScriptDeliversArgvAndSpec(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake wrapper")
	argsOut, stdinOut := filepath.Join(dir, "args"), filepath.Join(dir, "stdin")
	err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\0' \"$@\" > '"+argsOut+"'\ncat > '"+stdinOut+"'\n"), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	argv := []string{"FOO=bar", "#x", "it's", "a\nCMESH_RUN_SPEC_n\nb", "\xff"}
	spec := status.Spec{Nonce: "n0nce", Workdir: "/tmp/a b", Env: []string{"A=1", "B=x\ny", "C=\xff'\""}}
	script := Script(fake, "/var/lib/x y", "ID1", argv, spec)
	cmd := exec.Command("/bin/sh")
	cmd.Stdin = bytes.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script: %v: %s\n%s", err, out, script)
	}
	raw, _ := os.ReadFile(argsOut)
	got := strings.Split(string(raw), "\x00")
	want := append([]string{"_wrap", "--state-dir", "/var/lib/x y", "--id", "ID1", "--"}, argv...)
	if !equal(got[:len(got)-1], want) {
		t.Errorf("argv = %q, want %q", got, want)
	}
	in, _ := os.ReadFile(stdinOut)
	dec, err := status.DecodeSpec(bytes.NewReader(in))
	if err != nil || dec.Nonce != spec.Nonce || dec.Workdir != spec.Workdir || !equal(dec.Env, spec.Env) {
		t.Errorf("spec = %+v, %v; want %+v", dec, err, spec)
	}
}

// --command: whatever shellquote.Split makes of a string is what the job
// runs, after a trip through Quote and a real sh.
func FuzzCommandSplit(f *testing.F) {
	for _, s := range []string{`a "b c" 'd e' f\ g`, `$HOME '$(id)' "x\"y"`, `#x ~ FOO=bar`, "a\\\nb", `"unterminated`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := shellquote.Split(s)
		if err != nil || len(words) == 0 || len(words) > 50 {
			return
		}
		for _, w := range words {
			if strings.ContainsRune(w, 0) {
				return
			}
		}
		if got := shArgv(t, "/bin/sh", Quote(words...)); !equal(got, words) {
			t.Fatalf("--command %q: split to %q, sh ran %q", s, words, got)
		}
	})
}
