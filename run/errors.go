package run

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cmesh/cmesh-run/policy"
	"github.com/cmesh/cmesh-run/status"
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

var kinds = map[status.Kind]struct {
	code int
	name string
}{
	status.Internal:    {ExitInternal, "internal"},
	status.Usage:       {ExitUsage, "usage"},
	status.NotFound:    {ExitNotFound, "not_found"},
	status.Unavailable: {ExitUnavailable, "backend_unavailable"},
	status.Denied:      {ExitDenied, "denied"},
}

// Main runs the command line and returns the process's exit status. It is
// the one place where errors become exit statuses and messages.
func Main(args []string, stdout, stderr io.Writer) int {
	a, c := newApp(stdout, stderr)
	err := a.guardArgs(args)
	if err == nil {
		err = c.Run(args)
	}
	if err == nil {
		return ExitOK
	}
	if status.KindOf(err) == status.Usage && !a.audited && policy.Detect().Sudo {
		// Under sudo every call that ran nothing is a refusal the audit
		// must show, a mistyped flag too.
		if a.command == "" {
			a.command, _ = commandOf(args)
		}
		_ = a.refuseEarly(err)
	}
	var ee exitError
	if errors.As(err, &ee) {
		return int(ee)
	}
	k := kinds[status.KindOf(err)]
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintf(stderr, "cmesh-run: error: %s\n", msg)
	if hint := status.HintOf(err); hint != "" {
		fmt.Fprintf(stderr, "hint: %s\n", hint)
	}
	if wantsJSON(args) {
		type body struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Hint    string `json:"hint,omitempty"`
		}
		_ = json.NewEncoder(stdout).Encode(map[string]body{"error": {k.name, msg, status.HintOf(err)}})
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
