package ember_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/plugin"
)

// concurrentExecutor is an executor plugin whose Receive may run n calls
// at once.
type concurrentExecutor struct {
	receivingExecutor
	n int
}

func (c *concurrentExecutor) MaxConcurrentReceives() int { return c.n }

// An executor plugin that implements ConcurrentReceiver takes the driver's
// messages on that many goroutines: an agent running a pushed job in
// Receive still takes that job's cancel. With one call at a time, the
// cancel waited behind the job for ever.
func TestConcurrentExecutorReceiver(t *testing.T) {
	var dc plugin.DriverContext
	canceled := make(chan struct{})
	finished := make(chan string, 1)
	p := fakePlugin{
		name:      "agent",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
		newExecutor: func() plugin.ExecutorPlugin {
			return &concurrentExecutor{n: 2, receivingExecutor: receivingExecutor{
				ReceiveF: func(ctx context.Context, msg any) (any, error) {
					switch msg {
					case text("job"):
						select {
						case <-canceled:
							finished <- "canceled"
						case <-ctx.Done():
						}
					case text("cancel"):
						close(canceled)
					}
					return nil, nil
				},
			}}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	ctx := testCtx(t)
	for _, m := range []text{"job", "cancel"} {
		if err := dc.SendExecutor(ctx, "1", m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-finished:
		if got != "canceled" {
			t.Errorf("the job ended %q, want canceled", got)
		}
	case <-ctx.Done():
		t.Fatal("the job never took its cancel: the executor's Receive ran one call at a time")
	}
}

// panickyConcurrentExecutor's MaxConcurrentReceives panics.
type panickyConcurrentExecutor struct{ receivingExecutor }

func (panickyConcurrentExecutor) MaxConcurrentReceives() int { panic("bad config") }

// A panic in an executor plugin's MaxConcurrentReceives fails that
// executor's start-up with an error naming the plugin and method, as one
// in its driver plugin's does Run's.
func TestExecutorMaxConcurrentReceivesPanics(t *testing.T) {
	p := fakePlugin{
		name:      "agent",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{} },
		newExecutor: func() plugin.ExecutorPlugin {
			return &panickyConcurrentExecutor{receivingExecutor{ReceiveF: func(context.Context, any) (any, error) { return nil, nil }}}
		},
	}
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet},
		func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
	for _, want := range []string{`"agent"`, "panic in MaxConcurrentReceives", "bad config"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: got %v, want an error containing %q", err, want)
		}
	}
}

// An executor's shutdown does not wait for a job running in a concurrent
// Receive until its ctx ends: the lane's flush waits for what the driver
// sent to have started, then the handlers' ctx ends, and the job returns.
// It waited for the flush's deadline, half of ShutdownTimeout, and logged
// the job as a message not handled in time.
func TestConcurrentExecutorShutdownEndsRunningJob(t *testing.T) {
	var dc plugin.DriverContext
	started := make(chan struct{})
	p := fakePlugin{
		name:      "agent",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
		newExecutor: func() plugin.ExecutorPlugin {
			return &concurrentExecutor{n: 4, receivingExecutor: receivingExecutor{
				ReceiveF: func(ctx context.Context, msg any) (any, error) {
					close(started)
					<-ctx.Done() // a job, until canceled
					return nil, nil
				},
			}}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, ShutdownTimeout: time.Hour})
	ctx := testCtx(t)
	if err := dc.SendExecutor(ctx, "1", text("job")); err != nil {
		t.Fatal(err)
	}
	<-started
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the shutdown waited for the running job (its ShutdownTimeout is an hour)")
	}
}
