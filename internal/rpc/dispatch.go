package rpc

import (
	"context"
	"errors"
	"log/slog"

	"github.com/emberhq/ember/internal/wire"
)

// Dispatch delivers a lane item's message to receive: for an ASK it sends
// the reply (or error), for a SEND it logs what the sender cannot be told.
// ctx is the handler's base context; an ASK adds the asker's deadline.
func Dispatch(ctx context.Context, log *slog.Logger, pluginName string, it Item, max int, receive func(context.Context, any) (any, error)) {
	f := it.Frame
	msg, err := Decode(f)
	if f.Kind == wire.Kind_KIND_ASK {
		var reply any
		if err == nil {
			hctx, cancel := HandlerContext(ctx, f)
			reply, err = Call(log, pluginName, "Receive", func() (any, error) { return receive(hctx, msg) })
			cancel()
		}
		_ = it.Conn.Reply(ReplyFrame(f.Call, f.Plugin, reply, err, max))
		return
	}
	if err != nil {
		log.Warn("dropped undecodable message", "type", f.Type, "err", err)
		return
	}
	reply, err := Call(log, pluginName, "Receive", func() (any, error) { return receive(ctx, msg) })
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		log.Warn("Receive failed for a sent message (the sender is not told)", "type", f.Type, "err", err)
	case reply != nil:
		log.Warn("Receive returned a reply to a sent message; it is dropped", "type", f.Type)
	}
}
