package status

import (
	"bytes"
	"io"
	"os"
)

// Output reads a job's output file. Every read costs what it returns plus
// at most two markers' worth of bytes around it, never the file's size.
type Output struct {
	f     *os.File
	nonce string
	// scratch is ReadReuse's buffer: log copies a large output through
	// one buffer, so that its memory does not grow with the file.
	scratch []byte
}

// OpenOutput opens the output file at path for the job with nonce.
func OpenOutput(path, nonce string) (*Output, error) {
	f, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	return &Output{f: f, nonce: nonce}, nil
}

// Close closes the file.
func (o *Output) Close() error { return o.f.Close() }

// Size is the output file's current size in bytes, markers included.
func (o *Output) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Range is what a read of the output found.
type Range struct {
	Data    []byte   // the job's bytes, markers removed (or kept, when raw)
	Markers []Marker // markers that lie in the range
	End     int64    // file offset where the next read continues
}

// Read returns the job's bytes that lie in [from, to) of the file. A
// marker that overlaps the range is never returned in part: one that
// starts before from is skipped, one that runs past to is consumed whole
// (End moves past it). With raw, markers stay in Data.
func (o *Output) Read(from, to int64, raw bool) (Range, error) {
	return o.read(from, to, raw, nil)
}

// ReadReuse is Read into a buffer kept for the next call: the returned
// data is valid only until then.
func (o *Output) ReadReuse(from, to int64, raw bool) (Range, error) {
	return o.read(from, to, raw, &o.scratch)
}

func (o *Output) read(from, to int64, raw bool, scratch *[]byte) (Range, error) {
	size, err := o.Size()
	if err != nil {
		return Range{}, err
	}
	from = max(0, min(from, size))
	to = max(from, min(to, size))
	lo := max(0, from-MaxMarkerLen)
	hi := min(size, to+MaxMarkerLen)
	var buf []byte
	if scratch != nil && int64(cap(*scratch)) >= hi-lo {
		buf = (*scratch)[:hi-lo]
	} else {
		buf = make([]byte, hi-lo)
		if scratch != nil {
			*scratch = buf
		}
	}
	n, err := o.f.ReadAt(buf, lo)
	if err != nil && err != io.EOF {
		return Range{}, err
	}
	buf = buf[:n]
	hi = lo + int64(n)
	to = min(to, hi)
	rel := func(off int64) int { return int(off - lo) }

	r := Range{End: to}
	// Most chunks hold no marker: their bytes are returned as read, with
	// no second buffer (log copies a large output chunk by chunk).
	var data bytes.Buffer
	marks := findMarkers(buf, o.nonce, lo)
	if len(marks) == 0 {
		r.Data = buf[rel(from):rel(to)]
		return r, nil
	}
	pos := rel(from)
	for _, s := range marks {
		if s.end <= pos {
			continue
		}
		if s.start >= rel(to) {
			break
		}
		if s.start > pos {
			data.Write(buf[pos:s.start])
		}
		pos = s.end
		r.Markers = append(r.Markers, s.m)
		if !raw && int64(s.end)+lo > r.End {
			r.End = int64(s.end) + lo
		}
	}
	if raw {
		r.Data = buf[rel(from):rel(to)]
		return r, nil
	}
	if pos < rel(to) {
		data.Write(buf[pos:rel(to)])
	}
	r.Data = data.Bytes()
	return r, nil
}

// MaxTail is the most of the end of the output that Tail reads: the last
// n lines, or fewer when they do not fit in it (a line longer than it
// shows its last part). Memory stays bounded however long the lines are.
const MaxTail = 8 << 20

// Tail returns the last n lines of the job's bytes, as tail -n does: a
// last line without newline counts as a line. It reads backwards from the
// end, so its cost grows with what it returns, never past MaxTail.
func (o *Output) Tail(n int, raw bool) ([]byte, error) {
	var b bytes.Buffer
	err := o.TailTo(&b, n, raw)
	return b.Bytes(), err
}

// TailTo writes what Tail returns to w, without joining the pieces it read.
func (o *Output) TailTo(w io.Writer, n int, raw bool) error {
	size, err := o.Size()
	if err != nil {
		return err
	}
	if n <= 0 {
		return nil
	}
	var pieces [][]byte // newest first
	lines := 0
	// 16 KiB holds 100 lines of typical build output; a first read any
	// larger only costs page faults of its buffers in a command that lives
	// a few milliseconds.
	chunk := int64(16 << 10)
	pos := size
	floor := max(0, size-MaxTail)
	lastByte := byte(0)
	for pos > floor {
		from := max(floor, pos-chunk)
		r, err := o.Read(from, pos, raw)
		if err != nil {
			return err
		}
		if len(r.Data) > 0 {
			if len(pieces) == 0 {
				lastByte = r.Data[len(r.Data)-1]
			}
			pieces = append(pieces, r.Data)
			lines += bytes.Count(r.Data, []byte("\n"))
		}
		pos = from
		need := n
		if lastByte == '\n' {
			need = n + 1
		}
		if lines >= need {
			break
		}
		chunk = min(chunk*2, 4<<20)
	}
	// Cut after the newline that ends the line before the last n: count
	// newlines from the end, the one that ends the last line aside.
	seen := 0
	skip := lastByte == '\n'
	cutPiece, cutAt := len(pieces)-1, 0
	found := false
	for p := 0; p < len(pieces) && !found; p++ {
		d := pieces[p]
		for i := len(d) - 1; i >= 0; i-- {
			if d[i] != '\n' {
				continue
			}
			if skip {
				skip = false
				continue
			}
			seen++
			if seen == n {
				cutPiece, cutAt, found = p, i+1, true
				break
			}
		}
	}
	for p := cutPiece; p >= 0; p-- {
		d := pieces[p]
		if p == cutPiece {
			d = d[cutAt:]
		}
		if _, err := w.Write(d); err != nil {
			return err
		}
	}
	return nil
}

// FindEnd scans the file from offset for the end marker of attempt. It is
// for the rare reader that finds a job's processes gone while its record
// still says running: it costs the bytes written since that attempt began.
func (o *Output) FindEnd(from int64, attempt int) (*Marker, error) {
	size, err := o.Size()
	if err != nil {
		return nil, err
	}
	const step = 1 << 20
	for pos := from; pos < size; {
		r, err := o.Read(pos, min(size, pos+step), false)
		if err != nil {
			return nil, err
		}
		for i := range r.Markers {
			if m := r.Markers[i]; m.Kind == "end" && m.Attempt == attempt {
				return &m, nil
			}
		}
		if r.End <= pos {
			break
		}
		pos = r.End
	}
	return nil, nil
}
