package ember_test

// A trial of the asynchronous ask (DriverContext.GoExecutor and
// ExecutorContext.Go) as a user would write it: a coordinator plugin whose
// driver side fans a query out to every executor with GoExecutor, its
// outcomes on one Call channel, and whose executor side answers in Receive.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/plugin"
)

// The coordinator's messages.
type (
	// gtQuery is what the coordinator asks an executor. Mode picks what
	// the worker does with it: "" answers at once, "hang" waits for its
	// ctx to end, "ask" asks the driver with Go from Receive first.
	gtQuery struct {
		ID   int
		Mode string
	}
	gtAnswer struct {
		Executor string
		ID       int
	}
	// gtEntered: a worker's Receive tells the driver it has started on a
	// "hang" query (a Send, so that it works across processes too).
	gtEntered struct {
		Executor string
		ID       int
	}
	gtHint       struct{ N int } // the driver's answer to a worker's gtQuery
	gtUnregister struct{ X int } // never registered
)

func init() {
	plugin.RegisterMessage[gtQuery]()
	plugin.RegisterMessage[gtAnswer]()
	plugin.RegisterMessage[gtEntered]()
	plugin.RegisterMessage[gtHint]()
}

// gtCtxEnd is how a worker's Receive ctx ended.
type gtCtxEnd struct {
	executor   string
	id         int
	err, cause error
}

// gtProbe is the test's view of the plugin's insides (in-process executors
// only, except entered, which the driver fills from gtEntered sends).
type gtProbe struct {
	entered chan gtEntered
	ended   chan gtCtxEnd
	order   recorder // "executor:what", in the order the workers took messages

	mu      sync.Mutex
	workers map[string]*gtWorker
}

func newGTProbe() *gtProbe {
	return &gtProbe{
		entered: make(chan gtEntered, 1000),
		ended:   make(chan gtCtxEnd, 1000),
		workers: map[string]*gtWorker{},
	}
}

func (p *gtProbe) worker(id string) *gtWorker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers[id]
}

// gtCoordinator is the plugin: both sides under one name.
type gtCoordinator struct {
	coord *gtDriver
	probe *gtProbe
	// initAsk, when set, makes each worker's Init ask the driver with Go
	// and wait for its Call, recording the outcome in initCall.
	initAsk bool
}

func (gtCoordinator) Name() string                        { return "coordinator" }
func (g gtCoordinator) DriverPlugin() plugin.DriverPlugin { return g.coord }
func (g gtCoordinator) ExecutorPlugin() plugin.ExecutorPlugin {
	return &gtWorker{probe: g.probe, initAsk: g.initAsk}
}

func newGTCoordinator() gtCoordinator {
	probe := newGTProbe()
	return gtCoordinator{coord: &gtDriver{probe: probe}, probe: probe}
}

// gtDriver is the coordinator's driver side.
type gtDriver struct {
	plugin.BaseDriverPlugin
	dc    plugin.DriverContext
	probe *gtProbe
}

func (d *gtDriver) Init(_ context.Context, dc plugin.DriverContext) (map[string]string, error) {
	d.dc = dc
	return nil, nil
}

func (d *gtDriver) Receive(_ context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case gtEntered:
		d.probe.entered <- m
		return nil, nil
	case gtQuery:
		return gtHint{N: m.ID * 2}, nil
	}
	return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
}

// FanOut asks every ready executor q with GoExecutor, all outcomes on
// done, and returns the Calls by executor ID. timeout, when not zero, is
// each ask's own deadline; the cancel funcs are returned by Call, to call
// when the Call comes back.
func (d *gtDriver) FanOut(ctx context.Context, q gtQuery, timeout time.Duration, done chan *plugin.Call) (map[string]*plugin.Call, map[*plugin.Call]context.CancelFunc) {
	calls := map[string]*plugin.Call{}
	cancels := map[*plugin.Call]context.CancelFunc{}
	for _, e := range d.dc.Executors() {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, timeout)
		}
		c := d.dc.GoExecutor(actx, e.ID, q, done)
		calls[e.ID] = c
		cancels[c] = cancel
	}
	return calls, cancels
}

// gtWorker is the coordinator's executor side.
type gtWorker struct {
	plugin.BaseExecutorPlugin
	pc      plugin.ExecutorContext
	probe   *gtProbe
	initAsk bool

	initCall *plugin.Call // the Call of Init's ask, with initAsk
}

func (w *gtWorker) Init(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	w.pc = pc
	if w.initAsk {
		done := make(chan *plugin.Call, 1)
		c := pc.Go(ctx, gtQuery{ID: 21}, done)
		if got := <-done; got != c {
			return fmt.Errorf("Init's Go: a Call arrived that Go did not return")
		}
		w.initCall = c
	}
	w.probe.mu.Lock()
	w.probe.workers[pc.ExecutorID()] = w
	w.probe.mu.Unlock()
	return nil
}

func (w *gtWorker) Receive(ctx context.Context, msg any) (any, error) {
	id := w.pc.ExecutorID()
	q, ok := msg.(gtQuery)
	if !ok {
		w.probe.order.add(fmt.Sprintf("%s:%v", id, msg))
		return nil, nil
	}
	w.probe.order.add(fmt.Sprintf("%s:q%d", id, q.ID))
	switch q.Mode {
	case "hang":
		if err := w.pc.Send(ctx, gtEntered{Executor: id, ID: q.ID}); err != nil {
			return nil, err
		}
		<-ctx.Done()
		w.probe.ended <- gtCtxEnd{id, q.ID, ctx.Err(), context.Cause(ctx)}
		return nil, ctx.Err()
	case "ask":
		c := <-w.pc.Go(ctx, gtQuery{ID: q.ID}, make(chan *plugin.Call, 1)).Done
		h, err := plugin.Reply[gtHint](c)
		if err != nil {
			return nil, err
		}
		return gtAnswer{Executor: id, ID: h.N}, nil
	}
	return gtAnswer{Executor: id, ID: q.ID}, nil
}

var (
	_ plugin.DriverPlugin     = (*gtDriver)(nil)
	_ plugin.ExecutorPlugin   = (*gtWorker)(nil)
	_ plugin.ExecutorReceiver = (*gtWorker)(nil)
)

// gtCalls checks that each issued Call arrives exactly once.
type gtCalls struct {
	issued map[*plugin.Call]bool // true once arrived
}

func newGTCalls() *gtCalls { return &gtCalls{issued: map[*plugin.Call]bool{}} }

func (g *gtCalls) add(t *testing.T, c *plugin.Call, done chan *plugin.Call) *plugin.Call {
	t.Helper()
	if c == nil {
		t.Fatal("Go returned a nil Call")
	}
	if c.Done != done {
		t.Errorf("Call.Done: got %p, want the channel given (%p)", c.Done, done)
	}
	if g.issued[c] {
		t.Errorf("Go returned the same Call twice: %+v", c)
	}
	g.issued[c] = false
	return c
}

// collect takes n Calls from done, failing t if they do not come within
// embertest.DefaultTimeout, or if one arrives that was not issued or arrives
// twice.
func (g *gtCalls) collect(t *testing.T, done chan *plugin.Call, n int) []*plugin.Call {
	t.Helper()
	timer := time.NewTimer(embertest.DefaultTimeout)
	defer timer.Stop()
	var got []*plugin.Call
	for range n {
		select {
		case c := <-done:
			arrived, ok := g.issued[c]
			switch {
			case !ok:
				t.Errorf("a Call arrived that no Go returned: %+v", c)
			case arrived:
				t.Errorf("Call for %v arrived twice", c.Msg)
			}
			g.issued[c] = true
			got = append(got, c)
		case <-timer.C:
			t.Fatalf("%d of %d Calls arrived within %v", len(got), n, embertest.DefaultTimeout)
		}
	}
	return got
}

// none checks that nothing more is on done.
func (g *gtCalls) none(t *testing.T, done chan *plugin.Call) {
	t.Helper()
	select {
	case c := <-done:
		t.Errorf("an extra Call arrived: %+v (err %v)", c, c.Err)
	default:
	}
	for c, arrived := range g.issued {
		if !arrived {
			t.Errorf("Call for %v never arrived", c.Msg)
		}
	}
}

// gtRestingGoroutines returns the goroutine count of a cluster of n
// in-process executors at rest, once each executor's Run has started its
// metrics shipper. Run starts it just after sending READY, which Start
// waits for: a count taken before then left the shipper out, and once it
// ran, the count after the test's asks was one over and read as a leak
// ("goroutines: got 69, want at most 68").
func gtRestingGoroutines(t *testing.T, n int) int {
	t.Helper()
	buf := make([]byte, 1<<20)
	embertest.WaitFor(t, fmt.Sprintf("the metrics shippers of %d executors to run", n), func() bool {
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "executor.(*Executor).shipMetrics(") >= n
	})
	return runtime.NumGoroutine()
}

// gtGoroutinesBack polls until the goroutine count is at most max. Give
// max one goroutine of slack per connection: asks that share a ctx get a
// watcher that lives as long as that ctx (at most 16 per connection).
func gtGoroutinesBack(t *testing.T, max int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > max {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: got %d, want at most %d\n%s", runtime.NumGoroutine(), max, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

func gtStart(t *testing.T, master string, g gtCoordinator, cfg ember.Config) *embertest.Cluster {
	t.Helper()
	cfg.Master = master
	cfg.Plugins = append(cfg.Plugins, g)
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	return embertest.Start(t, cfg)
}

// 1. A fan-out to every executor, many rounds on one channel: every Call
// arrives once, with its Msg as given, the executor's answer and no error.
func TestGoCallFanOut(t *testing.T) {
	g := newGTCoordinator()
	gtStart(t, "local[3]", g, ember.Config{})
	ctx := testCtx(t)
	const rounds = 50
	done := make(chan *plugin.Call, 3*rounds)
	calls := newGTCalls()
	want := map[*plugin.Call]gtAnswer{}
	for i := range rounds {
		mode := ""
		if i%5 == 0 {
			mode = "ask" // the worker asks the driver with Go from Receive
		}
		byExec, _ := g.coord.FanOut(ctx, gtQuery{ID: i, Mode: mode}, 0, done)
		if len(byExec) != 3 {
			t.Fatalf("fan-out reached %d executors, want 3", len(byExec))
		}
		for id, c := range byExec {
			calls.add(t, c, done)
			if c.Msg != (gtQuery{ID: i, Mode: mode}) {
				t.Errorf("Call.Msg: got %+v, want the query given", c.Msg)
			}
			if c.Executor != id {
				t.Errorf("Call.Executor: got %q, want %q, the ID given", c.Executor, id)
			}
			w := gtAnswer{Executor: id, ID: i}
			if mode == "ask" {
				w.ID = 2 * i
			}
			want[c] = w
		}
	}
	for _, c := range calls.collect(t, done, 3*rounds) {
		got, err := plugin.Reply[gtAnswer](c)
		if err != nil || got != want[c] || c.Reply != want[c] {
			t.Errorf("Call for %+v: got %+v (Reply %+v), %v; want %+v, nil", c.Msg, got, c.Reply, err, want[c])
		}
	}
	calls.none(t, done)
	// A reply of another type: Reply says so, as Ask does.
	c := <-g.coord.dc.GoExecutor(ctx, "1", gtQuery{ID: 1}, nil).Done
	if _, err := plugin.Reply[gtHint](c); plugin.CodeOf(err) != plugin.CodeInvalidArgument {
		t.Errorf("Reply[gtHint] of a gtAnswer: got %v, want CodeInvalidArgument", err)
	}
}

// 2. Executors lost with an AskExecutor in its Receive and GoExecutor
// calls queued behind it: each Call arrives once, failed with
// CodeUnavailable (ErrClosed, not ErrShuttingDown), as AskExecutor's error
// in the same place; calls to the others are answered.
func TestGoCallExecutorLostInFlight(t *testing.T) {
	for _, how := range []string{"kill", "partition"} {
		t.Run(how, func(t *testing.T) {
			g := newGTCoordinator()
			c := gtStart(t, "local[3]", g, ember.Config{HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: 500 * time.Millisecond})
			ctx := testCtx(t)
			dc := g.coord.dc
			done := make(chan *plugin.Call, 32)
			calls := newGTCalls()
			// The AskExecutor first, and in its handler before the kill:
			// started after the GoExecutor calls, it could come after the
			// kill and find no executor 1.
			askErr := make(chan error, 1)
			go func() {
				_, err := dc.AskExecutor(ctx, "1", gtQuery{ID: 99, Mode: "hang"})
				askErr <- err
			}()
			<-g.probe.entered
			for i := range 4 {
				calls.add(t, dc.GoExecutor(ctx, "1", gtQuery{ID: i, Mode: "hang"}, done), done)
			}
			for i := range 4 {
				calls.add(t, dc.GoExecutor(ctx, "2", gtQuery{ID: 10 + i}, done), done)
			}
			var err error
			if how == "kill" {
				err = c.Kill("1")
			} else {
				err = c.Partition("1")
			}
			if err != nil {
				t.Fatal(err)
			}
			aerr := <-askErr
			var lost []error
			for _, call := range calls.collect(t, done, 8) {
				q := call.Msg.(gtQuery)
				if q.Mode != "hang" {
					if got, err := plugin.Reply[gtAnswer](call); err != nil || got != (gtAnswer{"2", q.ID}) {
						t.Errorf("Call to executor 2 for %+v: got %+v, %v; want an answer", q, got, err)
					}
					continue
				}
				lost = append(lost, call.Err)
				if plugin.CodeOf(call.Err) != plugin.CodeUnavailable || call.Reply != nil || errors.Is(call.Err, plugin.ErrShuttingDown) {
					t.Errorf("Call to lost executor 1 for %+v: got %v (code %v), reply %v; want CodeUnavailable, not ErrShuttingDown", q, call.Err, plugin.CodeOf(call.Err), call.Reply)
				}
				// One channel serves every executor, and a Call does not
				// say which it asked: the error must.
				if !strings.Contains(call.Err.Error(), "executor 1") {
					t.Errorf("Call to lost executor 1: error %q does not name executor 1", call.Err)
				}
			}
			t.Logf("GoExecutor errors: %q", lost)
			t.Logf("AskExecutor error: %q (code %v)", aerr, plugin.CodeOf(aerr))
			if plugin.CodeOf(aerr) != plugin.CodeUnavailable || errors.Is(aerr, plugin.ErrShuttingDown) {
				t.Errorf("AskExecutor to lost executor 1: got %v, want CodeUnavailable, not ErrShuttingDown", aerr)
			}
			for _, err := range lost {
				if err.Error() != aerr.Error() {
					t.Errorf("GoExecutor's error %q differs from AskExecutor's %q in the same place", err, aerr)
				}
			}
			// Asked again, the executor is gone.
			embertest.WaitFor(t, "executor 1 to leave", func() bool { return len(dc.Executors()) == 2 })
			after := <-dc.GoExecutor(ctx, "1", gtQuery{}, nil).Done
			if !errors.Is(after.Err, plugin.ErrNoSuchExecutor) {
				t.Errorf("GoExecutor to removed executor 1: got %v, want ErrNoSuchExecutor", after.Err)
			}
			if how == "partition" {
				_ = c.Heal("1")
			}
			if err := c.Close(); err != nil {
				t.Logf("Close: %v", err)
			}
			calls.none(t, done)
		})
	}
}

// 3. Per-ask deadlines: each ask its own context.WithTimeout. The asks
// whose worker waits end with DeadlineExceeded, the worker's ctx ends
// too, the asks queued behind them are answered, and nothing is left
// behind, ask after ask.
func TestGoCallPerAskDeadline(t *testing.T) {
	g := newGTCoordinator()
	gtStart(t, "local[2]", g, ember.Config{})
	ctx := testCtx(t)
	dc := g.coord.dc
	// Warm up, then count the goroutines at rest.
	for range 2 {
		c := <-dc.GoExecutor(ctx, "1", gtQuery{}, nil).Done
		if c.Err != nil {
			t.Fatal(c.Err)
		}
	}
	base := gtRestingGoroutines(t, 2)

	done := make(chan *plugin.Call, 16)
	calls := newGTCalls()
	cancels := map[*plugin.Call]context.CancelFunc{}
	const hangs = 3
	for i := range hangs {
		byExec, cs := g.coord.FanOut(ctx, gtQuery{ID: i, Mode: "hang"}, 200*time.Millisecond, done)
		for _, c := range byExec {
			calls.add(t, c, done)
		}
		for c, cancel := range cs {
			cancels[c] = cancel
		}
	}
	// Queued behind the waiting ones, with a long deadline of their own.
	byExec, cs := g.coord.FanOut(ctx, gtQuery{ID: 100}, time.Minute, done)
	for _, c := range byExec {
		calls.add(t, c, done)
	}
	for c, cancel := range cs {
		cancels[c] = cancel
	}
	for _, c := range calls.collect(t, done, 2*hangs+2) {
		cancels[c]()
		q := c.Msg.(gtQuery)
		if q.Mode == "hang" {
			if !errors.Is(c.Err, context.DeadlineExceeded) || plugin.CodeOf(c.Err) != plugin.CodeDeadlineExceeded {
				t.Errorf("Call for %+v: got %v (code %v), want DeadlineExceeded", q, c.Err, plugin.CodeOf(c.Err))
			}
			continue
		}
		if got, err := plugin.Reply[gtAnswer](c); err != nil || got.ID != 100 {
			t.Errorf("Call for %+v queued behind expired asks: got %+v, %v; want its answer", q, got, err)
		}
	}
	calls.none(t, done)
	// Every worker that started on a waiting ask saw its ctx end, by its
	// deadline or the asker's cancel. A worker says it started with a
	// Send, which the driver's lane runs apart from the replies that
	// completed the Calls, and may run after the last of them: wait for
	// one from each executor rather than take what has arrived so far.
	started := map[string]int{}
	embertest.WaitFor(t, "a worker started on a waiting ask on each executor", func() bool {
		for len(g.probe.entered) > 0 {
			e := <-g.probe.entered
			started[e.Executor]++
		}
		return started["1"] > 0 && started["2"] > 0
	})
	embertest.WaitFor(t, "the workers' ctx to end", func() bool { return len(g.probe.ended) >= started["1"]+started["2"] })
	for len(g.probe.ended) > 0 {
		e := <-g.probe.ended
		if !errors.Is(e.err, context.DeadlineExceeded) && !errors.Is(e.cause, plugin.ErrAskCanceled) {
			t.Errorf("worker %s's ctx for ask %d ended with %v (cause %v), want DeadlineExceeded or ErrAskCanceled", e.executor, e.id, e.err, e.cause)
		}
	}

	// Many answered asks, each with a deadline of its own: nothing stays
	// behind for any of them.
	const n = 1000
	big := make(chan *plugin.Call, n)
	for i := range n {
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		c := dc.GoExecutor(actx, []string{"1", "2"}[i%2], gtQuery{ID: i}, big)
		cancels[c] = cancel
	}
	for range n {
		c := <-big
		cancels[c]()
		if c.Err != nil {
			t.Fatalf("Call for %+v: %v", c.Msg, c.Err)
		}
	}
	gtGoroutinesBack(t, base+2) // 2 connections
}

// 4. The driver shutting down with GoExecutor calls in flight: each Call
// arrives once, with CodeUnavailable wrapping ErrClosed (the asker's ctx
// never ended, so not CodeCanceled); after shutdown GoExecutor fails at
// once, on the channel given, the same way.
func TestGoCallShutdownInFlight(t *testing.T) {
	g := newGTCoordinator()
	c := gtStart(t, "local[2]", g, ember.Config{ShutdownTimeout: 5 * time.Second})
	ctx := testCtx(t)
	dc := g.coord.dc
	done := make(chan *plugin.Call, 16)
	calls := newGTCalls()
	for i := range 3 {
		byExec, _ := g.coord.FanOut(ctx, gtQuery{ID: i, Mode: "hang"}, 0, done)
		for _, call := range byExec {
			calls.add(t, call, done)
		}
	}
	askErr := make(chan error, 1)
	go func() {
		_, err := dc.AskExecutor(ctx, "1", gtQuery{ID: 99, Mode: "hang"})
		askErr <- err
	}()
	<-g.probe.entered
	<-g.probe.entered
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, call := range calls.collect(t, done, 6) {
		if plugin.CodeOf(call.Err) != plugin.CodeUnavailable || !errors.Is(call.Err, plugin.ErrClosed) || !errors.Is(call.Err, plugin.ErrShuttingDown) || errors.Is(call.Err, context.Canceled) {
			t.Errorf("Call for %+v in flight at shutdown: got %v (code %v), want CodeUnavailable wrapping ErrShuttingDown and ErrClosed", call.Msg, call.Err, plugin.CodeOf(call.Err))
		}
	}
	if err := <-askErr; plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) || !errors.Is(err, plugin.ErrShuttingDown) || errors.Is(err, context.Canceled) {
		t.Errorf("AskExecutor in flight at shutdown: got %v (code %v), want CodeUnavailable wrapping ErrShuttingDown and ErrClosed", err, plugin.CodeOf(err))
	}
	calls.none(t, done)

	// After shutdown: at once, on a full channel too.
	full := make(chan *plugin.Call, 1)
	full <- &plugin.Call{}
	after := newGTCalls()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for i := range 10 {
			after.add(t, dc.GoExecutor(ctx, "1", gtQuery{ID: i}, full), full)
		}
	}()
	select {
	case <-returned:
	case <-time.After(embertest.DefaultTimeout):
		t.Fatal("GoExecutor after shutdown, with its channel full, did not return")
	}
	<-full // the stand-in
	after.issued[&plugin.Call{}] = true
	for _, call := range after.collect(t, full, 10) {
		if plugin.CodeOf(call.Err) != plugin.CodeUnavailable || !errors.Is(call.Err, plugin.ErrClosed) || !errors.Is(call.Err, plugin.ErrShuttingDown) {
			t.Errorf("GoExecutor after shutdown: got %v, want CodeUnavailable wrapping ErrShuttingDown and ErrClosed", call.Err)
		}
	}
}

// 5. A Done channel with room for one, many asks and nobody reading until
// all have been made: Go never waits for the reader, and no Call is lost,
// answered ones and ones failed at the call alike.
func TestGoCallSmallDone(t *testing.T) {
	g := newGTCoordinator()
	gtStart(t, "local[3]", g, ember.Config{})
	ctx := testCtx(t)
	dc := g.coord.dc
	<-dc.GoExecutor(ctx, "1", gtQuery{}, nil).Done
	base := gtRestingGoroutines(t, 3)

	const rounds = 100
	done := make(chan *plugin.Call, 1)
	calls := newGTCalls()
	started := make(chan struct{})
	go func() {
		defer close(started)
		for i := range rounds {
			byExec, _ := g.coord.FanOut(ctx, gtQuery{ID: i}, 0, done)
			for _, c := range byExec {
				calls.add(t, c, done)
			}
			calls.add(t, dc.GoExecutor(ctx, "1", nil, done), done)       // fails at the call
			calls.add(t, dc.GoExecutor(ctx, "9", gtQuery{}, done), done) // no such executor
		}
	}()
	select {
	case <-started:
	case <-time.After(embertest.DefaultTimeout):
		t.Fatal("GoExecutor waited for the reader of a full Done")
	}
	outcomes := map[string]int{}
	for _, c := range calls.collect(t, done, rounds*5) {
		outcomes[plugin.CodeOf(c.Err).String()]++
	}
	calls.none(t, done)
	want := map[string]int{"ok": 3 * rounds, "invalid_argument": rounds, "not_found": rounds}
	if fmt.Sprint(outcomes) != fmt.Sprint(want) {
		t.Errorf("outcomes by code: got %v, want %v", outcomes, want)
	}
	gtGoroutinesBack(t, base+3) // 3 connections
}

// 6. Executor-side Go: from Init (waiting for its Call there), from
// Receive (the "ask" mode, driven by the driver's GoExecutor), and the
// failures that arrive on done: Go returns a non-nil Call whose Done is the
// channel given, and sends that same Call on it once.
func TestGoCallExecutorGo(t *testing.T) {
	g := newGTCoordinator()
	g.initAsk = true
	gtStart(t, "local[2]", g, ember.Config{})
	ctx := testCtx(t)

	for _, id := range []string{"1", "2"} {
		w := g.probe.worker(id)
		if h, err := plugin.Reply[gtHint](w.initCall); err != nil || h.N != 42 {
			t.Errorf("executor %s: Go from Init: got %+v, %v; want {N:42}, nil", id, h, err)
		}
		c := <-g.coord.dc.GoExecutor(ctx, id, gtQuery{ID: 4, Mode: "ask"}, nil).Done
		if a, err := plugin.Reply[gtAnswer](c); err != nil || a != (gtAnswer{id, 8}) {
			t.Errorf("executor %s: Go from Receive: got %+v, %v; want {%s 8}, nil", id, a, err, id)
		}
	}

	pc := g.probe.worker("1").pc
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	tests := []struct {
		name string
		ctx  context.Context
		msg  any
		code plugin.Code
		is   error
	}{
		{"unregistered type", ctx, gtUnregister{X: 1}, plugin.CodeInvalidArgument, plugin.ErrUnregisteredMessage},
		{"nil message", ctx, nil, plugin.CodeInvalidArgument, nil},
		{"canceled ctx", canceled, gtQuery{ID: 1}, plugin.CodeCanceled, context.Canceled},
		{"expired ctx", expired, gtQuery{ID: 1}, plugin.CodeDeadlineExceeded, context.DeadlineExceeded},
		{"fine", ctx, gtQuery{ID: 3}, plugin.CodeOK, nil},
	}
	for _, tt := range tests {
		for _, doneCap := range []int{-1, 1, 0} { // -1: a nil done
			t.Run(fmt.Sprintf("%s/done cap %d", tt.name, doneCap), func(t *testing.T) {
				var done chan *plugin.Call
				if doneCap >= 0 {
					done = make(chan *plugin.Call, doneCap)
				}
				// Go itself must return at once, even on an unbuffered
				// channel nobody reads yet.
				ret := make(chan *plugin.Call, 1)
				go func() { ret <- pc.Go(tt.ctx, tt.msg, done) }()
				var c *plugin.Call
				select {
				case c = <-ret:
				case <-time.After(embertest.DefaultTimeout):
					t.Fatal("Go did not return")
				}
				if c == nil {
					t.Fatal("Go returned nil")
				}
				if done == nil {
					if cap(c.Done) != 1 {
						t.Errorf("Go with a nil done: got Done of cap %d, want a new one with room for one", cap(c.Done))
					}
				} else if c.Done != done {
					t.Errorf("Call.Done: got %p, want the channel given %p", c.Done, done)
				}
				if c.Msg != tt.msg {
					t.Errorf("Call.Msg: got %#v, want %#v", c.Msg, tt.msg)
				}
				if c.Executor != "" {
					t.Errorf("Call.Executor of an ask to the driver: got %q, want \"\"", c.Executor)
				}
				got := <-c.Done
				if got != c {
					t.Fatalf("Done delivered %p, want the Call Go returned %p", got, c)
				}
				if code := plugin.CodeOf(c.Err); code != tt.code {
					t.Errorf("Err: got %v (code %v), want code %v", c.Err, code, tt.code)
				}
				if tt.is != nil && !errors.Is(c.Err, tt.is) {
					t.Errorf("Err: got %v, want one matching %v", c.Err, tt.is)
				}
				if c.Err != nil && c.Reply != nil {
					t.Errorf("Reply: got %v with Err %v, want nil", c.Reply, c.Err)
				}
				select {
				case extra := <-c.Done:
					t.Errorf("a second Call arrived: %+v", extra)
				default:
				}
			})
		}
	}
}

// 7. Order and odd corners: GoExecutor and SendExecutor from one goroutine
// reach the worker in the order made; Go on a plugin with no driver side
// and GoExecutor on one with no executor side fail on the channel.
func TestGoCallOrderAndCorners(t *testing.T) {
	g := newGTCoordinator()
	var (
		pcs        contexts
		execOnlyDC plugin.DriverContext
	)
	execOnly := fakePlugin{ // no driver side
		name:        "exec-only",
		newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{InitF: pcs.init} },
	}
	driverOnly := fakePlugin{ // no executor side
		name:      "driver-only",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&execOnlyDC)} },
	}
	gtStart(t, "local[1]", g, ember.Config{Plugins: []plugin.Plugin{execOnly, driverOnly}})
	ctx := testCtx(t)
	dc := g.coord.dc

	done := make(chan *plugin.Call, 300)
	calls := newGTCalls()
	var want []string
	for i := range 300 {
		if i%3 == 0 {
			if err := dc.SendExecutor(ctx, "1", text(fmt.Sprint("send", i))); err != nil {
				t.Fatal(err)
			}
			want = append(want, fmt.Sprint("1:send", i))
		}
		calls.add(t, dc.GoExecutor(ctx, "1", gtQuery{ID: i}, done), done)
		want = append(want, fmt.Sprintf("1:q%d", i))
	}
	for _, c := range calls.collect(t, done, 300) {
		if c.Err != nil {
			t.Errorf("Call for %+v: %v", c.Msg, c.Err)
		}
	}
	calls.none(t, done)
	embertest.WaitFor(t, "every message taken", func() bool { return len(g.probe.order.get()) >= len(want) })
	if got := g.probe.order.get(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the worker took GoExecutor and SendExecutor messages out of order:\ngot  %q\nwant %q", got, want)
	}

	c := <-pcs.get("1").Go(ctx, gtQuery{}, nil).Done
	if plugin.CodeOf(c.Err) != plugin.CodeNotFound {
		t.Errorf("Go on a plugin with no driver side: got %v, want CodeNotFound", c.Err)
	}
	c = <-execOnlyDC.GoExecutor(ctx, "1", gtQuery{}, nil).Done
	if plugin.CodeOf(c.Err) != plugin.CodeUnimplemented {
		t.Errorf("GoExecutor on a plugin with no executor side: got %v, want CodeUnimplemented", c.Err)
	}
	// A Call that fails at once names its executor too.
	for _, id := range []string{"1", "no-such"} {
		if c := <-dc.GoExecutor(ctx, id, nil, nil).Done; c.Err == nil || c.Executor != id {
			t.Errorf("GoExecutor(%q) of a nil message: got Executor %q, Err %v; want %q and an error", id, c.Executor, c.Err, id)
		}
	}
	t.Logf("no driver side: %v; no executor side: %v", (<-pcs.get("1").Go(ctx, gtQuery{}, nil).Done).Err, c.Err)
}

// 2b. The same with real executor processes: an executor SIGKILLed (lost)
// or SIGTERMed (stopping on its own) with GoExecutor calls in flight: each
// Call arrives once, failed with CodeUnavailable as AskExecutor's (its asker's
// ctx never ended, so not CodeCanceled), and the cluster answers after.
func TestGoCallLocalClusterExecutorGone(t *testing.T) {
	for _, how := range []string{"SIGKILL", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			g := newGTCoordinator()
			c := gtStart(t, "local-cluster[2]", g, ember.Config{})
			ctx := testCtx(t)
			dc := g.coord.dc
			done := make(chan *plugin.Call, 1) // small on purpose
			calls := newGTCalls()
			// The AskExecutor first, in its handler before the kill:
			// started after, it could find the executor gone (NotFound).
			askErr := make(chan error, 1)
			go func() {
				_, err := dc.AskExecutor(ctx, "1", gtQuery{ID: 99, Mode: "hang"})
				askErr <- err
			}()
			if e := <-g.probe.entered; e != (gtEntered{Executor: "1", ID: 99}) {
				t.Fatalf("entered: got %+v, want executor 1's AskExecutor, ID 99", e)
			}
			for i := range 5 {
				calls.add(t, dc.GoExecutor(ctx, "1", gtQuery{ID: i, Mode: "hang"}, done), done)
			}
			for i := range 5 {
				calls.add(t, dc.GoExecutor(ctx, "2", gtQuery{ID: 10 + i}, done), done)
			}
			var err error
			if how == "SIGKILL" {
				err = c.Kill("1")
			} else {
				err = syscall.Kill(c.Driver.Executors()[0].PID, syscall.SIGTERM)
			}
			if err != nil {
				t.Fatal(err)
			}
			aerr := <-askErr
			t.Logf("AskExecutor: %v", aerr)
			if plugin.CodeOf(aerr) != plugin.CodeUnavailable || !strings.Contains(aerr.Error(), "executor 1") || errors.Is(aerr, plugin.ErrShuttingDown) {
				t.Errorf("AskExecutor to executor 1 gone by %s: got %v, want CodeUnavailable naming executor 1, not ErrShuttingDown", how, aerr)
			}
			for _, call := range calls.collect(t, done, 10) {
				q := call.Msg.(gtQuery)
				if q.Mode != "hang" {
					if got, err := plugin.Reply[gtAnswer](call); err != nil || got != (gtAnswer{"2", q.ID}) {
						t.Errorf("Call to executor 2 for %+v: got %+v, %v; want an answer", q, got, err)
					}
					continue
				}
				if plugin.CodeOf(call.Err) != plugin.CodeUnavailable || !strings.Contains(call.Err.Error(), "executor 1") || errors.Is(call.Err, plugin.ErrShuttingDown) {
					t.Errorf("Call to executor 1 gone by %s, for %+v: got %v, want CodeUnavailable naming executor 1, not ErrShuttingDown", how, q, call.Err)
				}
			}
			calls.none(t, done)
			embertest.WaitFor(t, "executor 1 to go", func() bool {
				ex := dc.Executors()
				return len(ex) > 0 && ex[0].ID != "1"
			})
			byExec, _ := g.coord.FanOut(ctx, gtQuery{ID: 7}, 0, done)
			for range byExec {
				call := <-done
				if a, err := plugin.Reply[gtAnswer](call); err != nil || a.ID != 7 {
					t.Errorf("fan-out after executor 1 went: got %+v, %v", a, err)
				}
			}
		})
	}
}

// 3b. An ask whose deadline passes while it waits behind another on the
// executor's lane: its Call arrives at its deadline, not once the ask in
// front of it is done. A partition healed in time loses nothing.
func TestGoCallQueuedDeadlineAndHeal(t *testing.T) {
	g := newGTCoordinator()
	c := gtStart(t, "local[1]", g, ember.Config{})
	ctx := testCtx(t)
	dc := g.coord.dc
	done := make(chan *plugin.Call, 4)
	calls := newGTCalls()
	hctx, endHead := context.WithCancel(ctx)
	defer endHead()
	head := calls.add(t, dc.GoExecutor(hctx, "1", gtQuery{ID: 1, Mode: "hang"}, done), done)
	<-g.probe.entered
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	queued := calls.add(t, dc.GoExecutor(qctx, "1", gtQuery{ID: 2}, done), done)
	got := calls.collect(t, done, 1)[0]
	if got != queued || !errors.Is(got.Err, context.DeadlineExceeded) {
		t.Fatalf("first Call: got %+v (err %v), want the queued ask's, DeadlineExceeded", got.Msg, got.Err)
	}
	endHead()
	if got := calls.collect(t, done, 1)[0]; got != head || plugin.CodeOf(got.Err) != plugin.CodeCanceled {
		t.Errorf("the head's Call: got %+v (err %v), want CodeCanceled", got.Msg, got.Err)
	}
	calls.none(t, done)
	t.Logf("the worker took: %q", g.probe.order.get())

	// Partitioned, then healed before the heartbeat timeout: every ask
	// made meanwhile is answered.
	if err := c.Partition("1"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		calls.add(t, dc.GoExecutor(ctx, "1", gtQuery{ID: 10 + i}, done), done)
	}
	select {
	case call := <-done:
		t.Fatalf("a Call arrived across a partition: %+v (err %v)", call.Msg, call.Err)
	default:
	}
	if err := c.Heal("1"); err != nil {
		t.Fatal(err)
	}
	for _, call := range calls.collect(t, done, 3) {
		if a, err := plugin.Reply[gtAnswer](call); err != nil || a.ID != call.Msg.(gtQuery).ID {
			t.Errorf("Call for %+v after Heal: got %+v, %v; want its answer", call.Msg, a, err)
		}
	}
	calls.none(t, done)
}

// 6b. Go from an executor plugin's Shutdown (a final report that wants an
// acknowledgement) is answered: the driver plugins shut down after the
// executors.
func TestGoCallGoFromShutdown(t *testing.T) {
	acks := make(chan error, 2)
	var pcs contexts
	p := fakePlugin{
		name: "final-report",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(context.Context, any) (any, error) { return text("ack"), nil }}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			var pc plugin.ExecutorContext
			return &fakeExecutor{
				InitF: func(ctx context.Context, c plugin.ExecutorContext, conf map[string]string) error {
					pc = c
					return pcs.init(ctx, c, conf)
				},
				ShutdownF: func(ctx context.Context) error {
					c := <-pc.Go(ctx, text("final"), nil).Done
					ack, err := plugin.Reply[text](c)
					if err == nil && ack != "ack" {
						err = fmt.Errorf("got %q, want ack", ack)
					}
					acks <- err
					return nil
				},
			}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-acks; err != nil {
			t.Errorf("Go from Shutdown: %v", err)
		}
	}
	// After Shutdown, Go fails at once with CodeUnavailable, ErrClosed.
	if c := <-pcs.get("1").Go(testCtx(t), text("late"), nil).Done; plugin.CodeOf(c.Err) != plugin.CodeUnavailable || !errors.Is(c.Err, plugin.ErrClosed) {
		t.Errorf("Go after Shutdown: got %v, want CodeUnavailable wrapping ErrClosed", c.Err)
	}
}
