// Package proc is process plumbing: starting programs without os/exec's
// extra child, detaching a job from its caller, closing inherited
// descriptors, telling a live process from a recycled PID, and stopping a
// whole process tree. It knows nothing of jobs.
package proc

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ProcStart returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/PID/stat), and false when there is no such
// process or it is a zombie: a zombie no longer runs anything.
func ProcStart(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields we want follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	n, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// Alive reports whether the process pid that started at start (ticks since
// boot, during boot bootID) still runs. A PID recycled by another process,
// or a record from before a reboot, is not alive.
func Alive(pid int, start uint64, bootID string) bool {
	if bootID != "" && bootID != BootID() {
		return false
	}
	got, ok := ProcStart(pid)
	return ok && got == start
}

var bootID = sync.OnceValue(func() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
})

var hostname = sync.OnceValue(func() string {
	h, _ := os.Hostname()
	// sethostname(2) takes any bytes; a marker and a record need a word.
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, h)
	if len(h) > 64 {
		h = h[:64]
	}
	return h
})

// Hostname is this machine's name as its processes see it (a node in a
// UTS namespace of its own has its own): a job's record names the host
// its wrapper runs on, and only that host's /proc can tell whether the
// wrapper lives.
func Hostname() string { return hostname() }

// BootID identifies the current boot.
func BootID() string { return bootID() }
