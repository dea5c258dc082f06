package executor

import (
	"context"
	"errors"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// An executor whose driver goes away while its plugins' Init waits on its
// ctx has lost its driver: Run's error wraps ErrDriverLost, as Run's doc
// says, and as it does once the executor is ready. It used to be Init's
// ctx error alone, read as a plugin that failed to initialise.
func TestDriverLostDuringInit(t *testing.T) {
	initing := make(chan struct{})
	p := testPlugin{name: "p", ep: &funcExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
		close(initing)
		<-ctx.Done()
		return ctx.Err()
	}}}
	d := newFakeDriver(t, []string{"p"}, 0)
	runErr := d.run(p, nil)
	<-initing
	d.closeConn(errors.New("driver gone"))
	if err := <-runErr; !errors.Is(err, ErrDriverLost) {
		t.Errorf("Run: got %v, want an error wrapping ErrDriverLost", err)
	}
}

// A driver lost once the executor is ready: Run's error wraps
// ErrDriverLost and keeps the connection's error, code included
// (plugin.CodeOf gave Unknown: the connection's error was only text).
func TestDriverLostAfterReady(t *testing.T) {
	d := newFakeDriver(t, []string{"p"}, 0)
	runErr := d.run(testPlugin{name: "p", ep: &funcExecutor{}}, nil)
	d.waitFor(wire.Kind_KIND_READY, 0)
	d.closeConn(errors.New("driver gone"))
	err := <-runErr
	if !errors.Is(err, ErrDriverLost) || plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("Run: got %v (code %v), want an error wrapping ErrDriverLost, with code unavailable", err, plugin.CodeOf(err))
	}
}
