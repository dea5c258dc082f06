package rpc_test

import (
	"context"
	"sync"
	"testing"

	"github.com/emberhq/ember/internal/rpc"
)

// CloseGracefully on a Conn that has just closed, while Sends waiting for
// room in the queue are still waking up, must not close the closed space
// channel again (it panicked: close of closed channel).
func TestCloseGracefullyAfterCloseWithWaiters(t *testing.T) {
	for range 200 {
		s := newFakeStream()
		s.gate = make(chan struct{})
		c := rpc.New(s, s.cancel, newHandler(nil), rpc.Options{QueueFrames: 1})
		c.Start()
		ctx := context.Background()
		_ = c.Send(ctx, sendFrame("1"))
		<-s.entered
		_ = c.Send(ctx, sendFrame("2"))
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Send(ctx, sendFrame("w")) }()
		}
		start := make(chan struct{})
		var gw sync.WaitGroup
		gw.Add(1)
		go func() {
			defer gw.Done()
			<-start
			for range 50 {
				c.CloseGracefully()
			}
		}()
		close(start)
		c.Close(nil)
		gw.Wait()
		wg.Wait()
		c.Wait()
	}
}
