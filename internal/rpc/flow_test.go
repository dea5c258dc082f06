package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// The flow-control tests use a 1,000-byte window and SENDs of 36-byte
// payloads, which cost 100 bytes each (rpc.SendCost): ten fill a window.
const (
	testWindow = 1000
	testSends  = testWindow / 100
)

func windowFrame(p uint32) *wire.Frame {
	return &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: p, Payload: []byte(strings.Repeat("x", 36))}
}

// blocked asserts that Send of another SEND for plugin p waits for its
// window: it ends with the deadline of a short ctx.
func blocked(t *testing.T, c *rpc.Conn, p uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.Send(ctx, windowFrame(p))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send with plugin %d's window spent: got %v, want it to wait until the deadline", p, err)
	}
	wantCode(t, "Send with the window spent", err, plugin.CodeDeadlineExceeded)
	if want := fmt.Sprintf("plugin %q: waiting for the receiving side", fmt.Sprint("p", p)); !strings.Contains(err.Error(), want) {
		t.Errorf("Send with the window spent: %v, want it to say %q", err, want)
	}
}

// A plugin whose receiver has not taken in what it was sent holds up its
// own SENDs, and only those: another plugin's SENDs and any ASK still go.
// Once the receiver reports a quarter window consumed, the waiting Send
// goes through.
func TestSendWindow(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []*wire.Frame // SENDs the server received, not yet consumed
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_SEND {
			mu.Lock()
			got = append(got, f)
			mu.Unlock()
			return
		}
		echo(c, f)
	})
	var limits sync.Map
	opts := rpc.Options{Plugins: []string{"p0", "p1"}, SendWindow: testWindow}
	clientOpts := opts
	clientOpts.OnLimit = func(l string) {
		n, _ := limits.LoadOrStore(l, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
	}
	p := newPair(t, newHandler(echo), server, clientOpts, opts)
	ctx := testContext(t)

	for i := range testSends {
		if err := p.client.Send(ctx, windowFrame(1)); err != nil {
			t.Fatalf("Send %d of a window's worth: %v", i, err)
		}
	}
	poll(t, "the server has the window's SENDs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == testSends
	})
	blocked(t, p.client, 1)

	// Plugin 0 has its own window; asks are not flow-controlled.
	if err := p.client.Send(ctx, windowFrame(0)); err != nil {
		t.Errorf("Send for another plugin: %v, want nil", err)
	}
	if err := askResult(ctx, p.client, &wire.Frame{Plugin: 1, Payload: []byte("ask")}); err != nil {
		t.Errorf("Ask for the stalled plugin: %v, want nil", err)
	}

	waiting := make(chan error, 1)
	go func() { waiting <- p.client.Send(ctx, windowFrame(1)) }()
	// Two consumed (200 bytes) is under a quarter window: no grant yet.
	mu.Lock()
	for _, f := range got[:2] {
		p.server.Consumed(f.Plugin, rpc.SendCost(f))
	}
	mu.Unlock()
	select {
	case err := <-waiting:
		t.Fatalf("Send returned (%v) before a quarter window was consumed", err)
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	p.server.Consumed(1, rpc.SendCost(got[2]))
	mu.Unlock()
	if err := recv(t, waiting, "the waiting Send"); err != nil {
		t.Errorf("Send once a quarter window was consumed: %v, want nil", err)
	}
	n, _ := limits.Load("send_window")
	if n == nil || n.(*atomic.Int32).Load() < 1 {
		t.Errorf("OnLimit(send_window) was not called, want it called for each Send that waited")
	}
}

// A plugin with a window of its own (PluginSendWindows) counts with it at
// both ends: its sender goes on until that window is spent, the receiver
// admits that much without calling it an overdraw and grants it back a
// quarter at a time; the other plugins keep SendWindow, a missing entry
// too.
func TestPluginSendWindows(t *testing.T) {
	t.Parallel()
	const own = 3 * testWindow
	var mu sync.Mutex
	got := map[uint32][]*wire.Frame{} // SENDs the server received, not yet consumed
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_SEND {
			mu.Lock()
			got[f.Plugin] = append(got[f.Plugin], f)
			mu.Unlock()
			return
		}
		echo(c, f)
	})
	opts := rpc.Options{Plugins: []string{"p0", "p1", "p2"}, SendWindow: testWindow, PluginSendWindows: []int{0, own}}
	p := newPair(t, newHandler(echo), server, opts, opts)
	ctx := testContext(t)

	for _, tc := range []struct {
		plugin uint32
		sends  int
	}{{0, testSends}, {1, own / 100}, {2, testSends}} {
		for i := range tc.sends {
			if err := p.client.Send(ctx, windowFrame(tc.plugin)); err != nil {
				t.Fatalf("plugin %d: Send %d of a window's worth (%d): %v", tc.plugin, i, tc.sends, err)
			}
		}
		poll(t, fmt.Sprintf("the server has plugin %d's SENDs", tc.plugin), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got[tc.plugin]) == tc.sends
		})
		blocked(t, p.client, tc.plugin)
	}
	if err := p.server.Err(); err != nil {
		t.Fatalf("server closed the connection: %v", err)
	}

	waiting := make(chan error, 1)
	go func() { waiting <- p.client.Send(ctx, windowFrame(1)) }()
	consume := func(frames []*wire.Frame) {
		for _, f := range frames {
			p.server.Consumed(f.Plugin, rpc.SendCost(f))
		}
	}
	mu.Lock()
	consume(got[1][:7]) // 700 bytes: under a quarter of plugin 1's window
	mu.Unlock()
	select {
	case err := <-waiting:
		t.Fatalf("Send returned (%v) before a quarter of the plugin's window was consumed", err)
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	consume(got[1][7:8])
	mu.Unlock()
	if err := recv(t, waiting, "the waiting Send"); err != nil {
		t.Errorf("Send once a quarter of the plugin's window was consumed: %v, want nil", err)
	}
}

// A grant larger than the window (a faulty or hostile peer) cannot lift a
// sender's window above its size.
func TestSendWindowGrantClamped(t *testing.T) {
	t.Parallel()
	opts := rpc.Options{Plugins: []string{"p0", "p1"}, SendWindow: testWindow}
	p := newPair(t, newHandler(echo), newHandler(func(*rpc.Conn, *wire.Frame) {}), opts, opts)
	ctx := testContext(t)
	if err := p.server.SendControl(&wire.Frame{Kind: wire.Kind_KIND_CREDIT, Plugin: 1, Credit: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	// The client's reader takes frames in order: once the reply to this
	// ask is back, it has seen the grant.
	if err := askResult(ctx, p.server, &wire.Frame{Plugin: 1}); err != nil {
		t.Fatalf("Ask: %v", err)
	}
	for i := range testSends {
		if err := p.client.Send(ctx, windowFrame(1)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	blocked(t, p.client, 1)
}

// A SEND may overdraw its plugin's window by one message, so the grant
// that gives it back can exceed the window: the whole of it is taken in.
// Capped at the window, a grant lost credit for good, and one message of
// twice the window or more stopped its plugin's SENDs for ever.
func TestOverdrawnWindowComesBackWhole(t *testing.T) {
	t.Parallel()
	consume := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_SEND {
			c.Consumed(f.Plugin, rpc.SendCost(f)) // delivered at once
		}
	})
	tests := []struct {
		name   string
		window int
		// each round sends these payload sizes, then needs the window back
		round  []int
		rounds int
	}{
		{"one message of three windows", testWindow, []int{3 * testWindow}, 1},
		{"grants of a window and a few small messages", testWindow, []int{36, 36, testWindow - 64}, 50},
		{"2.5 MiB with the default window", 0, []int{5 << 19}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := rpc.Options{Plugins: []string{"p0"}, SendWindow: tt.window}
			p := newPair(t, newHandler(echo), consume, opts, opts)
			ctx := testContext(t)
			for r := range tt.rounds {
				for _, n := range tt.round {
					sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					err := p.client.Send(sctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, n)})
					cancel()
					if err != nil {
						t.Fatalf("round %d: Send of %d bytes: %v", r, n, err)
					}
				}
			}
			// The server's reply follows its CREDITs: once it is back,
			// the client has every grant, and the window is whole.
			if err := askResult(ctx, p.server, &wire.Frame{}); err != nil {
				t.Fatal(err)
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := p.client.Send(sctx, windowFrame(0)); err != nil {
				t.Errorf("a small Send once everything was consumed: %v", err)
			}
		})
	}
}

// A peer that sends more than the window allows (it ignores flow control)
// loses its connection, instead of filling the receiver's memory.
func TestSendWindowOverdrawn(t *testing.T) {
	t.Parallel()
	// The client does no flow control (Plugins 0); the server expects it.
	p := newPair(t, newHandler(echo), newHandler(func(*rpc.Conn, *wire.Frame) {}),
		rpc.Options{}, rpc.Options{Plugins: []string{"p0", "p1"}, SendWindow: testWindow, MaxMessageBytes: 100})
	ctx := testContext(t)
	// Window + one message of the largest size is the most a sender may
	// have outstanding: 1,000 + 164 bytes, so the twelfth SEND is too many.
	for range 12 {
		if err := p.client.Send(ctx, windowFrame(1)); err != nil {
			break // the server may already have closed the stream
		}
	}
	waitClosed(t, p.server.Done(), "server conn")
	err := p.server.Err()
	wantCode(t, "the server's close", err, plugin.CodeResourceExhausted)
	if want := `plugin "p1" more than its send window`; !strings.Contains(err.Error(), want) {
		t.Errorf("the server's close: %v, want it to say %q", err, want)
	}
	waitClosed(t, p.client.Done(), "client conn")
}

// A SEND that is refused (no such plugin, plugin shut down) gives its
// cost back to the sender's window, as a delivered one does: refusals do
// not shrink the window for good.
func TestRefusedSendsGiveTheWindowBack(t *testing.T) {
	t.Parallel()
	opts := rpc.Options{Plugins: []string{"p0", "p1"}, SendWindow: testWindow}
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if !rpc.Refuse(c, f, plugin.CodeUnavailable, "shut down") && f.Kind != wire.Kind_KIND_SEND {
			t.Errorf("Refuse of a %v reported false", f.Kind)
		}
	})
	p := newPair(t, newHandler(echo), server, opts, opts)
	ctx := testContext(t)
	// Five windows' worth: each would wait for good if refusals kept
	// their cost.
	for i := range 5 * testSends {
		if err := p.client.Send(ctx, windowFrame(1)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
}

// gatedLane is a pair whose server delivers its SENDs to a lane of one
// worker, of the given limit, whose items each count in entered, wait for
// a step on gate (or for open) and then count in ran. The test's cleanup
// opens the gate first, letting the worker finish.
type gatedLane struct {
	*pair
	lane    *rpc.Lane
	gate    chan struct{}
	open    func() // closes gate, once
	entered atomic.Int32
	ran     atomic.Int32
}

// newGatedLane returns a gatedLane of plugins p0 and p1, whose lane calls
// full (if not nil) each time it fills.
func newGatedLane(t *testing.T, limit int, full func()) *gatedLane {
	t.Helper()
	g := &gatedLane{gate: make(chan struct{})}
	g.open = sync.OnceFunc(func() { close(g.gate) })
	g.lane = rpc.NewLane(1, limit, func(rpc.Item) {
		g.entered.Add(1)
		<-g.gate
		g.ran.Add(1)
	})
	t.Cleanup(g.lane.Close)
	t.Cleanup(g.open)
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		// A SEND read as the test's cleanup closes the pair is refused
		// once the connection has ended (a write of the server's failed
		// first): not the lane's doing.
		if !rpc.Deliver(context.Background(), g.lane, c, f, full) && !c.Ended() {
			t.Errorf("Deliver: lane closed")
		}
	})
	opts := rpc.Options{Plugins: []string{"p0", "p1"}, SendWindow: testWindow}
	g.pair = newPair(t, newHandler(echo), server, opts, opts)
	return g
}

// fill sends a window of plugin p's SENDs to g's lane, and waits until it
// has them.
func (g *gatedLane) fill(t *testing.T, p uint32) {
	t.Helper()
	for i := range testSends {
		if err := g.client.Send(testContext(t), windowFrame(p)); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	poll(t, "the lane has every SEND", func() bool { return g.lane.Len() == testSends })
}

// ranThrough waits until g's lane has run its first n items and done with
// their credit what it does once an item has run (given it back, kept it
// while full, released what it lent): until the next item has started.
// ran counts an item before that, and a test going on at ran == n could
// find the nth item's credit neither kept nor released yet.
func (g *gatedLane) ranThrough(t *testing.T, n int32) {
	t.Helper()
	poll(t, fmt.Sprintf("%d items run, and the next started", n), func() bool { return g.entered.Load() == n+1 })
}

// A lane that reaches its limit keeps the credits of the SENDs it runs
// until it has drained to half the limit, so that senders wait while it
// catches up; then it hands them back in one go. The limit is counted
// once per filling.
func TestLaneKeepsCreditsWhileFull(t *testing.T) {
	t.Parallel()
	var fills atomic.Int32
	g := newGatedLane(t, 4, func() { fills.Add(1) })
	// Ten items queued or running: past the limit.
	g.fill(t, 1)
	blocked(t, g.client, 1)

	// Seven run: three are left, still over half the limit, and the lane
	// keeps their credit although it is more than a quarter window.
	for range 7 {
		g.gate <- struct{}{}
	}
	poll(t, "seven items run", func() bool { return g.ran.Load() == 7 })
	blocked(t, g.client, 1)

	// The eighth leaves two, half the limit: the kept credit goes back.
	g.gate <- struct{}{}
	if err := g.client.Send(testContext(t), windowFrame(1)); err != nil {
		t.Errorf("Send once the lane drained to half its limit: %v, want nil", err)
	}
	if n := fills.Load(); n != 1 {
		t.Errorf("full called %d times, want once (one filling)", n)
	}
}

// A full lane lends what it keeps of messages that have run, and releases
// it once it has drained to half its limit, with the rest of what it
// kept: until then the lane is full, and a flood spending it would only
// fill it further.
func TestLentCreditOfAFullLaneReleasedOnceItDrains(t *testing.T) {
	t.Parallel()
	g := newGatedLane(t, 4, nil)
	p, lane, gate, ctx := g.pair, g.lane, g.gate, testContext(t)
	g.fill(t, 0)
	for range 4 { // four run while the lane is full: their credit is kept
		gate <- struct{}{}
	}
	g.ranThrough(t, 4)

	lane.Lend(p.server)() // lends the kept credit and that of the six left
	cost := rpc.SendCost(windowFrame(0))
	poll(t, "the client has it all as lent", func() bool { return rpc.Reserved(p.client)[0] == testSends*cost })
	for range 3 { // three left: still over half the limit
		gate <- struct{}{}
	}
	g.ranThrough(t, 7) // and released what was lent for the three
	// A round trip from the server: the client has taken every CREDIT the
	// server sent before it.
	if _, err := p.server.Ask(ctx, &wire.Frame{Kind: wire.Kind_KIND_ASK, Plugin: 0, Type: "sync"}); err != nil {
		t.Fatalf("Ask: %v", err)
	}
	if got, want := rpc.Reserved(p.client)[0], (testSends-3)*cost; got != want {
		t.Errorf("with the lane still full: %d bytes lent not released, want %d (the three run released, the four kept not)", got, want)
	}
	gate <- struct{}{} // two left: drained to half its limit
	poll(t, "the kept credit released", func() bool { return rpc.Reserved(p.client)[0] == 2*cost })
	gate <- struct{}{}
	gate <- struct{}{}
	poll(t, "everything released", func() bool { return rpc.Reserved(p.client)[0] == 0 })
}

// Asks that share one ctx are canceled together when it ends, whether
// they wait on it themselves or through the watcher the connection starts
// for a shared ctx, and the connection goes on serving. (TestMain's leak
// check covers the watcher's goroutine.)
func TestAsksSharingACtxCanceled(t *testing.T) {
	t.Parallel()
	const askers = 16
	var held sync.WaitGroup
	held.Add(askers)
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind != wire.Kind_KIND_ASK {
			return
		}
		if string(f.Payload) == "answer me" {
			echo(c, f)
			return
		}
		held.Done() // never answered
	})
	p := newPair(t, newHandler(echo), server, rpc.Options{}, rpc.Options{})
	for round := range 3 {
		ctx, cancel := context.WithCancel(testContext(t))
		errs := make(chan error, askers)
		if round > 0 {
			held.Add(askers)
		}
		for range askers {
			go func() { errs <- askResult(ctx, p.client, &wire.Frame{Payload: []byte("hold")}) }()
		}
		held.Wait() // every ask has reached the server
		cancel()
		for range askers {
			err := recv(t, errs, "a canceled ask")
			if !errors.Is(err, context.Canceled) {
				t.Errorf("round %d: ask under a canceled ctx: got %v, want one matching context.Canceled", round, err)
			}
			wantCode(t, "ask under a canceled ctx", err, plugin.CodeCanceled)
		}
	}
	if err := askResult(testContext(t), p.client, &wire.Frame{Payload: []byte("answer me")}); err != nil {
		t.Errorf("ask after the canceled ones: %v, want nil", err)
	}
}

// TrySend queues what can go at once and hands back what would wait.
func TestTrySend(t *testing.T) {
	t.Parallel()
	opts := rpc.Options{Plugins: []string{"p0", "p1"}, SendWindow: testWindow}
	p := newPair(t, newHandler(echo), newHandler(func(*rpc.Conn, *wire.Frame) {}), opts, opts)
	for i := range testSends {
		if ok, err := p.client.TrySend(windowFrame(1)); !ok || err != nil {
			t.Fatalf("TrySend %d with window left: got %v, %v; want true, nil", i, ok, err)
		}
	}
	if ok, err := p.client.TrySend(windowFrame(1)); ok || err != nil {
		t.Errorf("TrySend with the window spent: got %v, %v; want false, nil", ok, err)
	}
	if ok, err := p.client.TrySend(windowFrame(0)); !ok || err != nil {
		t.Errorf("TrySend for another plugin: got %v, %v; want true, nil", ok, err)
	}
	p.client.Close(nil)
	if ok, err := p.client.TrySend(windowFrame(0)); ok || plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("TrySend on a closed Conn: got %v, %v; want false and an Unavailable error", ok, err)
	}

	// A full send queue: the writer is held in Send.
	s := newFakeStream()
	s.gate = make(chan struct{})
	c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 1})
	if ok, _ := c.TrySend(sendFrame("taken by the writer")); !ok {
		t.Fatal("TrySend on an empty queue: got false")
	}
	recv(t, s.entered, "writer in Send")
	if ok, _ := c.TrySend(sendFrame("queued")); !ok {
		t.Fatal("TrySend with room in the queue: got false")
	}
	if ok, err := c.TrySend(sendFrame("no room")); ok || err != nil {
		t.Errorf("TrySend on a full queue: got %v, %v; want false, nil", ok, err)
	}
	close(s.gate)
}

// A peer's plugin and type indices are checked unsigned: the largest,
// which are negative ints on 32-bit platforms, passed the bounds checks
// there and crashed the process indexing the windows or the type table.
// SENDs, CREDITs and Consumed with such a plugin are each turned away like
// any unknown plugin's, and such a type reads as an invalid one. (CI runs
// this package on GOARCH=386 too.)
func TestLargestIndicesFromThePeer(t *testing.T) {
	const bad = math.MaxUint32
	s := newFakeStream()
	h := newHandler(nil)
	c := rpc.New(s, s.cancel, h, rpc.Options{Plugins: []string{"p0"}, SendWindow: testWindow})
	c.SetTypes([]string{"m.T"})
	c.Start()
	t.Cleanup(func() {
		c.Close(nil)
		c.Wait()
	})
	ctx := testContext(t)
	if err := c.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: bad, Payload: []byte("x")}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	c.Consumed(bad, 1<<20)
	s.in <- &wire.Batch{Frames: []*wire.Frame{
		{Kind: wire.Kind_KIND_CREDIT, Plugin: bad, Credit: 1 << 20},
		{Kind: wire.Kind_KIND_SEND, Plugin: bad, Payload: []byte("y"), TypeId: bad},
	}}
	poll(t, "the SEND handed to the handler", func() bool { return len(h.Frames()) == 1 })
	if f := h.Frames()[0]; f.Plugin != bad || string(f.Payload) != "y" || f.Type == "m.T" || f.Type == "" {
		t.Errorf("handled %v, want the SEND for plugin %d, with an invalid type", f, uint32(bad))
	}
	poll(t, "the SEND written", func() bool { return s.count(wire.Kind_KIND_SEND) == 1 })
}

// SendLast queues its frame and fails every later SEND, ASK and TASK with
// its error, waiting ones included; replies and other control frames still go, and
// the peer gets the last frame after everything queued before it.
func TestSendLast(t *testing.T) {
	t.Parallel()
	server := newHandler(nil)
	opts := rpc.Options{Plugins: []string{"p0"}, SendWindow: testWindow}
	p := newPair(t, newHandler(echo), server, opts, opts)
	ctx := testContext(t)
	for i := range testSends {
		if err := p.client.Send(ctx, windowFrame(0)); err != nil {
			t.Fatalf("Send %d of a window's worth: %v", i, err)
		}
	}
	waiting := make(chan error, 1)
	go func() { waiting <- p.client.Send(ctx, windowFrame(0)) }() // waits for the window
	last := errors.New("last frame sent")
	if err := p.client.SendLast(&wire.Frame{Kind: wire.Kind_KIND_STOP}, last); err != nil {
		t.Fatalf("SendLast: %v", err)
	}
	if err := recv(t, waiting, "the Send waiting for its window"); !errors.Is(err, last) {
		t.Errorf("Send waiting for its window when SendLast came: got %v, want %v", err, last)
	}
	if err := p.client.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 1}); !errors.Is(err, last) {
		t.Errorf("Send after SendLast: got %v, want %v", err, last)
	}
	if ok, err := p.client.TrySend(windowFrame(0)); ok || !errors.Is(err, last) {
		t.Errorf("TrySend after SendLast: got %v, %v, want false, %v", ok, err, last)
	}
	if err := askResult(ctx, p.client, &wire.Frame{Plugin: 0}); !errors.Is(err, last) {
		t.Errorf("Ask after SendLast: got %v, want %v", err, last)
	}
	if err := p.client.SendControl(&wire.Frame{Kind: wire.Kind_KIND_TASK}); !errors.Is(err, last) {
		t.Errorf("a TASK after SendLast: got %v, want %v", err, last)
	}
	if err := p.client.SendControl(&wire.Frame{Kind: wire.Kind_KIND_LEAVING}); err != nil {
		t.Errorf("SendControl after SendLast: %v, want nil", err)
	}
	poll(t, "the server has the window's SENDs, STOP and LEAVING", func() bool { return server.NumFrames() == testSends+2 })
	var kinds []wire.Kind
	for _, f := range server.Frames() {
		kinds = append(kinds, f.Kind)
	}
	want := append(slices.Repeat([]wire.Kind{wire.Kind_KIND_SEND}, testSends), wire.Kind_KIND_STOP, wire.Kind_KIND_LEAVING)
	if !slices.Equal(kinds, want) {
		t.Errorf("the server received %v, want %v", kinds, want)
	}
}

// idleLane returns a lane that runs nothing: its handler ctx marks the
// Sends of a test as a handler's.
func idleLane(t *testing.T) *rpc.Lane {
	t.Helper()
	l := rpc.NewLane(1, 0, func(rpc.Item) {})
	t.Cleanup(l.Close)
	return l
}

// A lane lends to a connection while told to: the credits of that
// connection's SENDs queued behind a handler that does not return go back
// at once, and so do those of the SENDs that arrive meanwhile, but only
// the peer's handlers may spend them: its other Sends go on waiting. Once
// lending stops, the window binds the handlers again too.
func TestLaneLends(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	lane := rpc.NewLane(1, 0, func(rpc.Item) { <-gate })
	t.Cleanup(lane.Close)
	t.Cleanup(func() { close(gate) }) // first: lets the worker finish
	opts := rpc.Options{Plugins: []string{"p0"}, SendWindow: testWindow}
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if !rpc.Deliver(context.Background(), lane, c, f, nil) && !c.Ended() { // see newGatedLane
			t.Errorf("Deliver: lane closed")
		}
	})
	p := newPair(t, newHandler(echo), server, opts, opts)
	ctx := testContext(t)
	handlerCtx := rpc.WithLane(ctx, idleLane(t))
	// Sends that must go wait as long as the test may (the lent credit
	// comes from the peer, late on a loaded machine); those that find the
	// window spent, 50ms.
	send := func() error { return p.client.Send(handlerCtx, windowFrame(0)) }
	sendOrWait := func() error {
		ctx, cancel := context.WithTimeout(handlerCtx, 50*time.Millisecond)
		defer cancel()
		return p.client.Send(ctx, windowFrame(0))
	}

	for i := range testSends {
		if err := send(); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	poll(t, "the lane has every SEND", func() bool { return lane.Len() == testSends })
	blocked(t, p.client, 0) // the first runs and does not return; nine wait behind it

	stop := lane.Lend(p.server)
	blocked(t, p.client, 0) // not a handler's Send: what is lent is not for it
	for i := range 3 * testSends {
		if err := send(); err != nil {
			t.Fatalf("Send %d while the lane lends: %v, want every one to go", i, err)
		}
	}
	stop()
	// What was lent is the client's; once it is spent, Sends wait again.
	for i := 0; ; i++ {
		err := sendOrWait()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("Send after lending stopped: %v", err)
		}
		if i == testSends {
			t.Fatalf("%d Sends went after lending stopped, want the window (%d) to bind", i+1, testSends)
		}
	}
}

// What a lane lends stays the peer's handlers' after the loan ends, until
// the messages it was lent for have run: the peer's other goroutines (a
// flood of reports) may not spend it meanwhile. When the loan's end made
// it anyone's, a flood spent it, and the lending lane filled with messages
// lent for until it could lend no more: two plugins whose Receives send
// to each other, under a flood from elsewhere, stopped for good (a user's
// trial; TestReceivesSendingToEachOtherUnderAFlood). Once those messages
// have run, it is anyone's.
func TestLentCreditReleasedOnceItsMessagesRun(t *testing.T) {
	t.Parallel()
	g := newGatedLane(t, 0, nil)
	p, lane, ctx := g.pair, g.lane, testContext(t)
	g.fill(t, 0)
	blocked(t, p.client, 0)

	stop := lane.Lend(p.server)
	handlerCtx := rpc.WithLane(ctx, idleLane(t))
	poll(t, "a handler's Send goes on what is lent", func() bool {
		sctx, cancel := context.WithTimeout(handlerCtx, 20*time.Millisecond)
		defer cancel()
		return p.client.Send(sctx, windowFrame(0)) == nil
	})
	stop()
	blocked(t, p.client, 0) // the loan has ended, and what is left of it is still the handlers'

	g.open()
	poll(t, "any Send goes once the messages lent for have run", func() bool {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		return p.client.Send(sctx, windowFrame(0)) == nil
	})
}

// Only a lane's handler waiting in Send makes the lane lend: a Send under
// another ctx (a plugin's own goroutine) waits without changing what the
// lane holds back, so the window keeps bounding what the peer may send
// it. Both ends' lanes are stuck here, so both windows are spent.
func TestOnlyAHandlerWaitingLends(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	newLane := func() *rpc.Lane {
		l := rpc.NewLane(1, 0, func(rpc.Item) { <-gate })
		t.Cleanup(l.Close)
		return l
	}
	clientLane, serverLane := newLane(), newLane()
	t.Cleanup(func() { close(gate) }) // first: lets the workers finish
	deliverTo := func(l *rpc.Lane) *handler {
		return newHandler(func(c *rpc.Conn, f *wire.Frame) { rpc.Deliver(context.Background(), l, c, f, nil) })
	}
	opts := rpc.Options{Plugins: []string{"p0"}, SendWindow: testWindow}
	p := newPair(t, deliverTo(clientLane), deliverTo(serverLane), opts, opts)
	ctx := testContext(t)
	for _, c := range []*rpc.Conn{p.client, p.server} {
		for i := range testSends {
			if err := c.Send(ctx, windowFrame(0)); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		}
	}
	poll(t, "both lanes have every SEND", func() bool { return clientLane.Len() == testSends && serverLane.Len() == testSends })

	// The client's own goroutine waits: its lane lends nothing, and the
	// server's next Send to it still waits.
	waitingSend := func(ctx context.Context) chan error {
		errc := make(chan error, 1)
		go func() { errc <- p.client.Send(ctx, windowFrame(0)) }()
		return errc
	}
	shortCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	errc := waitingSend(shortCtx)
	blocked(t, p.server, 0)
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the client's Send with its window spent: %v, want it to wait", err)
	}

	// The client's lane's handler waits: the lane lends, and the server's
	// handlers' Sends to it go; its other Sends still wait. (The server's
	// handler is another lane's: the server's own lane, lending back,
	// would free the client's handler and end the loan.)
	handlerCtx, endHandler := context.WithCancel(rpc.WithLane(ctx, clientLane))
	errc = waitingSend(handlerCtx)
	serverHandler := rpc.WithLane(ctx, idleLane(t))
	poll(t, "the server's handler's Send goes while the client's handler waits", func() bool {
		sctx, cancel := context.WithTimeout(serverHandler, 20*time.Millisecond)
		defer cancel()
		return p.server.Send(sctx, windowFrame(0)) == nil
	})
	blocked(t, p.server, 0)
	endHandler()
	<-errc
}

// givenBackOnce closes lane, which c delivers its SENDs to, and waits
// until every SEND c has received has had its credit given back, failing
// if some was given back twice.
func givenBackOnce(t *testing.T, lane *rpc.Lane, c *rpc.Conn, plugins int) {
	t.Helper()
	lane.Close() // every item has finished, and given back what it had
	for p := range uint32(plugins) {
		poll(t, fmt.Sprintf("every credit of plugin %d given back", p), func() bool {
			n := rpc.Outstanding(c, p)
			if n < 0 {
				t.Fatalf("plugin %d: %d bytes of credit given back twice", p, -n)
			}
			return n == 0
		})
	}
}

// creditLane returns a pair whose server delivers SENDs to a lane whose handler acts on
// their type: "gate" waits for gate, "exit" ends its goroutine
// (runtime.Goexit), anything else returns at once. Every handler releases
// its frame, as the driver's and executors' do with one not predecoded.
func creditLane(t *testing.T, workers int, window int, entered chan<- struct{}, gate <-chan struct{}) (*rpc.Lane, *pair, *atomic.Int64) {
	t.Helper()
	lane := rpc.NewLane(workers, 0, func(it rpc.Item) {
		typ := it.Header().Type
		wire.ReleaseFrame(it.Frame)
		switch typ {
		case "gate":
			entered <- struct{}{}
			<-gate
		case "exit":
			runtime.Goexit()
		}
	})
	t.Cleanup(lane.Close)
	opts := rpc.Options{Plugins: []string{"p0", "p1"}, SendWindow: window, MaxMessageBytes: 1 << 20}
	var delivered atomic.Int64
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind != wire.Kind_KIND_SEND {
			return
		}
		if !rpc.Deliver(context.Background(), lane, c, f, nil) {
			t.Errorf("Deliver: the lane is closed")
			rpc.Refuse(c, f, plugin.CodeUnavailable, "the lane is closed")
			return
		}
		delivered.Add(1)
	})
	return lane, newPair(t, newHandler(echo), server, opts, opts), &delivered
}

// sendTypes sends one small SEND of each type, alternating plugins.
func sendTypes(t *testing.T, c *rpc.Conn, types ...string) {
	t.Helper()
	ctx := testContext(t)
	for i, typ := range types {
		f := &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: uint32(i % 2), Type: typ, Payload: []byte("credit")}
		if err := c.Send(ctx, f); err != nil {
			t.Fatalf("Send %d (%s): %v", i, typ, err)
		}
	}
}

// Every SEND's credit goes back exactly once, whichever way it goes:
// lent from the queue, from the serial worker's batch or from the items a
// lane of several workers is running, or given back as it finishes,
// including after handlers' Goexits (two in one batch: the worker taking
// over runs the rest of the batch from its own offset into the slots).
func TestLaneGivesEachCreditBackOnce(t *testing.T) {
	t.Parallel()
	t.Run("serial batch with Goexits", func(t *testing.T) {
		t.Parallel()
		entered, gate := make(chan struct{}), make(chan struct{})
		lane, p, _ := creditLane(t, 1, 1<<20, entered, gate)
		sendTypes(t, p.client, "gate")
		<-entered
		// One batch, taken once the gate opens.
		sendTypes(t, p.client, "m", "exit", "m", "m", "exit", "m", "m", "exit", "m", "m")
		poll(t, "the lane has every SEND", func() bool { return lane.Len() == 11 })
		close(gate)
		givenBackOnce(t, lane, p.server, 2)
	})
	t.Run("lent from the serial batch and the queue", func(t *testing.T) {
		t.Parallel()
		entered, gate := make(chan struct{}), make(chan struct{})
		lane, p, _ := creditLane(t, 1, 1<<20, entered, gate)
		sendTypes(t, p.client, "m", "m") // the worker has run a batch: its slots are reused
		poll(t, "the first batch has run", func() bool { return lane.Len() == 0 })
		sendTypes(t, p.client, "gate")
		<-entered
		sendTypes(t, p.client, "m", "exit", "m", "gate", "m", "m", "exit", "m")
		poll(t, "the lane has every SEND", func() bool { return lane.Len() == 9 })
		gate <- struct{}{}
		<-entered                             // the second gate, in the middle of the batch
		sendTypes(t, p.client, "m", "m", "m") // queued
		poll(t, "the lane has every SEND", func() bool { return lane.Len() == 8 })
		lane.Lend(p.server)()
		close(gate)
		givenBackOnce(t, lane, p.server, 2)
	})
	t.Run("lent from a lane of several workers", func(t *testing.T) {
		t.Parallel()
		entered, gate := make(chan struct{}), make(chan struct{})
		lane, p, _ := creditLane(t, 3, 1<<20, entered, gate)
		sendTypes(t, p.client, "gate", "gate", "gate")
		for range 3 {
			<-entered
		}
		sendTypes(t, p.client, "m", "exit", "m", "m")
		poll(t, "the lane has every SEND", func() bool { return lane.Len() == 7 })
		lane.Lend(p.server)()
		close(gate)
		givenBackOnce(t, lane, p.server, 2)
	})
	t.Run("lent as it arrives", func(t *testing.T) {
		// Large SENDs are not predecoded: the handler releases their
		// frames, so the push must not read them once they are queued
		// (go test -race).
		t.Parallel()
		lane, p, delivered := creditLane(t, 1, 256<<10, nil, nil)
		stop := lane.Lend(p.server)
		// What is lent is for the client's handlers' Sends.
		ctx := rpc.WithLane(testContext(t), idleLane(t))
		for i := range 300 {
			f := &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 1, Type: "m", Payload: make([]byte, 70<<10)}
			if err := p.client.Send(ctx, f); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		}
		stop()
		poll(t, "every SEND delivered", func() bool { return delivered.Load() == 300 })
		givenBackOnce(t, lane, p.server, 2)
	})
}

// Two ends whose handlers each send to the other for every report they
// take in (a driver plugin's Receive that broadcasts, an executor's that
// acknowledges with k acks) cannot wait on each other's windows for ever:
// the lane whose handler waits lends to the other end (WithLane,
// Lane.Lend). Each end's own goroutine sends fifty windows of reports,
// with lanes of one worker and of three, and with lanes whose limits are
// far below what is sent: there, a loan that the reports could spend let
// them fill the waiting lane to its limit, past which it lent nothing, and
// both ends stopped for good; lent credit is for handlers alone, and a
// full lane lends too (found by review).
func TestHandlersSendingToEachOtherDoNotDeadlock(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ workers, limit, k int }{
		{1, 0, 1}, {3, 0, 1}, {1, 8, 1}, {1, 8, 4}, {1, 64, 1}, {1, 64, 4},
	} {
		t.Run(fmt.Sprintf("%d workers, limit %d, %d acks", tt.workers, tt.limit, tt.k), func(t *testing.T) {
			t.Parallel()
			const reports = 50 * testSends
			ctx := testContext(t)
			var ran [2]atomic.Int64 // SENDs run by the client's lane, and by the server's
			newLane := func(side int) *rpc.Lane {
				var l *rpc.Lane
				l = rpc.NewLane(tt.workers, tt.limit, func(it rpc.Item) {
					ran[side].Add(1)
					if it.Header().Type != "report" {
						return
					}
					for range tt.k {
						ack := windowFrame(0)
						ack.Type = "ack"
						// Under the lane's handler ctx, as plugins' handlers run.
						if err := it.Conn.Send(rpc.WithLane(ctx, l), ack); err != nil {
							t.Errorf("ack: %v", err)
							return
						}
					}
				})
				t.Cleanup(l.Close)
				return l
			}
			lanes := []*rpc.Lane{newLane(0), newLane(1)}
			handler := func(l *rpc.Lane) *handler {
				return newHandler(func(c *rpc.Conn, f *wire.Frame) {
					if f.Kind == wire.Kind_KIND_SEND {
						rpc.Deliver(context.Background(), l, c, f, nil)
					}
				})
			}
			opts := rpc.Options{Plugins: []string{"p0"}, SendWindow: testWindow}
			p := newPair(t, handler(lanes[0]), handler(lanes[1]), opts, opts)
			for _, c := range []*rpc.Conn{p.client, p.server} {
				go func() {
					for range reports {
						f := windowFrame(0)
						f.Type = "report"
						if err := c.Send(ctx, f); err != nil {
							t.Errorf("report: %v", err)
							return
						}
					}
				}()
			}
			want := int64(reports * (1 + tt.k))
			poll(t, "every report and every ack run on both ends", func() bool {
				return ran[0].Load() == want && ran[1].Load() == want
			})
		})
	}
}

// A peer that spends what it was lent on anything (or a handler's ctx
// passed to a goroutine that floods) cannot make a lending lane hold more
// than its window plus the loan cap (Conn.LoanCap) of its messages: past
// that, what arrives keeps its credit until it has run, and the peer's
// Sends wait. A full lane lent everything that arrived, without bound
// (found by review).
func TestLoansAreCapped(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	lane := rpc.NewLane(1, 4, func(rpc.Item) { <-gate })
	t.Cleanup(lane.Close)
	t.Cleanup(func() { close(gate) }) // first: lets the worker finish
	opts := rpc.Options{Plugins: []string{"p0"}, SendWindow: testWindow, MaxMessageBytes: 100}
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) { rpc.Deliver(context.Background(), lane, c, f, nil) })
	p := newPair(t, newHandler(echo), server, opts, opts)
	stop := lane.Lend(p.server) // the lane's handler waits to send to the client, for ever
	defer stop()
	flood := rpc.WithLane(testContext(t), idleLane(t)) // may spend what is lent
	send := func() error {
		ctx, cancel := context.WithTimeout(flood, 50*time.Millisecond)
		defer cancel()
		return p.client.Send(ctx, windowFrame(0))
	}
	sent := 0
	for ; sent < 1000; sent++ {
		err := send()
		if errors.Is(err, context.DeadlineExceeded) {
			// The cap, or credit late on a loaded machine: once the lane
			// has every SEND and the client every CREDIT the server sent
			// for them (a round trip from the server), one more try says.
			poll(t, "the lane has every SEND", func() bool { return lane.Len() == sent })
			if _, err := p.server.Ask(testContext(t), &wire.Frame{Kind: wire.Kind_KIND_ASK, Plugin: 0, Type: "sync"}); err != nil {
				t.Fatalf("Ask: %v", err)
			}
			err = send()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("Send %d: %v", sent, err)
		}
	}
	// The window (ten SENDs of 100 bytes) and the cap (4,164 bytes: 41
	// more), give or take the one the window may be overdrawn by.
	if want := testSends + int(p.server.LoanCap(0)/100) + 2; sent > want {
		t.Errorf("a peer spending its loan on anything sent %d SENDs to a lane that does not run, want at most %d", sent, want)
	}
	if sent < testSends+int(p.server.LoanCap(0)/100)-1 {
		t.Errorf("only %d SENDs went before the peer had to wait, want the window and the loan cap (%d bytes) spent", sent, p.server.LoanCap(0))
	}
}

// A release covers first what this end's handlers spent of what was lent:
// a handler that spent lent credit, and whose messages were lent for in
// turn, must not find the release of the first loan's messages freeing the
// credit lent for its own, which have yet to run. The release used to
// take the reservation down by its whole size, whatever the handlers had
// spent of it: the second loan became anyone's, and a flood could spend
// it while the lane still held the messages it was lent for.
func TestReleaseCoversWhatHandlersSpentFirst(t *testing.T) {
	t.Parallel()
	g := newGatedLane(t, 0, nil)
	p, lane, ctx := g.pair, g.lane, testContext(t)
	g.fill(t, 0)
	cost := rpc.SendCost(windowFrame(0))

	lane.Lend(p.server)() // the ten queued: lent
	poll(t, "the client has the ten as lent", func() bool { return rpc.Reserved(p.client)[0] == testSends*cost })
	handlerCtx := rpc.WithLane(ctx, idleLane(t))
	for i := range 2 { // a handler spends two of it; nobody lends meanwhile
		if err := p.client.Send(handlerCtx, windowFrame(0)); err != nil {
			t.Fatalf("handler's Send %d: %v", i, err)
		}
	}
	poll(t, "the lane has the handler's two", func() bool { return lane.Len() == testSends+2 })
	lane.Lend(p.server)() // the handler's two: lent in turn
	poll(t, "the client has twelve lent, two of them spent", func() bool { return rpc.Reserved(p.client)[0] == testSends*cost })

	for range testSends { // the first ten run: released
		g.gate <- struct{}{}
	}
	g.ranThrough(t, testSends)
	// A round trip from the server: the client has taken every CREDIT the
	// server sent before it.
	if _, err := p.server.Ask(ctx, &wire.Frame{Kind: wire.Kind_KIND_ASK, Plugin: 0, Type: "sync"}); err != nil {
		t.Fatalf("Ask: %v", err)
	}
	if got, want := rpc.Reserved(p.client)[0], 2*cost; got != want {
		t.Errorf("with the handler's two lent for and yet to run: %d bytes reserved for the handlers, want %d", got, want)
	}
	g.gate <- struct{}{}
	g.gate <- struct{}{}
	poll(t, "everything released", func() bool {
		return rpc.Reserved(p.client)[0] == 0 && rpc.Drawn(p.client)[0] == 0
	})
}
