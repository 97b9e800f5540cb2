package proc

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// parents maps every process to its parent, from /proc.
func parents() map[int]int {
	m := map[int]int{}
	d, err := os.Open("/proc")
	if err != nil {
		return m
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + n + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if f[0] == "Z" || f[0] == "X" {
			continue // already dead, only waiting to be reaped
		}
		ppid, _ := strconv.Atoi(f[1])
		m[pid] = ppid
	}
	return m
}

// Descendants returns the live processes below root: its children, their
// children, and so on. The wrapper is a child subreaper, so a grandchild
// that called setsid and lost its parent is still found below it.
func Descendants(root int) []int {
	children := map[int][]int{}
	for pid, ppid := range parents() {
		children[ppid] = append(children[ppid], pid)
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// SignalTree sends sig to every process below root and to the process
// group led by the job.
func SignalTree(root, job int, sig syscall.Signal) {
	if job > 0 {
		_ = syscall.Kill(-job, sig)
	}
	for _, p := range Descendants(root) {
		_ = syscall.Kill(p, sig)
	}
}

// KillTree stops job, its process group and everything below it: SIGTERM,
// then SIGKILL to what is left after grace. It is for a job whose wrapper
// is gone; a live wrapper does this itself.
func KillTree(job int, grace time.Duration) {
	alive := func() bool { return processRuns(job) || len(Descendants(job)) > 0 }
	SignalTree(job, job, syscall.SIGTERM)
	_ = syscall.Kill(job, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for alive() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	SignalTree(job, job, syscall.SIGKILL)
	_ = syscall.Kill(job, syscall.SIGKILL)
}

// processRuns reports whether pid exists and is not a zombie.
func processRuns(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
