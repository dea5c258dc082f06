package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/hook"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
)

// endpoint is one plugin on the driver: its DriverPlugin, its lane, and the
// DriverContext handed to it.
type endpoint struct {
	d         *Driver
	idx       uint32
	name      string
	dp        plugin.DriverPlugin // nil: no driver side
	listener  plugin.ExecutorListener
	dropped   plugin.DroppedReplyListener
	lane      *rpc.Lane // nil when dp is nil
	log       *slog.Logger
	metrics   prometheus.Registerer
	conf      plugin.Conf
	extraConf map[string]string
	inited    bool

	handlerSeconds prometheus.Observer
	counters       sync.Map // counterKey -> *keyedCounter
	lastCounter    atomic.Pointer[keyedCounter]
	dispatched     atomic.Uint64
}

// handlerSampling is how many messages share one handler-time
// observation: reading the clock twice per message is a visible share of
// the message path.
const handlerSampling = 8

var _ plugin.DriverContext = (*endpoint)(nil)

func (e *endpoint) AppID() string                    { return e.d.cfg.AppID }
func (e *endpoint) Conf() plugin.Conf                { return e.conf }
func (e *endpoint) Metrics() prometheus.Registerer   { return e.metrics }
func (e *endpoint) Logger() *slog.Logger             { return e.log }
func (e *endpoint) Hostname() string                 { return e.d.hostname }
func (e *endpoint) Executors() []plugin.ExecutorInfo { return e.d.Executors() }

// encode encodes msg for this plugin, counting oversized messages.
func (e *endpoint) encode(msg any) (*wire.Frame, error) {
	f, err := rpc.Encode(e.idx, msg, e.d.maxMsg())
	if errors.Is(err, plugin.ErrMessageTooLarge) {
		e.d.builtin.LimitHits.WithLabelValues("driver", "message_size").Inc()
	}
	return f, err
}

func (e *endpoint) AskExecutor(ctx context.Context, id string, msg any) (any, error) {
	f, err := e.encode(msg)
	if err != nil {
		return nil, err
	}
	c, err := e.d.conn(id, e.idx, e.name)
	if err != nil {
		wire.ReleaseFrame(f)
		return nil, executorError(id, err)
	}
	e.counter(f.Type, "to_executor", true).Inc() // asked, whatever the answer
	v, err := c.AskMessage(ctx, f)
	return v, e.d.askError(ctx, c, err)
}

// askError is the error an ask to c's executor under ctx returns for err.
// An ask still waiting when the executor stops (the driver shutting down,
// or the executor stopping on its own): the executor ends its handler's
// ctx, and a handler that returns that ctx's error answers CodeCanceled,
// which the asker, whose own ctx has not ended, would take for its own
// cancel. It gets what an ask to an executor that has gone gets:
// CodeUnavailable, ErrClosed, as an executor's ask still waiting when
// its plugin shuts down does. So does an ask that reached the executor
// after its plugin's lane closed, refused (rpc.RefuseClosed): it was
// sent before the driver knew the executor was stopping.
//
// A CodeUnavailable error names the executor, as a Broadcast's does: it
// may be logged far from its call ("stream receive: peer disconnected"
// alone says nothing of whose).
func (d *Driver) askError(ctx context.Context, c *rpc.Conn, err error) error {
	if err == nil {
		return nil
	}
	es, ok := c.Peer.(*execState)
	if !ok {
		return err
	}
	if ctx.Err() == nil && plugin.IsRemote(err) && (plugin.CodeOf(err) == plugin.CodeCanceled || errors.Is(err, plugin.ErrClosed)) {
		switch {
		case d.isStopping():
			err = errShuttingDown
		case d.stoppingOwn(es):
			err = errStoppingOwn
		}
	}
	return executorError(es.info.ID, err)
}

// executorError is err, from a call to executor id, naming it when it is
// CodeUnavailable (see askError).
func executorError(id string, err error) error {
	if plugin.CodeOf(err) == plugin.CodeUnavailable {
		return fmt.Errorf("executor %s: %w", id, err)
	}
	return err
}

func (e *endpoint) GoExecutor(ctx context.Context, id string, msg any, done chan *plugin.Call) *plugin.Call {
	g := &goCall{Call: plugin.Call{Executor: id, Msg: msg, Done: done}, ctx: ctx}
	if g.Done == nil {
		g.Done = make(chan *plugin.Call, 1)
	}
	f, err := e.encode(msg)
	if err != nil {
		rpc.Finish(&g.Call, nil, err)
		return &g.Call
	}
	c, err := e.d.conn(id, e.idx, e.name)
	if err != nil {
		wire.ReleaseFrame(f)
		rpc.Finish(&g.Call, nil, executorError(id, err))
		return &g.Call
	}
	e.counter(f.Type, "to_executor", true).Inc() // asked, whatever the answer
	g.d, g.conn = e.d, c
	c.AskAsync(ctx, f, g)
	return &g.Call
}

// goCall is an ask made with GoExecutor: its Call, the connection's
// record of it, and what completing it needs; one allocation.
type goCall struct {
	plugin.Call
	rpc.AsyncAsk
	d    *Driver
	conn *rpc.Conn
	ctx  context.Context
}

func (g *goCall) Complete(v any, err error) {
	err = g.d.askError(g.ctx, g.conn, err)
	// The caller may keep the Call long after: not the ask's ctx, nor the
	// connection of an executor that may be gone.
	g.ctx, g.conn = nil, nil
	rpc.Finish(&g.Call, v, err)
}

func (e *endpoint) SendExecutor(ctx context.Context, id string, msg any) error {
	f, err := e.encode(msg)
	if err != nil {
		return err
	}
	c, err := e.d.conn(id, e.idx, e.name)
	if err != nil {
		wire.ReleaseFrame(f)
		return executorError(id, err)
	}
	f.Kind = wire.Kind_KIND_SEND
	sent := e.counter(f.Type, "to_executor", false) // f is the connection's once sent
	if err := c.Send(ctx, f); err != nil {
		return executorError(id, err)
	}
	sent.Inc()
	return nil
}

func (e *endpoint) Broadcast(ctx context.Context, msg any) error {
	f, err := e.encode(msg)
	if err != nil {
		return err
	}
	var first error
	conns, skipped, err := e.d.readyConns(e.idx)
	if err != nil {
		wire.ReleaseFrame(f)
		return err
	}
	if skipped > 0 && len(conns) == 0 {
		// No ready executor takes the plugin's messages: the plugin's
		// doing. One whose ExecutorPlugin differs by executor (a
		// Receive on some hosts only) is delivered to those that take
		// it, and that is a success: an error there would read as
		// nothing delivered, and a retry would deliver twice.
		wire.ReleaseFrame(f)
		return errNoReceiver(e.name)
	}
	// Every executor that can take the message at once gets it first; only
	// then does Broadcast wait for those whose window is spent (a plugin
	// behind on its messages), so that one slow executor delays nobody
	// else's copy.
	//
	// The copies share f's payload, which is never written: each copy is
	// released by the connection that writes it, and f when Broadcast
	// returns.
	copyOf := func() *wire.Frame {
		cf := wire.NewFrame()
		cf.Kind, cf.Plugin, cf.Type, cf.Payload = wire.Kind_KIND_SEND, f.Plugin, f.Type, f.Payload
		return cf
	}
	defer wire.ReleaseFrame(f)
	sent := e.counter(f.Type, "to_executor", false)
	var wait []*rpc.Conn
	for _, c := range conns {
		cf := copyOf()
		ok, err := c.TrySend(cf)
		if !ok {
			wire.ReleaseFrame(cf) // not taken
		}
		switch {
		case err != nil:
			if first == nil {
				first = e.d.copyErr(c, err)
			}
		case !ok:
			wait = append(wait, c)
		default:
			sent.Inc()
		}
	}
	for _, c := range wait {
		if err := c.Send(ctx, copyOf()); err != nil {
			if first == nil {
				first = e.d.copyErr(c, err)
			}
			continue
		}
		sent.Inc()
	}
	return first
}

// copyErr is the error of a Broadcast whose copy to c's executor failed
// with err, naming the executor (its code and sentinels kept), or nil for
// an executor whose connection ended while the driver runs: it has left
// or was lost, its OnExecutorRemoved follows, and a copy for it is moot.
// Reporting it read as the driver shutting down (CodeUnavailable,
// ErrClosed), and a caller retrying delivered twice to every other. The
// driver's shutdown is no executor's doing: its error names none.
func (d *Driver) copyErr(c *rpc.Conn, err error) error {
	if errors.Is(err, plugin.ErrShuttingDown) {
		return err
	}
	if errors.Is(err, plugin.ErrClosed) && !d.isStopping() {
		return nil
	}
	if es, ok := c.Peer.(*execState); ok {
		return fmt.Errorf("executor %s: %w", es.info.ID, err)
	}
	return err
}

// isStopping reports whether Close has begun.
func (d *Driver) isStopping() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopping
}

func (d *Driver) maxMsg() int { return maxMsg(d.cfg.Conn) }

// run handles one lane item: a membership event, or a message to Receive.
func (e *endpoint) run(it rpc.Item) {
	if it.Event != nil {
		it.Event()
		return
	}
	es := it.Conn.Peer.(*execState)
	h := it.Header()
	if h.Kind == wire.Kind_KIND_REPLY {
		rpc.DispatchDropped(es.handlers[e.idx].send, es.senderLog, e.name, it, e.dropped.OnReplyDropped)
		wire.ReleaseFrame(it.Frame) // not predecoded: this was its last use
		return
	}
	ask := h.Kind == wire.Kind_KIND_ASK
	e.counter(h.Type, "to_driver", ask).Inc()
	// Handler time is sampled: one message in handlerSampling.
	timed := e.dispatched.Add(1)%handlerSampling == 1
	returned := false
	// Deferred: a Receive calling runtime.Goexit does not return (Dispatch
	// answers such an ask with an Internal error).
	defer func() {
		if ask {
			es.asks.Add(-1)
		}
		if !returned {
			e.handlerError(plugin.CodeInternal, ask)
		}
	}()
	hc := es.handlers[e.idx]
	o := rpc.Dispatch(hc.send, hc.ask, es.senderLog, e.name, it, e.d.maxMsg(), timed, e.dp.Receive)
	returned = true
	switch {
	case o.Undecodable && !ask:
		e.d.builtin.Dropped.WithLabelValues("driver", e.name, "undecodable").Inc()
	case o.Timed:
		e.handlerSeconds.Observe(o.Elapsed.Seconds())
	}
	// A long poll whose asker gave up, answering with its ctx's end, is
	// no error of the plugin's: nobody is answered (every executor that
	// stops cancels its workers' waiting asks). Nor is a send's Receive
	// ending with Canceled (the driver stopping), which Dispatch does not
	// log either, or an undecodable send, counted as dropped.
	switch {
	case o.Err == nil || o.Undecodable && !ask:
	case ask && !o.Gone, !ask && !errors.Is(o.Err, context.Canceled):
		code, _ := rpc.ErrorParts(o.Err)
		e.handlerError(code, ask)
	}
	wire.ReleaseFrame(it.Frame) // not predecoded: this was its last use
}

// handlerError counts a message whose Receive failed with code.
func (e *endpoint) handlerError(code plugin.Code, ask bool) {
	kind := "send"
	if ask {
		kind = "ask"
	}
	e.d.builtin.MessageErrors.WithLabelValues(e.name, code.String(), kind).Inc()
}

// unregisteredType is the type label of messages whose type name is not
// registered in this process.
const unregisteredType = "unregistered"

type counterKey struct {
	typ, direction string
	ask            bool
}

// keyedCounter is an ember_messages_total child with its key.
type keyedCounter struct {
	k counterKey
	c prometheus.Counter
}

// counter returns the ember_messages_total child for this plugin, caching
// it: WithLabelValues hashes its labels on every call. The last one found
// is kept apart: a plugin's messages tend to come in runs of one type, and
// comparing the key with it (the strings are usually the same ones) is
// cheaper than hashing it for the map. Safe for concurrent use.
func (e *endpoint) counter(typ, direction string, ask bool) prometheus.Counter {
	k := counterKey{typ, direction, ask}
	if last := e.lastCounter.Load(); last != nil && last.k == k {
		return last.c
	}
	if v, ok := e.counters.Load(k); ok {
		kc := v.(*keyedCounter)
		e.lastCounter.Store(kc)
		return kc.c
	}
	kind := "send"
	if ask {
		kind = "ask"
	}
	if typ != "" && !codec.Known(typ) {
		// A name a peer made up (sent as a name, not an index): the
		// message is undecodable here. Not cached, and not a label of
		// its own: each would be a series for the driver's life, and
		// WithLabelValues panics on one that is not valid UTF-8.
		return e.d.builtin.Messages.WithLabelValues(e.name, unregisteredType, direction, kind)
	}
	kc := &keyedCounter{k, e.d.builtin.Messages.WithLabelValues(e.name, typ, direction, kind)}
	e.counters.Store(k, kc)
	e.lastCounter.Store(kc)
	return kc.c
}

func senderContext(ctx context.Context, id string) context.Context {
	return hook.WithSender(ctx, id)
}
