package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// Message types for these tests.
type (
	rpcMsg struct {
		N    int
		Text string
	}
	rpcBig        struct{ Data string }
	rpcUnencoded  struct{ C chan int }
	rpcNeverKnown struct{ A int }
)

const (
	rpcMsgName = "rpc_test.msg"
	rpcBigName = "rpc_test.big"
)

func init() {
	plugin.RegisterMessageName[rpcMsg](rpcMsgName)
	plugin.RegisterMessageName[rpcBig](rpcBigName)
	plugin.RegisterMessageName[rpcUnencoded]("rpc_test.unencoded")
}

func TestEncode(t *testing.T) {
	t.Parallel()
	f, err := rpc.Encode(7, rpcMsg{N: 1, Text: "a"}, 1024)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if f.Plugin != 7 || f.Type != rpcMsgName || len(f.Payload) == 0 {
		t.Errorf("Encode frame = %v, want plugin 7, type %q and a payload", f, rpcMsgName)
	}
	v, err := rpc.Decode(f)
	if err != nil || v != (rpcMsg{N: 1, Text: "a"}) {
		t.Errorf("Decode(Encode(msg)) = %#v, %v; want the message", v, err)
	}
	// A pointer to a registered struct arrives as the value.
	f, err = rpc.Encode(0, &rpcMsg{N: 2}, 1024)
	if err != nil {
		t.Fatalf("Encode(pointer): %v", err)
	}
	if v, err := rpc.Decode(f); err != nil || v != (rpcMsg{N: 2}) {
		t.Errorf("Decode(Encode(&msg)) = %#v, %v; want rpcMsg{N:2}", v, err)
	}
	// Exactly at the limit is fine.
	f, err = rpc.Encode(0, rpcBig{Data: "xx"}, 1024)
	if err != nil {
		t.Fatalf("Encode(big): %v", err)
	}
	if _, err := rpc.Encode(0, rpcBig{Data: "xx"}, len(f.Payload)); err != nil {
		t.Errorf("Encode with max = payload size (%d): %v, want nil", len(f.Payload), err)
	}
}

func TestEncodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		msg      any
		max      int
		wantCode plugin.Code
		wantIs   error
		wantText []string
	}{
		{"nil", nil, 1024, plugin.CodeInvalidArgument, nil, []string{"nil message"}},
		{"unregistered", rpcNeverKnown{}, 1024, plugin.CodeInvalidArgument, plugin.ErrUnregisteredMessage, []string{"rpcNeverKnown", "RegisterMessage"}},
		{"unregistered builtin", 3, 1024, plugin.CodeInvalidArgument, plugin.ErrUnregisteredMessage, []string{"int"}},
		{"oversized", rpcBig{Data: strings.Repeat("x", 100)}, 50, plugin.CodeResourceExhausted, plugin.ErrMessageTooLarge, []string{rpcBigName, "50-byte limit"}},
		{"unencodable", rpcUnencoded{C: make(chan int)}, 1024, plugin.CodeInvalidArgument, nil, []string{"rpc_test.unencoded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := rpc.Encode(1, tt.msg, tt.max)
			if f != nil {
				t.Errorf("Encode frame = %v, want nil with an error", f)
			}
			wantCode(t, "Encode", err, tt.wantCode)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Encode error %q, want it to wrap %q", err, tt.wantIs)
			}
			if plugin.IsRemote(err) {
				t.Errorf("IsRemote(%v) = true for a local encode error", err)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Encode error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    *wire.Frame
		want string
	}{
		{"unknown type", &wire.Frame{Type: "rpc_test.nope", Payload: []byte("{}")}, `"rpc_test.nope"`},
		{"bad payload", &wire.Frame{Type: rpcMsgName, Payload: []byte("{")}, rpcMsgName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := rpc.Decode(tt.f)
			if v != nil {
				t.Errorf("Decode = %v, want nil with an error", v)
			}
			wantCode(t, "Decode", err, plugin.CodeInvalidArgument)
			if err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode error %q, want it to contain %q", err, tt.want)
			}
		})
	}
	if v, err := rpc.Decode(&wire.Frame{}); v != nil || err != nil {
		t.Errorf("Decode(empty frame) = %v, %v; want nil, nil", v, err)
	}
}

func TestReplyFrameResult(t *testing.T) {
	t.Parallel()
	const max = 1024
	tests := []struct {
		name      string
		reply     any
		err       error
		want      any         // reply value when wantCode is OK
		wantCode  plugin.Code // of the Result error
		wantMsg   string      // exact Message() of the Result error, if set
		wantText  string      // substring of the Result error, if set
		wantMatch error       // errors.Is target for the Result error, if set
	}{
		{name: "value", reply: rpcMsg{N: 5, Text: "ok"}, want: rpcMsg{N: 5, Text: "ok"}},
		{name: "pointer value", reply: &rpcMsg{N: 6}, want: rpcMsg{N: 6}},
		{name: "nil reply", reply: nil, want: nil},
		{name: "plugin error", err: plugin.NewError(plugin.CodeNotFound, "no such key"),
			wantCode: plugin.CodeNotFound, wantMsg: "no such key"},
		{name: "plugin error wins over a reply", reply: rpcMsg{N: 1}, err: plugin.NewError(plugin.CodeUnauthenticated, "who"),
			wantCode: plugin.CodeUnauthenticated, wantMsg: "who"},
		{name: "plain error", err: errors.New("boom"), wantCode: plugin.CodeUnknown, wantMsg: "boom"},
		{name: "wrapped plugin error keeps its code", err: fmt.Errorf("lookup: %w", plugin.NewError(plugin.CodeNotFound, "k")),
			wantCode: plugin.CodeNotFound, wantText: "not_found: lookup: k"},
		{name: "Errorf with a cause", err: plugin.Errorf(plugin.CodeResourceExhausted, "quota: %w", errors.New("full")),
			wantCode: plugin.CodeResourceExhausted, wantMsg: "quota: full"},
		{name: "deadline", err: context.DeadlineExceeded, wantCode: plugin.CodeDeadlineExceeded, wantMatch: context.DeadlineExceeded},
		{name: "canceled", err: fmt.Errorf("handler: %w", context.Canceled), wantCode: plugin.CodeCanceled, wantMatch: context.Canceled},
		{name: "undefined code", err: plugin.NewError(plugin.Code(7), "perm"), wantCode: plugin.CodeUnknown, wantMsg: "perm"},
		{name: "unregistered reply", reply: rpcNeverKnown{}, wantCode: plugin.CodeInvalidArgument, wantText: "invalid_argument: encode reply: ember: unregistered message type"},
		{name: "oversized reply", reply: rpcBig{Data: strings.Repeat("x", 2*max)}, wantCode: plugin.CodeResourceExhausted, wantText: "resource_exhausted: encode reply: rpc_test.big is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := rpc.ReplyFrame(42, 3, tt.reply, tt.err, max)
			if f.Call != 42 || f.Plugin != 3 {
				t.Errorf("ReplyFrame call/plugin = %d/%d, want 42/3", f.Call, f.Plugin)
			}
			v, err := rpc.Result(f)
			if tt.wantCode == plugin.CodeOK {
				if err != nil {
					t.Fatalf("Result = %v, want the reply", err)
				}
				if !reflect.DeepEqual(v, tt.want) {
					t.Errorf("Result = %#v, want %#v", v, tt.want)
				}
				return
			}
			if v != nil {
				t.Errorf("Result value = %#v, want nil with an error", v)
			}
			wantCode(t, "Result", err, tt.wantCode)
			var e *plugin.Error
			if !errors.As(err, &e) {
				t.Fatalf("Result error %T, want *plugin.Error", err)
			}
			if tt.wantMsg != "" && e.Message() != tt.wantMsg {
				t.Errorf("Result message = %q, want %q", e.Message(), tt.wantMsg)
			}
			if tt.wantText != "" && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Result error %q, want it to contain %q", err, tt.wantText)
			}
			if tt.wantMatch != nil && !errors.Is(err, tt.wantMatch) {
				t.Errorf("errors.Is(%v, %v) = false, want true", err, tt.wantMatch)
			}
			if !plugin.IsRemote(err) {
				t.Errorf("IsRemote(%v) = false for a reply from the peer", err)
			}
		})
	}
}

// TestReplyFrameZeroValueError pins "non-nil error ⇔ non-OK code" across
// the wire. Regression: a handler returning the zero *plugin.Error (code 0)
// produced a REPLY with code 0, which the asker read as a successful nil
// reply, so the error vanished.
func TestReplyFrameZeroValueError(t *testing.T) {
	t.Parallel()
	f := rpc.ReplyFrame(1, 0, nil, &plugin.Error{}, 1024)
	if v, err := rpc.Result(f); err == nil {
		t.Errorf("Result of a reply to a zero-value *plugin.Error = %v, nil; want a non-nil error", v)
	}
}

func TestErrorParts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		wantCode plugin.Code
		wantMsg  string
	}{
		{"plugin error", plugin.NewError(plugin.CodeNotFound, "k"), plugin.CodeNotFound, "k"},
		{"wrapped", fmt.Errorf("a: %w", plugin.NewError(plugin.CodeNotFound, "k")), plugin.CodeNotFound, "a: k"}, // the code once, in front
		{"wrapped without a message", fmt.Errorf("a: %w", plugin.NewError(plugin.CodeNotFound, "")), plugin.CodeNotFound, "a: not_found"},
		{"wrapped, its text quoted before it", fmt.Errorf("key %q: %w", "not_found: k", plugin.NewError(plugin.CodeNotFound, "k")), plugin.CodeNotFound, `key "not_found: k": k`},
		{"wrapped twice over", fmt.Errorf("a: %w", plugin.Errorf(plugin.CodeNotFound, "b: %w", plugin.NewError(plugin.CodeInternal, "k"))), plugin.CodeNotFound, "a: b: internal: k"},
		{"plain", errors.New("x"), plugin.CodeUnknown, "x"},
		{"deadline", context.DeadlineExceeded, plugin.CodeDeadlineExceeded, "context deadline exceeded"},
		{"at the bound", plugin.NewError(plugin.CodeInternal, strings.Repeat("x", rpc.MaxErrorBytes)), plugin.CodeInternal, strings.Repeat("x", rpc.MaxErrorBytes)},
		{"over the bound", errors.New(strings.Repeat("x", rpc.MaxErrorBytes+1000)), plugin.CodeUnknown, strings.Repeat("x", rpc.MaxErrorBytes) + "… (1000 more bytes)"},
		// "é" is two bytes: the cut falls inside the last one that fits.
		{"cut between characters", errors.New("x" + strings.Repeat("é", rpc.MaxErrorBytes/2)), plugin.CodeUnknown, "x" + strings.Repeat("é", rpc.MaxErrorBytes/2-1) + "… (2 more bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, msg := rpc.ErrorParts(tt.err)
			if code != tt.wantCode || msg != tt.wantMsg {
				t.Errorf("ErrorParts(%.80v) = %v, %.80q (%d bytes); want %v, %.80q (%d bytes)", tt.err, code, msg, len(msg), tt.wantCode, tt.wantMsg, len(tt.wantMsg))
			}
			if !utf8.ValidString(msg) {
				t.Errorf("ErrorParts(%.80v): the text is not valid UTF-8", tt.err)
			}
		})
	}
}

// A peer's error text is kept as it came when an honest peer could have
// sent it (cut by ErrorParts, with its note), and cut when it is longer:
// the driver keeps some for its life (a failed READY, a job's error).
func TestPeerErrorText(t *testing.T) {
	_, honest := rpc.ErrorParts(errors.New(strings.Repeat("é", rpc.MaxErrorBytes)))
	tests := []struct {
		name, msg, want string
	}{
		{"short", "boom", "boom"},
		{"cut by the peer", honest, honest},
		{"longer", strings.Repeat("x", 1<<20), strings.Repeat("x", rpc.MaxErrorBytes) + fmt.Sprintf("… (%d more bytes)", 1<<20-rpc.MaxErrorBytes)},
	}
	for _, tt := range tests {
		if got := rpc.PeerErrorText(tt.msg); got != tt.want {
			t.Errorf("%s: PeerErrorText(%d bytes) = %.40q… (%d bytes), want %d bytes", tt.name, len(tt.msg), got, len(got), len(tt.want))
		}
		if got := rpc.WireError(13, tt.msg).Error(); !strings.HasSuffix(got, tt.want) {
			t.Errorf("%s: WireError(%d bytes) has %d bytes of text, want %d", tt.name, len(tt.msg), len(got), len(tt.want))
		}
	}
}

func testLogger() (*slog.Logger, *logtest.Buffer) {
	buf := &logtest.Buffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

func TestCall(t *testing.T) {
	t.Parallel()
	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		log, buf := testLogger()
		v, err := rpc.Call(log, "my-plugin", "Receive", func() (int, error) {
			panic("kaboom")
		})
		if v != 0 {
			t.Errorf("Call value after a panic = %d, want 0", v)
		}
		wantCode(t, "Call", err, plugin.CodeInternal)
		for _, w := range []string{`"my-plugin"`, "Receive", "kaboom"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Call error %q, want it to contain %q", err, w)
			}
		}
		if out := buf.String(); !strings.Contains(out, "plugin panicked") || !strings.Contains(out, "goroutine") {
			t.Errorf("log = %q, want a panic entry with the stack", out)
		}
	})
	t.Run("panic with an error value", func(t *testing.T) {
		t.Parallel()
		log, _ := testLogger()
		_, err := rpc.Call(log, "p", "Init", func() (any, error) { panic(errors.New("nil map")) })
		wantCode(t, "Call", err, plugin.CodeInternal)
		if !strings.Contains(err.Error(), "panic in Init: nil map") {
			t.Errorf("Call error %q, want it to name the method and the panic", err)
		}
	})
	t.Run("runtime panic", func(t *testing.T) {
		t.Parallel()
		log, _ := testLogger()
		_, err := rpc.Call(log, "p", "Receive", func() (int, error) {
			var m map[string]int
			m["x"] = 1
			return 0, nil
		})
		wantCode(t, "Call", err, plugin.CodeInternal)
	})
	t.Run("no panic", func(t *testing.T) {
		t.Parallel()
		log, buf := testLogger()
		boom := errors.New("boom")
		v, err := rpc.Call(log, "p", "Receive", func() (string, error) { return "v", boom })
		if v != "v" || err != boom {
			t.Errorf("Call = %q, %v; want v, %v", v, err, boom)
		}
		if out := buf.String(); out != "" {
			t.Errorf("log = %q, want nothing", out)
		}
	})
}

// dispatchConn is a started Conn over a fake stream, for Dispatch to reply on.
func dispatchConn(t *testing.T) (*rpc.Conn, *fakeStream) {
	t.Helper()
	s := newFakeStream()
	return startFake(t, s, newHandler(nil), rpc.Options{}), s
}

// replyTo waits for the REPLY to call on s and returns its result.
func replyTo(t *testing.T, s *fakeStream, call uint64) (any, error) {
	t.Helper()
	var r *wire.Frame
	poll(t, fmt.Sprintf("reply to call %d", call), func() bool {
		for _, f := range s.Sent() {
			if f.Kind == wire.Kind_KIND_REPLY && f.Call == call {
				r = f
				return true
			}
		}
		return false
	})
	return rpc.Result(r)
}

func askFrame(t *testing.T, call uint64, msg any) *wire.Frame {
	t.Helper()
	f, err := rpc.Encode(2, msg, 1<<20)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	f.Kind, f.Call, f.TimeoutMicros = wire.Kind_KIND_ASK, call, 10_000_000
	return f
}

func TestDispatchAsk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		receive  func(ctx context.Context, msg any) (any, error)
		want     any
		wantCode plugin.Code
		wantText string
		wantLog  string // on the answering side
	}{
		{"reply", func(ctx context.Context, msg any) (any, error) {
			m := msg.(rpcMsg)
			if _, ok := ctx.Deadline(); !ok {
				return nil, errors.New("handler ctx has no deadline")
			}
			return rpcMsg{N: m.N * 2}, nil
		}, rpcMsg{N: 42}, plugin.CodeOK, "", ""},
		{"error", func(context.Context, any) (any, error) {
			return nil, plugin.NewError(plugin.CodeNotFound, "nothing here")
		}, nil, plugin.CodeNotFound, "nothing here", ""},
		{"panic", func(context.Context, any) (any, error) {
			panic("handler exploded")
		}, nil, plugin.CodeInternal, `plugin "disp": panic in Receive: handler exploded`, "plugin panicked"},
		{"unencodable reply", func(context.Context, any) (any, error) {
			return rpcNeverKnown{}, nil
		}, nil, plugin.CodeInvalidArgument, "encode reply", "Receive's reply could not be sent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, s := dispatchConn(t)
			log, buf := testLogger()
			rpc.Dispatch(context.Background(), context.Background(), log, "disp", rpc.NewItem(context.Background(), c, askFrame(t, 9, rpcMsg{N: 21})), 1024, true, tt.receive)
			if got := buf.String(); (tt.wantLog == "") != (got == "") || !strings.Contains(got, tt.wantLog) {
				t.Errorf("the answering side logged %q, want a line containing %q", got, tt.wantLog)
			}
			v, err := replyTo(t, s, 9)
			if tt.wantCode == plugin.CodeOK {
				if err != nil || !reflect.DeepEqual(v, tt.want) {
					t.Errorf("reply = %#v, %v; want %#v, nil", v, err, tt.want)
				}
				return
			}
			wantCode(t, "reply", err, tt.wantCode)
			if err != nil && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("reply error %q, want it to contain %q", err, tt.wantText)
			}
		})
	}
}

// An ask's handler runs under askCtx (which ends with the asker's
// connection), bounded by the asker's deadline; a send's under ctx.
func TestDispatchContexts(t *testing.T) {
	t.Parallel()
	c, s := dispatchConn(t)
	log, _ := testLogger()
	askCtx, cancelAsk := context.WithCancel(context.Background())
	cancelAsk() // the asker's connection is gone
	var askErr, sendErr error
	var deadline time.Time
	rpc.Dispatch(context.Background(), askCtx, log, "disp", rpc.NewItem(askCtx, c, askFrame(t, 5, rpcMsg{N: 1})), 1024, false,
		func(ctx context.Context, _ any) (any, error) {
			askErr = ctx.Err()
			deadline, _ = ctx.Deadline()
			return nil, nil
		})
	_, _ = replyTo(t, s, 5)
	if !errors.Is(askErr, context.Canceled) {
		t.Errorf("ask handler ctx: got %v, want canceled with the asker's connection", askErr)
	}
	if deadline.IsZero() {
		t.Error("ask handler ctx has no deadline; the asker's should travel with the ask")
	}
	f := askFrame(t, 0, rpcMsg{N: 1})
	f.Kind, f.TimeoutMicros = wire.Kind_KIND_SEND, 0
	rpc.Dispatch(context.Background(), askCtx, log, "disp", rpc.Item{Conn: c, Frame: f}, 1024, false,
		func(ctx context.Context, _ any) (any, error) {
			sendErr = ctx.Err()
			return nil, nil
		})
	if sendErr != nil {
		t.Errorf("send handler ctx: got %v, want live (sends are delivered after their sender has gone)", sendErr)
	}
}

func TestDispatchUndecodableAsk(t *testing.T) {
	t.Parallel()
	c, s := dispatchConn(t)
	log, _ := testLogger()
	called := false
	f := &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: 4, Type: "rpc_test.not-registered", Payload: []byte("{}")}
	rpc.Dispatch(context.Background(), context.Background(), log, "disp", rpc.Item{Conn: c, Frame: f}, 1024, true, func(context.Context, any) (any, error) {
		called = true
		return nil, nil
	})
	_, err := replyTo(t, s, 4)
	wantCode(t, "reply to an undecodable ask", err, plugin.CodeInvalidArgument)
	if err != nil && !strings.Contains(err.Error(), "rpc_test.not-registered") {
		t.Errorf("reply error %q, want it to name the type", err)
	}
	if called {
		t.Errorf("Receive called for an undecodable ask")
	}
}

func TestDispatchSend(t *testing.T) {
	t.Parallel()
	c, s := dispatchConn(t)
	log, buf := testLogger()
	var got []any
	receive := func(ctx context.Context, msg any) (any, error) {
		got = append(got, msg)
		switch msg.(rpcMsg).N {
		case 1:
			return rpcMsg{N: 100}, nil // a reply to a send is dropped
		case 2:
			return nil, errors.New("send handler failed")
		case 3:
			panic("send handler panicked")
		}
		return nil, nil
	}
	for i := 1; i <= 3; i++ {
		f, err := rpc.Encode(2, rpcMsg{N: i}, 1024)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		f.Kind = wire.Kind_KIND_SEND
		rpc.Dispatch(context.Background(), context.Background(), log, "disp", rpc.Item{Conn: c, Frame: f}, 1024, true, receive)
	}
	// An undecodable send is dropped with a log entry.
	rpc.Dispatch(context.Background(), context.Background(), log, "disp", rpc.Item{Conn: c, Frame: &wire.Frame{Kind: wire.Kind_KIND_SEND, Type: "rpc_test.not-registered"}}, 1024, true, receive)
	if len(got) != 3 {
		t.Errorf("Receive called %d times, want 3 (not for the undecodable send)", len(got))
	}
	// Sends get no reply: the first frame written is the reply to a later ask.
	rpc.Dispatch(context.Background(), context.Background(), log, "disp", rpc.Item{Conn: c, Frame: askFrame(t, 77, rpcMsg{N: 0})}, 1024, true, receive)
	if _, err := replyTo(t, s, 77); err != nil {
		t.Fatalf("reply to the ask: %v", err)
	}
	if sent := s.Sent(); len(sent) != 1 {
		t.Errorf("frames written = %v, want only the ask's reply", sent)
	}
	out := buf.String()
	for _, w := range []string{"reply to a sent message", "send handler failed", "send handler panicked", "undecodable", "rpc_test.not-registered"} {
		if !strings.Contains(out, w) {
			t.Errorf("log %q, want it to contain %q", out, w)
		}
	}
}

// A plugin calling runtime.Goexit (t.Fatal outside its test's goroutine)
// ends the goroutine that runs it, which nothing can stop; Call logs it,
// naming the plugin and method, where it used to end without a word and
// leave its lane, or an asker, waiting.
func TestCallLogsGoexit(t *testing.T) {
	var buf logtest.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = rpc.Call(log, "fatal", "Receive", func() (any, error) {
			runtime.Goexit()
			return nil, nil
		})
		t.Error("Call returned after a Goexit")
	}()
	<-done
	for _, want := range []string{"plugin called runtime.Goexit", "plugin=fatal", "method=Receive"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log: got %q, want it to say %q", buf.String(), want)
		}
	}
	var quiet logtest.Buffer
	if _, err := rpc.Call(slog.New(slog.NewTextHandler(&quiet, nil)), "fine", "Receive", func() (any, error) { return nil, nil }); err != nil || quiet.String() != "" {
		t.Errorf("Call of a plugin that returns: got %v and log %q, want nil and nothing logged", err, quiet.String())
	}
}

// A Receive that replies to sent messages (one serving a type both ways)
// is told once per lane (a plugin, on one side) and message type that the
// replies are dropped, not once per message.
func TestDispatchReplyToSendLoggedOnce(t *testing.T) {
	t.Parallel()
	c, _ := dispatchConn(t)
	log, buf := testLogger()
	newLane := func() *rpc.Lane {
		l := rpc.NewLane(1, 0, func(rpc.Item) {})
		t.Cleanup(l.Close)
		return l
	}
	send := func(l *rpc.Lane) {
		f := askFrame(t, 0, rpcMsg{N: 1})
		f.Kind, f.TimeoutMicros = wire.Kind_KIND_SEND, 0
		ctx := rpc.WithLane(context.Background(), l)
		rpc.Dispatch(ctx, ctx, log, "disp", rpc.Item{Conn: c, Frame: f}, 1024, false,
			func(context.Context, any) (any, error) { return rpcMsg{N: 2}, nil })
	}
	l := newLane()
	for range 3 {
		send(l)
	}
	if n := strings.Count(buf.String(), "replies to sends are dropped"); n != 1 {
		t.Errorf("three replies to sends logged %d times, want once:\n%s", n, buf.String())
	}
	send(newLane()) // another plugin's lane says so too
	if n := strings.Count(buf.String(), "replies to sends are dropped"); n != 2 {
		t.Errorf("a second lane's reply to a send: logged %d times in all, want twice:\n%s", n, buf.String())
	}
}

// A Receive that fails every sent message is logged rpc.LogBurst times per
// minute and lane, not once per message: a plugin's default case
// returning an error logged a line per message, at the rate messages
// arrived. Another lane (another plugin) has a budget of its own.
func TestDispatchSendFailuresLoggedWithinBudget(t *testing.T) {
	t.Parallel()
	c, _ := dispatchConn(t)
	log, buf := testLogger()
	send := func(l *rpc.Lane) {
		f := askFrame(t, 0, rpcMsg{N: 1})
		f.Kind, f.TimeoutMicros = wire.Kind_KIND_SEND, 0
		ctx := rpc.WithLane(context.Background(), l)
		rpc.Dispatch(ctx, ctx, log, "disp", rpc.Item{Conn: c, Frame: f}, 1024, false,
			func(context.Context, any) (any, error) { return nil, errors.New("unexpected message") })
	}
	l := rpc.NewLane(1, 0, func(rpc.Item) {})
	t.Cleanup(l.Close)
	for range 100 {
		send(l)
	}
	if n := strings.Count(buf.String(), "Receive failed for a sent message"); n != 10 {
		t.Errorf("100 failed sends logged %d times, want 10:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "are held back"); n != 1 {
		t.Errorf("the notice that more are held back: logged %d times, want once:\n%s", n, buf.String())
	}
	other := rpc.NewLane(1, 0, func(rpc.Item) {})
	t.Cleanup(other.Close)
	send(other)
	if n := strings.Count(buf.String(), "Receive failed for a sent message"); n != 11 {
		t.Errorf("another lane's failed send: logged %d times in all, want 11", n)
	}
}

// An ASK refused for its plugin having shut down on the answering side
// fails at the asker with an error matching plugin.ErrClosed, as a call to
// a side that has gone does, so that a coordinator asks another; any other
// refusal keeps its code and message alone, whatever the code.
func TestRefusalReachesTheAsker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		refuse     func(c *rpc.Conn, f *wire.Frame) bool
		wantCode   plugin.Code
		wantText   string
		wantClosed bool
	}{
		{"closed", func(c *rpc.Conn, f *wire.Frame) bool { return rpc.RefuseClosed(c, f, `plugin "p" has shut down`) },
			plugin.CodeUnavailable, `unavailable: plugin "p" has shut down`, true},
		{"unavailable, not closed", func(c *rpc.Conn, f *wire.Frame) bool { return rpc.Refuse(c, f, plugin.CodeUnavailable, "busy") },
			plugin.CodeUnavailable, "unavailable: busy", false},
		{"not found", func(c *rpc.Conn, f *wire.Frame) bool {
			return rpc.Refuse(c, f, plugin.CodeNotFound, "no plugin with index 3")
		},
			plugin.CodeNotFound, "not_found: no plugin with index 3", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			refused := make(chan bool, 1)
			p := newPair(t, newHandler(nil), newHandler(func(c *rpc.Conn, f *wire.Frame) { refused <- tt.refuse(c, f) }), rpc.Options{}, rpc.Options{})
			err := askResult(testContext(t), p.client, &wire.Frame{Type: "x"})
			if !recv(t, refused, "the refusal") {
				t.Errorf("Refuse of an ASK reported false, want true (answered)")
			}
			wantCode(t, "refused ask", err, tt.wantCode)
			if err.Error() != tt.wantText {
				t.Errorf("got %q, want %q", err, tt.wantText)
			}
			if got := errors.Is(err, plugin.ErrClosed); got != tt.wantClosed {
				t.Errorf("errors.Is(%v, ErrClosed) = %v, want %v", err, got, tt.wantClosed)
			}
			if !plugin.IsRemote(err) {
				t.Errorf("IsRemote(%v) = false, want true", err)
			}
		})
	}
}
