package status

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The defaults of job control, for every caller: the time a job gets
// between SIGTERM and SIGKILL (timeout, cancel), and before a retry.
const (
	DefaultGrace      = 10 * time.Second
	DefaultRetryDelay = 10 * time.Second
	// DefaultHookTimeout is how long a job's hook may run before its
	// whole tree is killed, unless the config says otherwise.
	DefaultHookTimeout = 30 * time.Second
)

// Spec is what the wrapper needs besides the argv: it travels on the
// wrapper's stdin (a here-document inside the backend's script), so no
// secret in it shows in ps and no file the caller owns is read at run time.
// Values are Go-quoted, which keeps any bytes exact.
type Spec struct {
	Nonce string
	// Key makes the record's SpecMAC: it travels only in the backend's
	// script, which nobody but the job's user (and root) can read.
	Key     string
	Workdir string
	Env     []string
	// Job control, all optional.
	Timeout    time.Duration // per attempt; 0: none
	Grace      time.Duration // between SIGTERM and SIGKILL on timeout
	Retries    int           // more attempts after a non-zero exit
	RetryDelay time.Duration
	Nice       int
	Limits     []Rlimit
	Slots      int // max_running of the job's queue
	Queue      string
	After      []string  // jobs that must finish first
	AfterAny   bool      // whatever they ended as
	NotBefore  time.Time // not started before then (zero: at once)
	// Hooks: what the wrapper runs once the job has ended (OnFailure
	// instead of OnFinish after a failure), from the config only.
	OnFinish, OnFailure []string
	HookTimeout         time.Duration
	// Quotas for backends that can enforce them (systemd); the wrapper
	// itself does not read them.
	MemoryMax string
	CPUQuota  string
}

// Rlimit is a resource limit the job starts with.
type Rlimit struct {
	Name  string // cpu, nofile, core
	Value uint64
}

// Encode renders the spec as lines of `key "quoted value"`.
func (s Spec) Encode() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "nonce %s\n", strconv.Quote(s.Nonce))
	if s.Key != "" {
		fmt.Fprintf(&b, "key %s\n", strconv.Quote(s.Key))
	}
	fmt.Fprintf(&b, "workdir %s\n", strconv.Quote(s.Workdir))
	for _, e := range s.Env {
		fmt.Fprintf(&b, "env %s\n", strconv.Quote(e))
	}
	num := func(key string, v int64) {
		if v != 0 {
			fmt.Fprintf(&b, "%s %s\n", key, strconv.Quote(strconv.FormatInt(v, 10)))
		}
	}
	num("timeout", int64(s.Timeout))
	num("grace", int64(s.Grace))
	num("retries", int64(s.Retries))
	num("retry_delay", int64(s.RetryDelay))
	num("nice", int64(s.Nice))
	num("slots", int64(s.Slots))
	if s.Queue != "" {
		fmt.Fprintf(&b, "queue %s\n", strconv.Quote(s.Queue))
	}
	for _, id := range s.After {
		fmt.Fprintf(&b, "after %s\n", strconv.Quote(id))
	}
	if s.AfterAny {
		fmt.Fprintf(&b, "after_any %s\n", strconv.Quote("1"))
	}
	if !s.NotBefore.IsZero() {
		fmt.Fprintf(&b, "not_before %s\n", strconv.Quote(strconv.FormatInt(s.NotBefore.UnixNano(), 10)))
	}
	for _, l := range s.Limits {
		fmt.Fprintf(&b, "rlimit %s\n", strconv.Quote(l.Name+"="+strconv.FormatUint(l.Value, 10)))
	}
	for _, a := range s.OnFinish {
		fmt.Fprintf(&b, "on_finish %s\n", strconv.Quote(a))
	}
	for _, a := range s.OnFailure {
		fmt.Fprintf(&b, "on_failure %s\n", strconv.Quote(a))
	}
	num("hook_timeout", int64(s.HookTimeout))
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
		case "key":
			s.Key = v
		case "workdir":
			s.Workdir = v
		case "env":
			s.Env = append(s.Env, v)
		case "on_finish":
			s.OnFinish = append(s.OnFinish, v)
		case "on_failure":
			s.OnFailure = append(s.OnFailure, v)
		case "timeout", "grace", "retries", "retry_delay", "nice", "slots", "hook_timeout":
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return s, fmt.Errorf("job spec line %d: %s: %v", n, key, err)
			}
			switch key {
			case "timeout":
				s.Timeout = time.Duration(x)
			case "grace":
				s.Grace = time.Duration(x)
			case "retries":
				s.Retries = int(x)
			case "retry_delay":
				s.RetryDelay = time.Duration(x)
			case "nice":
				s.Nice = int(x)
			case "slots":
				s.Slots = int(x)
			case "hook_timeout":
				s.HookTimeout = time.Duration(x)
			}
		case "queue":
			s.Queue = v
		case "after":
			s.After = append(s.After, v)
		case "after_any":
			s.AfterAny = v == "1"
		case "not_before":
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return s, fmt.Errorf("job spec line %d: not_before: %v", n, err)
			}
			s.NotBefore = time.Unix(0, x).UTC()
		case "rlimit":
			name, val, _ := strings.Cut(v, "=")
			x, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return s, fmt.Errorf("job spec line %d: rlimit: %v", n, err)
			}
			s.Limits = append(s.Limits, Rlimit{name, x})
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

// MAC binds argv and every value of the spec but the key to the key: the
// record keeps it, so that a wrapper started by anyone who read the
// record's nonce still runs nothing but what was scheduled (see the
// wrapper). Without the key it cannot be made, and it tells nothing of
// the environment's values.
func (s Spec) MAC(argv []string) string {
	key := s.Key
	s.Key = ""
	h := hmac.New(sha256.New, []byte(key))
	for _, a := range argv {
		fmt.Fprintf(h, "arg %s\n", strconv.Quote(a))
	}
	h.Write(s.Encode())
	return hex.EncodeToString(h.Sum(nil))
}

// MACMatches tells whether mac is s.MAC(argv).
func (s Spec) MACMatches(argv []string, mac string) bool {
	return s.Key != "" && hmac.Equal([]byte(s.MAC(argv)), []byte(mac))
}
