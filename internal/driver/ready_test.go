package driver

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

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
