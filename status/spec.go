package status

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Spec is what the wrapper needs besides the argv: it travels on the
// wrapper's stdin (a here-document inside the backend's script), so no
// secret in it shows in ps and no file the caller owns is read at run time.
// Values are Go-quoted, which keeps any bytes exact.
type Spec struct {
	Nonce   string
	Workdir string
	Env     []string
}

// Encode renders the spec as lines of `key "quoted value"`.
func (s Spec) Encode() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "nonce %s\n", strconv.Quote(s.Nonce))
	fmt.Fprintf(&b, "workdir %s\n", strconv.Quote(s.Workdir))
	for _, e := range s.Env {
		fmt.Fprintf(&b, "env %s\n", strconv.Quote(e))
	}
	return []byte(b.String())
}

// DecodeSpec parses what Encode wrote.
func DecodeSpec(r io.Reader) (Spec, error) {
	var s Spec
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		key, q, ok := strings.Cut(line, " ")
		v, err := strconv.Unquote(q)
		if !ok || err != nil {
			return s, fmt.Errorf("job spec line %d: malformed", n)
		}
		switch key {
		case "nonce":
			s.Nonce = v
		case "workdir":
			s.Workdir = v
		case "env":
			s.Env = append(s.Env, v)
		default:
			return s, fmt.Errorf("job spec line %d: unknown key %q", n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if s.Nonce == "" || s.Workdir == "" {
		return s, fmt.Errorf("job spec: nonce or workdir missing")
	}
	return s, nil
}
