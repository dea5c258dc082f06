package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/hook"
	"github.com/emberhq/ember/plugin"
)

// allCodes lists every defined code with its name.
var allCodes = []struct {
	code plugin.Code
	name string
}{
	{plugin.CodeOK, "ok"},
	{plugin.CodeCanceled, "canceled"},
	{plugin.CodeUnknown, "unknown"},
	{plugin.CodeInvalidArgument, "invalid_argument"},
	{plugin.CodeDeadlineExceeded, "deadline_exceeded"},
	{plugin.CodeNotFound, "not_found"},
	{plugin.CodeResourceExhausted, "resource_exhausted"},
	{plugin.CodeUnimplemented, "unimplemented"},
	{plugin.CodeInternal, "internal"},
	{plugin.CodeUnavailable, "unavailable"},
	{plugin.CodeUnauthenticated, "unauthenticated"},
}

func TestCodeString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code plugin.Code
		want string
	}{
		{plugin.Code(7), "code_7"},
		{plugin.Code(99), "code_99"},
	}
	for _, c := range allCodes {
		tests = append(tests, struct {
			code plugin.Code
			want string
		}{c.code, c.name})
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			if got := tt.code.String(); got != tt.want {
				t.Errorf("Code(%d).String() = %q, want %q", uint32(tt.code), got, tt.want)
			}
		})
	}
}

func TestCodeValid(t *testing.T) {
	t.Parallel()
	for _, c := range allCodes {
		if !c.code.Valid() {
			t.Errorf("%v.Valid() = false, want true", c.code)
		}
	}
	// gRPC codes outside Ember's closed set, and values past the end.
	for _, n := range []uint32{6, 7, 9, 10, 11, 15, 17, 1 << 31} {
		if plugin.Code(n).Valid() {
			t.Errorf("Code(%d).Valid() = true, want false", n)
		}
	}
}

func TestCodesMatchGRPC(t *testing.T) {
	t.Parallel()
	// The numbering is append-only and equals gRPC's; pin it.
	want := map[plugin.Code]uint32{
		plugin.CodeOK: 0, plugin.CodeCanceled: 1, plugin.CodeUnknown: 2, plugin.CodeInvalidArgument: 3,
		plugin.CodeDeadlineExceeded: 4, plugin.CodeNotFound: 5, plugin.CodeResourceExhausted: 8,
		plugin.CodeUnimplemented: 12, plugin.CodeInternal: 13, plugin.CodeUnavailable: 14,
		plugin.CodeUnauthenticated: 16,
	}
	for c, n := range want {
		if uint32(c) != n {
			t.Errorf("%v = %d, want %d", c, uint32(c), n)
		}
	}
}

func TestNewError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		code     plugin.Code
		msg      string
		wantCode plugin.Code
		wantText string
	}{
		{"not found", plugin.CodeNotFound, "no such key", plugin.CodeNotFound, "not_found: no such key"},
		{"ok becomes unknown", plugin.CodeOK, "oops", plugin.CodeUnknown, "unknown: oops"},
		// As on the wire: the set of codes is closed.
		{"a code outside the set becomes unknown", plugin.Code(99), "oops", plugin.CodeUnknown, "unknown: oops"},
		{"empty message", plugin.CodeInternal, "", plugin.CodeInternal, "internal"},
		{"internal", plugin.CodeInternal, "boom", plugin.CodeInternal, "internal: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := plugin.NewError(tt.code, tt.msg)
			if got := err.Code(); got != tt.wantCode {
				t.Errorf("Code() = %v, want %v", got, tt.wantCode)
			}
			if got := err.Message(); got != tt.msg {
				t.Errorf("Message() = %q, want %q", got, tt.msg)
			}
			if got := err.Error(); got != tt.wantText {
				t.Errorf("Error() = %q, want %q", got, tt.wantText)
			}
			if got := err.Unwrap(); got != nil {
				t.Errorf("Unwrap() = %v, want nil", got)
			}
		})
	}
}

func TestErrorf(t *testing.T) {
	t.Parallel()
	cause := errors.New("disk on fire")
	tests := []struct {
		name      string
		err       *plugin.Error
		wantMsg   string
		wantCause error // nil: no cause
	}{
		{"no verbs", plugin.Errorf(plugin.CodeInternal, "plain"), "plain", nil},
		{"%v does not wrap", plugin.Errorf(plugin.CodeInternal, "write: %v", cause), "write: disk on fire", nil},
		{"%w wraps", plugin.Errorf(plugin.CodeInternal, "write: %w", cause), "write: disk on fire", cause},
		{"%w of a sentinel", plugin.Errorf(plugin.CodeUnavailable, "conn: %w", plugin.ErrClosed), "conn: ember: closed", plugin.ErrClosed},
		{"%w of a wrapped error", plugin.Errorf(plugin.CodeInternal, "outer: %w", fmt.Errorf("inner: %w", io.EOF)), "outer: inner: EOF", io.EOF},
		{"ok code becomes unknown", plugin.Errorf(plugin.CodeOK, "x %d", 1), "x 1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.err.Message(); got != tt.wantMsg {
				t.Errorf("Message() = %q, want %q", got, tt.wantMsg)
			}
			if tt.err.Code() == plugin.CodeOK {
				t.Errorf("Code() = ok, want a non-OK code")
			}
			if tt.wantCause == nil {
				if got := tt.err.Unwrap(); got != nil {
					t.Errorf("Unwrap() = %v, want nil", got)
				}
				if errors.Is(tt.err, cause) {
					t.Errorf("errors.Is(err, cause) = true, want false")
				}
				return
			}
			if !errors.Is(tt.err, tt.wantCause) {
				t.Errorf("errors.Is(%v, %v) = false, want true", tt.err, tt.wantCause)
			}
		})
	}
}

// TestErrorfMultipleW pins that every %w operand is visible to errors.Is, as
// with fmt.Errorf. Regression: Errorf kept errors.Unwrap(err), which is nil
// for an error wrapping several (Unwrap() []error).
func TestErrorfMultipleW(t *testing.T) {
	t.Parallel()
	a, b := errors.New("a"), errors.New("b")
	err := plugin.Errorf(plugin.CodeInternal, "%w and %w", a, b)
	if got := err.Message(); got != "a and b" {
		t.Errorf("Message() = %q, want %q", got, "a and b")
	}
	for _, target := range []error{a, b} {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(Errorf(%%w and %%w), %v) = false, want true", target)
		}
	}
}

func TestErrorIsContext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code         plugin.Code
		wantDeadline bool
		wantCanceled bool
	}{
		{plugin.CodeDeadlineExceeded, true, false},
		{plugin.CodeCanceled, false, true},
		{plugin.CodeUnavailable, false, false},
		{plugin.CodeUnknown, false, false},
		{plugin.CodeInternal, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			t.Parallel()
			for _, err := range []error{
				plugin.NewError(tt.code, "x"),
				fmt.Errorf("wrapped: %w", plugin.NewError(tt.code, "x")),
			} {
				if got := errors.Is(err, context.DeadlineExceeded); got != tt.wantDeadline {
					t.Errorf("errors.Is(%v, context.DeadlineExceeded) = %v, want %v", err, got, tt.wantDeadline)
				}
				if got := errors.Is(err, context.Canceled); got != tt.wantCanceled {
					t.Errorf("errors.Is(%v, context.Canceled) = %v, want %v", err, got, tt.wantCanceled)
				}
				if errors.Is(err, io.EOF) {
					t.Errorf("errors.Is(%v, io.EOF) = true, want false", err)
				}
			}
		})
	}
}

func TestErrorAs(t *testing.T) {
	t.Parallel()
	orig := plugin.NewError(plugin.CodeNotFound, "gone")
	err := fmt.Errorf("layer 2: %w", fmt.Errorf("layer 1: %w", orig))
	var e *plugin.Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(%v, *plugin.Error) = false, want true", err)
	}
	if e != orig {
		t.Errorf("errors.As found %p, want %p", e, orig)
	}
}

func TestCodeOf(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		err  error
		want plugin.Code
	}{
		{"nil", nil, plugin.CodeOK},
		{"plugin error", plugin.NewError(plugin.CodeNotFound, "x"), plugin.CodeNotFound},
		{"wrapped plugin error", fmt.Errorf("a: %w", plugin.NewError(plugin.CodeResourceExhausted, "x")), plugin.CodeResourceExhausted},
		{"doubly wrapped", fmt.Errorf("b: %w", fmt.Errorf("a: %w", plugin.NewError(plugin.CodeUnauthenticated, "x"))), plugin.CodeUnauthenticated},
		{"plugin error beats its cause", plugin.Errorf(plugin.CodeUnavailable, "%w", context.Canceled), plugin.CodeUnavailable},
		{"deadline", context.DeadlineExceeded, plugin.CodeDeadlineExceeded},
		{"wrapped deadline", fmt.Errorf("ask: %w", context.DeadlineExceeded), plugin.CodeDeadlineExceeded},
		{"canceled", context.Canceled, plugin.CodeCanceled},
		{"ctx.Err after cancel", ctx.Err(), plugin.CodeCanceled},
		{"the asker's cancel, a handler's ctx's cause", plugin.ErrAskCanceled, plugin.CodeCanceled},
		{"plain", errors.New("boom"), plugin.CodeUnknown},
		{"sentinel", plugin.ErrClosed, plugin.CodeUnknown},
		{"joined", errors.Join(errors.New("a"), plugin.NewError(plugin.CodeInternal, "b")), plugin.CodeInternal},
		{"nil *Error as an error", (*plugin.Error)(nil), plugin.CodeUnknown},
		{"wrapped nil *Error", fmt.Errorf("a: %w", (*plugin.Error)(nil)), plugin.CodeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := plugin.CodeOf(tt.err); got != tt.want {
				t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestIsRemote(t *testing.T) {
	t.Parallel()
	remote := hook.WireError(uint32(plugin.CodeNotFound), "no such key", false)
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"NewError", plugin.NewError(plugin.CodeNotFound, "x"), false},
		{"Errorf", plugin.Errorf(plugin.CodeUnavailable, "lost: %w", plugin.ErrClosed), false},
		{"plain", errors.New("boom"), false},
		{"context", context.DeadlineExceeded, false},
		{"wrapped local", fmt.Errorf("a: %w", plugin.NewError(plugin.CodeInternal, "x")), false},
		{"from the wire", remote, true},
		{"wrapped from the wire", fmt.Errorf("ask: %w", remote), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := plugin.IsRemote(tt.err); got != tt.want {
				t.Errorf("IsRemote(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestWireError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		code       uint32
		closed     bool // a refusal by a plugin that has shut down
		wantCode   plugin.Code
		wantClosed bool // matches ErrClosed
	}{
		{"valid code kept", uint32(plugin.CodeResourceExhausted), false, plugin.CodeResourceExhausted, false},
		{"ok becomes unknown", 0, false, plugin.CodeUnknown, false},
		{"undefined becomes unknown", 7, false, plugin.CodeUnknown, false},
		{"out of range becomes unknown", 1000, false, plugin.CodeUnknown, false},
		{"unavailable, not closed", uint32(plugin.CodeUnavailable), false, plugin.CodeUnavailable, false},
		{"closed", uint32(plugin.CodeUnavailable), true, plugin.CodeUnavailable, true},
		{"closed with another code", uint32(plugin.CodeNotFound), true, plugin.CodeNotFound, false}, // not ErrClosed's code
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := hook.WireError(tt.code, "msg", tt.closed)
			var e *plugin.Error
			if !errors.As(err, &e) {
				t.Fatalf("WireError returned %T, want *plugin.Error", err)
			}
			if got := e.Code(); got != tt.wantCode {
				t.Errorf("Code() = %v, want %v", got, tt.wantCode)
			}
			if got := e.Message(); got != "msg" {
				t.Errorf("Message() = %q, want %q", got, "msg")
			}
			if got := errors.Is(err, plugin.ErrClosed); got != tt.wantClosed {
				t.Errorf("errors.Is(%v, ErrClosed) = %v, want %v", err, got, tt.wantClosed)
			}
			if !plugin.IsRemote(err) {
				t.Errorf("IsRemote(%v) = false, want true", err)
			}
		})
	}
	if err := hook.WireError(uint32(plugin.CodeDeadlineExceeded), "late", false); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("remote deadline_exceeded: errors.Is(context.DeadlineExceeded) = false, want true")
	}
}

// A nil *Error returned as a non-nil error (the typed-nil mistake) must not
// crash whoever handles it: every method answers, and it reads as
// CodeUnknown with a message that names the mistake.
func TestNilError(t *testing.T) {
	t.Parallel()
	var e *plugin.Error
	var err error = e
	if got := e.Code(); got != plugin.CodeUnknown {
		t.Errorf("Code() = %v, want %v", got, plugin.CodeUnknown)
	}
	if got, want := err.Error(), "unknown: a nil *plugin.Error was returned as a non-nil error"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := e.Message(); !strings.Contains(got, "nil *plugin.Error") {
		t.Errorf("Message() = %q, want it to name the nil *plugin.Error", got)
	}
	if e.Unwrap() != nil {
		t.Errorf("Unwrap() = %v, want nil", e.Unwrap())
	}
	for _, target := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, target) {
			t.Errorf("errors.Is(nil *Error, %v) = true, want false", target)
		}
	}
	if plugin.IsRemote(err) {
		t.Error("IsRemote(nil *Error) = true, want false")
	}
}
