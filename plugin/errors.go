package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/emberhq/ember/internal/hook"
)

// Code classifies an [Error]. The values equal the gRPC status codes of the
// same names, so that codes map 1:1 onto gRPC. The set is closed and the
// numbering is append-only.
type Code uint32

// The codes an [Error] can carry. CodeOK is never the code of an Error: a
// non-nil error always has a non-OK code.
const (
	CodeOK                Code = 0
	CodeCanceled          Code = 1
	CodeUnknown           Code = 2
	CodeInvalidArgument   Code = 3
	CodeDeadlineExceeded  Code = 4
	CodeNotFound          Code = 5
	CodeResourceExhausted Code = 8
	CodeUnimplemented     Code = 12
	CodeInternal          Code = 13
	CodeUnavailable       Code = 14
	CodeUnauthenticated   Code = 16
)

var codeNames = map[Code]string{
	CodeOK:                "ok",
	CodeCanceled:          "canceled",
	CodeUnknown:           "unknown",
	CodeInvalidArgument:   "invalid_argument",
	CodeDeadlineExceeded:  "deadline_exceeded",
	CodeNotFound:          "not_found",
	CodeResourceExhausted: "resource_exhausted",
	CodeUnimplemented:     "unimplemented",
	CodeInternal:          "internal",
	CodeUnavailable:       "unavailable",
	CodeUnauthenticated:   "unauthenticated",
}

// String returns the code's snake_case name, e.g. "not_found".
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code_%d", uint32(c))
}

// Valid reports whether c is one of the defined codes.
func (c Code) Valid() bool {
	_, ok := codeNames[c]
	return ok
}

// Error is the one error type that crosses the wire between a driver and
// its executors. Every error returned by Ask, Send, AskExecutor,
// SendExecutor and Broadcast is, or wraps, an *Error; match it with
// [errors.As], [CodeOf], or [errors.Is] against a sentinel or against
// [context.DeadlineExceeded] and [context.Canceled].
//
// An Error is immutable once created and safe for concurrent use.
type Error struct {
	code   Code
	msg    string
	remote bool
	cause  error
}

// NewError returns an error with the given code and message. A Receive
// handler returns one to give the asker a specific code; any other error
// reaches the asker with the code [CodeOf] gives it and its message
// intact: [CodeUnknown], or, for one wrapping context.Canceled or
// context.DeadlineExceeded, CodeCanceled or CodeDeadlineExceeded (as in
// gRPC; [IsRemote] tells it from the asker's own ctx ending). An error
// wrapping an *Error keeps that code, and its text arrives with the code
// named once, in front: fmt.Errorf("lookup: %w", NewError(CodeNotFound,
// "no such key")) reads "not_found: lookup: no such key". CodeOK, or a
// code outside the set, becomes CodeUnknown here, as it would on the
// wire.
func NewError(code Code, msg string) *Error {
	if code == CodeOK || !code.Valid() {
		code = CodeUnknown
	}
	return &Error{code: code, msg: msg}
}

// Errorf is [NewError] with a formatted message. A %w verb makes the
// wrapped error visible to errors.Is and errors.As on this side of the wire
// only; only the message crosses it.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	e := NewError(code, err.Error())
	switch w := err.(type) {
	case interface{ Unwrap() error }:
		e.cause = w.Unwrap()
	case interface{ Unwrap() []error }:
		e.cause = err // several %w: keep them all reachable
	}
	return e
}

// A nil *Error returned as an error (var e *plugin.Error; return nil, e)
// is a non-nil error in Go. Every method accepts one, and it reaches the
// other side as CodeUnknown with this message, rather than crashing the
// process that handles it.
const nilErrorMessage = "a nil *plugin.Error was returned as a non-nil error"

// Code returns the error's code: CodeUnknown for a nil *Error.
func (e *Error) Code() Code {
	if e == nil {
		return CodeUnknown
	}
	return e.code
}

// Message returns the error's message without the code prefix. Like the
// other methods, it accepts a nil *Error (one returned as a non-nil
// error by mistake), whose message says so.
func (e *Error) Message() string {
	if e == nil {
		return nilErrorMessage
	}
	return e.msg
}

// Error returns "<code>: <message>", or "<code>" alone when the message
// is empty.
func (e *Error) Error() string {
	if e.Message() == "" {
		return e.Code().String()
	}
	return e.Code().String() + ": " + e.Message()
}

// Unwrap returns the local cause, if any. Causes do not cross the wire,
// but for one: an ask refused because the plugin it was for has shut
// down on the other side (its executor stopping, or the driver plugin
// after Shutdown) unwraps to [ErrClosed], as a call to a side that has
// gone does.
func (e *Error) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.cause
}

// Is makes an error with CodeDeadlineExceeded match
// [context.DeadlineExceeded] and one with CodeCanceled match
// [context.Canceled], wherever the deadline expired.
func (e *Error) Is(target error) bool {
	if e == nil {
		return false
	}
	switch target {
	case context.DeadlineExceeded:
		return e.code == CodeDeadlineExceeded
	case context.Canceled:
		return e.code == CodeCanceled
	}
	return false
}

// IsRemote reports whether err came from the other side of the wire (a
// reply from a Receive handler, or a refusal by the peer), as opposed to a
// failure detected locally.
func IsRemote(err error) bool {
	var e *Error
	return errors.As(err, &e) && e != nil && e.remote
}

// CodeOf returns the code of the *Error in err's chain. A context error maps
// to CodeCanceled or CodeDeadlineExceeded, nil to CodeOK, and anything else
// to CodeUnknown.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	}
	return CodeUnknown
}

// Sentinels for conditions detected locally. Errors returned by the API wrap
// them inside an *Error, so both errors.Is(err, ErrClosed) and CodeOf(err)
// work.
var (
	// ErrClosed: the connection or runtime has shut down (CodeUnavailable).
	ErrClosed = errors.New("ember: closed")
	// ErrUnregisteredMessage: the message's type was not registered with
	// RegisterMessage (CodeInvalidArgument).
	ErrUnregisteredMessage = errors.New("ember: unregistered message type")
	// ErrMessageTooLarge: the encoded message exceeds the size limit
	// (CodeResourceExhausted). Like the other sentinels, it is matched
	// where the limit was met: a message refused on the other side of the
	// wire (a task's output over its executor's limit, in Map's error)
	// arrives as CodeResourceExhausted, with this text at the end of its
	// message; test for it with CodeOf, not errors.Is.
	ErrMessageTooLarge = errors.New("ember: message too large")
	// ErrNoSuchExecutor: no live executor has the given ID (CodeNotFound).
	ErrNoSuchExecutor = errors.New("ember: no such executor")
	// ErrShuttingDown: the driver is shutting down (CodeUnavailable). A
	// driver plugin's calls to executors fail with it once shutdown has
	// begun, and so do those in flight then; such an error matches
	// ErrClosed too. An executor lost, or stopping on its own, gives
	// ErrClosed without it: a coordinator that asks another executor
	// after ErrClosed stops at ErrShuttingDown.
	ErrShuttingDown = errors.New("ember: the driver is shutting down")
	// ErrAskCanceled is not returned by the API: it is the cause
	// (context.Cause) of a Receive ctx that ended because the asker gave
	// up first: its ctx was canceled, or its deadline passed before the
	// handler's copy of it (which counts from when the ask arrived, so
	// later by the ask's time on its way). That ctx's Err is
	// context.Canceled, which ErrAskCanceled wraps, so that a handler
	// returning the cause answers with CodeCanceled.
	ErrAskCanceled = fmt.Errorf("ember: the asker canceled the ask: %w", context.Canceled)
)

func init() {
	hook.WireError = func(code uint32, msg string, closed bool) error {
		c := Code(code)
		if c == CodeOK || !c.Valid() {
			c = CodeUnknown
		}
		e := &Error{code: c, msg: msg, remote: true}
		if closed && c == CodeUnavailable { // ErrClosed's code: a peer's other claim is ignored
			e.cause = ErrClosed
		}
		return e
	}
}
