package jobs

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The audit line must reach a syslog daemon in the form log/syslog sent:
// "<86>Stamp cmesh-run[PID]: LINE\n", datagram first, stream otherwise.
func TestSyslogWriter(t *testing.T) {
	dir := t.TempDir()
	want := regexp.MustCompile(`^<86>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d cmesh-run\[` + strconv.Itoa(os.Getpid()) + `\]: \{"outcome":"started"\}\n$`)

	t.Run("datagram", func(t *testing.T) {
		path := filepath.Join(dir, "dgram")
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		w, err := dialSyslog([]string{filepath.Join(dir, "missing"), path}, logAuthprivInfo, "cmesh-run")
		if err != nil {
			t.Fatal(err)
		}
		if n, err := w.Write([]byte(`{"outcome":"started"}` + "\n")); err != nil || n != 22 {
			t.Fatalf("Write = %d, %v", n, err)
		}
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !want.Match(buf[:n]) {
			t.Fatalf("got %q", buf[:n])
		}
	})

	t.Run("stream", func(t *testing.T) {
		path := filepath.Join(dir, "stream")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		w, err := dialSyslog([]string{path}, logAuthprivInfo, "cmesh-run")
		if err != nil {
			t.Fatal(err)
		}
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := w.Write([]byte(`{"outcome":"started"}`)); err != nil {
			t.Fatal(err)
		}
		syscall.Close(w.fd)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got []byte
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !want.Match(got) {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("daemon restarted", func(t *testing.T) {
		path := filepath.Join(dir, "restart")
		listen := func() *net.UnixConn {
			c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		old := listen()
		w, err := dialSyslog([]string{path}, logAuthprivInfo, "cmesh-run")
		if err != nil {
			t.Fatal(err)
		}
		old.Close()
		os.Remove(path)
		c := listen()
		defer c.Close()
		if _, err := w.Write([]byte(`{"outcome":"started"}`)); err != nil {
			t.Fatalf("Write after the daemon restarted: %v", err)
		}
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil || !want.Match(buf[:n]) {
			t.Fatalf("the new daemon got %q, %v", buf[:n], err)
		}
	})

	t.Run("no daemon", func(t *testing.T) {
		if _, err := dialSyslog([]string{filepath.Join(dir, "missing")}, logAuthprivInfo, "cmesh-run"); err == nil {
			t.Fatal("dialSyslog found a daemon at a path that does not exist")
		}
	})
}
