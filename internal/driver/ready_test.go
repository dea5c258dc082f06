package driver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// readyDriver returns a driver with one connected executor that has not
// sent READY yet, and that READY.
func readyDriver(t *testing.T) (*Driver, *execState, *wire.Frame) {
	t.Helper()
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoReplacements: true})
	if err != nil {
		t.Fatal(err)
	}
	es := &execState{ctx: context.Background(), log: d.log, info: plugin.ExecutorInfo{ID: "1"}, stopped: make(chan struct{})}
	d.mu.Lock()
	d.execs[es.info.ID] = es
	d.mu.Unlock()
	return d, es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 2}}
}

// schedulerHas reports whether d's scheduler counts es.
func schedulerHas(d *Driver, es *execState) bool {
	d.sched.mu.Lock()
	defer d.sched.mu.Unlock()
	for _, e := range d.sched.execs {
		if e == es {
			return true
		}
	}
	return false
}

// An executor is seen ready (WaitExecutors returns, so the driver function
// starts) only once the scheduler has it: a Map started at that moment
// runs, instead of failing for want of executors on a local master.
func TestReadyReachesTheSchedulerFirst(t *testing.T) {
	d, es, ready := readyDriver(t)
	d.sched.mu.Lock() // the scheduler is busy: ready must wait for it before announcing
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		d.ready(es, ready)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := d.WaitExecutors(ctx, 1)
	d.sched.mu.Unlock()
	if err == nil {
		t.Fatal("WaitExecutors saw the executor ready before the scheduler had it")
	}
	<-handled
	if err := d.WaitExecutors(context.Background(), 1); err != nil {
		t.Fatalf("WaitExecutors after READY: %v", err)
	}
	if !schedulerHas(d, es) {
		t.Error("the scheduler does not have the ready executor")
	}
}

// A READY handled as the connection closes (HandleClose ran first, saw
// the executor not ready, and left the scheduler alone) leaves no dead
// executor in the scheduler for tasks to wait on.
func TestReadyAfterCloseLeavesTheSchedulerClean(t *testing.T) {
	d, es, ready := readyDriver(t)
	d.mu.Lock()
	delete(d.execs, es.info.ID) // what HandleClose does first
	d.mu.Unlock()
	d.ready(es, ready)
	if schedulerHas(d, es) {
		t.Error("a closed executor is in the scheduler after its READY")
	}
	if es.ready {
		t.Error("a closed executor is marked ready")
	}
}

// pauseOnLog is a slog handler that stops the goroutine logging msg until
// released: a way into the middle of a driver method.
type pauseOnLog struct {
	msg              string
	reached, release chan struct{}
}

func (p pauseOnLog) Enabled(context.Context, slog.Level) bool { return true }
func (p pauseOnLog) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p pauseOnLog) WithGroup(string) slog.Handler            { return p }
func (p pauseOnLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == p.msg {
		close(p.reached)
		<-p.release
	}
	return nil
}

// membership records a listener's events.
type membership struct {
	mu     sync.Mutex
	events []string
}

func (m *membership) Name() string                          { return "members" }
func (m *membership) DriverPlugin() plugin.DriverPlugin     { return m }
func (m *membership) ExecutorPlugin() plugin.ExecutorPlugin { return nil }
func (m *membership) Init(context.Context, plugin.DriverContext) (map[string]string, error) {
	return nil, nil
}
func (m *membership) Receive(context.Context, any) (any, error) { return nil, nil }
func (m *membership) Shutdown(context.Context) error            { return nil }
func (m *membership) OnExecutorAdded(_ context.Context, e plugin.ExecutorInfo) {
	m.record("added " + e.ID)
}
func (m *membership) OnExecutorRemoved(_ context.Context, e plugin.ExecutorInfo, _ error) {
	m.record("removed " + e.ID)
}
func (m *membership) record(ev string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, ev)
}

// An executor whose connection closes on another goroutine (a failed
// write, a heartbeat timeout) while its READY is being handled is removed
// after it was added, for every listener: the events used to be queued
// outside the lock, and OnExecutorRemoved could come first, leaving the
// plugin believing a dead executor alive.
func TestRemovedNeverPrecedesAdded(t *testing.T) {
	pause := pauseOnLog{msg: "executor ready", reached: make(chan struct{}), release: make(chan struct{})}
	m := &membership{}
	d, err := New(Config{Logger: slog.New(pause), Plugins: []plugin.Plugin{m}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	es := &execState{ctx: context.Background(), log: d.log, info: plugin.ExecutorInfo{ID: "1"}, stopped: make(chan struct{})}
	c := rpc.New(nil, nil, d, rpc.Options{}) // never started: only closed
	c.Peer = es
	es.conn = c
	d.mu.Lock()
	d.execs["1"] = es
	d.mu.Unlock()

	handled := make(chan struct{})
	go func() { // the reader, handling READY
		defer close(handled)
		d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
	}()
	<-pause.reached
	d.HandleClose(c, errors.New("stream send: peer disconnected"))
	close(pause.release)
	<-handled
	for _, e := range d.endpoints {
		if err := e.lane.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if want := []string{"added 1", "removed 1"}; !slices.Equal(m.events, want) {
		t.Errorf("listener events: got %v, want %v", m.events, want)
	}
	if n := len(d.Executors()); n != 0 {
		t.Errorf("executors listed: %d, want 0", n)
	}
}
