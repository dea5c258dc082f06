package metrics

import (
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// builtinVecs are an executor's built-in vectors, deferred.
type builtinVecs struct {
	hits, dropped Vec[prometheus.Counter]
	lanes         Vec[prometheus.Gauge]
}

// Deferred vectors join the registry with the first series of any of
// them, all together. Until then the registry holds nothing, and
// gathering it allocates nothing: it allocated about 32 KB a gather, every
// metrics interval of every executor.
func TestDeferred(t *testing.T) {
	tests := []struct {
		name           string
		use            func(v builtinVecs)
		wantFamilies   []string
		wantRegistered bool
	}{
		{"no series made", func(builtinVecs) {}, nil, false},
		{"a series deleted, none made", func(v builtinVecs) { v.lanes.DeleteLabelValues("p") }, nil, false},
		{"a counter", func(v builtinVecs) { v.hits.WithLabelValues("message_size").Inc() },
			[]string{"ember_limit_hits_total"}, true},
		{"a gauge, then another vector's counter", func(v builtinVecs) {
			v.lanes.WithLabelValues("p").Set(1)
			v.dropped.WithLabelValues("p", "no_plugin").Inc()
		}, []string{"ember_lane_stalled", "ember_messages_dropped_total"}, true},
		{"a series made, then deleted", func(v builtinVecs) {
			v.lanes.WithLabelValues("p").Set(1)
			v.lanes.DeleteLabelValues("p")
		}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			d := NewDeferred(reg, func(err error) { t.Errorf("registering: %v", err) })
			own := prometheus.Labels{"executor": "1"}
			v := builtinVecs{
				hits:    Defer(d, NewLimitHits(own)),
				dropped: Defer(d, NewDropped(own)),
				lanes:   Defer(d, NewLaneStalled(own)),
			}
			tt.use(v)
			fams, err := reg.Gather()
			if err != nil {
				t.Fatalf("Gather: %v", err)
			}
			var got []string
			for _, f := range fams {
				got = append(got, f.GetName())
			}
			if !slices.Equal(got, tt.wantFamilies) {
				t.Errorf("families gathered: got %q, want %q", got, tt.wantFamilies)
			}
			if !tt.wantRegistered {
				if allocs := testing.AllocsPerRun(10, func() { _, _ = reg.Gather() }); allocs != 0 {
					t.Errorf("gathering the registry: got %v allocations, want 0", allocs)
				}
			}
			// Registering one of them again fails once it is registered
			// (every one of them: a probe of each).
			for _, c := range []prometheus.Collector{NewLimitHits(own), NewDropped(own), NewLaneStalled(own)} {
				err := reg.Register(c)
				var are prometheus.AlreadyRegisteredError
				if got := errors.As(err, &are); got != tt.wantRegistered {
					t.Errorf("registered: got %v, want %v (probe's Register: %v)", got, tt.wantRegistered, err)
				}
			}
		})
	}
}

// A registration that fails is reported, once.
func TestDeferredRegistrationError(t *testing.T) {
	reg := prometheus.NewRegistry()
	own := prometheus.Labels{"executor": "1"}
	reg.MustRegister(NewLimitHits(own))
	var errs []error
	d := NewDeferred(reg, func(err error) { errs = append(errs, err) })
	hits := Defer(d, NewLimitHits(own))
	hits.WithLabelValues("message_size").Inc()
	hits.WithLabelValues("send_queue").Inc()
	if len(errs) != 1 {
		t.Fatalf("errors reported: got %d (%v), want 1", len(errs), errs)
	}
	var are prometheus.AlreadyRegisteredError
	if !errors.As(errs[0], &are) {
		t.Errorf("error reported: got %v, want an AlreadyRegisteredError", errs[0])
	}
}
