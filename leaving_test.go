package ember_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/plugin"
)

// Once an executor has said it is stopping on its own (its process got
// SIGTERM), the driver plugin's calls to it fail with CodeUnavailable and
// ErrClosed (ask another), not ErrShuttingDown, and Broadcast skips it,
// while it is still listed until it has gone. SendExecutor returned nil,
// and the executor, its plugins shutting down, dropped the message: a
// build farm's coordinator re-pushed a leaving agent's jobs to it, and
// they were lost until OnExecutorRemoved.
func TestCallsToAnExecutorStoppingOnItsOwnFail(t *testing.T) {
	var dc plugin.DriverContext
	p := fakePlugin{
		name:      "agent",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
		newExecutor: func() plugin.ExecutorPlugin {
			var id string
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{
					InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
						id = pc.ExecutorID()
						return nil
					},
					// Executor 1 takes its time to stop, so that the test
					// calls it meanwhile.
					ShutdownF: func(ctx context.Context) error {
						if id == "1" {
							<-ctx.Done()
						}
						return nil
					},
				},
				ReceiveF: func(context.Context, any) (any, error) { return text("ok"), nil },
			}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local-cluster[2]", Plugins: []plugin.Plugin{p}, Logger: quiet, ShutdownTimeout: 3 * time.Second})
	ctx := testCtx(t)
	var pid int
	for _, e := range c.Driver.Executors() {
		if e.ID == "1" {
			pid = e.PID
		}
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var sendErr error
	embertest.WaitFor(t, "a SendExecutor to executor 1 to fail", func() bool {
		sendErr = dc.SendExecutor(ctx, "1", text("job"))
		return sendErr != nil
	})
	_, askErr := dc.AskExecutor(ctx, "1", text("job"))
	for _, call := range []struct {
		name string
		err  error
	}{{"SendExecutor", sendErr}, {"AskExecutor", askErr}} {
		if plugin.CodeOf(call.err) != plugin.CodeUnavailable || !errors.Is(call.err, plugin.ErrClosed) || errors.Is(call.err, plugin.ErrShuttingDown) ||
			!strings.HasPrefix(call.err.Error(), "executor 1: ") || !strings.Contains(call.err.Error(), "it is stopping on its own") {
			t.Errorf("%s to an executor stopping on its own: got %v, want CodeUnavailable, ErrClosed (not ErrShuttingDown), saying executor 1 is stopping on its own", call.name, call.err)
		}
	}
	// Listed, and marked: a coordinator pushing work skips it (one that
	// could not tell handed it jobs, and took them back, 46 times).
	stopping := map[string]bool{}
	for _, e := range dc.Executors() {
		stopping[e.ID] = e.Stopping
	}
	if s, listed := stopping["1"]; !listed || !s {
		t.Errorf("executor 1 while it stops: got listed %v, Stopping %v; want it listed until it has gone, with Stopping set", listed, s)
	}
	if s, listed := stopping["2"]; !listed || s {
		t.Errorf("executor 2: got listed %v, Stopping %v; want it listed, not stopping", listed, s)
	}
	if err := dc.Broadcast(ctx, text("to all")); err != nil {
		t.Errorf("Broadcast while executor 1 stops on its own: %v, want nil (it is skipped)", err)
	}
}

// While the driver shuts down, Executors lists its executors until they
// have gone, each with Stopping set: calls to them fail with
// ErrShuttingDown.
func TestExecutorsStoppingWhileTheDriverShutsDown(t *testing.T) {
	var dc plugin.DriverContext
	release := make(chan struct{})
	p := fakePlugin{
		name:      "agent",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
		newExecutor: func() plugin.ExecutorPlugin {
			// Holds the executor's stop until the test has looked.
			return &fakeExecutor{ShutdownF: func(ctx context.Context) error {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	if got := dc.Executors(); len(got) != 1 || got[0].Stopping {
		t.Fatalf("before Close: got %+v, want one executor, not stopping", got)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	embertest.WaitFor(t, "the executor listed as stopping", func() bool {
		got := dc.Executors()
		return len(got) == 1 && got[0].Stopping
	})
	close(release)
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
