package rpc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/emberhq/ember/internal/wire"
)

// Outcome is what became of one dispatched message.
type Outcome struct {
	Undecodable bool          // the message could not be decoded
	Err         error         // the handler's (or decoding's) error
	Elapsed     time.Duration // time in the handler, when Dispatch was asked to time it
	Timed       bool          // Elapsed was measured
}

// Dispatch delivers a lane item's message to receive: for an ASK it sends
// the reply (or error), for a SEND it logs what the sender cannot be told.
// ctx is the handler's base context; an ASK adds the asker's deadline and
// ends when the asker's connection does. A SEND is delivered even after
// its sender has gone.
//
// timed says whether to measure the handler's time (callers sample:
// reading the clock twice per message is a visible share of the path).
func Dispatch(ctx context.Context, log *slog.Logger, pluginName string, it Item, max int, timed bool, receive func(context.Context, any) (any, error)) Outcome {
	f := it.Frame
	msg, err := it.Msg, it.Err
	if !it.Decoded {
		msg, err = Decode(f)
	}
	if err != nil {
		if f.Kind == wire.Kind_KIND_ASK {
			_ = it.Conn.Reply(ReplyFrame(f.Call, f.Plugin, nil, err, max))
		} else {
			log.Warn("dropped undecodable message", "plugin", pluginName, "type", f.Type, "err", err)
		}
		return Outcome{Undecodable: true, Err: err}
	}
	if f.Kind == wire.Kind_KIND_ASK {
		hctx, cancel := HandlerContext(ctx, f)
		// The asker is gone with its connection: stop working for it.
		stop := context.AfterFunc(it.Conn.Context(), cancel)
		defer stop()
		var start time.Time
		if timed {
			start = time.Now()
		}
		reply, err := Call(log, pluginName, "Receive", func() (any, error) { return receive(hctx, msg) })
		var elapsed time.Duration
		if timed {
			elapsed = time.Since(start)
		}
		cancel()
		_ = it.Conn.Reply(ReplyFrame(f.Call, f.Plugin, reply, err, max))
		return Outcome{Err: err, Elapsed: elapsed, Timed: timed}
	}
	var start time.Time
	if timed {
		start = time.Now()
	}
	reply, err := Call(log, pluginName, "Receive", func() (any, error) { return receive(ctx, msg) })
	var elapsed time.Duration
	if timed {
		elapsed = time.Since(start)
	}
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		log.Warn("Receive failed for a sent message (the sender is not told)", "plugin", pluginName, "type", f.Type, "err", err)
	case reply != nil:
		log.Warn("Receive returned a reply to a sent message; it is dropped", "plugin", pluginName, "type", f.Type)
	}
	return Outcome{Err: err, Elapsed: elapsed, Timed: timed}
}
