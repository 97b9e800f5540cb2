package run

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/cmesh/cmesh-run/status"
)

const (
	defaultJSONLimit = 1 << 20
	// maxJSONLimit bounds one --json answer (a larger --limit is taken as
	// this): the answer's bytes are read whole, so its size is memory.
	maxJSONLimit = 4 << 20
	readChunk    = 256 << 10
	followPoll   = 200 * time.Millisecond
)

func (a *app) logCommand() *cli.Command {
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
			&cli.BoolFlag{Name: "json", Usage: `print {"id","state","offset","next_offset","data","done"}`},
			&cli.BoolFlag{Name: "raw", Usage: "keep the markers"},
		},
		Action: a.logAction,
	}
}

// logChunk is the JSON answer of log --json.
type logChunk struct {
	ID         string       `json:"id"`
	State      status.State `json:"state"`
	Offset     int64        `json:"offset"`
	NextOffset int64        `json:"next_offset"`
	Data       string       `json:"data"`
	Done       bool         `json:"done"`
}

func (a *app) logAction(c *cli.Context) error {
	a.jsonOut = c.Bool("json")
	if err := a.setup(c); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return status.Errorf(status.Usage, "log takes exactly one job ID").
			WithHint("options go before the ID: cmesh-run log --follow ID")
	}
	offset, limit, tail := c.Int64("offset"), c.Int64("limit"), c.Int("tail")
	switch {
	case offset < 0 || limit < 0 || tail < 0:
		return status.Errorf(status.Usage, "--offset, --limit and --tail must not be negative").WithHint("give 0 or more")
	case c.IsSet("tail") && (c.IsSet("offset") || a.jsonOut):
		return status.Errorf(status.Usage, "--tail does not go with --offset or --json").
			WithHint("poll with --json --offset N, or print the end with --tail N")
	case a.jsonOut && c.Bool("follow"):
		return status.Errorf(status.Usage, "--json does not go with --follow").
			WithHint("poll with --json --offset NEXT_OFFSET instead")
	}
	j, rec, err := a.jobRecord(c.Args().First())
	if err != nil {
		return err
	}
	st, _ := a.store(false)
	out, err := status.OpenOutput(st.OutputPath(rec.ID), rec.Nonce)
	if err != nil {
		return err
	}
	defer out.Close()
	raw := c.Bool("raw")

	if a.jsonOut {
		if !c.IsSet("limit") {
			limit = defaultJSONLimit
		}
		limit = min(limit, maxJSONLimit)
		return a.logJSON(j, out, offset, limit, raw)
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
		if pos, err = a.copyOut(out, pos, end, raw); err != nil {
			return err
		}
	}
	if !c.Bool("follow") {
		return nil
	}
	for !j.State.Finished() {
		time.Sleep(followPoll)
		if j, err = a.job(rec.ID); err != nil {
			return err
		}
		// State first, bytes second: once a finished job is seen, the read
		// that follows has all of its output.
		if pos, err = a.copyOut(out, pos, -1, raw); err != nil {
			return err
		}
	}
	// The result goes to stderr, so stdout stays the job's bytes.
	fmt.Fprintf(a.stderr, "cmesh-run: job %s %s (exit %s) after %s\n", j.ID, j.State, fmtInt(j.ExitCode), duration(j))
	return nil
}

// copyOut prints the job's bytes from pos up to end (-1: the current end
// of the file) and returns where it stopped.
func (a *app) copyOut(out *status.Output, pos, end int64, raw bool) (int64, error) {
	size, err := out.Size()
	if err != nil {
		return pos, err
	}
	if end < 0 || end > size {
		end = size
	}
	for pos < end {
		r, err := out.ReadReuse(pos, min(end, pos+readChunk), raw)
		if err != nil {
			return pos, err
		}
		if _, err := a.stdout.Write(r.Data); err != nil {
			return pos, err
		}
		if r.End <= pos {
			break
		}
		pos = r.End
	}
	return pos, nil
}

func (a *app) logJSON(j status.Job, out *status.Output, offset, limit int64, raw bool) error {
	size, err := out.Size()
	if err != nil {
		return err
	}
	r, err := out.Read(offset, offset+limit, raw)
	if err != nil {
		return err
	}
	data, next := r.Data, r.End
	// Hold back a character cut in half by the limit or by a write still
	// in progress: the next poll returns it whole. A marker after the data
	// means the bytes are final, and invalid bytes are replaced then.
	endsInData := len(r.Markers) == 0 || r.Markers[len(r.Markers)-1].Offset+int64(r.Markers[len(r.Markers)-1].Len) < r.End
	k := partialRune(data)
	more := next < size && k < len(data)           // the rest of it is already in the file
	pending := next >= size && !j.State.Finished() // the job may be writing it now
	if k > 0 && endsInData && (more || pending) {
		data, next = data[:len(data)-k], next-int64(k)
	}
	return writeChunk(a.stdout, logChunk{
		ID: j.ID, State: j.State, Offset: offset, NextOffset: next,
		Done: j.State.Finished() && next >= size,
	}, data)
}

// writeChunk writes c with data as its Data, byte for byte what
// printJSON(c) would write with Data = strings.ToValidUTF8(data, "\uFFFD"),
// without ever holding the escaped text whole: escaping can make data
// six times larger.
func writeChunk(w io.Writer, c logChunk, data []byte) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	field := func(name string, v any) {
		b, _ := json.Marshal(v)
		bw.WriteString(name)
		bw.Write(b)
	}
	field(`{"id":`, c.ID)
	field(`,"state":`, c.State)
	field(`,"offset":`, c.Offset)
	field(`,"next_offset":`, c.NextOffset)
	bw.WriteString(`,"data":`)
	writeJSONString(bw, data)
	field(`,"done":`, c.Done)
	bw.WriteString("}\n")
	return bw.Flush()
}

// writeJSONString writes b as encoding/json writes the string
// strings.ToValidUTF8(b, "\uFFFD"): each run of invalid bytes becomes one
// U+FFFD, control characters and <, >, & are escaped as \u00XX (\n, \r,
// \t, \b, \f by name), U+2028 and U+2029 as \u2028 and \u2029.
func writeJSONString(w *bufio.Writer, b []byte) {
	const hex = "0123456789abcdef"
	w.WriteByte('"')
	invalid := false
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			invalid = false
			i++
			switch {
			case c == '"' || c == '\\':
				w.WriteByte('\\')
				w.WriteByte(c)
			case c >= 0x20 && c != '<' && c != '>' && c != '&':
				w.WriteByte(c)
			case c == '\n':
				w.WriteString(`\n`)
			case c == '\r':
				w.WriteString(`\r`)
			case c == '\t':
				w.WriteString(`\t`)
			case c == '\b':
				w.WriteString(`\b`)
			case c == '\f':
				w.WriteString(`\f`)
			default:
				w.WriteString(`\u00`)
				w.WriteByte(hex[c>>4])
				w.WriteByte(hex[c&0xF])
			}
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			if !invalid {
				w.WriteString("\uFFFD")
				invalid = true
			}
		case r == '\u2028' || r == '\u2029':
			invalid = false
			w.WriteString(`\u202`)
			w.WriteByte(hex[r&0xF])
		default:
			invalid = false
			w.Write(b[i : i+size])
		}
		i += size
	}
	w.WriteByte('"')
}

// partialRune returns how many bytes at the end of b begin a UTF-8
// sequence that is not complete yet.
func partialRune(b []byte) int {
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if utf8.RuneStart(c) {
			if c >= 0xC0 && !utf8.FullRune(b[len(b)-k:]) {
				return k
			}
			return 0
		}
	}
	return 0
}
