package rpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx is the ctx of a handler answering an ask that carries a
// deadline: its parent bounded by that deadline, as context.WithDeadline
// would give, but with the timer armed only once something waits on it.
//
// context.WithDeadline arms a runtime timer at once. A handler that
// answers in microseconds, as most do, never looks at its ctx's Done
// channel, yet every ask would pay for the timer: allocations, the
// parent's child registration and, when the runtime's network poller
// sleeps with no timer of its own, a wake-up of that poller (measured
// cross-process on a 2-vCPU VM: up to about 2 µs per round trip). Here the
// deadline is kept as a time: Err and Value compare it with the clock,
// and the first call of Done (which context.WithCancel, AfterFunc and a
// select on the ctx all make) arms a real context.WithDeadline, to which
// every method then defers.
//
// One difference: a context.WithDeadline whose parent ended before the
// ask's deadline reports the parent's error for good. A deadlineCtx not armed
// then cannot tell which came first once both have, and reports
// DeadlineExceeded, the ask's own limit, whenever its deadline has passed
// by the time it is first read.
//
// Once the handler has returned (end), the ctx is cancelled as a
// context.WithDeadline's would be by its CancelFunc: a goroutine the
// handler left behind sees Canceled, or DeadlineExceeded if the deadline
// had passed first, or the parent's error if the parent had ended first.
//
// All methods are safe for concurrent use.
type deadlineCtx struct {
	parent   context.Context
	deadline time.Time
	// parentFirst: the parent's own deadline comes before the ask's, so
	// c is the parent cut short only by end, as context.WithDeadline
	// then is (WithCancel(parent)): the parent's timer, and its cause,
	// decide when and why c ends.
	parentFirst bool

	mu    sync.Mutex
	armed atomic.Pointer[armedCtx] // set once, under mu
	ended atomic.Uint32            // an endState; set once by end, under mu, while not armed
}

type armedCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// endState is how a deadlineCtx ended while no timer was armed: what a
// context.WithDeadline would then have said.
type endState = uint32

const (
	live          endState = iota
	endedCanceled          // by end, before the deadline and the parent
	endedDeadline          // the deadline had passed when end came
	endedParent            // the parent had ended, the deadline not passed, when end came
)

// withDeadline returns parent bounded by deadline. Its end method must be
// called once the handler has returned, as a CancelFunc must.
func withDeadline(parent context.Context, deadline time.Time) *deadlineCtx {
	if cur, ok := parent.Deadline(); ok && cur.Before(deadline) {
		return &deadlineCtx{parent: parent, deadline: cur, parentFirst: true}
	}
	return &deadlineCtx{parent: parent, deadline: deadline}
}

// Deadline reports the ask's deadline (or the parent's, if sooner).
func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Done arms the ctx (see deadlineCtx) and returns its channel.
func (c *deadlineCtx) Done() <-chan struct{} { return c.arm().Done() }

// Err reports nil while the ctx is live, without arming it.
func (c *deadlineCtx) Err() error {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Err()
	}
	if c.liveUnarmed() {
		return nil
	}
	return c.arm().Err()
}

// Value defers to the parent while the ctx is live and not armed, and
// to the armed ctx otherwise (context.Cause finds the cause there).
func (c *deadlineCtx) Value(key any) any {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Value(key)
	}
	if c.liveUnarmed() {
		return c.parent.Value(key)
	}
	return c.arm().Value(key)
}

// liveUnarmed reports whether a ctx not yet armed is still live: not
// ended, its deadline ahead, its parent not done. None of these comes
// back once gone, so a false answer holds.
func (c *deadlineCtx) liveUnarmed() bool {
	return c.ended.Load() == live && (c.parentFirst || time.Now().Before(c.deadline)) && c.parent.Err() == nil
}

// isDone reports whether c has ended, as Err() != nil would, but without
// arming c: for a cancelCtx above it, ending as its handler returns,
// which only needs to know whether c ended first (an ask whose deadline
// passed while it waited on its lane would otherwise arm c at its end).
func (c *deadlineCtx) isDone() bool {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Err() != nil
	}
	return !c.liveUnarmed()
}

// arm returns the real ctx behind c, making it on first use.
func (c *deadlineCtx) arm() context.Context {
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	var a armedCtx
	switch c.ended.Load() {
	case live:
		if c.parentFirst {
			a.ctx, a.cancel = context.WithCancel(c.parent)
			break
		}
		if !time.Now().Before(c.deadline) {
			// Past the deadline: DeadlineExceeded, even if the parent has
			// ended too (the one difference, on deadlineCtx).
			a.ctx, a.cancel = context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
			break
		}
		a.ctx, a.cancel = context.WithDeadline(c.parent, c.deadline)
	case endedCanceled:
		// Ended by its handler's return: cancelled, whatever the parent
		// or the clock say since.
		a.ctx, a.cancel = context.WithCancel(context.WithoutCancel(c.parent))
		a.cancel()
	case endedDeadline:
		a.ctx, a.cancel = context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
	case endedParent:
		a.ctx, a.cancel = context.WithCancel(c.parent) // born cancelled, with the parent's cause
	}
	c.armed.Store(&a)
	return a.ctx
}

// end cancels c, once its handler has returned. A ctx never armed costs
// a clock read and a look at the parent, no timer.
func (c *deadlineCtx) end() {
	c.mu.Lock()
	a := c.armed.Load()
	if a == nil && c.ended.Load() == live {
		switch {
		case !c.parentFirst && !time.Now().Before(c.deadline):
			c.ended.Store(endedDeadline)
		case c.parent.Err() != nil:
			c.ended.Store(endedParent)
		default:
			c.ended.Store(endedCanceled)
		}
	}
	c.mu.Unlock()
	if a != nil {
		a.cancel()
	}
}

// String describes c as context.WithDeadline's contexts describe
// themselves.
func (c *deadlineCtx) String() string {
	return "rpc.deadlineCtx(" + c.deadline.String() + " [" + time.Until(c.deadline).String() + "])"
}
