package rpc_test

import (
	"context"
	"testing"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// An ask whose ctx ends while it waits for room in a full send queue is
// never written, so no reply will come for it: it must not be left in
// Conn.gaveUp. When its ctx's watcher (asks sharing one ctx) takes it out
// of the call table before the asker's enqueue returns, giveUpLocked puts
// it in gaveUp, and the asker's forget found nothing to remove: the entry
// stayed for the connection's life, one per such ask.
func TestAskNeverQueuedLeavesNoGaveUp(t *testing.T) {
	t.Parallel()
	for _, async := range []bool{false, true} {
		t.Run(map[bool]string{false: "Ask", true: "AskAsync"}[async], func(t *testing.T) {
			t.Parallel()
			testAskNeverQueuedLeavesNoGaveUp(t, async)
		})
	}
}

func testAskNeverQueuedLeavesNoGaveUp(t *testing.T, async bool) {
	s, gate := newGatedStream()
	waiting := make(chan string, 16)
	c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 1, OnLimit: func(l string) { waiting <- l }})
	holdWriter(t, c, s)
	// The queue's one place taken: every ask waits for room.
	if err := c.Send(testContext(t), sendFrame("filler")); err != nil {
		t.Fatal(err)
	}
	const rounds = 200
	for range rounds {
		ctx, cancel := context.WithCancel(testContext(t))
		// The first, waiting, makes the second (same ctx) get a watcher.
		first := askAsync(ctx, c)
		recv(t, waiting, "the first ask waiting for room")
		var second <-chan error
		if async {
			errc := make(chan error, 1)
			go c.AskAsync(ctx, &wire.Frame{Plugin: 0}, &asyncRecorder{done: errc}) // returns once queued
			second = errc
		} else {
			second = askAsync(ctx, c)
		}
		recv(t, waiting, "the second ask waiting for room")
		if n := rpc.Watchers(c); n != 1 {
			t.Fatalf("%d watchers, want 1: the second ask's", n)
		}
		cancel()
		recv(t, first, "the first ask's end")
		recv(t, second, "the second ask's end")
		poll(t, "the watcher gone", func() bool { return rpc.Watchers(c) == 0 })
	}
	// An AskAsync may complete (its watcher's doing) before its own
	// goroutine is done with the failed enqueue: poll for that.
	poll(t, "no ask never written left among those given up on", func() bool { return rpc.GaveUp(c) == 0 })
	close(gate)
}
