package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// Replies never wait for room in the send queue, so a peer that keeps
// asking and stops reading would grow it without bound. OverflowFrames
// past the queue's bound, the Conn gives the peer up instead.
func TestPeerThatStopsReadingIsDisconnected(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var limits []string
	const queue, overflow = 4, 12
	serverOpts := rpc.Options{QueueFrames: queue, OverflowFrames: overflow, OnLimit: func(limit string) {
		mu.Lock()
		limits = append(limits, limit)
		mu.Unlock()
	}}
	server := newHandler(echo)
	p := newPair(t, stopsReading(release), server, rpc.Options{}, serverOpts)
	defer close(release) // before the pair's cleanup, which waits for the client
	ctx := testContext(t)
	stall(t, ctx, p.server)

	// The client asks on; the server's replies queue up.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 2 * (queue + overflow) {
		wg.Go(func() { _, _ = p.client.Ask(actx, &wire.Frame{Payload: []byte("q")}) })
	}

	waitClosed(t, server.closed, "the server's connection to a client that does not read")
	_, err := server.CloseResult()
	wantCode(t, "the server's close", err, plugin.CodeResourceExhausted)
	if want := "the peer is not reading: 16 frames wait to be written (send queue 4 + overflow 12)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("close error: got %v, want it to contain %q", err, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(limits) != 1 || limits[0] != "queue_overflow" {
		t.Errorf("limits hit: got %q, want [queue_overflow]", limits)
	}
}

// A handler's error text travels cut to rpc.MaxErrorBytes: a longer one
// would make a REPLY larger than the peer accepts, and end the connection.
func TestLongErrorReplyKeepsTheConnection(t *testing.T) {
	long := strings.Repeat("x", 5<<20)
	server := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_ASK {
			_ = c.Reply(rpc.ReplyFrame(f.Call, f.Plugin, nil, errors.New(long), rpc.DefaultMaxMessageBytes))
		}
	})
	p := newPair(t, newHandler(nil), server, rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	for i := range 2 {
		err := askResult(ctx, p.client, &wire.Frame{Payload: []byte("q")})
		wantCode(t, fmt.Sprintf("ask %d", i), err, plugin.CodeUnknown)
		if want := "… (5226496 more bytes)"; err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("ask %d: got %.100v, want it to end %q", i, err, want)
		}
	}
}

// Batches are cut by an estimate of their frames' sizes that must never
// fall short of the truth by more than the peer's headroom over its limit
// (rpc.BatchOverhead), or the peer refuses the batch and the connection
// ends. TASK frames carry a task name and job ID the estimate used to
// leave out: many of them with long names overran it.
func TestSplitCountsEveryFrameKind(t *testing.T) {
	const limit = 4 << 10
	name := strings.Repeat("t", 2<<10)
	kinds := []struct {
		name  string
		frame func() *wire.Frame
	}{
		{"task", func() *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_TASK, Task: &wire.Task{Name: name, JobId: name}, Payload: []byte("in")}
		}},
		{"send", func() *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_SEND, Type: name, Payload: make([]byte, 100)}
		}},
		{"reply with an error", func() *wire.Frame {
			return &wire.Frame{Kind: wire.Kind_KIND_REPLY, Error: name}
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			q := make([]*wire.Frame, 200)
			for i := range q {
				q[i] = k.frame()
			}
			for len(q) > 0 {
				head, rest := rpc.Split(q, limit)
				if len(head) == 0 {
					t.Fatal("split took no frame")
				}
				b := &wire.Batch{Frames: head}
				if size := b.SizeVT(); len(head) > 1 && size > limit+rpc.BatchOverhead/16 {
					t.Fatalf("a batch of %d frames is %d bytes, over the %d-byte limit by more than a sixteenth of the headroom", len(head), size, limit)
				}
				q = rest
			}
		})
	}
}

// Many callers past the overflow at once: the limit is hit, and counted,
// once for the connection; the others are refused with its error.
func TestQueueOverflowCountedOnce(t *testing.T) {
	for round := range 50 {
		s := newFakeStream()
		s.gate = make(chan struct{}) // the writer stays in Send: a peer not reading
		var hits atomic.Int32
		c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 1, OverflowFrames: 1, OnLimit: func(l string) {
			if l == "queue_overflow" {
				hits.Add(1)
			}
		}})
		heartbeat := func() error { return c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT}) }
		_ = heartbeat()
		recv(t, s.entered, "the writer in Send")
		_ = heartbeat()
		_ = heartbeat() // the queue is at its bound and overflow
		start := make(chan struct{})
		errs := make(chan error, 32)
		var wg sync.WaitGroup
		for range cap(errs) {
			wg.Go(func() {
				<-start
				errs <- heartbeat()
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if plugin.CodeOf(err) != plugin.CodeResourceExhausted && plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), "the peer is not reading") {
				t.Fatalf("round %d: a frame past the overflow: got %v, want the overflow's error", round, err)
			}
		}
		if n := hits.Load(); n != 1 {
			t.Fatalf("round %d: queue_overflow counted %d times for one connection", round, n)
		}
	}
}
