package rpc

import (
	"context"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// Async receives the outcome of an ask made with AskAsync. Implement it
// with a struct that embeds AsyncAsk, the connection's record of the ask,
// so that an async ask costs its caller one allocation.
type Async interface {
	// Complete is called once, with the reply's message or the ask's
	// error, as AskMessage would return them. It may run on the
	// connection's reader, and must not block.
	Complete(v any, err error)
	record() *AsyncAsk // promoted from the embedded AsyncAsk
}

// AsyncAsk is the connection's record of an ask made with AskAsync, to
// embed in its Async. Whoever takes the ask out of the call table (the
// reader with its reply, a watcher or its AfterFunc at its ctx's end, the
// connection's close, a failed enqueue) completes it.
type AsyncAsk struct {
	ctx    context.Context
	plugin uint32
	// stop releases the context.AfterFunc that watches ctx when no
	// watcher does. Set under c.mu while the ask is in the table, so it
	// is read safely by whoever takes it out.
	stop func() bool
}

// record is how AskAsync reaches the embedded AsyncAsk of an Async.
//
//lint:ignore U1000 called through Async, implemented in other packages
func (a *AsyncAsk) record() *AsyncAsk { return a }

// AskAsync queues f as an ASK, as AskMessage does, and returns once it is
// queued, waiting for room in a full queue as Send does; a.Complete is
// called once with the outcome: the reply's message or error, the
// connection's end, or ctx's end (which cancels the ask on the peer too).
// An ask whose ctx ends while it waits for room completes with that
// error. A lone ask is written by the caller, as with Ask.
//
// Asks that share a ctx share a watcher with each other and with Ask (one
// goroutine per ctx Done channel, see watcherLocked); an ask under a ctx
// of its own, or past maxWatchers, has its ctx watched by
// context.AfterFunc, released once the ask is done.
func (c *Conn) AskAsync(ctx context.Context, f *wire.Frame, a Async) {
	if err := ctx.Err(); err != nil {
		wire.ReleaseFrame(f)
		a.Complete(nil, plugin.Errorf(plugin.CodeOf(err), "%w", err))
		return
	}
	ac := a.record()
	ac.ctx, ac.plugin = ctx, f.Plugin
	id, w, err := c.start(ctx, f, pending{decode: true, async: a})
	if err != nil {
		if id == 0 || c.forget(id) {
			ac.ctx = nil // see finishAsync
			a.Complete(nil, err)
		}
		return
	}
	if w != nil || ctx.Done() == nil {
		return
	}
	stop := context.AfterFunc(ctx, func() {
		if c.giveUp(id) {
			c.finishAsync(id, a, reply{canceled: true})
		}
	})
	c.mu.Lock()
	_, waiting := c.calls[id]
	if waiting {
		ac.stop = stop
	}
	c.mu.Unlock()
	if !waiting {
		stop()
	}
}

// finishAsync completes a, ask id, with r, as answered does for Ask: a
// reply{canceled: true} with its ctx's error (and the cancel passed on),
// the zero reply with the connection's end. A reply too large to decode
// on the reader is decoded on a goroutine of its own. The record lets go
// of the ask's ctx first: a caller may keep what embeds it long after.
func (c *Conn) finishAsync(id uint64, a Async, r reply) {
	ac := a.record()
	if ac.stop != nil {
		ac.stop()
	}
	ctx := ac.ctx
	ac.ctx, ac.stop = nil, nil
	switch {
	case r.canceled:
		err := ctx.Err()
		if err == nil { // a Context whose Done closed before its Err was set
			err = context.Canceled
		}
		c.cancelAsk(id, ac.plugin)
		a.Complete(nil, plugin.Errorf(plugin.CodeOf(err), "ask: %w", err))
	case r.decoded:
		a.Complete(r.v, r.err)
	case r.f != nil:
		go func() { a.Complete(Result(r.f)) }()
	default:
		c.mu.Lock()
		err := c.closedError()
		c.mu.Unlock()
		a.Complete(nil, err)
	}
}

// Finish sets call's outcome and sends it on call.Done without blocking:
// when Done is full, a goroutine of its own waits to send it, so that the
// connection never waits for the reader of Done and no outcome is lost.
func Finish(call *plugin.Call, v any, err error) {
	if err != nil {
		v = nil
	}
	call.Reply, call.Err = v, err
	select {
	case call.Done <- call:
	default:
		go func() { call.Done <- call }()
	}
}
