package rpc_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/protobuf/proto"
)

// An asker that gives up because its ctx ended sends ASK_CANCEL with the
// ask's call ID and plugin, also when the deadline the ask carried ended
// it (the handler's copy of it counts from the ask's arrival, which a
// stall can put long after the asker gave up); only an ask whose ctx can
// end is marked cancelable.
func TestGivingUpSendsAskCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		ctx        func(t *testing.T) (context.Context, context.CancelFunc)
		asks       int // under the one ctx, at once (more than one: a watcher answers for them)
		wantCode   plugin.Code
		wantCancel bool
	}{
		{"canceled", func(t *testing.T) (context.Context, context.CancelFunc) {
			return context.WithCancel(testContext(t))
		}, 1, plugin.CodeCanceled, true},
		{"canceled, with a deadline", func(t *testing.T) (context.Context, context.CancelFunc) {
			return context.WithTimeout(testContext(t), time.Hour)
		}, 1, plugin.CodeCanceled, true},
		{"past its deadline", func(t *testing.T) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
			t.Cleanup(cancel)
			return ctx, func() {} // the deadline ends it
		}, 1, plugin.CodeDeadlineExceeded, true},
		{"canceled, three asks sharing the ctx", func(t *testing.T) (context.Context, context.CancelFunc) {
			return context.WithCancel(testContext(t))
		}, 3, plugin.CodeCanceled, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeStream()
			c := startFake(t, s, newHandler(nil), rpc.Options{Plugins: []string{"a", "b", "c"}})
			ctx, cancel := tt.ctx(t)
			errc := make(chan error, tt.asks)
			for range tt.asks {
				go func() {
					_, err := c.Ask(ctx, &wire.Frame{Plugin: 2})
					errc <- err
				}()
			}
			poll(t, "asks written", func() bool { return s.count(wire.Kind_KIND_ASK) == tt.asks })
			cancel()
			for range tt.asks {
				wantCode(t, "Ask that gave up", recv(t, errc, "Ask's return"), tt.wantCode)
			}
			// Anything queued before this heartbeat is written before it.
			waitWritten(t, c, s)

			asked := map[uint64]bool{}
			canceled := map[uint64]bool{}
			for _, f := range s.Sent() {
				switch f.Kind {
				case wire.Kind_KIND_ASK:
					if !f.Cancelable {
						t.Errorf("ASK %d under a ctx that can end: not marked cancelable", f.Call)
					}
					asked[f.Call] = true
				case wire.Kind_KIND_ASK_CANCEL:
					if f.Plugin != 2 {
						t.Errorf("ASK_CANCEL for call %d: plugin %d, want the ask's, 2", f.Call, f.Plugin)
					}
					canceled[f.Call] = true
				}
			}
			for id := range asked {
				if canceled[id] != tt.wantCancel {
					t.Errorf("ASK %d: ASK_CANCEL sent %v, want %v", id, canceled[id], tt.wantCancel)
				}
			}
			if tt.wantCancel && len(canceled) != len(asked) {
				t.Errorf("got ASK_CANCELs for calls %v, want one for each ask, %v", canceled, asked)
			}
		})
	}
}

// An ask under a ctx that cannot end is not marked cancelable: the side
// that answers it keeps nothing for it.
func TestAskWithoutDoneIsNotCancelable(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	c := startFake(t, s, newHandler(nil), rpc.Options{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Ask(context.Background(), &wire.Frame{})
		errc <- err
	}()
	poll(t, "ask written", func() bool { return s.count(wire.Kind_KIND_ASK) == 1 })
	f := s.Sent()[0]
	if f.Cancelable {
		t.Error("ASK under context.Background: marked cancelable, want not")
	}
	s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_REPLY, Call: f.Call}}}
	if err := recv(t, errc, "Ask's return"); err != nil {
		t.Fatal(err)
	}
}

// ended is what a handler saw of its ctx when it returned.
type ended struct {
	call       uint64
	err, cause error
}

// laneConn starts a Conn over s that answers ASKs as an endpoint does:
// delivered to one serial lane, dispatched there to a handler that
// returns when its ctx ends or release is closed. It reports each
// handler's start on entered and its end on done; caughtUp returns once
// the Conn's reader has handled every frame put on s before the call.
func laneConn(t *testing.T, s *fakeStream, release <-chan struct{}) (c *rpc.Conn, entered <-chan uint64, done <-chan ended, caughtUp func()) {
	t.Helper()
	in := make(chan uint64, 16)
	out := make(chan ended, 16)
	marks := make(chan struct{}, 16)
	log := slog.New(slog.DiscardHandler)
	lane := rpc.NewLane(1, 0, func(it rpc.Item) {
		call := it.Header().Call
		rpc.Dispatch(t.Context(), t.Context(), log, "p", it, 1<<20, false, func(ctx context.Context, msg any) (any, error) {
			in <- call
			select {
			case <-ctx.Done():
			case <-release:
			}
			out <- ended{call, ctx.Err(), context.Cause(ctx)}
			return nil, ctx.Err()
		})
	})
	t.Cleanup(lane.Close)
	h := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		switch f.Kind {
		case wire.Kind_KIND_ASK:
			if !rpc.Deliver(t.Context(), lane, c, f, nil) {
				t.Errorf("Deliver of ASK %d: lane closed", f.Call)
			}
		case wire.Kind_KIND_SEND:
			marks <- struct{}{}
		}
	})
	c = startFake(t, s, h, rpc.Options{Plugins: []string{"p"}})
	caughtUp = func() {
		t.Helper()
		// The reader handles frames in order: once it has handled this
		// SEND, it has handled every frame before it.
		s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_SEND}}}
		recv(t, marks, "reader caught up")
	}
	return c, in, out, caughtUp
}

// An ASK_CANCEL from the asker ends the handler's ctx with
// context.Canceled and the cause plugin.ErrAskCanceled, whether it comes
// while the handler runs or before it starts; it changes nothing for an
// ask not marked cancelable, or for a call that is not running; and the
// answering side keeps nothing once the asks are answered.
func TestAskCancelEndsTheHandlersCtx(t *testing.T) {
	t.Parallel()
	ask := func(call uint64, cancelable bool) *wire.Frame {
		return &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: call, Cancelable: cancelable}
	}
	cancelOf := func(call uint64) *wire.Frame { return &wire.Frame{Kind: wire.Kind_KIND_ASK_CANCEL, Call: call} }
	tests := []struct {
		name string
		// before: frames read first, then the test waits for the
		// handler of the first ask to start and sends after.
		before, after []*wire.Frame
		// canceled: the calls whose handler should see the asker's
		// cancel; the others are released by the test.
		canceled map[uint64]bool
	}{
		{"while the handler runs", []*wire.Frame{ask(1, true)}, []*wire.Frame{cancelOf(1)}, map[uint64]bool{1: true}},
		{"before the handler starts", []*wire.Frame{ask(1, false), ask(2, true), cancelOf(2)}, nil, map[uint64]bool{2: true}},
		{"ask not cancelable", []*wire.Frame{ask(1, false)}, []*wire.Frame{cancelOf(1)}, nil},
		{"another call", []*wire.Frame{ask(1, true)}, []*wire.Frame{cancelOf(9)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeStream()
			release := make(chan struct{})
			c, entered, done, caughtUp := laneConn(t, s, release)
			asks := 0
			for _, f := range append(tt.before, tt.after...) {
				if f.Kind == wire.Kind_KIND_ASK {
					asks++
				}
			}
			// Copies: the Conn recycles the frames it reads.
			s.in <- &wire.Batch{Frames: clone(tt.before)}
			first := recv(t, entered, "first handler started")
			if len(tt.after) > 0 {
				s.in <- &wire.Batch{Frames: clone(tt.after)}
			}
			if !tt.canceled[first] {
				// Every ASK_CANCEL is read before the release, so that
				// a handler it wrongly canceled says so.
				caughtUp()
				close(release)
			}
			for range asks {
				e := recv(t, done, "handler returned")
				if tt.canceled[e.call] {
					if !errors.Is(e.err, context.Canceled) || !errors.Is(e.cause, plugin.ErrAskCanceled) {
						t.Errorf("call %d: the handler's ctx ended with %v (cause %v), want Canceled with cause ErrAskCanceled", e.call, e.err, e.cause)
					}
				} else if e.err != nil {
					t.Errorf("call %d: the handler's ctx ended with %v (cause %v), want it live until the test released it", e.call, e.err, e.cause)
				}
				if e.call == first && tt.canceled[first] {
					close(release)
				}
			}
			poll(t, "replies written", func() bool { return s.count(wire.Kind_KIND_REPLY) == asks })
			// The handler's ctx is let go right after its reply is queued.
			poll(t, "no handler ctx kept", func() bool { return rpc.Cancelables(c) == 0 })
		})
	}
}

func clone(frames []*wire.Frame) []*wire.Frame {
	out := make([]*wire.Frame, len(frames))
	for i, f := range frames {
		out[i] = proto.Clone(f).(*wire.Frame)
	}
	return out
}

// An asker that gives up while its ASK waits in the send queue withdraws
// it: neither the ASK nor an ASK_CANCEL is written, and the place it took
// goes to a sender waiting for room.
func TestQueuedAskIsWithdrawn(t *testing.T) {
	t.Parallel()
	s, gate := newGatedStream()
	waiting := make(chan string, 8)
	c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 1, OnLimit: func(l string) { waiting <- l }})
	ctx := testContext(t)
	holdWriter(t, c, s)
	askCtx, cancel := context.WithCancel(ctx)
	errc := askAsync(askCtx, c)
	poll(t, "the ASK queued", func() bool { return rpc.QueuedFrames(c) == 1 })
	// The queue is full: this SEND waits for room.
	sent := make(chan error, 1)
	go func() { sent <- c.Send(ctx, sendFrame("second")) }()
	if l := recv(t, waiting, "the SEND waiting for room"); l != "send_queue" {
		t.Fatalf("limit hit: got %q, want send_queue", l)
	}
	cancel()
	wantCode(t, "Ask that gave up", recv(t, errc, "Ask's return"), plugin.CodeCanceled)
	if err := recv(t, sent, "the waiting Send's return, once the ASK left the queue"); err != nil {
		t.Fatal(err)
	}
	if n := rpc.QueuedFrames(c); n != 1 {
		t.Errorf("%d frames queued, want 1: the second SEND, in the withdrawn ASK's place", n)
	}
	if n := rpc.GaveUp(c); n != 0 {
		t.Errorf("%d asks given up on still expect a reply, want 0: none comes for an ask never written", n)
	}
	close(gate)
	waitWritten(t, c, s)
	if n, m := s.count(wire.Kind_KIND_ASK), s.count(wire.Kind_KIND_ASK_CANCEL); n != 0 || m != 0 {
		t.Errorf("%d ASKs and %d ASK_CANCELs written for an ask withdrawn from the queue, want none", n, m)
	}
	if n := s.count(wire.Kind_KIND_SEND); n != 2 {
		t.Errorf("%d SENDs written, want 2", n)
	}
}

// An ask that gives up deeper in the send queue than withdrawLocked
// looks is not withdrawn: its ASK is written, and its ASK_CANCEL after it.
func TestDeepQueuedAskIsCanceled(t *testing.T) {
	t.Parallel()
	s, gate := newGatedStream()
	c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 1024})
	ctx := testContext(t)
	holdWriter(t, c, s)
	const ahead = 300 // more than withdrawLocked searches
	for range ahead {
		if err := c.Send(ctx, sendFrame("ahead")); err != nil {
			t.Fatal(err)
		}
	}
	askCtx, cancel := context.WithCancel(ctx)
	errc := askAsync(askCtx, c)
	poll(t, "the ASK queued", func() bool { return rpc.QueuedFrames(c) == ahead+1 })
	cancel()
	wantCode(t, "Ask that gave up", recv(t, errc, "Ask's return"), plugin.CodeCanceled)
	close(gate)
	waitWritten(t, c, s)
	if n, m := s.count(wire.Kind_KIND_ASK), s.count(wire.Kind_KIND_ASK_CANCEL); n != 1 || m != 1 {
		t.Errorf("%d ASKs and %d ASK_CANCELs written for an ask given up %d frames deep, want one of each", n, m, ahead+1)
	}
}

// An asker that gives up while the send queue is full, its ASK written
// already, still cancels it: the ASK_CANCEL takes the room past the
// queue's bound, as a control frame does, where the asks still queued
// are withdrawn (above). A handler whose cancel was dropped would run
// uncanceled (a long poll with no deadline, for ever).
func TestAskCancelPastAFullQueue(t *testing.T) {
	t.Parallel()
	s, gate := newGatedStream()
	c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 2})
	ctx := testContext(t)
	askCtx, cancel := context.WithCancel(ctx)
	// A lone ask: its caller writes it, once the gate lets it.
	errc := askAsync(askCtx, c)
	recv(t, s.entered, "the asker in Send")
	gate <- struct{}{}
	poll(t, "the ASK written", func() bool { return s.count(wire.Kind_KIND_ASK) == 1 })
	// The writer holds the first of these in stream.Send until the gate
	// opens; the other two fill the queue.
	for _, m := range []string{"first", "second", "third"} {
		if err := c.Send(ctx, sendFrame(m)); err != nil {
			t.Fatal(err)
		}
		if m == "first" {
			recv(t, s.entered, "the writer in Send")
		}
	}
	cancel()
	wantCode(t, "Ask that gave up", recv(t, errc, "Ask's return"), plugin.CodeCanceled)
	close(gate)
	waitWritten(t, c, s)
	if n := s.count(wire.Kind_KIND_ASK_CANCEL); n != 1 {
		t.Errorf("%d ASK_CANCELs written for the ask given up while the queue was full, want 1", n)
	}
}

// An ASK's deadline runs from when the reader took it, not from when its
// lane got to it: an ask that waited behind another for longer than its
// asker allowed starts with its ctx past the deadline. It used to start
// with the whole timeout again, working on for an asker long gone.
func TestAskDeadlineRunsFromReceipt(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	release := make(chan struct{})
	_, entered, done, caughtUp := laneConn(t, s, release)
	const timeout = 100 * time.Millisecond
	s.in <- &wire.Batch{Frames: []*wire.Frame{
		{Kind: wire.Kind_KIND_ASK, Call: 1},
		{Kind: wire.Kind_KIND_ASK, Call: 2, TimeoutMicros: timeout.Microseconds()},
	}}
	recv(t, entered, "first handler started")
	caughtUp()
	waited := time.NewTimer(2 * timeout)
	defer waited.Stop()
	<-waited.C // the second ask's deadline passes while it waits on the lane
	close(release)
	if e := recv(t, done, "first handler returned"); e.call != 1 || e.err != nil {
		t.Fatalf("first handler: got %+v, want call 1 released by the test", e)
	}
	e := recv(t, done, "second handler returned")
	if e.call != 2 || !errors.Is(e.err, context.DeadlineExceeded) {
		t.Errorf("second handler: got call %d ending with %v, want call 2 past its deadline (DeadlineExceeded) when it started", e.call, e.err)
	}
}

// newGatedStream returns a fakeStream whose Send waits for a token from
// gate (or its close).
func newGatedStream() (*fakeStream, chan struct{}) {
	s := newFakeStream()
	s.gate = make(chan struct{})
	return s, s.gate
}

// holdWriter queues a SEND that c's writer then holds in s's Send, until
// the gate lets it, and returns once it is there.
func holdWriter(t *testing.T, c *rpc.Conn, s *fakeStream) {
	t.Helper()
	if err := c.Send(testContext(t), sendFrame("first")); err != nil {
		t.Fatal(err)
	}
	recv(t, s.entered, "the writer in Send")
}

// askAsync asks on c under ctx, and reports the Ask's error on the
// channel it returns.
func askAsync(ctx context.Context, c *rpc.Conn) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Ask(ctx, &wire.Frame{Plugin: 0})
		errc <- err
	}()
	return errc
}

// waitWritten returns once everything c had queued has been written to
// s: a heartbeat queued after it has.
func waitWritten(t *testing.T, c *rpc.Conn, s *fakeStream) {
	t.Helper()
	if err := c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT}); err != nil {
		t.Fatal(err)
	}
	poll(t, "heartbeat written", func() bool { return s.count(wire.Kind_KIND_HEARTBEAT) > 0 })
}
