package rpc

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/emberhq/ember/internal/wire"
)

// An asker whose ctx ends stops waiting at once (Conn.ask). If that ctx
// could end (its Done channel is not nil), the ASK went out marked
// cancelable, and the asker now queues an ASK_CANCEL with the same call
// ID. The answering side keeps the handler's ctx (a handlerCtx) of each
// cancelable ASK it has taken and not yet answered, by call ID
// (Conn.cancels, a cancelTable); an ASK_CANCEL that finds one cancels
// it, so the handler's ctx ends with context.Canceled and the cause
// plugin.ErrAskCanceled. One that finds none (the reply was already on
// its way) is ignored.
//
// An ASK still in the asker's send queue is withdrawn instead
// (cancelAsk). The ASK_CANCEL is sent when the ask ended at the deadline
// it carried too. The handler's ctx has that deadline, but counted from
// when the answering side's reader took the ask (askDeadline): later
// than the asker's by the ask's time on its way, which a stalled writer
// or a partition can make longer than the whole timeout. The
// ASK_CANCEL, written after its ASK, ends the handler of an asker long
// gone as soon as the ask arrives, rather than a full timeout later.

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
	ring atomic.Pointer[[cancelSlots]atomic.Pointer[handlerCtx]] // made on first use

	mu    sync.Mutex // protects the following fields, and the ring's making
	spill map[uint64]*handlerCtx
	peak  int // the most entries spill has held since it was made
}

// slot returns the ring slot of id, making the ring on first use.
func (t *cancelTable) slot(id uint64) *atomic.Pointer[handlerCtx] {
	r := t.ring.Load()
	if r == nil {
		t.mu.Lock()
		if r = t.ring.Load(); r == nil {
			r = new([cancelSlots]atomic.Pointer[handlerCtx])
			t.ring.Store(r)
		}
		t.mu.Unlock()
	}
	return &r[id%cancelSlots]
}

func (t *cancelTable) add(hc *handlerCtx) {
	if t.slot(hc.id).CompareAndSwap(nil, hc) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.spill == nil {
		t.spill = make(map[uint64]*handlerCtx)
	}
	t.spill[hc.id] = hc
	t.peak = max(t.peak, len(t.spill))
}

func (t *cancelTable) remove(hc *handlerCtx) {
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

func (t *cancelTable) find(id uint64) *handlerCtx {
	if hc := t.slot(id).Load(); hc != nil && hc.id == id {
		return hc
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spill[id]
}

// untrackCancel forgets the cancelable ASK of hc, answered (or refused).
func (c *Conn) untrackCancel(hc *handlerCtx) { c.cancels.remove(hc) }

// peerCanceled is the reader's handling of an ASK_CANCEL for call ID id.
func (c *Conn) peerCanceled(id uint64) {
	if hc := c.cancels.find(id); hc != nil {
		hc.cancel(true)
	}
}

// cancelAsk tells the peer that the asker of the cancelable ASK with call
// ID id, to plugin p, has given up (giveUp). An ASK still near the head
// of the send queue (withdrawLocked) is withdrawn instead: neither it nor
// an ASK_CANCEL is written, its place goes to whoever waits for one, and
// no reply will come for it (it leaves gaveUp).
// Otherwise an ASK_CANCEL follows it.
// That is a hint (the reply is dropped here either way), never worth
// waiting for, nor failing the connection over; but a full send queue is
// no reason to drop it: the ASK it cancels may be in the write under way,
// and its handler would then run uncanceled. Like a control frame it may
// take the room past QueueFrames (OverflowFrames); unlike one, it is
// dropped rather than close the Conn once that room is spent too (the
// peer is not reading).
func (c *Conn) cancelAsk(id uint64, p uint32) {
	c.mu.Lock()
	if c.withdrawLocked(id) {
		c.ungiveLocked(id)
		c.mu.Unlock()
		return
	}
	if c.closing || len(c.out) >= c.opts.QueueFrames+c.opts.OverflowFrames {
		c.mu.Unlock()
		return
	}
	f := wire.NewFrame()
	f.Kind, f.Call, f.Plugin = wire.Kind_KIND_ASK_CANCEL, id, p
	c.pushLocked(f, false)
}

// withdrawScan bounds how far from the head of the send queue
// withdrawLocked looks for an ASK: each give-up costs that much at most
// under c.mu, where searching the whole queue made many asks giving up
// at once (one shared ctx, their watcher waking them in no order)
// quadratic in the queue's length. An ASK further back is canceled with
// an ASK_CANCEL instead.
const withdrawScan = 256

// withdrawLocked removes the ASK with call ID id from the send queue and
// reports whether it was there. c.mu is held. Only the queue's first
// withdrawScan frames are searched, where the asks that give up first
// (the oldest, at their deadline) mostly are; the frames before it move
// up one place, so that a withdrawal costs no more than the search.
func (c *Conn) withdrawLocked(id uint64) bool {
	n := min(len(c.out), withdrawScan)
	i := slices.IndexFunc(c.out[:n], func(f *wire.Frame) bool { return f.Call == id && f.Kind == wire.Kind_KIND_ASK })
	if i < 0 {
		return false
	}
	f := c.out[i]
	copy(c.out[1:i+1], c.out[:i])
	c.out[0] = nil
	c.out = c.out[1:]
	wire.ReleaseFrame(f)
	if c.waiters > 0 {
		close(c.space)
		c.space = make(chan struct{})
	}
	return true
}
