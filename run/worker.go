package run

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/jobs"
)

func (a *app) newWorkerCommand() *cli.Command {
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
		Action: a.runWorker,
	}
}

func (a *app) newDrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "drain",
		Usage: "start whatever the spool holds, once, and exit (the cron fallback)",
		Description: "Does one pass of the worker and exits. When a worker or another drain holds the spool's\n" +
			"lock it does nothing and exits 0. From cron, every minute:\n" +
			"* * * * * cmesh /usr/local/bin/cmesh-run drain\n\n" +
			"EXAMPLE:\n   cmesh-run drain",
		Action: a.runDrain,
	}
}

// takeSpool sets up and takes the spool's lock; nil when another worker
// or drain holds it. A refusal (root on another user's state dir) is
// audited.
func (a *app) takeSpool(c *cli.Context) (*jobs.Spool, error) {
	if err := a.setup(c); err != nil {
		return nil, err
	}
	p, err := a.svc.TakeSpool()
	if errs.KindOf(err) == errs.Denied {
		return nil, a.refuse(c, err)
	}
	return p, err
}

func (a *app) runDrain(c *cli.Context) error {
	p, err := a.takeSpool(c)
	if err != nil {
		return err
	}
	if p == nil {
		a.log.Info("a worker or drain is at work; nothing to do")
		return nil
	}
	defer p.Close()
	err = a.svc.DrainOnce(p)
	a.svc.SweepEnded()
	return err
}

func (a *app) runWorker(c *cli.Context) error {
	p, err := a.takeSpool(c)
	if err != nil {
		return err
	}
	if p == nil {
		st, _ := a.svc.Store(false)
		return jobs.WorkerBusy(st.PrivateDir())
	}
	defer p.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	a.svc.Work(p, stop, c.Duration("poll"))
	return nil
}
