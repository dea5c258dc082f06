package rpc_test

import (
	"context"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// eventOnClose is a Handler that delivers frames to a lane and, like the
// driver's HandleClose (OnExecutorRemoved), queues an event on that lane
// when the connection ends.
type eventOnClose struct {
	lane *rpc.Lane
}

func (h *eventOnClose) HandleFrame(c *rpc.Conn, f *wire.Frame) {
	rpc.Deliver(context.Background(), h.lane, c, f, nil)
}

func (h *eventOnClose) HandleClose(c *rpc.Conn, _ error) {
	h.lane.Push(rpc.Item{Member: c, Event: func() {}})
}

// A lane that lends gives credit back under its lock. When the peer has
// stopped reading, that CREDIT may be the frame that overflows the send
// queue and closes the connection, whose HandleClose queues an event on
// the lane: the lane's lock must not be held then, or the reader (and
// with it the lane, and on the driver d.mu) wait for ever.
func TestLendingToAPeerNotReadingClosesTheConn(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{}) // never opened: the peer does not read
	s := newFakeStream()
	s.gate = gate
	run := make(chan struct{})
	lane := rpc.NewLane(1, 0, func(rpc.Item) { <-run })
	h := &eventOnClose{lane: lane}
	c := rpc.New(s, s.cancel, h, rpc.Options{Plugins: []string{"p0"}, SendWindow: testWindow, QueueFrames: 1, OverflowFrames: 1})
	c.Start()
	stop := lane.Lend(c) // a handler of the lane waits to send on c

	frames := make([]*wire.Frame, 20)
	for i := range frames {
		frames[i] = windowFrame(0)
	}
	s.in <- &wire.Batch{Frames: frames}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		// Leak the stuck goroutines: cleaning up would hang as well.
		t.Fatal("the connection did not finish closing: its HandleClose waits for the lane's lock, held while lending")
	}
	stop()
	close(run)
	lane.Close()
	c.Wait()
}
