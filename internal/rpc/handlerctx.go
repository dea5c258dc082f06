package rpc

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberhq/ember/plugin"
)

// handlerCtx is the ctx of a handler answering an ASK that carries a
// deadline, or that went out marked cancelable, or both: its parent (the
// ask ctx of the connection) bounded by the ask's deadline, and ended by
// the asker's cancel (context.Canceled, with the cause
// plugin.ErrAskCanceled) and by the handler's return (context.Canceled),
// as context.WithCancelCause(context.WithDeadline(parent, deadline))
// would be. But lazily.
//
// Those two would arm a runtime timer at once, allocate, and register
// with their parent. A handler that answers in microseconds, as most do,
// never looks at its ctx's Done channel, yet every ask would pay for the
// timer, and when the runtime's network poller sleeps with no timer of
// its own, for a wake-up of that poller (measured across processes on a
// 2-vCPU VM: up to about 2 µs per round trip). A handlerCtx keeps the
// deadline as a time and how it ended as a state: Err and Value answer
// from those, the clock and the parent, and the first call of Done
// (which context.WithCancel, AfterFunc and a select on the ctx all make)
// arms the real contexts, to which every method then defers. A handler
// that never waits costs this one allocation.
//
// It is made on the connection's reader as the ASK arrives (Deliver): the
// deadline counts from the ask's arrival, and an ASK_CANCEL read before
// the handler runs is not lost, the handler then starts canceled.
//
// One difference: a context.WithDeadline whose parent ended before the
// ask's deadline reports the parent's error for good. A handlerCtx not
// armed then cannot tell which came first once both have, and reports
// DeadlineExceeded, the ask's own limit, whenever its deadline has passed
// by the time it is first read.
//
// All methods are safe for concurrent use.
type handlerCtx struct {
	// These are set by newHandlerCtx and never change.
	id       uint64
	parent   context.Context
	deadline time.Time // the ask's; zero if it carried none
	// cancelable: the asker may cancel the ask; c is in Conn.cancels
	// until the ask is answered.
	cancelable bool
	// parentFirst: the parent's own deadline comes before the ask's, so
	// c is the parent cut short only by its cancels, as
	// context.WithDeadline then is (WithCancel(parent)): the parent's
	// timer, and its cause, decide when and why c ends.
	parentFirst bool

	mu    sync.Mutex
	armed atomic.Pointer[armedHandler] // set once, under mu
	state atomic.Uint32                // a handlerState; set once, under mu, while not armed
}

type armedHandler struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   context.CancelFunc // the deadline's, when there is one
}

// handlerState is how a handlerCtx ended while not armed: what the
// contexts it stands for would then say.
type handlerState = uint32

const (
	live          handlerState = iota
	endedAsker                 // by the asker's cancel: Canceled, cause plugin.ErrAskCanceled
	endedReturn                // by the handler's return: Canceled
	endedDeadline              // the deadline had passed when it ended: DeadlineExceeded
	endedParent                // the parent had ended (the deadline not passed) when it ended: the parent's error and cause
)

// newHandlerCtx returns the ctx, under parent, of the handler of the ASK
// with call ID id, with deadline (zero: none), marked cancelable or not;
// nil if it has neither a deadline nor a cancel, the handler then taking
// parent as it is.
func newHandlerCtx(parent context.Context, id uint64, deadline time.Time, cancelable bool) *handlerCtx {
	if deadline.IsZero() && !cancelable {
		return nil
	}
	c := &handlerCtx{id: id, parent: parent, deadline: deadline, cancelable: cancelable}
	if !deadline.IsZero() {
		cur, ok := parent.Deadline()
		c.parentFirst = ok && cur.Before(deadline)
	}
	return c
}

// askDeadline is the deadline of an ASK that arrived at now with
// timeoutMicros left. Taken from a time.Now, it is right on the wall clock
// too, which ctx.Deadline() is read on wherever it is formatted or sent to
// another process. A timeout of 0 or less means none, and so does one too
// large for a time.Duration (a peer's value): the zero time.
func askDeadline(now time.Time, timeoutMicros int64) time.Time {
	if timeoutMicros <= 0 || timeoutMicros > math.MaxInt64/int64(time.Microsecond) {
		return time.Time{}
	}
	return now.Add(time.Duration(timeoutMicros) * time.Microsecond)
}

// Deadline reports the ask's deadline, or the parent's if sooner or if
// the ask carried none.
func (c *handlerCtx) Deadline() (time.Time, bool) {
	if c.deadline.IsZero() || c.parentFirst {
		return c.parent.Deadline()
	}
	return c.deadline, true
}

// Done arms the ctx (see handlerCtx) and returns its channel.
func (c *handlerCtx) Done() <-chan struct{} { return c.arm().Done() }

// Err reports nil while the ctx is live, without arming it.
func (c *handlerCtx) Err() error {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Err()
	}
	if c.liveUnarmed() {
		return nil
	}
	return c.arm().Err()
}

// Value defers to the parent while the ctx is live and not armed, and to
// the armed ctx otherwise (context.Cause finds the cause there).
func (c *handlerCtx) Value(key any) any {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Value(key)
	}
	if c.liveUnarmed() {
		return c.parent.Value(key)
	}
	return c.arm().Value(key)
}

// liveUnarmed reports whether c, not yet armed, is live: not ended, its
// deadline ahead, its parent not done. None of these comes back once
// gone, so a false answer holds; and once ended, c is armed to answer,
// so that its error and cause, decided under its lock, never change
// between reads.
func (c *handlerCtx) liveUnarmed() bool {
	return c.state.Load() == live && !c.pastDeadline() && c.parent.Err() == nil
}

// pastDeadline reports whether the ask's own deadline has passed, when it
// is the one that counts (the parent's comes later).
func (c *handlerCtx) pastDeadline() bool {
	if c.deadline.IsZero() || c.parentFirst {
		return false
	}
	return !time.Now().Before(c.deadline)
}

// arm returns the real ctx behind c, making it on first use.
func (c *handlerCtx) arm() context.Context {
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	var a armedHandler
	base := c.parent
	switch c.state.Load() {
	case live:
		switch {
		case c.deadline.IsZero() || c.parentFirst:
			// The parent alone bounds it.
		case !time.Now().Before(c.deadline):
			// Past the deadline: DeadlineExceeded, even if the parent has
			// ended too (the one difference, on handlerCtx).
			base, a.stop = context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
		default:
			base, a.stop = context.WithDeadline(c.parent, c.deadline)
		}
		a.ctx, a.cancel = context.WithCancelCause(base)
	case endedAsker:
		a.ctx, a.cancel = context.WithCancelCause(context.WithoutCancel(c.parent))
		a.cancel(plugin.ErrAskCanceled)
	case endedReturn:
		// Canceled, whatever the parent or the clock say since.
		a.ctx, a.cancel = context.WithCancelCause(context.WithoutCancel(c.parent))
		a.cancel(nil)
	case endedDeadline:
		base, a.stop = context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
		a.ctx, a.cancel = context.WithCancelCause(base) // born ended by the deadline
	case endedParent:
		a.ctx, a.cancel = context.WithCancelCause(c.parent) // born ended, with the parent's cause
	}
	c.armed.Store(&a)
	return a.ctx
}

// cancel ends c: by the asker (asker: the reader's ASK_CANCEL, which may
// come before the handler starts) or by the handler's return, which Dispatch makes
// sure of, as a CancelFunc must be called. Only the first end counts:
// the deadline's, the parent's, or c's own first cancel. A ctx never
// armed costs a lock, a look at the parent and, with a deadline, a clock
// read; no timer.
func (c *handlerCtx) cancel(asker bool) {
	c.mu.Lock()
	a := c.armed.Load()
	if a == nil && c.state.Load() == live {
		switch {
		case c.pastDeadline():
			c.state.Store(endedDeadline)
		case c.parent.Err() != nil:
			c.state.Store(endedParent)
		case asker:
			c.state.Store(endedAsker)
		default:
			c.state.Store(endedReturn)
		}
	}
	c.mu.Unlock()
	if a == nil {
		return
	}
	var cause error // context.Canceled
	if asker {
		cause = plugin.ErrAskCanceled
	}
	a.cancel(cause)
	if !asker && a.stop != nil {
		a.stop() // the handler has returned: its deadline's timer can go
	}
}

// String describes c as the context package's contexts describe
// themselves.
func (c *handlerCtx) String() string {
	if c.deadline.IsZero() {
		return "rpc.handlerCtx"
	}
	return "rpc.handlerCtx(" + c.deadline.String() + " [" + time.Until(c.deadline).String() + "])"
}
