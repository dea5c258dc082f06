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
// taken and not yet answered, by call ID (Conn.cancels, a cancelTable);
// an ASK_CANCEL that finds one cancels it, so the handler's ctx ends
// with context.Canceled and the cause plugin.ErrAskCanceled. One that
// finds none (the reply was already on its way) is ignored.
//
// The ASK_CANCEL is sent when the ask ended at the deadline it carried
// too. The handler's ctx has that deadline, but counted from when the
// answering side's reader took the ask (askDeadline): later than the
// asker's by the ask's time on its way, which a stalled writer or a
// partition can make longer than the whole timeout. The ASK_CANCEL,
// written after its ASK, ends the handler of an asker long gone as soon
// as the ask arrives, rather than a full timeout later.

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
	parent context.Context // set once by start, before started; read only after
	armed  atomic.Pointer[armedCancel]
	state  atomic.Uint32 // a cancelState; set once, under mu, while not armed
	// started is set once parent is: the reader's cancel may come
	// before, and must not read parent then.
	started atomic.Bool
}

type armedCancel struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// cancelState is how a cancelCtx ended while not armed: what a
// context.WithCancelCause would then say.
type cancelState = uint32

const (
	cancelLive  cancelState = iota
	askerFirst              // canceled by the asker (plugin.ErrAskCanceled) while the parent was live
	endedFirst              // ended by the handler's return (context.Canceled) while the parent was live
	parentFirst             // ended after the parent had: the parent's error and cause
)

// start gives c its parent; Dispatch calls it, on the lane, before the
// handler runs. The lane's own later calls (cancel, as the handler
// returns) follow it on the same goroutine; the reader's cancel sees it
// through started.
func (c *cancelCtx) start(parent context.Context) {
	c.parent = parent
	c.started.Store(true)
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
	case askerFirst:
		a.ctx, a.cancel = context.WithCancelCause(context.WithoutCancel(c.parent))
		a.cancel(plugin.ErrAskCanceled)
	case endedFirst:
		a.ctx, a.cancel = context.WithCancelCause(context.WithoutCancel(c.parent))
		a.cancel(nil)
	}
	c.armed.Store(&a)
	return a.ctx
}

// cancel ends c: by the asker (asker, with the cause
// plugin.ErrAskCanceled) or by the handler's return (context.Canceled).
// Only the first end counts: the parent's, or c's own first cancel.
func (c *cancelCtx) cancel(asker bool) {
	c.mu.Lock()
	a := c.armed.Load()
	if a == nil && c.state.Load() == cancelLive {
		switch {
		case c.parentEnded():
			c.state.Store(parentFirst)
		case asker:
			c.state.Store(askerFirst)
		default:
			c.state.Store(endedFirst)
		}
	}
	c.mu.Unlock()
	if a != nil {
		var cause error // context.Canceled
		if asker {
			cause = plugin.ErrAskCanceled
		}
		a.cancel(cause)
	}
}

// parentEnded reports whether c's parent (once started) has ended,
// without arming a deadlineCtx parent: that would cost its real ctx on
// every ask whose deadline passed before its handler returned without
// waiting.
func (c *cancelCtx) parentEnded() bool {
	if !c.started.Load() {
		return false
	}
	switch p := c.parent.(type) {
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
// reused an ID), in a map. The reader adds and the lane removes, on
// different CPUs as often as not: a slot costs each one atomic
// operation, where a map under a lock cost about 3% of the CPU per ask
// under load (BenchmarkAskPipelined's profile) and a lock alone two
// atomic operations a side.
type cancelTable struct {
	ring atomic.Pointer[[cancelSlots]atomic.Pointer[cancelCtx]] // made on first use

	mu    sync.Mutex // protects the following fields, and the ring's making
	spill map[uint64]*cancelCtx
	peak  int // the most entries spill has held since it was made
}

// slot returns the ring slot of id, making the ring on first use.
func (t *cancelTable) slot(id uint64) *atomic.Pointer[cancelCtx] {
	r := t.ring.Load()
	if r == nil {
		t.mu.Lock()
		if r = t.ring.Load(); r == nil {
			r = new([cancelSlots]atomic.Pointer[cancelCtx])
			t.ring.Store(r)
		}
		t.mu.Unlock()
	}
	return &r[id%cancelSlots]
}

func (t *cancelTable) add(hc *cancelCtx) {
	if t.slot(hc.id).CompareAndSwap(nil, hc) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.spill == nil {
		t.spill = make(map[uint64]*cancelCtx)
	}
	t.spill[hc.id] = hc
	t.peak = max(t.peak, len(t.spill))
}

func (t *cancelTable) remove(hc *cancelCtx) {
	if t.slot(hc.id).CompareAndSwap(hc, nil) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.spill[hc.id] == hc {
		delete(t.spill, hc.id)
		if len(t.spill) == 0 && t.peak > cancelSlots {
			// A map keeps its size: let a burst's go, but not every
			// few entries' (long polls holding slots spill often).
			t.spill, t.peak = nil, 0
		}
	}
}

func (t *cancelTable) find(id uint64) *cancelCtx {
	if hc := t.slot(id).Load(); hc != nil && hc.id == id {
		return hc
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spill[id]
}

// trackCancel registers a cancelable ASK with call ID id, taken by the
// reader, and returns its handler's ctx, which Dispatch starts and ends;
// untrackCancel forgets it then.
func (c *Conn) trackCancel(id uint64) *cancelCtx {
	hc := &cancelCtx{id: id}
	c.cancels.add(hc)
	return hc
}

// untrackCancel forgets the ASK of hc, answered (or refused).
func (c *Conn) untrackCancel(hc *cancelCtx) { c.cancels.remove(hc) }

// peerCanceled is the reader's handling of an ASK_CANCEL for call ID id.
func (c *Conn) peerCanceled(id uint64) {
	if hc := c.cancels.find(id); hc != nil {
		hc.cancel(true)
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
