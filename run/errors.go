package run

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cmesh/cmesh-run/errs"
	"github.com/cmesh/cmesh-run/policy"
)

// Exit statuses of SPEC.md; the man page's EXIT STATUS lists the same.
const (
	ExitOK          = 0
	ExitInternal    = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitUnavailable = 4
	ExitDenied      = 5
)

// exitError ends a command with a given status and nothing to print:
// wait uses it to pass on the job's exit code.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

var kinds = map[errs.Kind]struct {
	code int
	name string
}{
	errs.Internal:    {ExitInternal, "internal"},
	errs.Usage:       {ExitUsage, "usage"},
	errs.NotFound:    {ExitNotFound, "not_found"},
	errs.Unavailable: {ExitUnavailable, "backend_unavailable"},
	errs.Denied:      {ExitDenied, "denied"},
}

// Main runs the command line and returns the process's exit status. It is
// the one place where errors become exit statuses and messages.
func Main(args []string, stdout, stderr io.Writer) int {
	// A caller that closes its end of stdout or stderr must not kill
	// cmesh-run between a job's hand-over and its audit line: writes fail
	// with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	a, c := newApp(stdout, stderr)
	err := a.guardArgs(args)
	if err == nil {
		err = c.Run(args)
	}
	if err == nil {
		return ExitOK
	}
	// Every refusal leaves one audit line, wherever it was decided; under
	// sudo so does a usage error (a mistyped flag is an attempt too).
	if k := errs.KindOf(err); !a.audit.Done && (k == errs.Denied || k == errs.Usage && policy.Detect().Sudo) {
		if a.command == "" {
			a.command, _ = commandOf(args)
		}
		_ = a.refuseEarly(err)
	}
	var ee exitError
	if errors.As(err, &ee) {
		return int(ee)
	}
	k := kinds[errs.KindOf(err)]
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(stderr, "cmesh-run: error: %s\n", msg)
	if hint := errs.HintOf(err); hint != "" {
		fmt.Fprintf(stderr, "hint: %s\n", hint)
	}
	if wantsJSON(args) {
		type body struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Hint    string `json:"hint,omitempty"`
		}
		_ = json.NewEncoder(stdout).Encode(map[string]body{"error": {k.name, msg, errs.HintOf(err)}})
	}
	return k.code
}

// wantsJSON tells whether the command line asked for --json before any
// "--": errors found while parsing flags must honour it too.
func wantsJSON(args []string) bool {
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if a == "--json" || a == "-json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// Run is what main.go calls.
func Run() {
	os.Exit(Main(os.Args, os.Stdout, os.Stderr))
}
