package rpc_test

import (
	"context"
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
	stuck := newHandler(func(_ *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_SEND {
			<-release // the server's reader stops here
		}
	})
	p := newPair(t, newHandler(nil), stuck, rpc.Options{}, rpc.Options{})
	defer close(release) // before the pair's cleanup, which waits for the server
	ctx := testContext(t)
	// The first send stops the peer's reader; the second is more than its
	// window, so gRPC's write quota stays spent.
	for _, n := range []int{1, 3 << 20} {
		if err := p.client.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, n)}); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "client writer idle", func() bool { return rpc.WriterIdle(p.client) })

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
