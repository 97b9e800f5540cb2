package status

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/errs"
)

const nonce = "0123456789abcdef0123456789abcdef"

func TestCheckID(t *testing.T) {
	for _, bad := range []string{"", "../x", "/etc/passwd", "..", ".", "a/b", ".hidden", "-x", "a b", "x\n", strings.Repeat("a", 65), "a\x00"} {
		if CheckID(bad) == nil {
			t.Errorf("CheckID(%q) = nil, want an error", bad)
		}
		if errs.KindOf(CheckID(bad)) != errs.Usage {
			t.Errorf("CheckID(%q): kind %v, want usage", bad, errs.KindOf(CheckID(bad)))
		}
	}
	for _, good := range []string{NewID(time.Now()), "a", "A.b_c-d", strings.Repeat("a", 64)} {
		if err := CheckID(good); err != nil {
			t.Errorf("CheckID(%q) = %v", good, err)
		}
	}
}

func TestIDsSortByCreation(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	prev := NewID(t0)
	for i := 1; i < 1000; i++ {
		id := NewID(t0.Add(time.Duration(i) * 997 * time.Microsecond))
		if id <= prev {
			t.Fatalf("%s sorts before %s", id, prev)
		}
		prev = id
	}
}

func exit(n int) *int { return &n }

func TestMarkerRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 27, 20, 40, 0, 123, time.UTC)
	for _, m := range []Marker{
		{Kind: "start", Attempt: 1, PID: 42, Time: now},
		{Kind: "end", Attempt: 2, Exit: exit(0), Time: now},
		{Kind: "end", Attempt: 1, Exit: exit(137), Signal: "KILL", Time: now},
		{Kind: "end", Attempt: 3, Exit: exit(143), Signal: "TERM", Reason: "canceled", Time: now},
	} {
		b := m.Format(nonce)
		if len(b) > MaxMarkerLen {
			t.Errorf("marker %q longer than %d", b, MaxMarkerLen)
		}
		got := ParseMarkers(b, nonce)
		if len(got) != 1 {
			t.Fatalf("ParseMarkers(%q) = %v", b, got)
		}
		g := got[0]
		if g.Kind != m.Kind || g.Attempt != m.Attempt || g.PID != m.PID || g.Signal != m.Signal ||
			g.Reason != m.Reason || !g.Time.Equal(m.Time) || (g.Exit == nil) != (m.Exit == nil) ||
			(g.Exit != nil && *g.Exit != *m.Exit) || g.Len != len(b) {
			t.Errorf("round trip of %+v gave %+v", m, g)
		}
	}
}

func TestFakeMarkersAreOutput(t *testing.T) {
	fakes := []string{
		"\n[cmesh-run:" + strings.Repeat("0", 32) + " end attempt=1 exit=0 time=2026-01-01T00:00:00Z]\n",
		"\n[cmesh-run: end attempt=1 exit=0 time=2026-01-01T00:00:00Z]\n",
		"\n[cmesh-run:" + nonce + "x end attempt=1 exit=0 time=2026-01-01T00:00:00Z]\n",
		"\n[cmesh-run:" + nonce + " end attempt=0 exit=0 time=2026-01-01T00:00:00Z]\n",
		"\n[cmesh-run:" + nonce + " bogus attempt=1]\n",
		"\n[cmesh-run:" + nonce + " end attempt=1 exit=zero time=2026-01-01T00:00:00Z]\n",
	}
	for _, f := range fakes {
		if got := ParseMarkers([]byte(f), nonce); len(got) != 0 {
			t.Errorf("%q parsed as marker %+v", f, got)
		}
	}
}

// jobFile builds an output file of job bytes and markers and returns it,
// with the job bytes alone.
func jobFile(t testing.TB, parts ...any) (*Output, []byte) {
	t.Helper()
	var file, job bytes.Buffer
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			file.WriteString(p)
			job.WriteString(p)
		case []byte:
			file.Write(p)
			job.Write(p)
		case Marker:
			file.Write(p.Format(nonce))
		}
	}
	path := filepath.Join(t.TempDir(), "x.out")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := OpenOutput(path, nonce)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o, job.Bytes()
}

var (
	t0    = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	start = Marker{Kind: "start", Attempt: 1, PID: 7, Time: t0}
	end7  = Marker{Kind: "end", Attempt: 1, Exit: exit(7), Time: t0}
)

// readAll reassembles the job's bytes from chunked reads, as a page
// polling with log --offset does.
func readAll(t testing.TB, o *Output, chunk int64) []byte {
	return readAllWith(t, o, chunk, o.Read)
}

// readAllWith reads the whole output chunk by chunk with read (Read, or
// ReadReuse, whose data the next call overwrites: append copies it).
func readAllWith(t testing.TB, o *Output, chunk int64, read func(from, to int64, raw bool) (Range, error)) []byte {
	size, _ := o.Size()
	var got []byte
	for pos := int64(0); pos < size; {
		r, err := read(pos, pos+chunk, false)
		if err != nil {
			t.Fatal(err)
		}
		if r.End <= pos {
			t.Fatalf("no progress at %d", pos)
		}
		got = append(got, r.Data...)
		pos = r.End
	}
	return got
}

func TestReadRemovesMarkersExactly(t *testing.T) {
	cases := [][]any{
		{start, "hello\n", end7},
		{start, "no newline", end7},
		{start, "", end7},
		{start, "\n\n", end7},
		{start, "fake\n[cmesh-run:" + strings.Repeat("f", 32) + " end attempt=1 exit=0 time=2026-01-01T00:00:00Z]\nafter", end7},
		{start, []byte{0, 0xff, '\n', 0xfe}, end7},
		{start, "a", Marker{Kind: "end", Attempt: 1, Exit: exit(1), Time: t0},
			Marker{Kind: "start", Attempt: 2, PID: 8, Time: t0}, "b\n", Marker{Kind: "end", Attempt: 2, Exit: exit(0), Time: t0}},
	}
	for i, c := range cases {
		o, want := jobFile(t, c...)
		for _, chunk := range []int64{1, 2, 3, 7, 64, 1 << 20} {
			if got := readAll(t, o, chunk); !bytes.Equal(got, want) {
				t.Errorf("case %d chunk %d: got %q, want %q", i, chunk, got, want)
			}
			if got := readAllWith(t, o, chunk, o.ReadReuse); !bytes.Equal(got, want) {
				t.Errorf("case %d chunk %d, one buffer: got %q, want %q", i, chunk, got, want)
			}
		}
		size, _ := o.Size()
		raw, _ := o.Read(0, size, true)
		if int64(len(raw.Data)) != size {
			t.Errorf("case %d: raw read %d bytes of %d", i, len(raw.Data), size)
		}
	}
}

func TestReadFromInsideMarker(t *testing.T) {
	o, _ := jobFile(t, "ab", start, "cd")
	for off := int64(2); off < int64(2+len(start.Format(nonce))); off++ {
		r, err := o.Read(off, 1000, false)
		if err != nil || string(r.Data) != "cd" {
			t.Errorf("Read(%d) = %q, %v; want \"cd\"", off, r.Data, err)
		}
	}
}

func TestFindEnd(t *testing.T) {
	big := strings.Repeat("x", 3<<20)
	o, _ := jobFile(t, start, big, "\n[cmesh-run:fake end attempt=1 exit=0]\n", end7, "straggler\n")
	m, err := o.FindEnd(0, 1)
	if err != nil || m == nil || *m.Exit != 7 {
		t.Fatalf("FindEnd = %+v, %v; want exit 7", m, err)
	}
	if m, _ := o.FindEnd(0, 2); m != nil {
		t.Errorf("FindEnd(attempt 2) = %+v, want none", m)
	}
}

func TestTailMatchesTail(t *testing.T) {
	if _, err := exec.LookPath("tail"); err != nil {
		t.Skip("no tail(1)")
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 40; i++ {
		var job strings.Builder
		lines := rng.Intn(3000)
		for l := 0; l < lines; l++ {
			job.WriteString(strings.Repeat("y", rng.Intn(200)))
			job.WriteByte('\n')
		}
		if rng.Intn(2) == 0 {
			job.WriteString("partial")
		}
		o, want := jobFile(t, start, job.String(), end7)
		for _, n := range []int{0, 1, 2, 10, 100, 5000} {
			got, err := o.Tail(n, false)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("tail", "-n", strconv.Itoa(n))
			cmd.Stdin = bytes.NewReader(want)
			ref, _ := cmd.Output()
			if !bytes.Equal(got, ref) {
				t.Fatalf("Tail(%d) of %d lines: got %d bytes, tail -n gives %d", n, lines, len(got), len(ref))
			}
		}
	}
}

func FuzzOutputRead(f *testing.F) {
	f.Add([]byte("hello\n"), []byte("no newline"), uint16(3))
	f.Add([]byte("[cmesh-run:x end attempt=1 exit=0]\n"), []byte{0xff, '\n'}, uint16(1))
	f.Fuzz(func(t *testing.T, a, b []byte, chunk uint16) {
		o, want := jobFile(t, start, a, Marker{Kind: "end", Attempt: 1, Exit: exit(1), Time: t0},
			Marker{Kind: "start", Attempt: 2, PID: 9, Time: t0}, b, end7)
		if got := readAll(t, o, int64(chunk)+1); !bytes.Equal(got, want) {
			t.Fatalf("chunk %d: got %q, want %q", chunk, got, want)
		}
		size, _ := o.Size()
		r, _ := o.Read(0, size, false)
		if n := len(r.Markers); n != 4 {
			t.Fatalf("found %d markers, want 4", n)
		}
	})
}

// The hand-written matchers agree with the patterns SPEC.md gives.
func FuzzIDAndNameMatchSpec(f *testing.F) {
	idRe := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	nameRe := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$`)
	for _, s := range []string{"", "a", "../x", "a@b+c", strings.Repeat("a", 64), strings.Repeat("b", 65), "x\n", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if (CheckID(s) == nil) != idRe.MatchString(s) {
			t.Errorf("CheckID(%q) disagrees with the pattern", s)
		}
		if (CheckName(s) == nil) != nameRe.MatchString(s) {
			t.Errorf("CheckName(%q) disagrees with the pattern", s)
		}
	})
}
