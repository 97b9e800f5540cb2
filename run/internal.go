package run

import (
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/config"
	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/jobs"
	"github.com/cmesh/cmesh-run/status"
	"github.com/cmesh/cmesh-run/wrapper"
)

// The hidden commands the backends' scripts run; not for people.

func (a *app) newWrapCommand() *cli.Command {
	return &cli.Command{
		Name:      "_wrap",
		Hidden:    true,
		Usage:     "run a job under the wrapper (the backend's script calls this)",
		ArgsUsage: "-- PROGRAM [ARG...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", Required: true},
			&cli.StringFlag{Name: "id", Required: true},
		},
		Action: func(c *cli.Context) error {
			id := c.String("id")
			if err := status.CheckID(id); err != nil {
				return err
			}
			if code := wrapper.Run(c.String("state-dir"), id, c.Args().Slice(), os.Stdin); code != 0 {
				return exitError(code)
			}
			return nil
		},
	}
}

func (a *app) newHookCommand() *cli.Command {
	return &cli.Command{
		Name:      "_hook",
		Hidden:    true,
		Usage:     "run the claimed hook of a job that ended without its wrapper (a reader starts this)",
		ArgsUsage: "-- PROGRAM [ARG...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", Required: true},
			&cli.StringFlag{Name: "id", Required: true},
			&cli.DurationFlag{Name: "timeout", Value: config.DefaultHookTimeout},
			&cli.StringFlag{Name: "path", Value: config.DefaultJobPath},
			&cli.StringFlag{Name: "lang", Value: "C.UTF-8"},
		},
		Action: func(c *cli.Context) error {
			id := c.String("id")
			if err := status.CheckID(id); err != nil {
				return err
			}
			if c.NArg() == 0 {
				return errs.Errorf(errs.Usage, "_hook needs the hook's argv after --")
			}
			return jobs.RunHook(c.String("state-dir"), id, c.Args().Slice(), c.Duration("timeout"), c.String("path"), c.String("lang"))
		},
	}
}

func (a *app) newExecCommand() *cli.Command {
	return &cli.Command{
		Name:      "_exec",
		Hidden:    true,
		Usage:     "become the job's program once the wrapper says so",
		ArgsUsage: "-- PROGRAM [ARG...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "workdir", Required: true},
			&cli.IntFlag{Name: "nice"},
			&cli.StringSliceFlag{Name: "rlimit"},
		},
		Action: func(c *cli.Context) error {
			var limits []status.Rlimit
			for _, l := range c.StringSlice("rlimit") {
				name, v, _ := strings.Cut(l, "=")
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return err
				}
				limits = append(limits, status.Rlimit{Name: name, Value: n})
			}
			return exitError(wrapper.Exec(c.String("workdir"), c.Int("nice"), limits, c.Args().Slice()))
		},
	}
}
