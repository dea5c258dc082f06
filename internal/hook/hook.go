// Package hook lets the public packages hand unexported constructors to the
// runtime's internal packages without widening the public API. The public
// packages set these in their init functions.
package hook

import "context"

var (
	// WireError builds a *plugin.Error received from the peer.
	WireError func(code uint32, msg string) error
	// WithSender attaches the sending executor's ID to a handler ctx.
	WithSender func(ctx context.Context, executorID string) context.Context
)
