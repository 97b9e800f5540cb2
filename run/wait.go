package run

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/status"
)

// Exit statuses of wait that are not the job's.
const (
	ExitWaitTimeout = 124
	ExitWaitNoCode  = 125
)

func (a *app) newWaitCommand() *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "block until a job has finished; exit with its exit code",
		ArgsUsage: "ID",
		Description: "Exits with the job's exit code (128+N when signal N killed it), 124 when --timeout\n" +
			"passed first, 125 when the job was lost or canceled.\n\n" +
			"EXAMPLE:\n   cmesh-run wait --timeout 15m ID && echo built",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Usage: "give up after `DUR` (e.g. 90s, 15m) with status 124"},
		},
		Action: a.runWait,
	}
}

func (a *app) runWait(c *cli.Context) error {
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return errs.Errorf(errs.Usage, "wait takes exactly one job ID").
			WithHint("options go before the ID: cmesh-run wait --timeout 10m ID")
	}
	id := c.Args().First()
	var deadline <-chan time.Time
	if d := c.Duration("timeout"); c.IsSet("timeout") {
		if d < 0 {
			return errs.Errorf(errs.Usage, "--timeout must not be negative").WithHint("e.g. --timeout 10m")
		}
		deadline = time.After(d)
	}
	j, ok, err := a.svc.Wait(id, deadline)
	switch {
	case err != nil:
		return err
	case !ok:
		return exitError(ExitWaitTimeout)
	}
	return exitError(waitStatus(j))
}

// waitStatus is what wait exits with for a finished job.
func waitStatus(j status.Job) int {
	switch {
	case j.State == status.Canceled || j.State == status.Lost || j.ExitCode == nil:
		return ExitWaitNoCode
	}
	return *j.ExitCode
}
