package job

import (
	"errors"
	"fmt"
	"strings"
)

// Code classifies an error for the person or program that receives it.
// Adapters map codes to their own vocabulary (HTTP statuses) in one table.
type Code string

const (
	EInvalid  Code = "invalid"
	ENotFound Code = "not_found"
	EConflict Code = "conflict"
	// EKeyReused: an Idempotency-Key sent again with a different request.
	EKeyReused    Code = "idempotency_key_reused"
	ETooLarge     Code = "too_large"
	EMethod       Code = "method_not_allowed"
	EForbidden    Code = "forbidden"
	EUnauthorized Code = "unauthorized"
	EBusy         Code = "too_many_requests"
	// ERange: a byte range outside what was asked for (a download).
	ERange       Code = "range_not_satisfiable"
	EUnavailable Code = "unavailable"
	EInternal    Code = "internal"
)

// Error is an error meant to be shown: its message says what is wrong and,
// where it can, what to do.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal
// for any other non-nil error and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the message of the first *Error in err's chain, or
// "internal error" for others: internal details go to the log, not the user.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// Unavailable turns a failure of the store (named by what, e.g. "job
// store") into an EUnavailable error whose message tells the client what
// happened and what to do; err stays in the chain for the log.
func Unavailable(what string, err error) error {
	msg := fmt.Sprintf("the %s is not answering (%v); try again shortly", what, err)
	s := err.Error()
	switch {
	case strings.Contains(s, "no space left") || strings.Contains(s, "insufficient storage"):
		msg = fmt.Sprintf("the %s is out of disk space (%v): free space under the server's data directory, then try again", what, err)
	case strings.Contains(s, "insufficient resources"):
		// The embedded server's streams hold all the disk has room for
		// (natsx's storeLimit).
		msg = fmt.Sprintf("the %s holds all that the disk of the server's data directory has room for (%v): delete datasets or finished jobs, or free space on that disk, then try again", what, err)
	case strings.Contains(s, "maximum payload exceeded") || strings.Contains(s, "message size exceeds maximum"):
		// Trying again would fail again: not unavailable, too large.
		return &unavailable{cause: err, e: Errorf(ETooLarge, "the %s refused it as larger than one message may be (%v): make it smaller (a job's record holds its params and its partitions' results; each task its params)", what, err)}
	}
	return &unavailable{cause: err, e: Errorf(EUnavailable, "%s", msg)}
}

// unavailable carries a user-facing *Error and its cause.
type unavailable struct {
	cause error
	e     *Error
}

func (u *unavailable) Error() string   { return u.cause.Error() }
func (u *unavailable) Unwrap() []error { return []error{u.e, u.cause} }

// quoteMax is how much of a value from a request an error message repeats.
const quoteMax = 64

// Quote returns s quoted (as %q does) for an error message that repeats a
// value from a request, cut to its first 64 characters when longer: an
// id, a name or a query value may be as long as the request allows, and an
// answer repeating kilobytes of it says no more than its start.
func Quote(s string) string {
	if len(s) <= quoteMax {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", prefix(s, quoteMax), len(s))
}
