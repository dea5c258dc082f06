package metrics

import (
	"google.golang.org/protobuf/proto"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func registry(t testing.TB, executor string, v float64) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "things_total", Help: "Things.", ConstLabels: prometheus.Labels{"executor": executor}})
	c.Add(v)
	reg.MustRegister(c)
	return reg
}

func TestEncodeDecodeStore(t *testing.T) {
	var s Store
	for _, tt := range []struct {
		id string
		v  float64
	}{{"1", 3}, {"2", 4}} {
		m, err := Encode(registry(t, tt.id, tt.v))
		if err != nil {
			t.Fatal(err)
		}
		fams, err := Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		s.Set(tt.id, fams)
	}
	fams, err := s.Gather()
	if err != nil || len(fams) != 1 {
		t.Fatalf("Gather: got %d families, %v; want 1, nil", len(fams), err)
	}
	var sum float64
	for _, m := range fams[0].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	if sum != 7 {
		t.Errorf("sum over executors: got %v, want 7", sum)
	}
	s.Delete("1")
	fams, _ = s.Gather()
	if got := len(fams[0].GetMetric()); got != 1 {
		t.Errorf("after Delete: got %d metrics, want 1", got)
	}
	if m, err := Encode(prometheus.NewRegistry()); m != nil || err != nil {
		t.Errorf("Encode(empty): got %v, %v; want nil, nil", m, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	counter := dto.MetricType_COUNTER
	name := "x"
	tests := []struct {
		name string
		m    *wire.Metrics
	}{
		{"garbage", &wire.Metrics{Families: [][]byte{{0xff, 0xff, 0xff}}}},
		{"no name", mustMarshal(t, &dto.MetricFamily{Type: &counter})},
		{"value of the wrong type", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &counter, Metric: []*dto.Metric{{Gauge: &dto.Gauge{}}}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.m); err == nil {
				t.Error("Decode: got nil error, want one")
			}
		})
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder of executor metrics,
// which come from the network: it must never panic, and what it accepts
// must be servable.
func FuzzDecode(f *testing.F) {
	m, err := Encode(registry(f, "1", 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Families[0])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		fams, err := Decode(&wire.Metrics{Families: [][]byte{b}})
		if err != nil {
			return
		}
		var s Store
		s.Set("1", fams)
		// Inconsistent but well-typed families are reported as an error
		// when gathered, not served; that is fine. A panic is not.
		gs := prometheus.Gatherers{&s}
		_, _ = gs.Gather()
	})
}

func mustMarshal(t *testing.T, f *dto.MetricFamily) *wire.Metrics {
	t.Helper()
	b, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return &wire.Metrics{Families: [][]byte{b}}
}
