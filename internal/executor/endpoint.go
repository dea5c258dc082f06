package executor

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
)

// endpoint is one plugin on an executor and the ExecutorContext it gets.
type endpoint struct {
	x            *Executor
	idx          uint32
	name         string
	ep           plugin.ExecutorPlugin // nil: no executor side
	recv         plugin.ExecutorReceiver
	dropped      plugin.DroppedReplyListener
	taskListener plugin.TaskListener
	lane         *rpc.Lane // nil without recv and dropped
	// ctx is what Receive runs under: the executor's handler ctx,
	// marked as lane's (rpc.WithLane). Set with lane.
	ctx       context.Context
	log       *slog.Logger
	metrics   prometheus.Registerer
	extraConf map[string]string
	inited    bool
	// shut: the plugin's Shutdown has returned or been abandoned; its
	// Ask and Send fail from then on, since what they queue could follow
	// STOPPED, after which the driver takes nothing.
	shut atomic.Bool
	// noDriverSide: the driver said the plugin has no driver side
	// (WELCOME): Ask and Send fail at the call, rather than a Send being
	// dropped there. Set before Init.
	noDriverSide bool
	// hookPanics bounds the panics of its task hooks logged (see hook).
	hookPanics rpc.LogBudget
}

// errNoDriverSide is what Ask and Send of a plugin with no driver side
// give: what the driver answers an ASK for one.
func (e *endpoint) errNoDriverSide() error {
	return plugin.NewError(rpc.NoDriverSide(e.name))
}

// errShut is what Ask and Send of a plugin whose Shutdown has returned
// give.
func (e *endpoint) errShut() error {
	return plugin.Errorf(plugin.CodeUnavailable, "executor plugin %q has shut down: %w", e.name, plugin.ErrClosed)
}

var _ plugin.ExecutorContext = (*endpoint)(nil)

func (e *endpoint) AppID() string                  { return e.x.appID }
func (e *endpoint) Conf() plugin.Conf              { return e.x.conf }
func (e *endpoint) Metrics() prometheus.Registerer { return e.metrics }
func (e *endpoint) Logger() *slog.Logger           { return e.log }
func (e *endpoint) Hostname() string               { return e.x.hostname }
func (e *endpoint) ExecutorID() string             { return e.x.id }

// Resources returns a copy that shares nothing with the executor's own:
// each caller may change its copy without changing what other plugins,
// and the driver (READY is built from them after Init), see.
func (e *endpoint) Resources() map[string]plugin.Resource {
	res := make(map[string]plugin.Resource, len(e.x.resources))
	for name, r := range e.x.resources {
		res[name] = plugin.Resource{Name: r.Name, Addresses: slices.Clone(r.Addresses)}
	}
	return res
}

// encode encodes msg for this plugin, counting oversized messages.
func (e *endpoint) encode(msg any) (*wire.Frame, error) {
	f, err := rpc.Encode(e.idx, msg, e.x.cfg.MaxMessageBytes)
	if errors.Is(err, plugin.ErrMessageTooLarge) {
		e.x.limitHits.WithLabelValues("message_size").Inc()
	}
	return f, err
}

func (e *endpoint) Ask(ctx context.Context, msg any) (any, error) {
	if e.shut.Load() {
		return nil, e.errShut()
	}
	if e.noDriverSide {
		return nil, e.errNoDriverSide()
	}
	f, err := e.encode(msg)
	if err != nil {
		return nil, err
	}
	v, err := e.x.conn.AskMessage(ctx, f)
	return v, e.askError(ctx, err)
}

// askError is the error an ask under ctx returns for err. An ask still
// waiting when the plugin shut down: the driver ends its handler's ctx
// once this executor has stopped, and a handler that returns that ctx's
// error answers CodeCanceled, which the asker, whose own ctx has not
// ended, would take for its own cancel. It gets what an ask after
// Shutdown gets, as it does when the stream closes first.
func (e *endpoint) askError(ctx context.Context, err error) error {
	if err != nil && e.shut.Load() && ctx.Err() == nil && plugin.CodeOf(err) == plugin.CodeCanceled && plugin.IsRemote(err) {
		return e.errShut()
	}
	return err
}

func (e *endpoint) Go(ctx context.Context, msg any, done chan *plugin.Call) *plugin.Call {
	g := &goCall{Call: plugin.Call{Msg: msg, Done: done}, e: e, ctx: ctx}
	if g.Done == nil {
		g.Done = make(chan *plugin.Call, 1)
	}
	var err error
	switch {
	case e.shut.Load():
		err = e.errShut()
	case e.noDriverSide:
		err = e.errNoDriverSide()
	}
	var f *wire.Frame
	if err == nil {
		f, err = e.encode(msg)
	}
	if err != nil {
		rpc.Finish(&g.Call, nil, err)
		return &g.Call
	}
	e.x.conn.AskAsync(ctx, f, g)
	return &g.Call
}

// goCall is an ask made with Go: its Call, the connection's record of it,
// and what completing it needs; one allocation.
type goCall struct {
	plugin.Call
	rpc.AsyncAsk
	e   *endpoint
	ctx context.Context
}

func (g *goCall) Complete(v any, err error) {
	err = g.e.askError(g.ctx, err)
	g.ctx = nil // the caller may keep the Call long after
	rpc.Finish(&g.Call, v, err)
}

func (e *endpoint) Send(ctx context.Context, msg any) error {
	if e.shut.Load() {
		return e.errShut()
	}
	if e.noDriverSide {
		return e.errNoDriverSide()
	}
	f, err := e.encode(msg)
	if err != nil {
		return err
	}
	f.Kind = wire.Kind_KIND_SEND
	return e.x.conn.Send(ctx, f)
}

func (e *endpoint) run(it rpc.Item) {
	if it.Header().Kind == wire.Kind_KIND_REPLY {
		rpc.DispatchDropped(e.ctx, e.x.log, e.name, it, e.dropped.OnReplyDropped)
		wire.ReleaseFrame(it.Frame) // not predecoded: this was its last use
		return
	}
	o := rpc.Dispatch(e.ctx, e.ctx, e.x.log, e.name, it, e.x.cfg.MaxMessageBytes, false, e.recv.Receive)
	if o.Undecodable && it.Header().Kind == wire.Kind_KIND_SEND {
		e.x.dropped.WithLabelValues(e.name, "undecodable").Inc()
	}
	wire.ReleaseFrame(it.Frame) // not predecoded: this was its last use
}
