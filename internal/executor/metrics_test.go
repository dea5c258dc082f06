package executor

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/metrics"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
)

// An executor whose plugins register no metrics holds nothing in its
// registry until one of its built-in series is made: gathering it every
// metrics interval then costs nothing, where the built-in vectors,
// registered up front with no series, cost about 32 KB a gather. The first
// series registers them, and it is gathered.
func TestIdleExecutorRegistersNoMetrics(t *testing.T) {
	p, initialised := contextPlugin("p")
	d := newFakeDriver(t, []string{"p"}, 0)
	reg := prometheus.NewRegistry()
	runErr := d.runWith(p, func(cfg *Config) {
		cfg.Registry = reg
		cfg.MaxMessageBytes = 64
	})
	pc := <-initialised
	d.waitFor(wire.Kind_KIND_READY, 0)

	own := prometheus.Labels{"executor": "1"}
	// registered counts the built-in vectors in reg, probing each with
	// a collector of the same name.
	registered := func() int {
		n := 0
		for _, c := range []prometheus.Collector{metrics.NewLimitHits(own), metrics.NewDropped(own), metrics.NewLaneStalled(own)} {
			var are prometheus.AlreadyRegisteredError
			switch err := reg.Register(c); {
			case errors.As(err, &are):
				n++
			case err == nil:
				reg.Unregister(c)
			default:
				t.Fatalf("probe: %v", err)
			}
		}
		return n
	}
	if got := registered(); got != 0 {
		t.Errorf("built-in vectors registered by an idle executor: got %d, want 0", got)
	}

	err := pc.Send(context.Background(), note{strings.Repeat("x", 100)}) // over MaxMessageBytes
	if !errors.Is(err, plugin.ErrMessageTooLarge) {
		t.Fatalf("oversized Send: got %v, want ErrMessageTooLarge", err)
	}
	if got := limitHits(t, reg, "message_size"); got != 1 {
		t.Errorf("ember_limit_hits_total{limit=message_size}: got %v, want 1", got)
	}
	if got := registered(); got != 3 {
		t.Errorf("built-in vectors registered after a limit hit: got %d, want 3", got)
	}

	d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
	d.waitFor(wire.Kind_KIND_STOPPED, 0)
	d.release()
	if err := <-runErr; err != nil {
		t.Errorf("Run: got %v, want nil (released)", err)
	}
}
