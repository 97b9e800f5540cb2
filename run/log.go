package run

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/jobs"
	"github.com/cmesh/cmesh-run/status"
)

// followPoll is how often log --follow looks for more.
const followPoll = 200 * time.Millisecond

func (a *app) newLogCommand() *cli.Command {
	return &cli.Command{
		Name:      "log",
		Usage:     "print what a job wrote (stdout and stderr), without the markers",
		ArgsUsage: "ID",
		Description: "Prints the job's bytes exactly. --offset/--limit count bytes of the output file\n" +
			"(markers included), so a web page can poll with the next_offset it was given.\n\n" +
			"EXAMPLE:\n   cmesh-run log --follow ID\n   cmesh-run log --tail 20 ID\n" +
			"   cmesh-run log --json --offset 0 --limit 65536 ID",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "tail", Usage: "only the last `N` lines (of the last 8 MiB at most)"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing until the job has finished; then its result (state, exit code, duration) goes to stderr"},
			&cli.Int64Flag{Name: "offset", Usage: "start at byte `BYTES` of the output file"},
			&cli.Int64Flag{Name: "limit", Usage: "print at most `BYTES` bytes", DefaultText: "all; with --json 1 MiB, and never more than 4 MiB"},
			&cli.BoolFlag{Name: "json", Usage: `print {"id","state","offset","next_offset","data","done"}, and "progress" when the job reports it`},
			&cli.BoolFlag{Name: "raw", Usage: "keep the markers"},
			&cli.BoolFlag{Name: "hook", Usage: "print the output of the job's hook (on_finish or on_failure) instead"},
		},
		Action: a.runLog,
	}
}

func (a *app) runLog(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return errs.Errorf(errs.Usage, "log takes exactly one job ID").
			WithHint("options go before the ID: cmesh-run log --follow ID")
	}
	offset, limit, tail := c.Int64("offset"), c.Int64("limit"), c.Int("tail")
	switch {
	case offset < 0 || limit < 0 || tail < 0:
		return errs.Errorf(errs.Usage, "--offset, --limit and --tail must not be negative").WithHint("give 0 or more")
	case c.IsSet("tail") && (c.IsSet("offset") || a.jsonOut):
		return errs.Errorf(errs.Usage, "--tail does not go with --offset or --json").
			WithHint("poll with --json --offset N, or print the end with --tail N")
	case a.jsonOut && c.Bool("follow"):
		return errs.Errorf(errs.Usage, "--json does not go with --follow").
			WithHint("poll with --json --offset NEXT_OFFSET instead")
	}
	j, rec, err := a.job(c.Args().First())
	if err != nil {
		return err
	}
	st, _ := a.svc.Store(false)
	if c.Bool("hook") {
		if c.IsSet("offset") || c.IsSet("limit") || c.IsSet("tail") || a.jsonOut || c.Bool("follow") || c.Bool("raw") {
			return errs.Errorf(errs.Usage, "--hook prints the hook's whole output and takes no other option").
				WithHint("cmesh-run log --hook ID")
		}
		return jobs.CopyHook(a.stdout, st, j)
	}
	out, err := status.OpenOutput(st.OutputPath(rec.ID), rec.Nonce)
	if err != nil {
		return err
	}
	defer out.Close()
	raw := c.Bool("raw")

	if a.jsonOut {
		if !c.IsSet("limit") {
			limit = jobs.DefaultChunk
		}
		c, err := jobs.Chunk(j, out, offset, limit, raw)
		if err != nil {
			return err
		}
		return c.WriteJSON(a.stdout)
	}
	pos := offset
	if c.IsSet("tail") {
		if err := out.TailTo(a.stdout, tail, raw); err != nil {
			return err
		}
		if pos, err = out.Size(); err != nil {
			return err
		}
	} else {
		end := int64(-1)
		if c.IsSet("limit") {
			end = offset + limit
		}
		if pos, err = jobs.CopyOut(a.stdout, out, pos, end, raw); err != nil {
			return err
		}
	}
	if !c.Bool("follow") {
		return nil
	}
	for !j.State.Finished() {
		time.Sleep(followPoll)
		if j, _, err = a.job(rec.ID); err != nil {
			return err
		}
		// State first, bytes second: once a finished job is seen, the read
		// that follows has all of its output.
		if pos, err = jobs.CopyOut(a.stdout, out, pos, -1, raw); err != nil {
			return err
		}
	}
	// The result goes to stderr, so stdout stays the job's bytes.
	fmt.Fprintf(a.stderr, "cmesh-run: job %s %s (exit %s) after %s\n", j.ID, j.State, fmtInt(j.ExitCode), duration(j))
	return nil
}
