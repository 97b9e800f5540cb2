package run

import (
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/spool"
	"github.com/cmesh/cmesh-run/status"
)

func (a *app) workerCommand() *cli.Command {
	return &cli.Command{
		Name:  "worker",
		Usage: "start spool jobs as they arrive (run it under supervisor or systemd)",
		Description: "Takes the spool's lock (one worker per state dir), then starts every job queued with\n" +
			"--backend spool, and every request PHP wrote to spool/incoming, as they arrive (inotify,\n" +
			"with a poll as a fallback). Jobs run detached: stopping or killing the worker does not stop\n" +
			"them, and a restarted worker never starts a job twice. Ends on SIGTERM or SIGINT.\n\n" +
			"EXAMPLE:\n   cmesh-run worker\n" +
			"   # supervisor: [program:cmesh-run-worker] command=/usr/local/bin/cmesh-run worker user=cmesh",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "poll", Value: time.Second, Usage: "look at the spool at least every `DUR`"},
		},
		Action: a.worker,
	}
}

func (a *app) drainCommand() *cli.Command {
	return &cli.Command{
		Name:  "drain",
		Usage: "start whatever the spool holds, once, and exit (the cron fallback)",
		Description: "Does one pass of the worker and exits. When a worker or another drain holds the spool's\n" +
			"lock it does nothing and exits 0. From cron, every minute:\n" +
			"* * * * * cmesh /usr/local/bin/cmesh-run drain\n\n" +
			"EXAMPLE:\n   cmesh-run drain",
		Action: a.drain,
	}
}

func (a *app) spoolFor(c *cli.Context) (*spool.Spool, *status.Store, error) {
	if err := a.setup(c); err != nil {
		return nil, nil, err
	}
	st, err := a.store(true)
	if err != nil {
		return nil, nil, err
	}
	if err := ownStateDir(st); err != nil {
		return nil, nil, a.refuse(c, err)
	}
	return spool.New(st.Dir), st, nil
}

// ownStateDir refuses a worker or drain running as root on a state dir
// that another user owns: what such a state dir's queue holds, that user
// put there, and root would run it.
func ownStateDir(st *status.Store) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, _, err := ownerOf(st.Dir)
	if err != nil {
		return err
	}
	if uid != 0 {
		name := strconv.Itoa(uid)
		if u, err := user.LookupId(name); err == nil {
			name = u.Username
		}
		return policy.Deny("refusing to work as root on %s: it belongs to %s", st.Dir, name).
			WithHint("run the worker or drain as %s (supervisor's user=, cron's user field, or runuser -u %s -- cmesh-run ...)", name, name)
	}
	return nil
}

func ownerOf(path string) (uid, gid int, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, 0, err
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("%s: no owner", path)
	}
	return int(sys.Uid), int(sys.Gid), nil
}

// takeSpool opens the spool and takes its lock; ok is false when another
// worker or drain holds it. With the lock held, claims left by a worker
// that died are put back in the queue.
func (a *app) takeSpool(c *cli.Context) (sp *spool.Spool, st *status.Store, lock *os.File, ok bool, err error) {
	if sp, st, err = a.spoolFor(c); err != nil {
		return
	}
	if lock, ok, err = sp.Lock(); err != nil || !ok {
		return
	}
	sp.Tidy(queuedIn(st), true)
	return
}

func (a *app) drain(c *cli.Context) error {
	sp, st, lock, ok, err := a.takeSpool(c)
	if err != nil {
		return err
	}
	if !ok {
		a.log.Info("a worker or drain is at work; nothing to do")
		return nil
	}
	defer lock.Close()
	return a.drainOnce(sp, st)
}

func (a *app) worker(c *cli.Context) error {
	sp, st, lock, ok, err := a.takeSpool(c)
	if err != nil {
		return err
	}
	if !ok {
		return status.Errorf(status.Unavailable, "another worker or drain holds %s/worker.lock", st.PrivateDir()).
			WithHint("one worker per state dir is enough; stop the other one first")
	}
	defer lock.Close()
	if err := sp.MarkWorker(); err != nil {
		a.log.Warnf("worker: %v; auto cannot tell that a worker runs", err)
	}
	defer sp.UnmarkWorker()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	wake := watch(sp.Dir+"/queue", sp.Dir+"/incoming")
	poll := time.NewTicker(c.Duration("poll"))
	defer poll.Stop()
	a.log.WithField("spool", sp.Dir).Info("worker started")
	for {
		if err := a.drainOnce(sp, st); err != nil {
			a.log.Warnf("worker: %v", err)
		}
		select {
		case <-stop:
			a.log.Info("worker stopping; running jobs go on")
			return nil
		case <-wake:
		case <-poll.C:
		}
	}
}

// watch returns a channel that gets a value when something arrives in
// one of dirs; without inotify it never fires and the poll does the work.
func watch(dirs ...string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return ch
	}
	for _, d := range dirs {
		_, _ = unix.InotifyAddWatch(fd, d, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := unix.Read(fd, buf); err != nil && err != unix.EINTR {
				return
			}
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch
}

// drainOnce turns incoming requests into queued jobs, then starts every
// queued job, oldest first.
func (a *app) drainOnce(sp *spool.Spool, st *status.Store) error {
	sp.Tidy(queuedIn(st), false)
	a.takeRequests(sp)
	ids, err := sp.Queued()
	if err != nil {
		return err
	}
	uid := os.Geteuid()
	for _, id := range ids {
		// Only a job of this state dir, queued for the spool by this
		// user: a script without such a record (planted, left over) is
		// never run.
		r, err := st.Load(id)
		if err != nil || r.State != status.Queued || r.Backend != "spool" || !ownedBy(st.RecordPath(id), uid) {
			continue
		}
		started, err := sp.Start(id, uid)
		if err != nil {
			a.log.Warnf("start %s: %v", id, err)
			continue
		}
		if started {
			a.log.WithField("id", id).Info("started")
		}
	}
	return nil
}

func ownedBy(path string, uid int) bool {
	u, _, err := ownerOf(path)
	return err == nil && u == uid
}

// queuedIn tells whether job id's record still says queued.
func queuedIn(st *status.Store) func(string) bool {
	return func(id string) bool {
		r, err := st.Load(id)
		return err == nil && r.State == status.Queued
	}
}
