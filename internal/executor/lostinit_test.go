package executor

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// An executor whose driver goes away while its plugins' Init waits on its
// ctx has lost its driver: Run's error wraps ErrDriverLost, as Run's doc
// says, and as it does once the executor is ready. It used to be Init's
// ctx error alone, read as a plugin that failed to initialise. An Init
// that ignores its ctx is abandoned a grace later, and Run returns all
// the same: it used to wait for that Init for ever, and a standalone
// executor outlived its driver, silent.
func TestDriverLostDuringInit(t *testing.T) {
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) })
	tests := []struct {
		name string
		init func(ctx context.Context) error
	}{
		{"Init returns its ctx's error", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		{"Init ignores its ctx", func(context.Context) error { <-unblock; return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			initing := make(chan struct{})
			p := testPlugin{name: "p", ep: &funcExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
				close(initing)
				return tt.init(ctx)
			}}}
			d := newFakeDriver(t, []string{"p"}, 0)
			runErr := d.run(p, nil)
			<-initing
			d.closeConn(errors.New("driver gone"))
			select {
			case err := <-runErr:
				if !errors.Is(err, ErrDriverLost) {
					t.Errorf("Run: got %v, want an error wrapping ErrDriverLost", err)
				}
			case <-time.After(10 * initGrace):
				t.Fatalf("Run did not return within %v of losing its driver during Init", 10*initGrace)
			}
		})
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

// A driver lost once the executor is ready is said at once, before the
// plugins and tasks are shut down: that may take up to ShutdownTimeout (a
// Receive slow to return), and the executor said nothing meanwhile.
func TestDriverLostIsSaidAtOnce(t *testing.T) {
	var logs logtest.Buffer
	said := make(chan bool, 1)
	ep := &funcExecutor{ShutdownF: func(context.Context) error {
		said <- strings.Contains(logs.String(), `level=WARN msg="lost the driver: stopping the plugins and tasks"`)
		return nil
	}}
	d := newFakeDriver(t, []string{"p"}, 0)
	runErr := d.runWith(testPlugin{name: "p", ep: ep}, func(cfg *Config) { cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	d.waitFor(wire.Kind_KIND_READY, 0)
	d.closeConn(errors.New("driver gone"))
	if err := <-runErr; !errors.Is(err, ErrDriverLost) {
		t.Fatalf("Run: got %v, want an error wrapping ErrDriverLost", err)
	}
	if !<-said {
		t.Errorf("the plugins shut down before the executor said it lost its driver; the log:\n%s", logs.String())
	}
}
