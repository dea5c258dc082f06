package executor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// receiver is an executor plugin side that answers every message with nil.
type receiver struct{ funcExecutor }

func (*receiver) Receive(context.Context, any) (any, error) { return nil, nil }

// An ASK that reaches an executor stopping on its own after its plugin's
// lane has closed (the driver sent it before it had the executor's
// LEAVING) is refused as closed: the driver's ask fails with ErrClosed, as
// one to an executor that has gone does, and a coordinator asks another.
// It used to fail with a plain CodeUnavailable error.
func TestAskAfterItsLaneClosedFailsWithErrClosed(t *testing.T) {
	shuttingDown := make(chan struct{})
	release := make(chan struct{})
	p := testPlugin{name: "p", ep: &receiver{funcExecutor{ShutdownF: func(context.Context) error {
		close(shuttingDown)
		<-release // the stream stays up meanwhile
		return nil
	}}}}
	d := newFakeDriver(t, []string{"p"}, 0)
	ctx, stop := context.WithCancel(context.Background())
	runErr := d.runIn(ctx, p, func(*Config) {})
	d.waitFor(wire.Kind_KIND_READY, 0)
	stop()
	d.waitFor(wire.Kind_KIND_LEAVING, 0)
	select {
	case <-shuttingDown: // the lanes close before the plugins' Shutdown runs
	case <-time.After(20 * time.Second):
		t.Fatal("the plugin's Shutdown was not called within 20s")
	}
	d.mu.Lock()
	c := d.conn
	d.mu.Unlock()
	askCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.Ask(askCtx, &wire.Frame{Plugin: 0})
	if err == nil {
		_, err = rpc.Result(r)
	}
	close(release)
	if plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) || !strings.Contains(err.Error(), `executor plugin "p" has shut down`) {
		t.Errorf("ask after the lane closed: got %v, want Unavailable matching ErrClosed, saying the plugin has shut down", err)
	}
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: got %v, want its ctx's end (stopped on its own)", err)
	}
}
