package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/emberhq/ember/internal/stamp"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// Outcome is what became of one dispatched message.
type Outcome struct {
	Undecodable bool          // the message could not be decoded
	Err         error         // the handler's (or decoding's) error; for an ASK, the error answered
	Elapsed     time.Duration // time in the handler, when Dispatch was asked to time it
	Timed       bool          // Elapsed was measured
	// Gone: an ASK answered with its handler's ctx's own end (Canceled or
	// DeadlineExceeded) once that ctx had ended: the asker had given up,
	// or its connection ended, and nobody hears the answer.
	Gone bool
}

// Dispatch delivers a lane item's message to receive: for an ASK it sends
// the reply (or error), for a SEND it logs what the sender cannot be told.
// A SEND's handler runs under ctx, so it is delivered even after its
// sender has gone; an ASK's under askCtx, which should end with the
// asker's connection, bounded by the asker's deadline when it sent one,
// and ended by the asker's cancel when it may send one: the item's
// handler ctx, made under askCtx by Deliver, does both.
//
// timed says whether to measure the handler's time (callers sample:
// reading the clock twice per message is a visible share of the path).
func Dispatch(ctx, askCtx context.Context, log *slog.Logger, pluginName string, it Item, max int, timed bool, receive func(context.Context, any) (any, error)) Outcome {
	h := it.Header()
	hc := it.handler
	if hc != nil && hc.cancelable {
		defer it.Conn.untrackCancel(hc)
	}
	msg, err := it.Msg, it.Err
	if !it.Decoded {
		msg, err = Decode(it.Frame)
	}
	if err != nil {
		if h.Kind == wire.Kind_KIND_ASK {
			_ = it.Conn.Reply(ReplyFrame(h.Call, h.Plugin, nil, err, max))
		} else {
			warnSent(ctx, log, pluginName, "dropped undecodable message", "plugin", pluginName, "type", h.Type, "err", err)
		}
		return Outcome{Undecodable: true, Err: err}
	}
	ask := h.Kind == wire.Kind_KIND_ASK
	if stamp.Enabled && ask {
		stamp.Mark(stamp.AskDispatched, h.Call)
	}
	returned := false
	if ask {
		// A handler that ends its goroutine (runtime.Goexit) never
		// returns; its asker is told, rather than left waiting.
		defer func() {
			if !returned {
				_ = it.Conn.Reply(ReplyFrame(h.Call, h.Plugin, nil, plugin.Errorf(plugin.CodeInternal, "plugin %q: Receive called runtime.Goexit", pluginName), max))
			}
		}()
	}
	hctx := ctx
	if ask {
		hctx = askCtx
		if hc != nil {
			defer hc.cancel(false)
			hctx = hc
		}
	}
	var start time.Time
	if timed {
		start = time.Now()
	}
	reply, err := Call(log, pluginName, "Receive", func() (any, error) { return receive(hctx, msg) })
	returned = true
	// Read before the deferred ends below; only for an error, so that an
	// answer costs no clock read.
	gone := ask && err != nil && hctx.Err() != nil &&
		(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
	var elapsed time.Duration
	if timed {
		elapsed = time.Since(start)
	}
	switch {
	case ask:
		if stamp.Enabled {
			stamp.Mark(stamp.ReplyQueued, h.Call)
		}
		f := ReplyFrame(h.Call, h.Plugin, reply, err, max)
		if err == nil && reply != nil && f.Code != 0 {
			// The asker gets the error; the bug is this side's.
			log.Warn("Receive's reply could not be sent; the asker gets the error instead", "plugin", pluginName, "type", h.Type, "err", f.Error)
			// The ask was answered with an error: the outcome says so
			// (the driver counts it in ember_message_errors_total).
			err = plugin.NewError(plugin.Code(f.Code), f.Error)
		}
		_ = it.Conn.Reply(f)
	case err != nil && !errors.Is(err, context.Canceled):
		warnSent(ctx, log, pluginName, "Receive failed for a sent message (the sender is not told)", "plugin", pluginName, "type", h.Type, "err", err)
	case reply != nil:
		// A Receive that serves one message type both ways replies to
		// every send: said once per lane (plugin) and type, not for
		// each message.
		if l := laneOf(ctx); l == nil || l.firstReplyToSend(h.Type) {
			log.Warn("Receive returned a reply to a sent message; replies to sends are dropped (said once per message type)", "plugin", pluginName, "type", h.Type)
		}
	}
	return Outcome{Err: err, Elapsed: elapsed, Timed: timed, Gone: gone}
}

// DispatchDropped delivers a lane item's REPLY, one that came after its
// ask gave up (see Handler), to dropped, with ctx; a panic in it is
// recovered and logged. A reply that cannot be decoded is logged
// instead (at most ten lines a minute per lane).
func DispatchDropped(ctx context.Context, log *slog.Logger, pluginName string, it Item, dropped func(context.Context, any)) {
	msg, err := it.Msg, it.Err
	if !it.Decoded {
		msg, err = Decode(it.Frame)
	}
	if err != nil {
		warnSent(ctx, log, pluginName, "dropped undecodable reply that came after its ask gave up", "plugin", pluginName, "type", it.Header().Type, "err", err)
		return
	}
	_ = CallFunc(log, pluginName, "OnReplyDropped", func() { dropped(ctx, msg) })
}

// Deliver queues a received ASK, SEND or REPLY (see DispatchDropped) on
// its plugin's lane, predecoding the message on the calling reader. It
// never waits: a SEND carries its cost against its sender's window
// (Item.Credit), which the lane gives back once the message has run, or
// keeps while the lane is full; full is called when this message filled
// the lane. It reports false if the lane
// is closed, or c has ended (Conn.Ended). The handler's ctx of an ASK
// with a deadline or a cancel is made here, under askCtx, which must be
// the one Dispatch is given.
//
// A predecoded frame is released here, on the reader that took it from
// wire's pool (the pool works best given back where it was taken), once
// the lane has the item; the caller must not use f after Deliver reports
// true.
func Deliver(askCtx context.Context, l *Lane, c *Conn, f *wire.Frame, full func()) bool {
	// Before the push: once pushed, the item may run and be answered
	// before this goroutine goes on.
	it := newItem(askCtx, c, f)
	Predecode(&it)
	ok, filled := l.push(it)
	if filled && full != nil {
		full()
	}
	if !ok && it.handler != nil && it.handler.cancelable {
		c.untrackCancel(it.handler)
	}
	if ok && it.Frame == nil {
		wire.ReleaseFrame(f)
	}
	return ok
}

// newItem returns the lane item of f, taken by c's reader: a SEND with
// its cost, an ASK with its handler's ctx under askCtx when it carries a
// deadline or is cancelable, registered with c in the second case.
func newItem(askCtx context.Context, c *Conn, f *wire.Frame) Item {
	it := Item{Conn: c, Frame: f}
	switch {
	case f.Kind == wire.Kind_KIND_SEND:
		it.Credit = SendCost(f)
	case f.Kind == wire.Kind_KIND_ASK && (f.TimeoutMicros > 0 || f.Cancelable):
		var d time.Time
		if f.TimeoutMicros > 0 {
			d = askDeadline(time.Now(), f.TimeoutMicros)
		}
		it.handler = newHandlerCtx(askCtx, f.Call, d, f.Cancelable)
		if f.Cancelable {
			c.cancels.add(it.handler)
		}
	}
	return it
}

// NoDriverSide is the code and text of the refusal of a message to a
// plugin with no driver side: what the driver answers such an ASK, and
// what an executor's Ask or Send to it fails with at the call.
func NoDriverSide(name string) (plugin.Code, string) {
	return plugin.CodeNotFound, fmt.Sprintf("plugin %q has no driver side", name)
}

// NoReceiver is the code and text of the refusal of a message to a
// plugin with no executor side, or whose executor plugin is not an
// ExecutorReceiver: what the executor
// answers such an ASK, and what the driver's calls to it fail with at the
// call.
func NoReceiver(name string) (plugin.Code, string) {
	return plugin.CodeUnimplemented, fmt.Sprintf("plugin %q takes no messages on executors: it has no executor side, or its executor plugin does not implement plugin.ExecutorReceiver", name)
}

// Refuse answers an ASK that cannot be delivered with an error reply and
// reports true. A SEND it gives back to its sender's window and reports
// false, leaving the caller to log and count the drop.
func Refuse(c *Conn, f *wire.Frame, code plugin.Code, problem string) bool {
	return refuse(c, f, &wire.Frame{Code: uint32(code), Error: problem})
}

// RefuseClosed is Refuse for a message to a plugin that has shut down on
// this side (its lane is closed): the refusal is CodeUnavailable, and the
// asker's error matches plugin.ErrClosed (wire.Frame.Closed), as a call
// to a side that has gone does.
func RefuseClosed(c *Conn, f *wire.Frame, problem string) bool {
	return refuse(c, f, &wire.Frame{Code: uint32(plugin.CodeUnavailable), Error: problem, Closed: true})
}

// refuse is Refuse with the error reply r, whose call and plugin it sets.
func refuse(c *Conn, f *wire.Frame, r *wire.Frame) bool {
	if f.Kind != wire.Kind_KIND_ASK {
		if f.Kind == wire.Kind_KIND_SEND {
			c.Consumed(f.Plugin, SendCost(f))
		}
		return false
	}
	r.Call, r.Plugin = f.Call, f.Plugin
	_ = c.Reply(r)
	return true
}
