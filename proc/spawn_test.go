package proc

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRunInput(t *testing.T) {
	// Larger than a pipe's buffer: written while the program reads.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	out, err := RunInput("/bin/cat", []string{"cat"}, nil, big)
	if err != nil || !bytes.Equal(out, big) {
		t.Fatalf("cat: %d bytes back of %d, err %v", len(out), len(big), err)
	}

	// Standard output and error in one stream, the exit status as an error,
	// the working directory /, and only the environment given.
	t.Setenv("CMESH_RUN_LEAK", "leaked")
	out, err = RunInput("/bin/sh", []string{"sh", "-s"}, []string{"X=1"},
		[]byte(`echo "out $X $(pwd) ${CMESH_RUN_LEAK-unset}"; echo err >&2; exit 3`))
	if got := string(out); got != "out 1 / unset\nerr\n" {
		t.Errorf("output %q", got)
	}
	if err == nil || err.Error() != "exit status 3" {
		t.Errorf("err = %v, want exit status 3", err)
	}

	out, err = RunInput("/bin/sh", []string{"sh", "-c", "kill -TERM $$"}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("killed program: out %q, err %v", out, err)
	}

	if _, err := RunInput("/nonexistent/at", []string{"at"}, nil, nil); err == nil {
		t.Error("a missing program started")
	}
}

func TestDetachNewSession(t *testing.T) {
	// sh reads the whole script, in a session of its own, with / as its
	// directory; its PID is returned.
	dir := t.TempDir()
	pid, err := Detach([]byte("echo \"$$ $(pwd) $(cut -d' ' -f6 /proc/$$/stat)\" > " + dir + "/out\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for deadline := time.Now().Add(30 * time.Second); !strings.HasSuffix(got, "\n"); {
		if time.Now().After(deadline) {
			t.Fatalf("sh wrote %q in 30s", got)
		}
		time.Sleep(10 * time.Millisecond)
		b, _ := os.ReadFile(dir + "/out")
		got = string(b)
	}
	f := strings.Fields(got)
	if p := strconv.Itoa(pid); len(f) != 3 || f[0] != p || f[1] != "/" || f[2] != p {
		t.Fatalf("sh printed %q; want PID %d, /, and its own session %d", got, pid, pid)
	}
}

// A program that exits 0 without reading all of its input must not pass
// for one that got it: at would have queued a script cut short.
func TestRunInputReportsAShortWrite(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 1<<20) // more than a pipe holds
	if _, err := RunInput("/bin/true", []string{"true"}, nil, big); err == nil {
		t.Fatal("true read none of 1 MiB and RunInput said nothing")
	}
	if out, err := RunInput("/bin/sh", []string{"sh", "-c", "wc -c"}, nil, big); err != nil || strings.TrimSpace(string(out)) != "1048576" {
		t.Fatalf("wc -c of 1 MiB: %q, %v", out, err)
	}
}
