package rpc_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// An async ask whose ctx ends while it waits for room in a full queue is
// taken out of the call table and canceled by its watcher, the ASK being
// nowhere in the queue yet: it must then not be queued after all. Written
// after its ASK_CANCEL, which the peer ignores for a call it has not
// seen, it ran its handler uncanceled for an asker long gone (the
// blocking Ask cancels after its own enqueue, so cannot).
func TestAskAsyncNeverFollowsItsCancel(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	s.entered = make(chan struct{}, 1<<20)
	s.onSend = func(*wire.Batch) { time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond) } // a slow stream: the queue stays full
	c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 2, OverflowFrames: 1 << 16})
	// In each round, askers share one ctx, which a watcher watches.
	const rounds, askers, each = 500, 8, 4
	out := make(chan outcome, rounds*askers*each)
	for range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(200))*time.Microsecond)
		var wg sync.WaitGroup
		for range askers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					asyncAsk(t, ctx, c, "x", rpcMsg{}, out)
				}
			}()
		}
		wg.Wait()
		cancel()
	}
	for range rounds * askers * each {
		recv(t, out, "an outcome") // each ask ends with its ctx (collector fails a second outcome)
	}
	canceled := make(map[uint64]bool)
	for _, f := range s.Sent() {
		switch f.Kind {
		case wire.Kind_KIND_ASK_CANCEL:
			canceled[f.Call] = true
		case wire.Kind_KIND_ASK:
			if canceled[f.Call] {
				t.Errorf("ASK %d written after its ASK_CANCEL, want it not written at all", f.Call)
			}
		}
	}
}
