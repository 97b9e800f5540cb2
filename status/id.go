package status

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	"github.com/cmesh/cmesh-run/errs"
)

// matches reports whether s is one of [A-Za-z0-9], then at most max-1
// bytes that are alphanumeric or in extra. Written out by hand: the
// equivalent regexps with {0,63} and {0,127} cost milliseconds to compile
// at every start of the binary.
func matches(s string, max int, extra string) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || strings.IndexByte(extra, c) < 0) {
			return false
		}
	}
	return true
}

// NewID returns a job ID that sorts by creation time: a fixed-width UTC
// timestamp with microseconds, then random bits that break ties between
// processes scheduling in the same microsecond.
func NewID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405.000000") + "-" + hex.EncodeToString(b[:])
}

// NewNonce returns the secret that makes a job's markers unforgeable by
// the job's own output.
func NewNonce() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CheckID rejects anything that is not a well-formed job ID, so that no
// ID given on a command line can name a path outside the state dir.
func CheckID(id string) error {
	// [A-Za-z0-9][A-Za-z0-9._-]{0,63}, as SPEC.md says.
	if !matches(id, 64, "._-") {
		return errs.Errorf(errs.Usage, "invalid job ID %q", id).
			WithHint("a job ID is what schedule printed: letters, digits, '.', '_' and '-', at most 64")
	}
	return nil
}

// CheckName validates a job name as given to --name.
func CheckName(name string) error {
	// [A-Za-z0-9][A-Za-z0-9._@+-]{0,127}
	if !matches(name, 128, "._@+-") {
		return errs.Errorf(errs.Usage, "invalid job name %q", name).
			WithHint("a name starts with a letter or digit, then up to 127 of letters, digits and . _ @ + -")
	}
	return nil
}
