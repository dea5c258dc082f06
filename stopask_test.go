package ember_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/plugin"
)

type stopAskPing struct{ N int }

func init() { plugin.RegisterMessage[stopAskPing]() }

type stopAskDriver struct {
	plugin.BaseDriverPlugin
	entered chan struct{}
}

// Receive waits on its ctx, as a long poll does, and answers with its end.
func (d *stopAskDriver) Receive(ctx context.Context, _ any) (any, error) {
	d.entered <- struct{}{}
	<-ctx.Done()
	return nil, context.Cause(ctx)
}

type stopAskExecutor struct {
	plugin.BaseExecutorPlugin
	useGo bool // ask with Go rather than Ask
	res   chan error
}

func (e *stopAskExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	if e.useGo {
		c := pc.Go(context.Background(), stopAskPing{}, nil)
		go func() { e.res <- (<-c.Done).Err }()
		return nil
	}
	go func() {
		_, err := pc.Ask(context.Background(), stopAskPing{})
		e.res <- err
	}()
	return nil
}

type stopAskPlugin struct {
	d *stopAskDriver
	e *stopAskExecutor
}

func (stopAskPlugin) Name() string                            { return "stop-ask" }
func (p stopAskPlugin) DriverPlugin() plugin.DriverPlugin     { return p.d }
func (p stopAskPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return p.e }

// An ask still waiting for the driver when its executor stops fails as an
// ask after the plugin's Shutdown does (CodeUnavailable, ErrClosed), not
// with a CodeCanceled that the asker, whose ctx never ended, would take for
// its own cancel. The same holds for an ask made with Go.
func TestAskInFlightAtExecutorStop(t *testing.T) {
	for i := range 10 {
		useGo := i%2 == 1
		p := stopAskPlugin{d: &stopAskDriver{entered: make(chan struct{}, 1)}, e: &stopAskExecutor{useGo: useGo, res: make(chan error, 1)}}
		c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}})
		<-p.d.entered
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-p.e.res:
			if plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) || errors.Is(err, context.Canceled) {
				t.Fatalf("ask in flight at stop (Go: %v): %v (code %v), want CodeUnavailable wrapping ErrClosed", useGo, err, plugin.CodeOf(err))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("ask in flight at stop never returned")
		}
	}
}
