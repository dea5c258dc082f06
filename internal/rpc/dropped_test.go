package rpc_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// A REPLY that comes after its ask gave up reaches the handler, for the
// asking plugin to be told, when it carries a message: not an error, not a
// nil message, not one for an ask this side never made, and only once,
// as the asking plugin's (a peer cannot make this side's plugins hear of
// replies they never asked for, nor fill a lane with copies).
func TestReplyAfterGiveUpReachesHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		async bool // the ask is made with AskAsync
		reply func(call uint64) *wire.Frame
		want  bool
		twice bool // the reply comes twice: only the first is handed over
	}{
		{"a message", false, func(call uint64) *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: call, Plugin: 1, Type: "job", Payload: []byte("7")}
		}, true, false},
		{"a message, to an async ask", true, func(call uint64) *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: call, Plugin: 1, Type: "job", Payload: []byte("7")}
		}, true, false},
		{"an error", false, func(call uint64) *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: call, Plugin: 1, Code: 13, Error: "boom"}
		}, false, false},
		{"a nil message", false, func(call uint64) *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: call, Plugin: 1}
		}, false, false},
		{"for an ask never made", false, func(call uint64) *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: call + 1000, Plugin: 1, Type: "job", Payload: []byte("7")}
		}, false, false},
		{"naming another plugin", false, func(call uint64) *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: call, Plugin: 2, Type: "job", Payload: []byte("7")}
		}, true, false},
		{"twice", false, func(call uint64) *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: call, Plugin: 1, Type: "job", Payload: []byte("7")}
		}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeStream()
			h := newHandler(nil)
			c := startFake(t, s, h, rpc.Options{})
			ctx, cancel := context.WithCancel(testContext(t))
			errc := make(chan error, 1)
			if tt.async {
				c.AskAsync(ctx, &wire.Frame{Plugin: 1}, &asyncRecorder{done: errc})
			} else {
				go func() {
					_, err := c.Ask(ctx, &wire.Frame{Plugin: 1})
					errc <- err
				}()
			}
			poll(t, "ask written", func() bool { return s.count(wire.Kind_KIND_ASK) == 1 })
			cancel()
			if err := recv(t, errc, "the ask's end"); err == nil {
				t.Fatal("ask whose ctx ended before its reply: nil error")
			}
			call := s.Sent()[0].Call
			if n := rpc.GaveUp(c); n != 1 {
				t.Errorf("%d asks given up on expect a reply, want 1", n)
			}
			s.in <- &wire.Batch{Frames: []*wire.Frame{tt.reply(call)}}
			if tt.twice {
				s.in <- &wire.Batch{Frames: []*wire.Frame{tt.reply(call)}}
			}
			// A heartbeat after it: once the handler has that, the reply
			// has been handled too, in stream order.
			s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_STOP}}}
			poll(t, "the frame after the reply handled", func() bool { return h.NumFrames() > 0 && h.Frames()[h.NumFrames()-1].Kind == wire.Kind_KIND_STOP })
			var got []*wire.Frame
			for _, f := range h.Frames() {
				if f.Kind == wire.Kind_KIND_REPLY {
					got = append(got, f)
				}
			}
			// Only a reply to the ask lets go of it.
			wantLeft := 0
			if tt.reply(call).Call != call {
				wantLeft = 1
			}
			if n := rpc.GaveUp(c); n != wantLeft {
				t.Errorf("after the reply, %d asks given up on expect one, want %d", n, wantLeft)
			}
			if !tt.want {
				if len(got) != 0 {
					t.Errorf("handler got %d REPLYs, want none", len(got))
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("handler got %d REPLYs, want 1", len(got))
			}
			if f := got[0]; f.Call != call || f.Plugin != 1 || f.Type != "job" || string(f.Payload) != "7" {
				t.Errorf("handler got REPLY call %d plugin %d type %q payload %q, want call %d plugin 1 type job payload 7",
					f.Call, f.Plugin, f.Type, f.Payload, call)
			}
		})
	}
}

// asyncRecorder is an Async that sends its error on done.
type asyncRecorder struct {
	rpc.AsyncAsk
	done chan error
}

func (a *asyncRecorder) Complete(_ any, err error) { a.done <- err }

// Every reply to an ask whose ctx ends as the reply comes is either
// returned by Ask or handed to the handler as dropped: never both, never
// neither. Ask used to drop a reply that the reader had taken out of the
// call table just as the asker saw its ctx end.
func TestReplyRacingGiveUpIsNeverLost(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	h := newHandler(nil)
	c := startFake(t, s, h, rpc.Options{})
	const asks = 300
	returned := 0
	for i := range asks {
		ctx, cancel := context.WithCancel(testContext(t))
		type result struct {
			f   *wire.Frame
			err error
		}
		done := make(chan result, 1)
		go func() {
			f, err := c.Ask(ctx, &wire.Frame{Plugin: 1})
			done <- result{f, err}
		}()
		poll(t, "ask written", func() bool { return s.count(wire.Kind_KIND_ASK) == i+1 })
		call := s.Sent()[len(s.Sent())-1].Call
		payload := fmt.Sprint(i)
		go cancel()
		s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_REPLY, Call: call, Plugin: 1, Type: "job", Payload: []byte(payload)}}}
		r := recv(t, done, "the ask's end")
		if r.err == nil {
			returned++
			if string(r.f.Payload) != payload {
				t.Fatalf("ask %d returned payload %q, want %q", i, r.f.Payload, payload)
			}
		}
		// A frame after the reply: once the handler has it, it has the
		// reply too, if it was handed over.
		s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_STOP, Call: call}}}
		poll(t, "the frame after the reply handled", func() bool {
			fs := h.Frames()
			return len(fs) > 0 && fs[len(fs)-1].Kind == wire.Kind_KIND_STOP && fs[len(fs)-1].Call == call
		})
		dropped := 0
		for _, f := range h.Frames() {
			if f.Kind == wire.Kind_KIND_REPLY && f.Call == call {
				dropped++
			}
		}
		if got, want := dropped, 1; r.err == nil {
			want = 0
			if got != want {
				t.Fatalf("ask %d returned its reply, and the handler got it %d times, want %d", i, got, want)
			}
		} else if got != want {
			t.Fatalf("ask %d failed (%v), and the handler got its reply %d times, want %d", i, r.err, got, want)
		}
		cancel()
	}
	t.Logf("%d of %d asks returned their reply; the rest were handed over as dropped", returned, asks)
}

// Asks that share a ctx are given up on by its watcher (Conn.watch), not
// by their askers: a reply that comes after that is handed over too. No
// other test made asks share a ctx, and a watcher that deleted the ask
// from the call table, as it used to, went unnoticed.
func TestReplyAfterWatcherGaveUpReachesHandler(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	h := newHandler(nil)
	c := startFake(t, s, h, rpc.Options{})
	ctx, cancel := context.WithCancel(testContext(t))
	first := askAsync(ctx, c)
	poll(t, "the first ask written", func() bool { return s.count(wire.Kind_KIND_ASK) == 1 })
	second := askAsync(ctx, c) // shares ctx with a waiting ask: a watcher answers for it
	poll(t, "the second ask written", func() bool { return s.count(wire.Kind_KIND_ASK) == 2 })
	if n := rpc.Watchers(c); n != 1 {
		t.Fatalf("%d watchers, want 1: the second ask's", n)
	}
	cancel()
	recv(t, first, "the first ask's end")
	recv(t, second, "the second ask's end")
	if n := rpc.GaveUp(c); n != 2 {
		t.Errorf("%d asks given up on expect a reply, want 2", n)
	}
	var frames []*wire.Frame
	for _, f := range s.Sent() {
		if f.Kind == wire.Kind_KIND_ASK {
			frames = append(frames, &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: f.Call, Plugin: 1, Type: "job", Payload: []byte(fmt.Sprint(f.Call))})
		}
	}
	frames = append(frames, &wire.Frame{Kind: wire.Kind_KIND_STOP})
	s.in <- &wire.Batch{Frames: frames}
	poll(t, "the frame after the replies handled", func() bool {
		fs := h.Frames()
		return len(fs) > 0 && fs[len(fs)-1].Kind == wire.Kind_KIND_STOP
	})
	got := 0
	for _, f := range h.Frames() {
		if f.Kind == wire.Kind_KIND_REPLY {
			got++
		}
	}
	if got != 2 {
		t.Errorf("handler got %d REPLYs, want 2: one for each ask given up on, the watcher's included", got)
	}
}
