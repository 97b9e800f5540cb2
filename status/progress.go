package status

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"
)

// Progress is what a job last reported of how far it has got: a line
// "DONE/TOTAL message" in the file $CMESH_RUN_PROGRESS names.
type Progress struct {
	Done      int64     `json:"done"`
	Total     int64     `json:"total"`
	Message   string    `json:"message"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Bounds of what a reader takes from a progress file: the job may write
// it as it likes (rewrite it, append to it for hours), a reader reads at
// most its last ProgressTail bytes, and a message of at most
// MaxProgressMessage bytes.
const (
	ProgressTail       = 4096
	MaxProgressMessage = 200
)

// ReadProgress returns the progress the file at path reports: its last
// well-formed line, nil when it has none. The job owns the file: it is
// opened without following a link or blocking on a FIFO, and only a
// regular file is read.
func ReadProgress(path string) *Progress {
	f, err := openNoFollow(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return nil
	}
	from := max(0, st.Size()-ProgressTail)
	buf := make([]byte, st.Size()-from)
	n, err := f.ReadAt(buf, from)
	if err != nil && err != io.EOF {
		return nil
	}
	lines := bytes.Split(buf[:n], []byte("\n"))
	if from > 0 {
		lines = lines[1:] // the first may be the end of a longer line
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if p, ok := ParseProgress(lines[i]); ok {
			// Whole seconds: what every reader (PHP's stat too) can say alike.
			p.UpdatedAt = st.ModTime().UTC().Truncate(time.Second)
			return &p
		}
	}
	return nil
}

// ParseProgress parses one line "DONE/TOTAL message": DONE and TOTAL
// whole numbers, 0 <= DONE <= TOTAL, TOTAL > 0; the message optional,
// valid UTF-8, cut to MaxProgressMessage bytes.
func ParseProgress(line []byte) (Progress, bool) {
	line = bytes.TrimRight(line, "\r")
	frac, msg, _ := bytes.Cut(line, []byte(" "))
	d, t, ok := bytes.Cut(frac, []byte("/"))
	if !ok || !digits(d) || !digits(t) {
		return Progress{}, false
	}
	done, err1 := strconv.ParseInt(string(d), 10, 64)
	total, err2 := strconv.ParseInt(string(t), 10, 64)
	if err1 != nil || err2 != nil || total <= 0 || done < 0 || done > total || !utf8.Valid(msg) {
		return Progress{}, false
	}
	msg = bytes.TrimSpace(msg)
	if len(msg) > MaxProgressMessage {
		cut := MaxProgressMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	for _, c := range msg {
		if c < 0x20 || c == 0x7f {
			return Progress{}, false
		}
	}
	return Progress{Done: done, Total: total, Message: string(msg)}, true
}

func digits(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
