package backend

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The $'...' form is for people and for bash: bash reads it back as the
// same words, byte for byte.
func TestDisplayArgvRoundTrip(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	argv := []string{"plain", "a b", "it's", "\x1b[31mred\nstate: x", "tab\there", "\u202e", "bad\xffbyte", `back\slash`, "q'\\'x", "#x", "FOO=bar", ""}
	out, err := exec.Command(bash, "-c", `printf '%s\0' `+Display(argv)).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if !slices.Equal(got, argv) {
		t.Errorf("bash read %q back as %q", Display(argv), got)
	}
}
