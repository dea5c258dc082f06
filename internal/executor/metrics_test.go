package executor

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// An executor ships its metrics only when they have changed since the
// last set it shipped: the driver serves that set until another replaces
// it, and an idle executor's unchanged set every interval cost the driver
// a decode (and the link its bytes) for nothing.
func TestUnchangedMetricsAreNotShippedAgain(t *testing.T) {
	p, initialised := contextPlugin("p")
	d := newFakeDriver(t, []string{"p"}, 0)
	d.conf = map[string]string{ConfMetricsInterval: "10ms"}
	runErr := d.run(p, prometheus.NewRegistry())
	pc := <-initialised
	d.waitFor(wire.Kind_KIND_READY, 0)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "jobs_total", Help: "Jobs."})
	var gathers atomic.Int64 // the executor's gathers, each of which may ship
	pc.Metrics().MustRegister(c, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gathers_seen", Help: "Constant."}, func() float64 {
		gathers.Add(1)
		return 1
	}))

	c.Inc()
	i := d.waitForShipped(t, "jobs_total", 1, 0)
	// Two more gathers done, and a third begun, have queued whatever they
	// shipped before this SEND: a marker of that point in the stream.
	from := gathers.Load()
	waitUntil(t, "three more gathers", func() bool { return gathers.Load() >= from+3 })
	if err := pc.Send(context.Background(), note{"marker"}); err != nil {
		t.Fatal(err)
	}
	j := d.waitFor(wire.Kind_KIND_SEND, i+1)
	for _, f := range d.framesBetween(i+1, j) {
		if f.Kind == wire.Kind_KIND_HEARTBEAT && f.Metrics != nil {
			t.Fatalf("unchanged metrics shipped again: got a set of %d families, want none", len(f.Metrics.Families))
		}
	}

	c.Inc()
	d.waitForShipped(t, "jobs_total", 2, j+1)

	d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
	d.waitFor(wire.Kind_KIND_STOPPED, 0)
	d.release()
	if err := <-runErr; err != nil {
		t.Errorf("Run: got %v, want nil (released)", err)
	}
}

// waitForShipped polls, until a deadline, for the first HEARTBEAT from
// index from on that ships counter name at value, and returns its index.
func (d *fakeDriver) waitForShipped(t *testing.T, name string, value float64, from int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := from; ; i++ {
		i = d.waitFor(wire.Kind_KIND_HEARTBEAT, i)
		d.mu.Lock()
		m := d.frames[i].Metrics
		d.mu.Unlock()
		if got, ok := shippedCounter(t, m, name); ok && got == value {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s at %v shipped within 20s", name, value)
		}
	}
}

// shippedCounter is the value of counter name in m, and whether m has it.
func shippedCounter(t *testing.T, m *wire.Metrics, name string) (float64, bool) {
	t.Helper()
	if m == nil {
		return 0, false
	}
	fams, err := metrics.Decode(m)
	if err != nil {
		t.Fatalf("shipped metrics: %v", err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// framesBetween returns the frames received from index i up to j.
func (d *fakeDriver) framesBetween(i, j int) []*wire.Frame {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.frames[i:j])
}
