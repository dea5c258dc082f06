// Package hook lets the public packages hand unexported constructors to the
// runtime's internal packages without widening the public API. The public
// packages set these in their init functions.
package hook

import (
	"context"

	"github.com/emberhq/ember/internal/fault"
)

var (
	// WireError builds a *plugin.Error received from the peer; closed
	// makes one of CodeUnavailable match plugin.ErrClosed (a refusal by a
	// plugin that has shut down, wire.Frame.Closed).
	WireError func(code uint32, msg string, closed bool) error
	// WithSender attaches the sending executor's ID to a handler ctx.
	WithSender func(ctx context.Context, executorID string) context.Context
	// SealRegistries makes ember.NewTask and plugin.RegisterMessage (of a
	// new type) panic from now on, saying that they were called from a
	// test: embertest.Main calls it before the tests start.
	SealRegistries func()
)

// LocalHooks let the test kit reach executors that local[N] runs inside
// the driver's process. They travel in the ctx given to ember.Run.
type LocalHooks struct {
	// Started is called when an in-process executor has been accepted by
	// the driver; calling kill makes it crash: its stream drops without a
	// goodbye (its plugins then shut down off the stream, see
	// executor.Config.Crash). link injects faults into its stream.
	Started func(executorID string, kill func(), link *fault.Link)
}

type localHooksKey struct{}

// WithLocalHooks returns ctx carrying h.
func WithLocalHooks(ctx context.Context, h *LocalHooks) context.Context {
	return context.WithValue(ctx, localHooksKey{}, h)
}

// LocalHooksFrom returns the hooks in ctx, or nil.
func LocalHooksFrom(ctx context.Context) *LocalHooks {
	h, _ := ctx.Value(localHooksKey{}).(*LocalHooks)
	return h
}
