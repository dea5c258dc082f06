package rpc_test

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// inlineCall is what an inlineHandler's receive sees of one message.
type inlineCall struct {
	msg    rpcMsg
	inline bool // it ran on the connection's reader (Item.Inline)
	conn   *rpc.Conn
}

// inlineHandler hands ASKs and SENDs to one lane per plugin, with inline
// runs enabled, as the driver does; receive answers them.
type inlineHandler struct {
	lanes   []*rpc.Lane
	receive func(ctx context.Context, call inlineCall) (any, error)
}

func newInlineHandler(t *testing.T, plugins int, receive func(context.Context, inlineCall) (any, error)) *inlineHandler {
	t.Helper()
	h := &inlineHandler{receive: receive}
	log := slog.New(slog.DiscardHandler)
	for range plugins {
		var l *rpc.Lane
		l = rpc.NewLane(1, 0, func(it rpc.Item) {
			rpc.Dispatch(context.Background(), context.Background(), log, "p", it, 1<<20, false, func(ctx context.Context, msg any) (any, error) {
				return h.receive(ctx, inlineCall{msg: msg.(rpcMsg), inline: it.Inline, conn: it.Conn})
			})
		})
		l.EnableInline()
		t.Cleanup(l.Close)
		h.lanes = append(h.lanes, l)
	}
	return h
}

func (h *inlineHandler) HandleFrame(c *rpc.Conn, f *wire.Frame) {
	if (f.Kind == wire.Kind_KIND_ASK || f.Kind == wire.Kind_KIND_SEND) && int(f.Plugin) < len(h.lanes) {
		if rpc.Deliver(h.lanes[f.Plugin], c, f, nil) {
			return
		}
	}
	wire.ReleaseFrame(f)
}

func (h *inlineHandler) HandleClose(*rpc.Conn, error) {}

// askN asks plugin p of the peer for rpcMsg{N: n} and checks that the
// reply is n.
func askN(t *testing.T, ctx context.Context, c *rpc.Conn, p uint32, n int) {
	t.Helper()
	f, err := rpc.Encode(p, rpcMsg{N: n}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.AskMessage(ctx, f)
	if err != nil {
		t.Fatalf("ask %d of plugin %d: %v", n, p, err)
	}
	if r != (rpcMsg{N: n}) {
		t.Fatalf("ask %d of plugin %d: got %v, want the message back", n, p, r)
	}
}

// learnInline asks plugin p one ask at a time until one runs inline, and
// returns how many it took. Learning needs rpc.InlineLearn quick handlers
// in a row, so on a loaded machine it may take a few rounds.
func learnInline(t *testing.T, ctx context.Context, c *rpc.Conn, p uint32, inlined *atomic.Int64) int {
	t.Helper()
	for n := 1; ; n++ {
		before := inlined.Load()
		askN(t, ctx, c, p, n)
		if inlined.Load() > before {
			return n
		}
		if ctx.Err() != nil || n > 100*rpc.InlineLearn {
			t.Fatalf("no ask ran inline after %d asks", n)
		}
	}
}

// Once a lane's handler has proved quick, a lone ask runs on the
// connection's reader, and is answered as on the worker.
func TestInlineQuickAsksRunOnTheReader(t *testing.T) {
	t.Parallel()
	var inlined atomic.Int64
	h := newInlineHandler(t, 1, func(_ context.Context, call inlineCall) (any, error) {
		if call.inline {
			inlined.Add(1)
		}
		return call.msg, nil
	})
	p := newPair(t, newHandler(nil), h, rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	if n := learnInline(t, ctx, p.client, 0, &inlined); n <= rpc.InlineLearn {
		t.Errorf("the first ask to run inline was ask %d, want one after the %d that learn", n, rpc.InlineLearn)
	}
	// Quick handlers go on running inline (a slow run, on a loaded
	// machine, sends the lane back to learning for a while).
	learnInline(t, ctx, p.client, 0, &inlined)
}

// A handler running inline that waits on its connection (an ask back to
// the peer, whose reply the reader must read) hands reading over to a
// new reader at once: with no heartbeats to notice, it would otherwise
// wait for ever.
func TestInlineHandlerAskingItsPeerHandsOverReading(t *testing.T) {
	t.Parallel()
	var inlined atomic.Int64
	var askBack atomic.Bool
	h := newInlineHandler(t, 1, func(ctx context.Context, call inlineCall) (any, error) {
		if call.inline {
			inlined.Add(1)
			if askBack.Load() {
				f, err := rpc.Encode(0, rpcMsg{N: -call.msg.N}, 1<<20)
				if err != nil {
					return nil, err
				}
				if _, err := call.conn.Ask(ctx, f); err != nil {
					return nil, err
				}
			}
		}
		return call.msg, nil
	})
	p := newPair(t, newHandler(echo), h, rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	learnInline(t, ctx, p.client, 0, &inlined)
	askBack.Store(true)
	before := inlined.Load()
	for n := 1; inlined.Load() == before; n++ {
		if n > 100*rpc.InlineLearn {
			t.Fatal("no ask ran inline again")
		}
		askN(t, ctx, p.client, 0, n)
	}
}

// A handler that holds the reader up for a heartbeat interval has reading
// handed over: the connection's other frames are read and run meanwhile,
// but not those of its own lane, which run after it, in order. That lane
// runs nothing inline again.
func TestInlineStuckHandlerHandsOverReading(t *testing.T) {
	t.Parallel()
	var inlined atomic.Int64
	var block atomic.Bool
	entered := make(chan struct{})
	release := make(chan struct{})
	var order []int // plugin 0's messages, in the order they ran
	var running, overlapped atomic.Int32
	const first, second = 1000, 1001
	h := newInlineHandler(t, 2, nil)
	h.receive = func(_ context.Context, call inlineCall) (any, error) {
		if call.inline {
			inlined.Add(1)
		}
		if call.msg.Text == "p0" {
			if running.Add(1) > 1 {
				overlapped.Add(1)
			}
			defer running.Add(-1)
			order = append(order, call.msg.N) // plugin 0's lane runs one at a time
			if call.inline && block.Load() {
				block.Store(false)
				close(entered)
				<-release
			}
		}
		return call.msg, nil
	}
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the lanes close, which waits for the handler
	opts := rpc.Options{HeartbeatInterval: 20 * time.Millisecond, HeartbeatTimeout: time.Minute}
	p := newPair(t, newHandler(nil), h, opts, opts)
	ctx := testContext(t)
	ask := func(plugin uint32, n int) <-chan error {
		errc := make(chan error, 1)
		go func() {
			f, err := rpc.Encode(plugin, rpcMsg{N: n, Text: "p" + string(rune('0'+plugin))}, 1<<20)
			if err == nil {
				_, err = p.client.AskMessage(ctx, f)
			}
			errc <- err
		}()
		return errc
	}
	// The first ask of plugin 0 to run inline blocks.
	block.Store(true)
	var blocked <-chan error
	for n := 1; blocked == nil; n++ {
		if n > 100*rpc.InlineLearn {
			t.Fatal("no ask ran inline")
		}
		errc := ask(0, first)
		select {
		case <-entered:
			blocked = errc
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// Reading is handed over: plugin 0's next ask is read and waits in
	// its lane, and plugin 1's is answered.
	flushed := make(chan error, 1)
	go func() { flushed <- h.lanes[0].Flush(ctx) }()
	queued := ask(0, second)
	poll(t, "plugin 0's second ask queued", func() bool { return h.lanes[0].Len() == 2 })
	if err := recv(t, ask(1, 1), "plugin 1's reply"); err != nil {
		t.Fatalf("plugin 1's ask: %v", err)
	}
	select {
	case err := <-flushed:
		t.Errorf("Flush returned (%v) while the inline handler ran, want it to wait", err)
	default:
	}
	unblock()
	if err := recv(t, flushed, "Flush"); err != nil {
		t.Errorf("Flush: %v", err)
	}
	for _, errc := range []<-chan error{blocked, queued} {
		if err := recv(t, errc, "plugin 0's reply"); err != nil {
			t.Fatalf("plugin 0's ask: %v", err)
		}
	}
	if n := len(order); n < 2 || order[n-2] != first || order[n-1] != second {
		t.Errorf("plugin 0's asks ran in the order %v, want it to end %d, %d", order, first, second)
	}
	if n := overlapped.Load(); n != 0 {
		t.Errorf("plugin 0's handler ran concurrently with itself %d times, want never", n)
	}
	before := inlined.Load()
	for n := range 2 * rpc.InlineLearn {
		if err := <-ask(0, n); err != nil {
			t.Fatal(err)
		}
	}
	if got := inlined.Load() - before; got != 0 {
		t.Errorf("%d asks ran inline on the lane whose handler got stuck, want none", got)
	}
}

// A handler running inline that ends its goroutine (runtime.Goexit: a
// test's t.Fatal in a plugin) fails its ask with CodeInternal, and reading
// goes on in a new reader.
func TestInlineGoexitHandsOverReading(t *testing.T) {
	t.Parallel()
	var inlined atomic.Int64
	var exit atomic.Bool
	h := newInlineHandler(t, 1, func(_ context.Context, call inlineCall) (any, error) {
		if call.inline {
			inlined.Add(1)
			if exit.Swap(false) {
				runtime.Goexit()
			}
		}
		return call.msg, nil
	})
	p := newPair(t, newHandler(nil), h, rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	learnInline(t, ctx, p.client, 0, &inlined)
	exit.Store(true)
	for n := 1; exit.Load(); n++ {
		f, err := rpc.Encode(0, rpcMsg{N: n}, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.client.AskMessage(ctx, f)
		if !exit.Load() {
			wantCode(t, "the ask whose handler called runtime.Goexit", err, plugin.CodeInternal)
		} else if err != nil {
			t.Fatal(err)
		}
		if n > 100*rpc.InlineLearn {
			t.Fatal("no ask ran inline")
		}
	}
	askN(t, ctx, p.client, 0, 1)
}
