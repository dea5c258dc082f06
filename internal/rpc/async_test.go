package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// outcome is what an async ask completed with.
type outcome struct {
	tag string
	v   any
	err error
}

// collector is an rpc.Async that sends each outcome to out, and fails the
// test if an ask completes twice.
type collector struct {
	rpc.AsyncAsk
	t    *testing.T
	tag  string
	out  chan<- outcome
	done atomic.Bool
}

func (c *collector) Complete(v any, err error) {
	if c.done.Swap(true) {
		c.t.Errorf("ask %s completed twice (again with %v, %v)", c.tag, v, err)
		return
	}
	c.out <- outcome{c.tag, v, err}
}

func asyncAsk(t *testing.T, ctx context.Context, c *rpc.Conn, tag string, msg any, out chan<- outcome) {
	t.Helper()
	f, err := rpc.Encode(0, msg, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c.AskAsync(ctx, f, &collector{t: t, tag: tag, out: out})
}

// Many asks in flight from one goroutine, answered out of order, each
// complete once with its own reply.
func TestAskAsyncManyInFlight(t *testing.T) {
	t.Parallel()
	const n = 500
	p := newPair(t, newHandler(nil), reversing(50), rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	out := make(chan outcome, n)
	for i := range n {
		tag := fmt.Sprint(i)
		asyncAsk(t, ctx, p.client, tag, rpcMsg{N: i, Text: tag}, out)
	}
	seen := make(map[string]bool)
	for range n {
		o := recv(t, out, "an outcome")
		if o.err != nil {
			t.Fatalf("ask %s: %v", o.tag, o.err)
		}
		if m, ok := o.v.(rpcMsg); !ok || m.Text != o.tag {
			t.Errorf("ask %s: got reply %v, want its own message back", o.tag, o.v)
		}
		seen[o.tag] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct asks completed, want %d", len(seen), n)
	}
}

// An async ask whose ctx ends completes with the ctx's error and is
// canceled on the peer: withdrawn while still queued, or followed by an
// ASK_CANCEL once written. Its ctx is watched by context.AfterFunc, or by
// a watcher goroutine when asks share it (as for Ask) and fewer than
// maxWatchers (16) are running; each is covered, with the ctx ended
// before the call too.
func TestAskAsyncContextEnds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		others   int  // ctxs held first, each that stays live shared by two asks (the second gets a watcher)
		shared   bool // another ask under the same ctx comes first
		watchers int  // the watchers running once the ask is made
		deadline bool
		early    bool // ctx ended before the call
	}{
		{name: "AfterFunc, canceled"},
		{name: "AfterFunc, deadline", deadline: true},
		{name: "watcher, canceled", shared: true, watchers: 1},
		{name: "watcher, deadline", shared: true, watchers: 1, deadline: true},
		{name: "watchers full, canceled", others: 16, shared: true, watchers: 16},
		{name: "watchers full, deadline", others: 16, shared: true, watchers: 16, deadline: true},
		{name: "ended before the call", early: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeStream()
			c := startFake(t, s, newHandler(nil), rpc.Options{})
			held := 2 * tt.others
			out := make(chan outcome, held+2)
			for i := range tt.others {
				octx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				asyncAsk(t, octx, c, fmt.Sprint("other", i), rpcMsg{}, out)
				asyncAsk(t, octx, c, fmt.Sprint("other", i, "'"), rpcMsg{}, out)
			}
			poll(t, "the other asks written", func() bool { return s.count(wire.Kind_KIND_ASK) == held })

			ctx, cancel := context.WithCancel(context.Background())
			want, wantErr := plugin.CodeCanceled, context.Canceled
			if tt.deadline {
				ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
				want, wantErr = plugin.CodeDeadlineExceeded, context.DeadlineExceeded
			}
			defer cancel()
			if tt.early {
				cancel()
			}
			mine := map[string]bool{"this": true}
			if tt.shared {
				mine["first"] = true
				asyncAsk(t, ctx, c, "first", rpcMsg{}, out)
			}
			asyncAsk(t, ctx, c, "this", rpcMsg{}, out)
			if !tt.early {
				if got := rpc.Watchers(c); got != tt.watchers {
					t.Errorf("%d watchers running, want %d", got, tt.watchers)
				}
				poll(t, "the asks written", func() bool { return s.count(wire.Kind_KIND_ASK) == held+len(mine) })
				if !tt.deadline {
					cancel()
				}
			}
			for range mine {
				o := recv(t, out, "the ask's outcome")
				if !mine[o.tag] {
					t.Fatalf("ask %s completed (%v), want only those whose ctx ended", o.tag, o.err)
				}
				wantCode(t, "ask whose ctx ended", o.err, want)
				if !errors.Is(o.err, wantErr) {
					t.Errorf("error %v, want one matching %v", o.err, wantErr)
				}
			}
			if tt.early {
				if n := s.count(wire.Kind_KIND_ASK); n != held {
					t.Errorf("%d ASKs written, want %d: an ask whose ctx had ended is not sent", n, held)
				}
				return
			}
			poll(t, "the ASK_CANCELs written", func() bool { return s.count(wire.Kind_KIND_ASK_CANCEL) == len(mine) })
			// A late reply to one is dropped, not delivered again.
			for _, f := range s.Sent() {
				if f.Kind == wire.Kind_KIND_ASK_CANCEL {
					s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_REPLY, Call: f.Call}}}
				}
			}
			// The others are still waiting: the connection's close fails them.
			c.Close(nil)
			for range held {
				o := recv(t, out, "another ask's outcome")
				wantCode(t, "ask "+o.tag+" at the close", o.err, plugin.CodeUnavailable)
			}
		})
	}
}

// An async ask under a ctx of its own (a timeout per ask, say) leaves no
// goroutine watching that ctx once answered, as Ask does not: an ask
// whose ctx nobody shares is watched by context.AfterFunc, released with
// the ask. A watcher started for every async ask lived on until its ctx
// ended (the timeout, or never), and once maxWatchers had, asks sharing
// a ctx found none.
func TestAskAsyncAnsweredLeavesNoWatcher(t *testing.T) {
	t.Parallel()
	p := newPair(t, newHandler(nil), newHandler(echo), rpc.Options{}, rpc.Options{})
	const n = 20
	forms := []struct {
		name string
		ask  func(ctx context.Context, i int, out chan outcome)
	}{
		{"Ask", func(ctx context.Context, i int, out chan outcome) {
			f, err := rpc.Encode(0, rpcMsg{N: i}, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			v, err := p.client.AskMessage(ctx, f)
			out <- outcome{fmt.Sprint(i), v, err}
		}},
		{"AskAsync", func(ctx context.Context, i int, out chan outcome) {
			asyncAsk(t, ctx, p.client, fmt.Sprint(i), rpcMsg{N: i}, out)
		}},
	}
	for _, form := range forms {
		out := make(chan outcome, n)
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			t.Cleanup(cancel)
			form.ask(ctx, i, out)
		}
		for range n {
			if o := recv(t, out, "an outcome"); o.err != nil {
				t.Fatalf("%s %s: %v", form.name, o.tag, o.err)
			}
		}
		if got := rpc.Watchers(p.client); got != 0 {
			t.Errorf("%s: %d goroutines still watch the ctxs of %d answered asks, want 0", form.name, got, n)
		}
	}
}

// The connection's end fails every async ask in flight, locally, with
// ErrClosed; and one made after it fails at once.
func TestAskAsyncConnectionCloses(t *testing.T) {
	t.Parallel()
	h := newHolder()
	p := newPair(t, newHandler(nil), newHandler(h.frame), rpc.Options{}, rpc.Options{})
	const n = 10
	out := make(chan outcome, n+1)
	for i := range n {
		f := &wire.Frame{Type: "hold"}
		p.client.AskAsync(testContext(t), f, &collector{t: t, tag: fmt.Sprint(i), out: out})
	}
	for range n {
		recv(t, h.held, "held ask")
	}
	p.client.Close(nil)
	for range n {
		o := recv(t, out, "pending ask after Close")
		wantCode(t, "pending ask after Close", o.err, plugin.CodeUnavailable)
		if !errors.Is(o.err, plugin.ErrClosed) || plugin.IsRemote(o.err) {
			t.Errorf("ask %s: %v, want a local error wrapping plugin.ErrClosed", o.tag, o.err)
		}
	}
	p.client.AskAsync(testContext(t), &wire.Frame{}, &collector{t: t, tag: "after", out: out})
	o := recv(t, out, "ask after Close")
	if !errors.Is(o.err, plugin.ErrClosed) {
		t.Errorf("ask after Close: %v, want ErrClosed", o.err)
	}
}

// Replies racing their asks' cancels: every ask completes exactly once
// (collector fails the test otherwise), with its reply or its ctx's end.
func TestAskAsyncRepliesRaceCancels(t *testing.T) {
	t.Parallel()
	p := newPair(t, newHandler(nil), newHandler(echo), rpc.Options{}, rpc.Options{})
	const n = 400
	out := make(chan outcome, n)
	parent := testContext(t)
	for i := range n {
		ctx, cancel := context.WithCancel(parent)
		tag := fmt.Sprint(i)
		asyncAsk(t, ctx, p.client, tag, rpcMsg{Text: tag}, out)
		if i%2 == 0 {
			cancel()
		} else {
			defer cancel()
		}
	}
	for range n {
		o := recv(t, out, "an outcome")
		if o.err == nil {
			if m, ok := o.v.(rpcMsg); !ok || m.Text != o.tag {
				t.Errorf("ask %s: reply %v, want its own message", o.tag, o.v)
			}
		} else if plugin.CodeOf(o.err) != plugin.CodeCanceled {
			t.Errorf("ask %s: %v, want its reply or Canceled", o.tag, o.err)
		}
	}
}

// Finish never blocks: a Call that finds its Done channel full is sent
// later, by a goroutine of its own, and none is lost.
func TestFinishNeverBlocks(t *testing.T) {
	t.Parallel()
	done := make(chan *plugin.Call, 1)
	calls := []*plugin.Call{{Msg: 1, Done: done}, {Msg: 2, Done: done}, {Msg: 3, Done: done}}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		rpc.Finish(calls[0], "one", nil)
		rpc.Finish(calls[1], "ignored", errors.New("two failed"))
		rpc.Finish(calls[2], "three", nil)
	}()
	recv(t, finished, "Finish to return with Done full")
	got := map[any]*plugin.Call{}
	for range calls {
		c := recv(t, done, "a finished Call")
		got[c.Msg] = c
	}
	if c := got[1]; c == nil || c.Reply != "one" || c.Err != nil {
		t.Errorf("call 1: %+v, want Reply one", c)
	}
	if c := got[2]; c == nil || c.Reply != nil || c.Err == nil {
		t.Errorf("call 2: %+v, want Err set and Reply nil", c)
	}
	if c := got[3]; c == nil || c.Reply != "three" {
		t.Errorf("call 3: %+v, want Reply three", c)
	}
}

// afterFuncCounter is a long-lived ctx that counts the context.AfterFunc
// registrations on it still live: context.AfterFunc uses a ctx's own
// AfterFunc method when it has one (and Value does not lead it to a
// cancelCtx underneath).
type afterFuncCounter struct {
	context.Context
	live atomic.Int64
}

func (c *afterFuncCounter) Value(any) any { return nil }

func (c *afterFuncCounter) AfterFunc(f func()) func() bool {
	c.live.Add(1)
	stop := context.AfterFunc(c.Context, f)
	var released atomic.Bool
	return func() bool {
		stopped := stop()
		if !released.Swap(true) {
			c.live.Add(-1)
		}
		return stopped
	}
}

// An async ask that no watcher watches (asks one at a time under a
// long-lived ctx, as a plugin's own ctx) registers a context.AfterFunc on
// its ctx, and releases it however the ask ends: answered, with a large
// reply decoded off the reader, or failed by the connection's close.
// Left registered, each ask answered would stay in its ctx's list of
// children until the ctx ends, which for a plugin's ctx is never.
func TestAskAsyncReleasesItsAfterFunc(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  any
		hold bool // the peer answers none; the connection closes
	}{
		{name: "answered", msg: rpcMsg{N: 1}},
		{name: "large reply", msg: rpcBig{Data: strings.Repeat("b", 100<<10)}},
		{name: "connection closes", msg: rpcMsg{}, hold: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHolder()
			p := newPair(t, newHandler(nil), newHandler(h.frame), rpc.Options{}, rpc.Options{})
			parent, cancel := context.WithCancel(context.Background())
			defer cancel()
			ctx := &afterFuncCounter{Context: parent}
			const n = 10
			out := make(chan outcome, n)
			for i := range n {
				f, err := rpc.Encode(0, tt.msg, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				if tt.hold {
					f.Type = "hold"
				}
				tag := fmt.Sprint(i)
				p.client.AskAsync(ctx, f, &collector{t: t, tag: tag, out: out})
				if tt.hold {
					recv(t, h.held, "the held ask")
					continue
				}
				// One at a time: no other ask is in flight, so no watcher.
				if o := recv(t, out, "the ask's outcome"); o.err != nil {
					t.Fatalf("ask %s: %v", tag, o.err)
				}
			}
			if tt.hold {
				p.client.Close(nil)
				for range n {
					recv(t, out, "an outcome at the close")
				}
			}
			if got := ctx.live.Load(); got != 0 {
				t.Errorf("%d context.AfterFunc registrations left on the ctx of %d asks that are done, want 0", got, n)
			}
		})
	}
}
