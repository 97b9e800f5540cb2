package run

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
)

func (a *app) newQueueCommand() *cli.Command {
	control := func(name, usage string, on bool) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: "NAME",
			Description: "EXAMPLE:\n   cmesh-run queue " + name + " deploy",
			Action: func(c *cli.Context) error {
				if err := a.setup(c); err != nil {
					return err
				}
				if c.NArg() != 1 {
					return errs.Errorf(errs.Usage, "queue %s takes one queue name", name).WithHint("cmesh-run queue list shows them")
				}
				if err := a.svc.SetPaused(c.Args().First(), on); err != nil {
					if errs.KindOf(err) == errs.Denied {
						return a.refuse(c, err)
					}
					return err
				}
				return nil
			},
		}
	}
	return &cli.Command{
		Name:  "queue",
		Usage: "list the queues, or pause and resume one",
		Description: "A queue is [queues.NAME] in the config (the top-level max_running is the default queue's).\n" +
			"A paused queue starts nothing new; its running jobs go on, its waiting ones wait (reason: the pause).\n" +
			"The pause is a file in the state dir: it survives restarts and reboots.\n\n" +
			"EXAMPLE:\n   cmesh-run queue list\n   cmesh-run queue pause deploy\n   cmesh-run queue resume deploy",
		Subcommands: []*cli.Command{
			{
				Name:        "list",
				Usage:       "each queue: its slots, what runs and waits, whether it is paused",
				Description: "EXAMPLE:\n   cmesh-run queue list --json",
				Flags:       []cli.Flag{&cli.BoolFlag{Name: "json", Usage: `print [{"name","max_running","running","waiting","paused"}]`}},
				Action: func(c *cli.Context) error {
					a.jsonOut = c.Bool("json")
					if err := a.setup(c); err != nil {
						return err
					}
					qs, err := a.svc.Queues()
					if err != nil {
						return err
					}
					if a.jsonOut {
						return printJSON(a.stdout, qs)
					}
					tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "QUEUE\tSLOTS\tRUNNING\tWAITING\tPAUSED")
					for _, q := range qs {
						slots := "-"
						if q.MaxRunning > 0 {
							slots = fmt.Sprint(q.MaxRunning)
						}
						fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%v\n", q.Name, slots, q.Running, q.Waiting, q.Paused)
					}
					return tw.Flush()
				},
			},
			control("pause", "start nothing new in queue NAME until it is resumed", true),
			control("resume", "let queue NAME start jobs again", false),
		},
	}
}
