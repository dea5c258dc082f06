package rpc_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// Asks that give up at random moments, some withdrawn from the queue and
// some already taken by the writer, mixed with SENDs, against a slow
// stream: no frame written may be one released (zeroed or reused) while
// in its batch. -race reports a release racing the write.
func TestWithdrawStress(t *testing.T) {
	t.Parallel()
	for _, mm := range []int{0, 100} {
		t.Run("", func(t *testing.T) { withdrawStress(t, mm) })
	}
}

func withdrawStress(t *testing.T, maxMsg int) {
	s := newFakeStream()
	s.entered = make(chan struct{}, 1<<20)
	var bad atomic.Int64
	var asksWritten atomic.Int64
	s.onSend = func(b *wire.Batch) {
		for _, f := range b.Frames {
			switch f.Kind {
			case wire.Kind_KIND_ASK:
				asksWritten.Add(1)
				if !strings.HasPrefix(string(f.Payload), "ask") {
					bad.Add(1)
				}
			case wire.Kind_KIND_SEND:
				if !strings.HasPrefix(string(f.Payload), "send") {
					bad.Add(1)
				}
			case wire.Kind_KIND_ASK_CANCEL, wire.Kind_KIND_HEARTBEAT:
			default:
				bad.Add(1)
			}
		}
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		// Re-check after the pause: a frame released meanwhile is zeroed.
		for _, f := range b.Frames {
			if f.Kind == 0 {
				bad.Add(1)
			}
		}
	}
	c := startFake(t, s, newHandler(nil), rpc.Options{MaxMessageBytes: maxMsg, QueueFrames: 16, OverflowFrames: 1 << 16})
	ctx := testContext(t)
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 {
				if g%4 == 0 {
					f := wire.NewFrame()
					f.Kind, f.Payload = wire.Kind_KIND_SEND, []byte("send")
					if err := c.Send(ctx, f); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				actx, cancel := context.WithTimeout(ctx, time.Duration(rand.IntN(300))*time.Microsecond)
				f := wire.NewFrame()
				f.Payload = []byte("ask")
				_, _ = c.Ask(actx, f)
				cancel()
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d frames written after their release", n)
	}
	t.Logf("asks written: %d of %d", asksWritten.Load(), 24*300)
}
