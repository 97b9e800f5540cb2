package status

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseProgress(t *testing.T) {
	for in, want := range map[string]string{
		"3/4 deploying":          "3/4 deploying",
		"0/1":                    "0/1 ",
		"24/24 done\r":           "24/24 done",
		"5/5   spaced  ":         "5/5 spaced",
		"9/4 too far":            "",
		"-1/4":                   "",
		"+1/4":                   "",
		"1/0":                    "",
		"a/b":                    "",
		"[9/24] build":           "",
		"1/2 \x1b[31mred":        "",
		"1/2 \xff":               "",
		"1/2/3":                  "",
		"99999999999999999999/1": "",
	} {
		p, ok := ParseProgress([]byte(in))
		got := ""
		if ok {
			got = strings.TrimSpace(strings.Join([]string{strconv.FormatInt(p.Done, 10) + "/" + strconv.FormatInt(p.Total, 10), p.Message}, " "))
			if p.Message == "" {
				got += " "
			}
		}
		if strings.TrimSpace(got) != strings.TrimSpace(want) || ok != (want != "") {
			t.Errorf("ParseProgress(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
	long := "1/2 " + strings.Repeat("é", 150)
	if p, ok := ParseProgress([]byte(long)); !ok || len(p.Message) > MaxProgressMessage || !strings.HasPrefix(long[4:], p.Message) {
		t.Errorf("a long message: %q %v", p.Message, ok)
	}
}

func TestReadProgress(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.progress")
	os.WriteFile(p, []byte("1/3 a\n2/3 b\nnoise\n"), 0o644)
	if got := ReadProgress(p); got == nil || got.Done != 2 || got.Message != "b" || got.UpdatedAt.IsZero() {
		t.Errorf("ReadProgress: %+v, want the last good line 2/3 b", got)
	}
	// Only the last 4 KiB are read: a line cut by that bound is not taken.
	os.WriteFile(p, []byte("1/3 early\n"+strings.Repeat("x", 2*ProgressTail)), 0o644)
	if got := ReadProgress(p); got != nil {
		t.Errorf("ReadProgress of a file whose last 4 KiB hold no line: %+v", got)
	}
	link := filepath.Join(dir, "l.progress")
	os.Symlink(p, link)
	os.WriteFile(p, []byte("1/3 a\n"), 0o644)
	if got := ReadProgress(link); got != nil {
		t.Errorf("a link was followed: %+v", got)
	}
	if got := ReadProgress(filepath.Join(dir, "none")); got != nil {
		t.Errorf("a missing file: %+v", got)
	}
}
