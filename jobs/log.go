package jobs

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
	"unicode/utf8"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/status"
)

const (
	// DefaultChunk is what one log --json answer holds unless --limit says.
	DefaultChunk = 1 << 20
	// MaxChunk bounds one answer (a larger limit is taken as this): its
	// bytes are read whole, so its size is memory.
	MaxChunk  = 4 << 20
	readChunk = 256 << 10
)

// LogChunk is the answer of log --json: the job's bytes from Offset to
// NextOffset of its output file, and whether nothing more will come.
type LogChunk struct {
	ID         string       `json:"id"`
	State      status.State `json:"state"`
	Offset     int64        `json:"offset"`
	NextOffset int64        `json:"next_offset"`
	Data       []byte       `json:"-"` // written as the string "data", see WriteJSON
	Done       bool         `json:"done"`
	// Progress is what the job last reported, so that one poll gets the
	// bytes and the bar; nil: none.
	Progress *status.Progress `json:"progress,omitempty"`
}

// Chunk reads the chunk of job j's output out that starts at offset, at
// most limit (and MaxChunk) bytes.
func Chunk(j status.Job, out *status.Output, offset, limit int64, raw bool) (LogChunk, error) {
	limit = min(limit, MaxChunk)
	size, err := out.Size()
	if err != nil {
		return LogChunk{}, err
	}
	r, err := out.Read(offset, offset+limit, raw)
	if err != nil {
		return LogChunk{}, err
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
	return LogChunk{ID: j.ID, State: j.State, Offset: offset, NextOffset: next, Data: data,
		Done: j.State.Finished() && next >= size, Progress: j.Progress}, nil
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

// CopyOut writes the job's bytes from pos up to end (-1: the current end
// of the file) to w, through one reused buffer, and returns where it
// stopped.
func CopyOut(w io.Writer, out *status.Output, pos, end int64, raw bool) (int64, error) {
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
		if _, err := w.Write(r.Data); err != nil {
			return pos, err
		}
		if r.End <= pos {
			break
		}
		pos = r.End
	}
	return pos, nil
}

// WriteJSON writes c as one line of JSON, {"id","state","offset",
// "next_offset","data","done"}, with data the string
// strings.ToValidUTF8(c.Data, "\uFFFD") as encoding/json writes it, but
// without ever holding the escaped text whole: escaping can make data six
// times larger.
func (c LogChunk) WriteJSON(w io.Writer) error {
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
	writeJSONString(bw, c.Data)
	field(`,"done":`, c.Done)
	if c.Progress != nil {
		field(`,"progress":`, c.Progress)
	}
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

// CopyHook writes the output of job j's hook: nothing when it has none
// yet. The hook may still be running: what it wrote so far.
func CopyHook(w io.Writer, st *status.Store, j status.Job) error {
	// The job's user owns the folder: a link planted there is not followed.
	f, err := os.OpenFile(st.HookPath(j.ID), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if j.Hook == nil {
			return errs.Errorf(errs.NotFound, "job %s has no hook output: no hook ran for it", j.ID).
				WithHint("hooks come from the config's on_finish and on_failure (see the man page)")
		}
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return errs.Errorf(errs.Internal, "job %s: its hook output is not a regular file", j.ID).WithHint("remove %s", st.HookPath(j.ID))
	}
	_, err = io.Copy(w, f)
	return err
}
