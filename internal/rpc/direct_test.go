package rpc_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// An ask alone on its connection is written by its caller, sparing a
// hand-off to the writer goroutine (latency), except when the peer may not
// have read a quarter of its stream window: the caller could then block in
// stream.Send, deaf to its ctx, so the writer writes the ask instead. The
// reply shows the peer read everything sent before the ask, and direct
// writes resume.
func TestLoneAskWrittenDirectlyOnlyWhileThePeerKeepsUp(t *testing.T) {
	s := newFakeStream()
	var c *rpc.Conn
	var mu sync.Mutex
	var direct []bool // for each ASK written: was it written by its caller
	s.onSend = func(b *wire.Batch) {
		for _, f := range b.Frames {
			if f.Kind != wire.Kind_KIND_ASK {
				continue
			}
			mu.Lock()
			direct = append(direct, b == rpc.DirectBatch(c))
			mu.Unlock()
			s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_REPLY, Call: f.Call}}}
		}
	}
	c = startFake(t, s, newHandler(nil), rpc.Options{})
	ctx := testContext(t)
	ask := func() {
		t.Helper()
		if _, err := c.Ask(ctx, &wire.Frame{Payload: []byte("q")}); err != nil {
			t.Fatalf("Ask: %v", err)
		}
	}

	ask()
	// 300 KiB of sends the peer has not answered for, written out.
	const sends = 3
	for range sends {
		if err := c.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, 100<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "sends written", func() bool { return s.count(wire.Kind_KIND_SEND) == sends && rpc.WriterIdle(c) })
	ask() // after the sends: the writer's
	// The fake peer answers from inside stream.Send, so ask 2's reply can
	// reach its caller before the writer is out of that Send; an ask made
	// while the writer is still writing is queued, as it should be. Wait
	// for the writer to be done: ask 3 is then alone on an idle connection.
	poll(t, "writer idle after ask 2", func() bool { return rpc.WriterIdle(c) })
	ask() // its reply covers the sends: the caller's again

	mu.Lock()
	defer mu.Unlock()
	want := []bool{true, false, true}
	if len(direct) != len(want) {
		t.Fatalf("asks written: got %d, want %d", len(direct), len(want))
	}
	for i := range want {
		if direct[i] != want[i] {
			t.Errorf("ask %d written by its caller: got %v, want %v (all: %v)", i+1, direct[i], want[i], direct)
		}
	}
}

// Over gRPC: when the peer stops reading (a paused process, a cut link)
// after megabytes were sent, a lone ask still ends with its ctx, instead of
// blocking in stream.Send until the connection dies.
func TestLoneAskEndsWithItsCtxWhenThePeerStopsReading(t *testing.T) {
	release := make(chan struct{})
	p := newPair(t, newHandler(nil), stopsReading(release), rpc.Options{}, rpc.Options{})
	defer close(release) // before the pair's cleanup, which waits for the server
	ctx := testContext(t)
	stall(t, ctx, p.client)

	actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := p.client.Ask(actx, &wire.Frame{Payload: []byte("q")})
		errc <- err
	}()
	err := recv(t, errc, "a lone ask to a peer that does not read")
	wantCode(t, "lone ask", err, plugin.CodeDeadlineExceeded)
}

// A lone ask that had to wait for room in the send queue is written by the
// writer: while it waited, the writer may have written a megabyte the peer
// has not read, and the check made before the wait no longer holds. Its
// caller would block in stream.Send past its ctx, for as long as the peer
// does not read. (One processor makes the interleaving that used to fail
// the usual one: the writer writes everything before the ask wakes.)
func TestLoneAskAfterWaitingForRoomEndsWithItsCtx(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	gate := make(chan struct{}, 16) // each write takes a token: a peer that reads when told
	defer close(gate)               // lets a stuck write end, so cleanup can
	c, waiting := fullQueue(t, gate, &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, 1<<20)})
	ctx := testContext(t)
	actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Ask(actx, &wire.Frame{Payload: []byte("q")})
		errc <- err
	}()
	if l := recv(t, waiting, "the ask waiting for room"); l != "send_queue" {
		t.Fatalf("limit hit: got %q, want send_queue", l)
	}
	gate <- struct{}{} // the peer reads the first SEND and the megabyte, then nothing more
	gate <- struct{}{}
	select {
	case err := <-errc:
		wantCode(t, "the ask", err, plugin.CodeDeadlineExceeded)
	case <-time.After(3 * time.Second):
		t.Errorf("an ask with a 300 ms ctx still running after 3 s: its caller is stuck writing it")
	}
}

// stopsReading returns a handler whose reader stops at the first SEND,
// until release is closed: a peer that has stopped reading.
func stopsReading(release <-chan struct{}) *handler {
	return newHandler(func(_ *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_SEND {
			<-release
		}
	})
}

// stall sends c's peer, a stopsReading handler, two SENDs: the first stops
// its reader, the second is more than its window, so that c's writer stays
// blocked in stream.Send (gRPC's write quota spent). It returns once the
// writer has taken them.
func stall(t *testing.T, ctx context.Context, c *rpc.Conn) {
	t.Helper()
	for _, n := range []int{1, 3 << 20} {
		if err := c.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, n)}); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "writer idle", func() bool { return rpc.WriterIdle(c) })
}
