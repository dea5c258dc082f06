package rpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// An asker whose ctx ends stops waiting at once (Conn.ask). If that ctx
// could end (its Done channel is not nil), the ASK went out marked
// cancelable, and the asker now queues an ASK_CANCEL with the same call
// ID. The answering side keeps a cancelCtx per cancelable ASK it has
// taken and not yet answered, by call ID (Conn.cancels, a cancelTable); an ASK_CANCEL
// that finds one cancels it, so the handler's ctx ends with
// context.Canceled and the cause plugin.ErrAskCanceled. One that finds
// none (the reply was already on its way) is ignored.
//
// The ASK_CANCEL is not sent when the ask ended at the deadline it
// carried: the handler's ctx has that deadline too.

// cancelCtx is the ctx of a handler answering a cancelable ask: its
// parent, also ended by the asker's cancel and by the handler's return
// (both cancel), as context.WithCancelCause(parent) would be. Like
// deadlineCtx, it makes the real context.WithCancelCause only once
// something waits on it (Done), so that a handler that returns without
// waiting, as most do, costs one small allocation and no registration
// with its parent.
//
// It is made on the connection's reader, before the handler's parent is
// known (the lane gives it: start), so that an ASK_CANCEL read before the
// handler runs is not lost: the handler then starts canceled.
//
// All methods are safe for concurrent use.
type cancelCtx struct {
	id     uint64 // the ask's call ID
	mu     sync.Mutex
	parent context.Context // set by start, under mu, before the handler sees c
	cause  error           // why c was canceled (canceledFirst); set once, under mu
	armed  atomic.Pointer[armedCancel]
	state  atomic.Uint32 // a cancelState; set once, under mu, while not armed
}

type armedCancel struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// cancelState is how a cancelCtx ended while not armed: what a
// context.WithCancelCause would then say.
type cancelState = uint32

const (
	cancelLive    cancelState = iota
	canceledFirst             // canceled, with cause, while the parent was live
	parentFirst               // canceled after the parent had ended: the parent's error and cause
)

// start gives c its parent; Dispatch calls it before the handler runs.
func (c *cancelCtx) start(parent context.Context) {
	c.mu.Lock()
	c.parent = parent
	c.mu.Unlock()
}

// Deadline reports the parent's deadline.
func (c *cancelCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done arms the ctx (see cancelCtx) and returns its channel.
func (c *cancelCtx) Done() <-chan struct{} { return c.arm().Done() }

// Err reports nil while c and its parent are live, without arming c.
func (c *cancelCtx) Err() error {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Err()
	}
	if c.liveUnarmed() {
		return nil
	}
	return c.arm().Err()
}

// Value defers to the parent while c is live and not armed, and to the
// armed ctx otherwise (context.Cause finds the cause there).
func (c *cancelCtx) Value(key any) any {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Value(key)
	}
	if c.liveUnarmed() {
		return c.parent.Value(key)
	}
	return c.arm().Value(key)
}

// liveUnarmed reports whether c, not yet armed, is live: not canceled,
// its parent not done. Once ended, c is armed to answer, so that its
// error and cause, decided under its lock, never change between reads
// (the parent ending as the asker cancels cannot show the parent's
// cause first and the asker's after).
func (c *cancelCtx) liveUnarmed() bool {
	return c.state.Load() == cancelLive && c.parent.Err() == nil
}

// arm returns the real ctx behind c, making it on first use.
func (c *cancelCtx) arm() context.Context {
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	var a armedCancel
	switch c.state.Load() {
	case cancelLive, parentFirst: // parentFirst: born canceled, with the parent's cause
		a.ctx, a.cancel = context.WithCancelCause(c.parent)
	case canceledFirst:
		a.ctx, a.cancel = context.WithCancelCause(context.WithoutCancel(c.parent))
		a.cancel(c.cause)
	}
	c.armed.Store(&a)
	return a.ctx
}

// cancel ends c with cause (nil: context.Canceled). Only the first end
// counts: the parent's, or c's own first cancel.
func (c *cancelCtx) cancel(cause error) {
	c.mu.Lock()
	a := c.armed.Load()
	if a == nil && c.state.Load() == cancelLive {
		if c.parentEnded() {
			c.state.Store(parentFirst)
		} else {
			if cause == nil {
				cause = context.Canceled
			}
			c.cause = cause
			c.state.Store(canceledFirst)
		}
	}
	c.mu.Unlock()
	if a != nil {
		a.cancel(cause)
	}
}

// parentEnded reports whether c's parent (if started) has ended, without
// arming a deadlineCtx parent: that would cost its real ctx on every ask
// whose deadline passed before its handler returned without waiting.
func (c *cancelCtx) parentEnded() bool {
	switch p := c.parent.(type) {
	case nil:
		return false
	case *deadlineCtx:
		return p.isDone()
	default:
		return p.Err() != nil
	}
}

// String describes c as context.WithCancel's contexts describe themselves.
func (c *cancelCtx) String() string { return "rpc.cancelCtx" }

// cancelSlots is the size of cancelTable's ring. The asker numbers its
// asks one after the other, so the asks in progress at once mostly fall
// in different slots.
const cancelSlots = 256

// cancelTable holds the handler's ctx of each cancelable ASK a Conn has
// taken from its peer and not yet answered, by call ID: in the ring slot
// of the ID or, when an older ask still holds that slot (or the peer
// reused an ID), in a map. A map alone was about 3% of the CPU per ask
// under load (BenchmarkAskPipelined's profile): two map operations per
// ask, where the ring costs an index.
type cancelTable struct {
	mu    sync.Mutex
	ring  *[cancelSlots]*cancelCtx // made on first use
	spill map[uint64]*cancelCtx
	peak  int // the most entries spill has held since it was made
}

func (t *cancelTable) add(hc *cancelCtx) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ring == nil {
		t.ring = new([cancelSlots]*cancelCtx)
	}
	if s := &t.ring[hc.id%cancelSlots]; *s == nil {
		*s = hc
		return
	}
	if t.spill == nil {
		t.spill = make(map[uint64]*cancelCtx)
	}
	t.spill[hc.id] = hc
	t.peak = max(t.peak, len(t.spill))
}

func (t *cancelTable) remove(hc *cancelCtx) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := &t.ring[hc.id%cancelSlots]; *s == hc {
		*s = nil
	} else if t.spill[hc.id] == hc {
		delete(t.spill, hc.id)
		if len(t.spill) == 0 && t.peak > cancelSlots {
			// A map keeps its size: let a burst's go, but not every
			// few entries' (long polls holding slots spill often).
			t.spill, t.peak = nil, 0
		}
	}
}

func (t *cancelTable) find(id uint64) *cancelCtx {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ring == nil {
		return nil
	}
	if hc := t.ring[id%cancelSlots]; hc != nil && hc.id == id {
		return hc
	}
	return t.spill[id]
}

// len reports how many ctxs t holds.
func (t *cancelTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.spill)
	if t.ring != nil {
		for _, hc := range t.ring {
			if hc != nil {
				n++
			}
		}
	}
	return n
}

// trackCancel registers a cancelable ASK with call ID id, taken by the
// reader, and returns its handler's ctx, which Dispatch starts and then
// finishes (untrackCancel).
func (c *Conn) trackCancel(id uint64) *cancelCtx {
	hc := &cancelCtx{id: id}
	c.cancels.add(hc)
	return hc
}

// untrackCancel forgets the ASK of hc, answered (or refused), and ends hc
// as a CancelFunc would.
func (c *Conn) untrackCancel(hc *cancelCtx) {
	c.cancels.remove(hc)
	hc.cancel(nil)
}

// peerCanceled is the reader's handling of an ASK_CANCEL for call ID id.
func (c *Conn) peerCanceled(id uint64) {
	if hc := c.cancels.find(id); hc != nil {
		hc.cancel(plugin.ErrAskCanceled)
	}
}

// cancelAsk tells the peer that the asker of the cancelable ASK with call
// ID id, to plugin p, has given up. It is a hint (the reply is dropped
// here either way), never worth waiting for, nor failing the connection
// over; but a full send queue is no reason to drop it: the ASK it cancels
// may well be in that queue, still to be written, and its handler would
// then run uncanceled. Like a control frame it may take the room past
// QueueFrames (OverflowFrames); unlike one, it is dropped rather than
// close the Conn once that room is spent too (the peer is not reading).
func (c *Conn) cancelAsk(id uint64, p uint32) {
	c.mu.Lock()
	if c.closing || len(c.out) >= c.opts.QueueFrames+c.opts.OverflowFrames {
		c.mu.Unlock()
		return
	}
	f := wire.NewFrame()
	f.Kind, f.Call, f.Plugin = wire.Kind_KIND_ASK_CANCEL, id, p
	c.pushLocked(f, false)
}
