//go:build integration

package itest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SlurmPackages are Debian's packages of a Slurm cluster, and the tools the harness needs of them.
var (
	SlurmPackages = []string{"munge", "slurmctld", "slurmd", "slurm-client"}
	SlurmTools    = []string{"/usr/sbin/munged", "/usr/sbin/mungekey", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch", "/usr/bin/unshare"}
)

// Cluster is a real Slurm cluster on this machine: its own munged, a slurmctld and two slurmd,
// every address on loopback. Each slurmd runs in a PID and UTS namespace of its own, as on a
// remote node: its jobs have a hostname of their own (the node's Host) and PIDs that mean
// nothing on the submit side.
type Cluster struct {
	Dir, Conf, Name string
	Nodes           []*Node
	t               *testing.T
	munged, ctld    *exec.Cmd
	ctldPort        int
}

// Node is one slurmd.
type Node struct {
	Name, Host string
	Port       int
	cmd        *exec.Cmd // unshare, which kills the namespace's processes when it ends
}

// freePort returns a TCP port on loopback that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Must(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartCluster starts a two-node cluster in a fresh folder under /var/tmp (every user may pass
// through it: the web user's jobs run there too) and stops it, by PID, when t ends. The
// cluster's state is new, so Slurm's job IDs start at 1.
func StartCluster(t *testing.T) *Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "cmesh-run-slurm-")
	Must(t, err)
	Must(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "slurm.conf"), Name: "cmtest", t: t}
	for _, d := range []string{"munge", "ctld", "log", "n1", "n2"} {
		Must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	mdir := filepath.Join(dir, "munge")
	Must(t, exec.Command("chown", "munge:munge", mdir).Run())
	if out, err := exec.Command("runuser", "-u", "munge", "--", "/usr/sbin/mungekey", "-c", "-k", filepath.Join(mdir, "munge.key")).CombinedOutput(); err != nil {
		t.Fatalf("mungekey: %v: %s", err, out)
	}
	// munged runs as munge, started directly (not through runuser, whose death would leave it).
	c.munged = exec.Command("/usr/sbin/munged", "--foreground",
		"--key-file="+filepath.Join(mdir, "munge.key"), "--socket="+c.MungeSocket(),
		"--pid-file="+filepath.Join(mdir, "munged.pid"), "--log-file="+filepath.Join(mdir, "munged.log"),
		"--seed-file="+filepath.Join(mdir, "munged.seed"))
	mu := LookupAccount(t, "munge")
	c.munged.SysProcAttr = &syscall.SysProcAttr{Credential: mu.Credential()}
	c.start(c.munged, "munged")
	Poll(t, 10*time.Second, "munged's socket", func() (bool, string) {
		_, err := os.Stat(c.MungeSocket())
		return err == nil, fmt.Sprint(err)
	})

	host, err := os.Hostname()
	Must(t, err)
	host = strings.Split(host, ".")[0]
	c.ctldPort = freePort(t)
	c.Nodes = []*Node{{Name: "n1", Host: "c1", Port: freePort(t)}, {Name: "n2", Host: "c2", Port: freePort(t)}}
	var nodes strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&nodes, "NodeName=%s NodeHostname=%s NodeAddr=127.0.0.1 Port=%d CPUs=8 RealMemory=4000\n", n.Name, host, n.Port)
	}
	conf := fmt.Sprintf(`ClusterName=%s
SlurmctldHost=%s(127.0.0.1)
SlurmctldPort=%d
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=%s
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SlurmctldPidFile=%[5]s/ctld/slurmctld.pid
SlurmdPidFile=%[5]s/%%n/slurmd.pid
SlurmdSpoolDir=%[5]s/%%n
StateSaveLocation=%[5]s/ctld
SlurmctldLogFile=%[5]s/log/slurmctld.log
SlurmdLogFile=%[5]s/log/slurmd-%%n.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerParameters=batch_sched_delay=0
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/filetxt
JobCompLoc=%[5]s/log/jobcomp.txt
AccountingStorageType=accounting_storage/none
MinJobAge=60
KillWait=5
SlurmdTimeout=10
SlurmctldTimeout=10
SlurmdParameters=config_overrides
%sPartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP LLN=YES
`, c.Name, host, c.ctldPort, c.MungeSocket(), dir, nodes.String())
	Must(t, os.WriteFile(c.Conf, []byte(conf), 0o644))
	c.ctld = exec.Command("/usr/sbin/slurmctld", "-D", "-i")
	c.start(c.ctld, "slurmctld")
	for _, n := range c.Nodes {
		c.StartNode(n)
	}
	c.WaitIdle(30 * time.Second)
	return c
}

// MungeSocket is where the cluster's munged listens.
func (c *Cluster) MungeSocket() string { return filepath.Join(c.Dir, "munge", "munge.sock") }

// Env is the environment of the cluster's clients.
func (c *Cluster) Env() []string { return []string{"PATH=" + StdPath, "SLURM_CONF=" + c.Conf} }

func (c *Cluster) start(cmd *exec.Cmd, name string) {
	c.t.Helper()
	cmd.Env = c.Env()
	log, err := os.Create(filepath.Join(c.Dir, "log", name+".out"))
	Must(c.t, err)
	cmd.Stdout, cmd.Stderr = log, log
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Should the test binary die without its cleanups (a -timeout panic), the daemons go with
	// it: the kernel sends SIGKILL when the thread that started them ends, which for a test
	// binary is its end (no goroutine of the harness locks an OS thread).
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	Must(c.t, cmd.Start())
	log.Close()
	if !strings.HasPrefix(name, "slurmd-") {
		c.t.Cleanup(func() { stopCmd(cmd) })
	}
}

// stopCmd ends a process the harness started, by its PID, and reaps it.
func stopCmd(cmd *exec.Cmd) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// StartNode starts node n's slurmd in its own PID, UTS and mount namespace (for a /proc of its
// own), named n.Host.
func (c *Cluster) StartNode(n *Node) {
	c.t.Helper()
	n.cmd = exec.Command("/usr/bin/unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child",
		"sh", "-c", "hostname "+n.Host+" && exec /usr/sbin/slurmd -D -N "+n.Name)
	c.start(n.cmd, "slurmd-"+n.Name+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	// unshare ignores SIGTERM while it waits for the namespace: the node stops when its
	// slurmd (the namespace's PID 1, which takes the rest with it) does.
	cmd := n.cmd
	c.t.Cleanup(func() {
		if cmd.ProcessState != nil {
			return
		}
		if init := n.initOf(cmd); init > 0 {
			_ = syscall.Kill(init, syscall.SIGTERM)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			if init := n.initOf(cmd); init > 0 {
				_ = syscall.Kill(init, syscall.SIGKILL)
			}
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// Init is the host PID of node n's namespace's PID 1 (its slurmd).
func (n *Node) Init() int { return n.initOf(n.cmd) }

func (n *Node) initOf(cmd *exec.Cmd) int {
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.Fields(string(b) + " 0")[0])
	return pid
}

// KillNode kills node n as a crash would: SIGKILL to its namespace's PID 1, which takes every
// process of the node with it, slurmstepd and the jobs.
func (c *Cluster) KillNode(n *Node) {
	c.t.Helper()
	init := n.Init()
	if init <= 0 {
		c.t.Fatalf("node %s has no init", n.Name)
	}
	Must(c.t, syscall.Kill(init, syscall.SIGKILL))
	_ = n.cmd.Wait()
}

// Node returns the node whose jobs see host as their hostname.
func (c *Cluster) Node(host string) *Node {
	for _, n := range c.Nodes {
		if n.Host == host {
			return n
		}
	}
	return nil
}

// HostPID translates pid, as the processes of the node named host see it, into this machine's
// PID: the process of the node's PID namespace whose NSpid ends in pid. A negative pid (a
// process group) is translated by its leader. 0 when there is none.
func (c *Cluster) HostPID(host string, pid int) int {
	n := c.Node(host)
	if n == nil {
		return 0
	}
	init := n.Init()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		return 0
	}
	for _, p := range PIDs() {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p)); err != nil || l != ns {
			continue
		}
		f := strings.Fields(StatusField(p, "NSpid"))
		if len(f) > 0 && f[len(f)-1] == strconv.Itoa(pid) {
			return p
		}
	}
	return 0
}

// Kill sends sig to pid of the node named host; a negative pid, to that process group.
func (c *Cluster) Kill(host string, pid int, sig syscall.Signal) error {
	abs := pid
	if abs < 0 {
		abs = -abs
	}
	hp := c.HostPID(host, abs)
	if hp == 0 {
		return fmt.Errorf("no process %d on %s", abs, host)
	}
	if pid < 0 {
		return syscall.Kill(-hp, sig)
	}
	return syscall.Kill(hp, sig)
}

// Client runs one of Slurm's clients against the cluster.
func (c *Cluster) Client(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = c.Env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// WaitIdle polls until every node is idle (or mixed: it runs jobs but takes more).
func (c *Cluster) WaitIdle(within time.Duration) {
	c.t.Helper()
	Poll(c.t, within, "both nodes of the cluster up", func() (bool, string) {
		out, err := c.Client("/usr/bin/sinfo", "--noheader", "--Node", "--format=%N %T")
		if err != nil {
			return false, out
		}
		up := 0
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && (f[1] == "idle" || f[1] == "mixed" || f[1] == "allocated") {
				up++
			}
		}
		return up == len(c.Nodes), out
	})
}
