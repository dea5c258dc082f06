package ember_test

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/emberhq/ember/plugin"
)

// Messages used across the tests. Registered once, in every process.
type (
	text    string
	number  int
	block   struct{ Tag string }
	payload struct{ Data []byte }
)

func init() {
	plugin.RegisterMessage[text]()
	plugin.RegisterMessage[number]()
	plugin.RegisterMessage[block]()
	plugin.RegisterMessage[payload]()
}

// fakePlugin is a plugin assembled from func fields, registered like a real
// one. newDriver/newExecutor nil: that side is absent.
type fakePlugin struct {
	name        string
	newDriver   func() plugin.DriverPlugin
	newExecutor func() plugin.ExecutorPlugin
}

func (p fakePlugin) Name() string { return p.name }

func (p fakePlugin) DriverPlugin() plugin.DriverPlugin {
	if p.newDriver == nil {
		return nil
	}
	return p.newDriver()
}

func (p fakePlugin) ExecutorPlugin() plugin.ExecutorPlugin {
	if p.newExecutor == nil {
		return nil
	}
	return p.newExecutor()
}

// countingPlugin is a plugin whose driver and executor sides count their
// Init calls in inits.
func countingPlugin(name string, inits *atomic.Int32) fakePlugin {
	return fakePlugin{
		name: name,
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
				inits.Add(1)
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(context.Context, plugin.ExecutorContext, map[string]string) error {
				inits.Add(1)
				return nil
			}}
		},
	}
}

// receivingPlugin is a plugin whose driver and executor sides both answer
// with receive. Once Run has initialised the plugins, *dc and *ec hold the
// driver's context and the (one) executor's.
func receivingPlugin(name string, receive func(context.Context, any) (any, error)) (p fakePlugin, dc *plugin.DriverContext, ec *plugin.ExecutorContext) {
	dc, ec = new(plugin.DriverContext), new(plugin.ExecutorContext)
	p = fakePlugin{
		name: name,
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{
				InitF:    func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) { *dc = pc; return nil, nil },
				ReceiveF: receive,
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error { *ec = pc; return nil }},
				ReceiveF:     receive,
			}
		},
	}
	return p, dc, ec
}

// fakeDriver is a DriverPlugin whose methods call the func fields when set.
type fakeDriver struct {
	InitF     func(ctx context.Context, pc plugin.DriverContext) (map[string]string, error)
	ReceiveF  func(ctx context.Context, msg any) (any, error)
	ShutdownF func(ctx context.Context) error
}

func (f *fakeDriver) Init(ctx context.Context, pc plugin.DriverContext) (map[string]string, error) {
	if f.InitF == nil {
		return nil, nil
	}
	return f.InitF(ctx, pc)
}

func (f *fakeDriver) Receive(ctx context.Context, msg any) (any, error) {
	if f.ReceiveF == nil {
		return nil, plugin.NewError(plugin.CodeUnimplemented, "no ReceiveF")
	}
	return f.ReceiveF(ctx, msg)
}

func (f *fakeDriver) Shutdown(ctx context.Context) error {
	if f.ShutdownF == nil {
		return nil
	}
	return f.ShutdownF(ctx)
}

// listeningDriver adds ExecutorListener to fakeDriver.
type listeningDriver struct {
	fakeDriver
	AddedF   func(ctx context.Context, e plugin.ExecutorInfo)
	RemovedF func(ctx context.Context, e plugin.ExecutorInfo, reason error)
}

func (l *listeningDriver) OnExecutorAdded(ctx context.Context, e plugin.ExecutorInfo) {
	l.AddedF(ctx, e)
}

func (l *listeningDriver) OnExecutorRemoved(ctx context.Context, e plugin.ExecutorInfo, reason error) {
	l.RemovedF(ctx, e, reason)
}

// concurrentDriver opts into concurrent Receive.
type concurrentDriver struct {
	fakeDriver
	n int
}

func (c *concurrentDriver) MaxConcurrentReceives() int { return c.n }

// fakeExecutor is an ExecutorPlugin whose methods call the func fields.
type fakeExecutor struct {
	InitF     func(ctx context.Context, pc plugin.ExecutorContext, extra map[string]string) error
	ShutdownF func(ctx context.Context) error
}

func (f *fakeExecutor) Init(ctx context.Context, pc plugin.ExecutorContext, extra map[string]string) error {
	if f.InitF == nil {
		return nil
	}
	return f.InitF(ctx, pc, extra)
}

func (f *fakeExecutor) Shutdown(ctx context.Context) error {
	if f.ShutdownF == nil {
		return nil
	}
	return f.ShutdownF(ctx)
}

// receivingExecutor adds ExecutorReceiver.
type receivingExecutor struct {
	fakeExecutor
	ReceiveF func(ctx context.Context, msg any) (any, error)
}

func (r *receivingExecutor) Receive(ctx context.Context, msg any) (any, error) {
	return r.ReceiveF(ctx, msg)
}

var (
	_ plugin.DriverPlugin       = (*fakeDriver)(nil)
	_ plugin.ExecutorListener   = (*listeningDriver)(nil)
	_ plugin.ConcurrentReceiver = (*concurrentDriver)(nil)
	_ plugin.ExecutorPlugin     = (*fakeExecutor)(nil)
	_ plugin.ExecutorReceiver   = (*receivingExecutor)(nil)
)

// recorder collects events from any goroutine.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// contexts hands executor contexts from Init to the test.
type contexts struct {
	mu  sync.Mutex
	pcs map[string]plugin.ExecutorContext
}

func (c *contexts) put(pc plugin.ExecutorContext) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pcs == nil {
		c.pcs = map[string]plugin.ExecutorContext{}
	}
	c.pcs[pc.ExecutorID()] = pc
}

func (c *contexts) get(id string) plugin.ExecutorContext {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pcs[id]
}

// init is an executor plugin Init that keeps its context in c.
func (c *contexts) init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	c.put(pc)
	return nil
}

// initWithID returns c.init that also stores the executor's ID in *id,
// for a plugin instance that needs to know where it runs.
func (c *contexts) initWithID(id *string) func(context.Context, plugin.ExecutorContext, map[string]string) error {
	return func(ctx context.Context, pc plugin.ExecutorContext, conf map[string]string) error {
		*id = pc.ExecutorID()
		return c.init(ctx, pc, conf)
	}
}

// keepDriverContext returns a driver plugin Init that stores its context
// in *dc, for the test to use once the cluster has started.
func keepDriverContext(dc *plugin.DriverContext) func(context.Context, plugin.DriverContext) (map[string]string, error) {
	return func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) {
		*dc = pc
		return nil, nil
	}
}

// gate holds plugin handlers (wait) until the test opens it. open may be
// called more than once: register it with t.Cleanup after the cluster
// has started, so that a test that fails early does not leave a handler
// stuck while the cluster shuts down.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) wait() { <-g.ch }

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
