package main

import (
	"context"
	"maps"
	"testing"

	"github.com/emberhq/ember/plugin"
)

// askingExecutor is the ExecutorContext an executor plugin's Init gets,
// with Ask answered by the driver plugin in the same process.
type askingExecutor struct {
	plugin.ExecutorContext // nil: the methods Init must not call panic
	id                     string
	driver                 *driverPlugin
}

func (e askingExecutor) ExecutorID() string { return e.id }

func (e askingExecutor) Ask(ctx context.Context, msg any) (any, error) {
	return e.driver.Receive(ctx, msg)
}

// An executor that joins after changes (one started by hand, or a
// local-cluster replacement) holds them once its Init returns, before it
// is ready to run anything: it used to start with the initial settings
// alone, and run tasks with them until OnExecutorAdded's sends arrived.
func TestExecutorJoiningAfterAChangeStartsWithIt(t *testing.T) {
	d := &driverPlugin{settings: map[string]setting{
		"log.level":   {Value: "debug", Version: 1},
		"sample.rate": {Value: "0.5", Version: 3},
		"region":      {Value: "eu"}, // initial, never changed
	}}
	if got := d.changes(); len(got) != 2 || got[0].Version != 1 || got[1].Version != 3 {
		t.Fatalf("changes: got %+v, want the two changed settings, oldest first", got)
	}
	e := &executorPlugin{}
	extra := map[string]string{"log.level": "info", "region": "eu"}
	if err := e.Init(context.Background(), askingExecutor{id: "3", driver: d}, extra); err != nil {
		t.Fatal(err)
	}
	want := map[string]setting{
		"log.level":   {Value: "debug", Version: 1},
		"sample.rate": {Value: "0.5", Version: 3},
		"region":      {Value: "eu"},
	}
	if !maps.Equal(e.settings, want) {
		t.Errorf("settings after Init: got %v, want %v", e.settings, want)
	}
	// OnExecutorAdded's copy of a change it already holds, and an older
	// one arriving late, change nothing.
	e.apply(SetConfig{Key: "log.level", Value: "debug", Version: 1})
	e.apply(SetConfig{Key: "sample.rate", Value: "0.1", Version: 2})
	if !maps.Equal(e.settings, want) {
		t.Errorf("settings after a repeated and an older change: got %v, want %v", e.settings, want)
	}
}
