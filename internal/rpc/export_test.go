package rpc

import (
	"context"
	"time"

	"github.com/emberhq/ember/internal/wire"
)

// DirectBatch returns the batch c writes lone asks in from their callers'
// goroutines (Conn.ask), so that a test's stream can tell those writes
// from the writer goroutine's.
func DirectBatch(c *Conn) *wire.Batch { return c.direct }

// WriterIdle reports whether nothing is queued on c or being written.
func WriterIdle(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out) == 0 && !c.writing
}

// Split is split: the longest prefix of q that fits in one batch of limit
// bytes, and the rest.
func Split(q []*wire.Frame, limit int) (head, rest []*wire.Frame) {
	head, rest, _ = split(q, limit)
	return head, rest
}

// Credit returns each plugin's send credit on c and its window.
func Credit(c *Conn) (credit, windows []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.credit...), append([]int64(nil), c.windows...)
}

// Cancelables returns how many cancelable asks from the peer c holds the
// handler's ctx of (see handlerCtx).
func Cancelables(c *Conn) int { return c.cancels.len() }

// QueuedFrames returns how many frames wait in c's send queue.
func QueuedFrames(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out)
}

// len reports how many ctxs t holds.
func (t *cancelTable) len() int {
	n := 0
	if r := t.ring.Load(); r != nil {
		for i := range r {
			if r[i].Load() != nil {
				n++
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return n + len(t.spill)
}

// NewItem returns the lane item Deliver would queue for f, taken by c's
// reader, with its handler's ctx under askCtx: for tests that dispatch
// an item themselves.
func NewItem(askCtx context.Context, c *Conn, f *wire.Frame) Item { return newItem(askCtx, c, f) }

// Outstanding returns the bytes of plugin p's SENDs that c has received
// and not yet given back: neither granted in a CREDIT frame nor owed to
// the next one. Once everything c received has run, it is zero unless a
// credit was lost (above) or given back twice (below).
func Outstanding(c *Conn, p uint32) int64 {
	w := &c.recv[p]
	return w.received.Load() - w.owed.Load()
}

// Watchers returns how many watcher goroutines c runs (see watcher).
func Watchers(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watchers)
}

// GaveUp returns how many asks c has given up on whose reply it still
// expects (see Conn.gaveUp).
func GaveUp(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.gaveUp)
}

// WorkersFor is how many workers a lane asked for n gets.
func WorkersFor(n int) int { return laneWorkers(n) }

// LaneWorkers returns the workers a lane of several has started, how many
// of them wait for an item, and how many items are queued for them.
func LaneWorkers(l *Lane) (workers, idle, queued int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.workers, l.idle, len(l.q) - l.head
}

// Reserved returns, of each plugin's credit on c, what only c's handlers'
// Sends may spend (lent by the peer, not yet released).
func Reserved(c *Conn) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.reserved...)
}

// Drawn returns, of each plugin's credit on c lent and not yet released,
// what has left the reserve (spent by c's handlers, or overdrawn).
func Drawn(c *Conn) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.drawn...)
}

// StallCheck returns a function that runs, on each call, one of
// WatchStalls' checks of w at now: the watch with no ticker.
func StallCheck(w Watched, after time.Duration) func(now time.Time) {
	sw := &stallWatch{Watched: w}
	return func(now time.Time) { sw.check(now, after) }
}
