package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/hook"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// Encode returns a frame carrying msg for plugin index idx. It fails with
// CodeInvalidArgument for a nil or unregistered message and with
// CodeResourceExhausted when the payload exceeds max bytes.
func Encode(idx uint32, msg any, max int) (*wire.Frame, error) {
	if msg == nil {
		return nil, plugin.NewError(plugin.CodeInvalidArgument, "nil message")
	}
	return encode(idx, msg, max)
}

func encode(idx uint32, msg any, max int) (*wire.Frame, error) {
	name, payload, err := codec.Encode(msg)
	if err != nil {
		if errors.Is(err, codec.ErrUnregistered) {
			// plugin's sentinel in place of codec's, which says the same
			// (the message said it twice).
			detail := strings.TrimPrefix(err.Error(), codec.ErrUnregistered.Error())
			return nil, plugin.Errorf(plugin.CodeInvalidArgument, "%w%s", plugin.ErrUnregisteredMessage, detail)
		}
		return nil, plugin.Errorf(plugin.CodeInvalidArgument, "%v", err)
	}
	if len(payload) > max {
		return nil, plugin.Errorf(plugin.CodeResourceExhausted, "%s is %d bytes, over the %d-byte limit: %w", name, len(payload), max, plugin.ErrMessageTooLarge)
	}
	f := wire.NewFrame()
	f.Plugin, f.Type, f.Payload = idx, name, payload
	return f, nil
}

// Decode returns the message a frame carries, or a CodeInvalidArgument
// error saying why it cannot be decoded.
func Decode(f *wire.Frame) (any, error) {
	v, err := codec.Decode(f.Type, f.Payload)
	if err != nil {
		return nil, plugin.NewError(plugin.CodeInvalidArgument, err.Error())
	}
	return v, nil
}

// WireError rebuilds a *plugin.Error received from the peer, its text
// bounded as PeerErrorText bounds it.
func WireError(code uint32, msg string) error { return hook.WireError(code, PeerErrorText(msg), false) }

// PeerErrorText is error text received from the peer, cut (CutErrorText)
// if it is longer than an honest peer sends: errors are kept (a job's, an
// executor's stop) and logged. Text the peer cut itself is kept as it
// came.
func PeerErrorText(msg string) string {
	if len(msg) > MaxErrorBytes+cutNote {
		return CutErrorText(msg)
	}
	return msg
}

// cutNote bounds what CutErrorText adds to the text it cuts.
const cutNote = 64

// Result turns a REPLY frame into the reply value or the remote error,
// and releases the frame (wire.ReleaseFrame): f must not be used after.
// The error of a refusal by a plugin that has shut down (RefuseClosed)
// matches plugin.ErrClosed.
func Result(f *wire.Frame) (any, error) {
	defer wire.ReleaseFrame(f)
	if f.Code != 0 {
		return nil, hook.WireError(f.Code, PeerErrorText(f.Error), f.Closed)
	}
	v, err := Decode(f)
	if err != nil {
		return nil, plugin.Errorf(plugin.CodeInvalidArgument, "reply: %v", err)
	}
	return v, nil
}

// NilSide reports a plugin side that is a nil pointer (or map, func,
// chan or slice) in a non-nil interface, returned by method (DriverPlugin
// or ExecutorPlugin): its methods would run on nil and, most likely,
// panic, where a nil interface means the plugin has no such side. It
// returns nil for anything else, nil itself included.
func NilSide(method string, v any) error {
	if v == nil {
		return nil
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Chan, reflect.Slice, reflect.UnsafePointer:
		if rv.IsNil() {
			return plugin.Errorf(plugin.CodeInvalidArgument, "%s returned a nil %T in a non-nil interface (return nil itself for a plugin without that side)", method, v)
		}
	}
	return nil
}

// Call runs fn, turning a panic into a CodeInternal error that names the
// plugin and method; the stack goes to log. A runtime.Goexit in fn
// cannot be stopped: it ends the calling goroutine, whose own defers must
// finish its work (a lane replaces its worker, Dispatch answers the ask),
// so Call logs it, naming the plugin.
func Call[T any](log *slog.Logger, pluginName, method string, fn func() (T, error)) (v T, err error) {
	returned := false
	defer func() {
		if r := recover(); r != nil {
			log.Error("plugin panicked", "plugin", pluginName, "method", method, "panic", r, "stack", string(debug.Stack()))
			err = plugin.NewError(plugin.CodeInternal, fmt.Sprintf("plugin %q: panic in %s: %v", pluginName, method, r))
		} else if !returned {
			log.Error("plugin called runtime.Goexit (t.Fatal or t.FailNow outside its test's goroutine?): the goroutine running it has ended",
				"plugin", pluginName, "method", method, "stack", string(debug.Stack()))
		}
	}()
	v, err = fn()
	returned = true
	return v, err
}

// CallFunc is Call for a plugin method with no results: the error is a
// panic's.
func CallFunc(log *slog.Logger, pluginName, method string, fn func()) error {
	_, err := Call(log, pluginName, method, func() (struct{}, error) {
		fn()
		return struct{}{}, nil
	})
	return err
}

// CallWithin runs fn like Call, with ctx, and waits for it until grace
// after ctx ends: a plugin that ignores its ctx (a Shutdown stuck forever)
// is then abandoned, still running, and the caller moves on with an error
// saying so. A plugin that watches its ctx has the grace to finish (a
// final Send, say) and return: abandoned the moment ctx ended, it raced
// with its own return, and what it did last could come after what the
// caller did next (an executor's STOPPED), and be lost.
func CallWithin(ctx context.Context, grace time.Duration, log *slog.Logger, pluginName, method string, fn func(context.Context) error) error {
	done := make(chan error, 1)
	go func() {
		// Sent deferred: a plugin calling runtime.Goexit ends this
		// goroutine without a return, and would read as abandoned.
		var err error = plugin.Errorf(plugin.CodeInternal, "plugin %q: %s called runtime.Goexit", pluginName, method)
		defer func() { done <- err }()
		_, err = Call(log, pluginName, method, func() (struct{}, error) { return struct{}{}, fn(ctx) })
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return plugin.Errorf(plugin.CodeOf(ctx.Err()), "plugin %q: %s did not return in time; %w: %w", pluginName, method, ErrAbandoned, ctx.Err())
	}
}

// ErrAbandoned is wrapped by CallWithin's error for a call it abandoned.
var ErrAbandoned = errors.New("abandoned")

// AbandonGrace is the part of a shutdown budget d that CallWithin's
// callers keep back from a plugin's ctx, for the plugin to return once
// its ctx ends (see CallWithin): a twentieth.
func AbandonGrace(d time.Duration) time.Duration { return d / 20 }

// ReplyFrame builds the REPLY to call carrying reply or err. A reply that
// cannot be encoded becomes an error reply, so the asker always hears back.
func ReplyFrame(call uint64, idx uint32, reply any, err error, max int) *wire.Frame {
	if err == nil && reply != nil {
		f, encErr := encode(idx, reply, max)
		if encErr == nil {
			f.Call = call
			return f
		}
		err = fmt.Errorf("encode reply: %w", encErr)
	}
	f := wire.NewFrame()
	f.Call, f.Plugin = call, idx
	if err != nil {
		code, msg := ErrorParts(err)
		f.Code, f.Error = uint32(code), msg
	}
	return f
}

// MaxErrorBytes bounds an error's text on the wire (a REPLY, a
// TASK_RESULT, a failed READY): longer text is cut at a character boundary
// and says how much was left out. An error can then never make a frame
// larger than the peer accepts, which would end the connection.
const MaxErrorBytes = 16 << 10

// ErrorParts returns the code and message that represent err on the wire:
// an *plugin.Error keeps its code and message, an error wrapping one keeps
// the code and its full text less the wrapped error's "<code>: " (the
// receiver names the code in front), and anything else is CodeUnknown (or
// a context code) with its text. The text is cut to MaxErrorBytes.
func ErrorParts(err error) (plugin.Code, string) {
	code, msg := errorParts(err)
	return code, CutErrorText(msg)
}

// CutErrorText cuts msg to MaxErrorBytes at a character boundary, saying
// how much was left out: for error text sent, and for a peer's error text
// kept (an honest peer sends no more).
func CutErrorText(msg string) string { return CutText(msg, MaxErrorBytes) }

// CutText cuts msg to limit bytes at a character boundary, saying how
// much was left out; msg within limit is returned as it is. The note
// adds up to cutNote bytes: a receiver bounding text cut this way allows
// for it (PeerErrorText), so that the text is not cut twice.
func CutText(msg string, limit int) string {
	if len(msg) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = fmt.Sprintf("%s… (%d more bytes)", msg[:cut], len(msg)-cut)
	}
	return msg
}

func errorParts(err error) (plugin.Code, string) {
	var e *plugin.Error
	code, msg := plugin.CodeOf(err), err.Error()
	switch {
	case errors.As(err, &e) && err == error(e):
		code, msg = e.Code(), e.Message()
	case errors.As(err, &e):
		code = e.Code()
		// The receiver's *plugin.Error names the code in front of the
		// text: the wrapped error's own "<code>: " goes, so that it is
		// not named twice ("not_found: lookup: not_found: no such key").
		// Its last occurrence: %w most often ends the text, and what
		// comes before it (a quoted key, say) may read the same.
		if inner := e.Error(); e.Message() != "" {
			if i := strings.LastIndex(msg, inner); i >= 0 {
				msg = msg[:i] + e.Message() + msg[i+len(inner):]
			}
		}
	}
	if code == plugin.CodeOK || !code.Valid() { // a zero or forged *plugin.Error
		code = plugin.CodeUnknown
	}
	return code, msg
}
