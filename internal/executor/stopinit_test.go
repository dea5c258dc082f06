package executor

import (
	"context"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// An executor that the driver releases (STOP) while its plugins' Init
// runs, ending Init's ctx, answers STOPPED and, once released, its Run
// returns nil, as for any release (its process exits 0). It used to send a
// failed READY, which the driver logged as an executor that failed to
// initialise, and Run failed with Init's ctx error: the process exited 1,
// and a supervisor restarted it.
// An Init that ignores its ctx is abandoned a grace after its ctx ends,
// and the release goes on: it waited for that Init for ever.
func TestStopDuringInitIsARelease(t *testing.T) {
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) })
	tests := []struct {
		name string
		init func(ctx context.Context) error
	}{
		{"Init returns its ctx's error", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }},
		{"Init returns nil", func(ctx context.Context) error { <-ctx.Done(); return nil }},
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
			d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
			select {
			case err := <-runErr:
				t.Fatalf("Run returned %v before its release; frames from the executor: %v", err, d.kinds())
			case <-d.stopped():
			}
			d.release()
			if err := <-runErr; err != nil {
				t.Errorf("Run: got %v, want nil (released)", err)
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			for _, f := range d.frames {
				if f.Kind == wire.Kind_KIND_READY && f.Code != 0 {
					t.Errorf("the executor reported an Init failure when released: %v: %s", plugin.Code(f.Code), f.Error)
				}
			}
		})
	}
}
