// Package errs holds the kinds of error cmesh-run reports: each maps to one
// exit status of the man page (EXIT STATUS), and carries a one-line message
// and the fix to try.
package errs

import (
	"errors"
	"fmt"
)

// Kind is what went wrong, in the terms of the exit statuses callers rely on.
type Kind int

const (
	Internal Kind = iota
	Usage
	NotFound
	Unavailable
	Denied
)

// Error carries a kind, a one-line message and the fix the user should try.
type Error struct {
	Kind Kind
	Msg  string
	Hint string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an Error of the given kind.
func Errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// WithHint returns e with a hint attached.
func (e *Error) WithHint(format string, args ...any) *Error {
	e.Hint = fmt.Sprintf(format, args...)
	return e
}

// KindOf reports the kind of err; errors that carry none are internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// HintOf returns the hint attached to err, if any.
func HintOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Hint
	}
	return ""
}

// codes are the error codes of --json output and spool answers, by kind.
var codes = map[Kind]string{Internal: "internal", Usage: "usage", NotFound: "not_found", Unavailable: "backend_unavailable", Denied: "denied"}

// Code is err's code in --json output: usage, not_found,
// backend_unavailable, denied or internal.
func Code(err error) string { return codes[KindOf(err)] }
