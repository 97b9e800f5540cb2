package status

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The wrapper appends one marker when an attempt starts and one when it
// ends. A marker is a single write(2) of
//
//	"\n[cmesh-run:NONCE start attempt=1 pid=42 host=web1 time=RFC3339]\n"
//	"\n[cmesh-run:NONCE end attempt=1 exit=0 time=RFC3339]\n"
//
// to the output file, which is opened O_APPEND by everyone, so a marker is
// never split by the job's own writes. NONCE is a per-job secret held in
// the record: the job's output cannot produce it by accident, so printed
// fake markers stay plain output. The leading newline makes the marker
// findable after a last line without newline; readers remove the whole
// sequence, so the job's bytes come back exactly.

// MaxMarkerLen bounds a marker, so that readers know how far around a
// range they must look to see every marker that overlaps it.
const MaxMarkerLen = 256

const markerTag = "cmesh-run:"

// Marker is one parsed marker.
type Marker struct {
	Kind    string // "start" or "end"
	Attempt int
	PID     int
	Host    string // on start markers: where the attempt runs
	Exit    *int
	Signal  string
	Reason  string // on end markers: "", "canceled" or "timeout"
	Time    time.Time
	Offset  int64 // where the marker begins in the output file
	Len     int
}

func markerPrefix(nonce string) []byte {
	return []byte("\n[" + markerTag + nonce + " ")
}

// Format renders m for the job with the given nonce.
func (m Marker) Format(nonce string) []byte {
	var b strings.Builder
	b.WriteString("\n[" + markerTag + nonce + " " + m.Kind)
	fmt.Fprintf(&b, " attempt=%d", m.Attempt)
	if m.PID > 0 {
		fmt.Fprintf(&b, " pid=%d", m.PID)
	}
	if m.Host != "" {
		b.WriteString(" host=" + m.Host)
	}
	if m.Exit != nil {
		fmt.Fprintf(&b, " exit=%d", *m.Exit)
	}
	if m.Signal != "" {
		b.WriteString(" signal=" + m.Signal)
	}
	if m.Reason != "" {
		b.WriteString(" reason=" + m.Reason)
	}
	b.WriteString(" time=" + m.Time.UTC().Format(time.RFC3339Nano) + "]\n")
	return []byte(b.String())
}

// parseMarker parses the body of a marker: the text between the prefix
// (tag, nonce, space) and the closing "]".
func parseMarker(body string) (Marker, bool) {
	fields := strings.Fields(body)
	if len(fields) == 0 || (fields[0] != "start" && fields[0] != "end") {
		return Marker{}, false
	}
	m := Marker{Kind: fields[0]}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Marker{}, false
		}
		var err error
		switch k {
		case "attempt":
			m.Attempt, err = strconv.Atoi(v)
		case "pid":
			m.PID, err = strconv.Atoi(v)
		case "exit":
			var n int
			n, err = strconv.Atoi(v)
			m.Exit = &n
		case "host":
			m.Host = v
		case "signal":
			m.Signal = v
		case "reason":
			m.Reason = v
		case "time":
			m.Time, err = time.Parse(time.RFC3339Nano, v)
		}
		if err != nil {
			return Marker{}, false
		}
	}
	if m.Attempt < 1 {
		return Marker{}, false
	}
	return m, true
}

// span is where a marker lies in a buffer.
type span struct {
	start, end int
	m          Marker
}

// findMarkers returns the markers of the job with nonce in buf, in order.
// base is the file offset of buf[0].
func findMarkers(buf []byte, nonce string, base int64) []span {
	prefix := markerPrefix(nonce)
	var out []span
	for i := 0; i < len(buf); {
		j := bytes.Index(buf[i:], prefix)
		if j < 0 {
			break
		}
		start := i + j
		limit := min(len(buf), start+MaxMarkerLen)
		k := bytes.Index(buf[start+len(prefix):limit], []byte("]\n"))
		if k < 0 {
			i = start + 1
			continue
		}
		end := start + len(prefix) + k + 2
		m, ok := parseMarker(string(buf[start+len(prefix) : end-2]))
		if !ok {
			i = start + 1
			continue
		}
		m.Offset = base + int64(start)
		m.Len = end - start
		out = append(out, span{start, end, m})
		i = end
	}
	return out
}

// ParseMarkers returns every marker of the job with nonce in buf.
func ParseMarkers(buf []byte, nonce string) []Marker {
	spans := findMarkers(buf, nonce, 0)
	out := make([]Marker, len(spans))
	for i, s := range spans {
		out[i] = s.m
	}
	return out
}

// WriteMarker appends m to a job's output file, open for appending as w:
// one write(2), so that a marker is never split by the job's own bytes.
// The wrapper and cancel both write markers through it.
func WriteMarker(w io.Writer, m Marker, nonce string) error {
	_, err := w.Write(m.Format(nonce))
	return err
}

// AppendMarker opens job r's output and appends m: for a writer that has
// no descriptor of its own (cancel, for a job whose wrapper is gone).
func (s *Store) AppendMarker(r *Record, m Marker) error {
	out, err := s.OpenAppend(r.ID)
	if err != nil {
		return err
	}
	defer out.Close()
	return WriteMarker(out, m, r.Nonce)
}
