package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
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

// partial is a gatherer that gathers some families and fails for others,
// as a registry does when one collector misbehaves.
type partial struct{ prometheus.Gatherer }

func (p partial) Gather() ([]*dto.MetricFamily, error) {
	fams, _ := p.Gatherer.Gather()
	return fams, errors.New("collected metric \"x\" was collected before with the same name and label values")
}

// A partial gather is encoded all the same, and its error returned with it
// for the caller to report. The error used to be dropped.
func TestEncodePartialGather(t *testing.T) {
	m, err := Encode(partial{registry(t, "1", 1)})
	if m == nil || len(m.Families) != 1 {
		t.Errorf("Encode(partial gather): got %v, want the family gathered", m)
	}
	if err == nil {
		t.Error("Encode(partial gather): got no error, want the gather's")
	}
}

// label returns a label pair.
func label(name, value string) *dto.LabelPair { return &dto.LabelPair{Name: &name, Value: &value} }

func TestDecodeRejects(t *testing.T) {
	counter, histogram, summary := dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY
	name := "x"
	one := func(labels ...*dto.LabelPair) []*dto.Metric {
		return []*dto.Metric{{Label: labels, Counter: &dto.Counter{}}}
	}
	tests := []struct {
		name string
		m    *wire.Metrics
	}{
		{"garbage", &wire.Metrics{Families: [][]byte{{0xff, 0xff, 0xff}}}},
		{"no name", mustMarshal(t, &dto.MetricFamily{Type: &counter})},
		{"value of the wrong type", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &counter, Metric: []*dto.Metric{{Gauge: &dto.Gauge{}}}})},
		// Each of these made the driver's whole /metrics unparseable.
		{"a label repeated, not side by side", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &counter, Metric: one(label("a", "1"), label("executor", "9"), label("a", "2"))})},
		{"the executor label twice", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &counter, Metric: one(label("executor", "1"), label("executor", "2"))})},
		{"a histogram's own le", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &histogram, Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("le", "oops")}, Histogram: &dto.Histogram{}}}})},
		{"a summary's own quantile", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &summary, Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("quantile", "x")}, Summary: &dto.Summary{}}}})},
		{"a label name that is not UTF-8", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &counter, Metric: one(label("a\xff", "v"))})},
		{"a label value that is not UTF-8", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &counter, Metric: one(label("a", "v\xff"))})},
		{"a name that is not UTF-8", mustMarshal(t, &dto.MetricFamily{Name: proto.String("x\x95"), Type: &counter, Metric: one()})},
		{"a reserved label name", mustMarshal(t, &dto.MetricFamily{Name: &name, Type: &counter, Metric: one(label("__name__", "v"))})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fams, err := Decode(tt.m)
			if err == nil || len(fams) != 0 {
				t.Errorf("Decode: got %d families and error %v, want none and an error", len(fams), err)
			}
		})
	}
}

// One bad family costs only itself: the others in the same heartbeat are
// kept and served.
func TestDecodeKeepsTheValidFamilies(t *testing.T) {
	counter := dto.MetricType_COUNTER
	good, bad := "good_total", "bad_total"
	v := 3.0
	m := &wire.Metrics{}
	for _, f := range []*dto.MetricFamily{
		{Name: &bad, Type: &counter, Metric: []*dto.Metric{{Label: []*dto.LabelPair{label("a", "1"), label("a", "2")}, Counter: &dto.Counter{Value: &v}}}},
		{Name: &good, Type: &counter, Metric: []*dto.Metric{{Counter: &dto.Counter{Value: &v}}}},
	} {
		m.Families = append(m.Families, mustMarshal(t, f).Families...)
	}
	fams, err := Decode(m)
	if err == nil {
		t.Error("Decode: got nil error, want one naming the bad family")
	}
	if len(fams) != 1 || fams[0].GetName() != good {
		t.Fatalf("Decode kept %v, want only %s", fams, good)
	}
}

// Executors that disagree with each other on a family's type or help (two
// builds of a plugin, say) cannot both be served under its one name: the
// first executor's is, the other's is left out, and the error says so, for
// the /metrics handler to log, as the README promises. The other's series
// used to vanish without a word, and a differing help to be replaced
// silently.
func TestStoreReportsExecutorsThatDisagree(t *testing.T) {
	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	family := func(typ *dto.MetricType, help string) []*dto.MetricFamily {
		name, v := "jobs", 1.0
		m := &dto.Metric{Counter: &dto.Counter{Value: &v}}
		if *typ == gauge {
			m = &dto.Metric{Gauge: &dto.Gauge{Value: &v}}
		}
		return []*dto.MetricFamily{{Name: &name, Help: &help, Type: typ, Metric: []*dto.Metric{m}}}
	}
	tests := []struct {
		name    string
		second  []*dto.MetricFamily
		wantErr string // "" for none
		want    int    // metrics served
	}{
		{"agree", family(&counter, "Jobs."), "", 2},
		{"type", family(&gauge, "Jobs."), "executor 2's metric family jobs left out: it is a GAUGE, executor 1's a COUNTER", 1},
		{"help", family(&counter, "Other."), `executor 2's metric family jobs left out: its help is "Other.", executor 1's "Jobs."`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Store
			first := family(&counter, "Jobs.")
			SetLabel(first, "executor", "1")
			SetLabel(tt.second, "executor", "2")
			s.Set("1", first)
			s.Set("2", tt.second)
			fams, err := s.Gather()
			if got := fmt.Sprint(err); tt.wantErr == "" && err != nil || tt.wantErr != "" && got != tt.wantErr {
				t.Errorf("Gather error: got %v, want %q", err, tt.wantErr)
			}
			if len(fams) != 1 || len(fams[0].GetMetric()) != tt.want {
				t.Fatalf("Gather: got %v, want one family of %d metrics", fams, tt.want)
			}
			if got := fams[0].GetType(); got != counter {
				t.Errorf("served type: got %v, want %v (executor 1's)", got, counter)
			}
		})
	}
}

// Two scrapes at once of a stored executor's metrics whose labels arrived
// unsorted used to race: the prometheus library sorted the shared labels
// in place. SetLabel leaves them sorted.
func TestConcurrentScrapes(t *testing.T) {
	counter := dto.MetricType_COUNTER
	name := "x_total"
	v := 1.0
	fams := []*dto.MetricFamily{{Name: &name, Type: &counter, Metric: []*dto.Metric{
		{Label: []*dto.LabelPair{label("z", "1"), label("b", "2")}, Counter: &dto.Counter{Value: &v}},
	}}}
	SetLabel(fams, "executor", "1")
	var s Store
	s.Set("1", fams)
	g := prometheus.Gatherers{&s}
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := g.Gather()
			done <- err
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
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
		SetLabel(fams, "executor", "1")
		var s Store
		s.Set("1", fams)
		// Inconsistent but well-typed families are reported as an error
		// when gathered, and left out; that is fine. A panic is not, and
		// what is served must parse.
		gs := prometheus.Gatherers{&s}
		served, _ := gs.Gather()
		var text bytes.Buffer
		for _, f := range served {
			if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
				t.Fatalf("served family %s cannot be written: %v", f.GetName(), err)
			}
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := parser.TextToMetricFamilies(&text); err != nil {
			t.Fatalf("served exposition does not parse: %v\n%s", err, text.String())
		}
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

// A plugin's registerer adds the labels plugin and executor; a metric of
// the plugin's own using either name cannot be registered, and the error
// says why. Prometheus's alone spoke of duplicate labels, naming neither.
func TestPluginRegisterer(t *testing.T) {
	tests := []struct {
		label   string
		wantErr bool
	}{
		{"worker", false},
		{"executor", true},
		{"plugin", true},
	}
	for _, tt := range tests {
		t.Run(tt.label, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			r := PluginRegisterer(reg, "crawl", "3")
			c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pages_total", Help: "Pages."}, []string{tt.label})
			err := r.Register(c)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				c.WithLabelValues("a").Inc()
				fams, err := reg.Gather()
				if err != nil || len(fams) != 1 {
					t.Fatalf("Gather: %v, %d families", err, len(fams))
				}
				got := map[string]string{}
				for _, lp := range fams[0].GetMetric()[0].GetLabel() {
					got[lp.GetName()] = lp.GetValue()
				}
				if want := map[string]string{"plugin": "crawl", "executor": "3", "worker": "a"}; !maps.Equal(got, want) {
					t.Errorf("labels: got %v, want %v", got, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), `Ember adds the labels "plugin" and "executor"`) {
				t.Errorf("Register with label %q: got %v, want an error saying Ember adds that label", tt.label, err)
			}
			func() {
				defer func() {
					if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "Ember adds") {
						t.Errorf("MustRegister with label %q: panic %v, want the same error", tt.label, p)
					}
				}()
				r.MustRegister(c)
			}()
		})
	}
}

// A constant label named plugin or executor fails as a variable one does,
// with the same hint; Prometheus's error alone spoke of wrapping.
func TestPluginRegistererConstLabel(t *testing.T) {
	for _, label := range []string{"plugin", "executor"} {
		r := PluginRegisterer(prometheus.NewRegistry(), "crawl", "3")
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "pages_total", Help: "Pages.", ConstLabels: prometheus.Labels{label: "x"}})
		if err := r.Register(c); err == nil || !strings.Contains(err.Error(), `Ember adds the labels "plugin" and "executor"`) {
			t.Errorf("const label %q: got %v, want the error saying Ember adds it", label, err)
		}
	}
}

// A plugin's metric named in Ember's namespace is refused, however it is
// described: on an executor nothing stopped it, and the driver served it
// in Ember's own family (ember_tasks_total, under a plugin's help text).
// Names that merely contain "ember" are the plugin's.
func TestPluginRegistererRefusesEmberNames(t *testing.T) {
	desc := prometheus.NewDesc("ember_tasks_total", "h", nil, nil)
	tests := []struct {
		name    string
		c       prometheus.Collector
		wantErr bool
	}{
		{"counter", prometheus.NewCounter(prometheus.CounterOpts{Name: "ember_tasks_total", Help: "h"}), true},
		{"namespace option", prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ember", Name: "x_total", Help: "h"}), true},
		{"collector func", prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, 1)
		}), true},
		{"custom collector", panicky{desc}, true},
		{"the plugin's own", prometheus.NewCounter(prometheus.CounterOpts{Name: "crawl_ember_total", Help: "h"}), false},
		{"embers", prometheus.NewCounter(prometheus.CounterOpts{Name: "embers_total", Help: "h"}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := PluginRegisterer(prometheus.NewRegistry(), "crawl", "3").Register(tt.c)
			if tt.wantErr != (err != nil) || err != nil && !strings.Contains(err.Error(), "the ember_ prefix is Ember's own") {
				t.Errorf("Register: got %v, want an error: %v (saying the ember_ prefix is Ember's own)", err, tt.wantErr)
			}
		})
	}
}

// panicky is a collector that sends one metric, then panics in Collect.
type panicky struct{ desc *prometheus.Desc }

func (p panicky) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }
func (p panicky) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, 1)
	panic("collect boom")
}

// A plugin's collector that panics, in Collect or in a metric's Write (a
// GaugeFunc's function), costs its own series and a gather error naming
// the plugin: the registry runs collectors on goroutines of its own, and
// the panic used to end the process. A collector registered twice is
// reported with the plugin's own collector, as the registry does.
func TestPluginCollectorPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := PluginRegisterer(reg, "p", "1")
	ok := prometheus.NewCounter(prometheus.CounterOpts{Name: "ok_total", Help: "ok"})
	r.MustRegister(ok,
		panicky{prometheus.NewDesc("collect_panics", "h", nil, nil)},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "write_panics", Help: "h"}, func() float64 { panic("write boom") }))
	fams, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), `plugin "p"`) || !strings.Contains(err.Error(), "collect boom") || !strings.Contains(err.Error(), "write boom") {
		t.Errorf("Gather error: got %v, want both panics, naming the plugin", err)
	}
	if !slices.ContainsFunc(fams, func(f *dto.MetricFamily) bool { return f.GetName() == "ok_total" }) {
		t.Errorf("Gather: got %v, want the plugin's other metric", fams)
	}
	var are prometheus.AlreadyRegisteredError
	if err := r.Register(ok); !errors.As(err, &are) || are.ExistingCollector != ok {
		t.Errorf("registering a collector twice: got %v, want AlreadyRegisteredError with the plugin's own collector", err)
	}
	if !r.Unregister(ok) {
		t.Error("Unregister of the plugin's collector: got false")
	}
}

// "First in ID order" is the driver's order, numeric: executor 2's type
// is served, not executor 10's (which sorts first as text).
func TestStoreServesTheFirstExecutorByNumber(t *testing.T) {
	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	family := func(typ *dto.MetricType) []*dto.MetricFamily {
		name, help, v := "jobs", "Jobs.", 1.0
		m := &dto.Metric{Counter: &dto.Counter{Value: &v}}
		if *typ == gauge {
			m = &dto.Metric{Gauge: &dto.Gauge{Value: &v}}
		}
		return []*dto.MetricFamily{{Name: &name, Help: &help, Type: typ, Metric: []*dto.Metric{m}}}
	}
	var s Store
	s.Set("2", family(&counter))
	s.Set("10", family(&gauge))
	fams, err := s.Gather()
	if len(fams) != 1 || fams[0].GetType() != counter {
		t.Fatalf("Gather: got %v, want executor 2's counter", fams)
	}
	if want := "executor 10's metric family jobs left out: it is a GAUGE, executor 2's a COUNTER"; fmt.Sprint(err) != want {
		t.Errorf("Gather error: got %v, want %q", err, want)
	}
}

// A joined executor's limit series are served at 0 until it ships them,
// and the ones it ships are served as shipped: an alert on an increase
// sees its first hit. The zeros are made at scrape time: an executor
// shipping them made every heartbeat of a thousand executors carry them.
func TestStoreServesJoinedExecutorsLimitsAtZero(t *testing.T) {
	var s Store
	s.Join("1")
	s.Join("2")
	hits := NewLimitHits(prometheus.Labels{"executor": "2"})
	hits.WithLabelValues("send_window").Add(3)
	reg := prometheus.NewRegistry()
	reg.MustRegister(hits)
	m, err := Encode(reg)
	if err != nil {
		t.Fatal(err)
	}
	fams, err := Decode(m)
	if err != nil {
		t.Fatal(err)
	}
	s.Set("2", fams)
	s.Set("3", nil) // shipped, never joined (a test's Store): no zeros
	got := map[string]float64{}
	gathered, err := s.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range gathered {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			got[f.GetName()+"/"+labels["executor"]+"/"+labels["limit"]] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{}
	for _, id := range []string{"1", "2"} {
		for _, limit := range executorLimits {
			want["ember_limit_hits_total/"+id+"/"+limit] = 0
		}
	}
	want["ember_limit_hits_total/2/send_window"] = 3
	if !maps.Equal(got, want) {
		t.Errorf("Gather: got %v, want %v", got, want)
	}
	s.Delete("1")
	if gathered, _ := s.Gather(); len(gathered) != 1 || len(gathered[0].GetMetric()) != len(executorLimits) {
		t.Errorf("Gather after executor 1 went: got %v, want executor 2's %d series only", gathered, len(executorLimits))
	}
}

// unchecked is a collector that describes nothing (an "unchecked"
// collector, which the registry takes without looking at its names) and
// collects metrics of descs.
type unchecked struct{ descs []*prometheus.Desc }

func (unchecked) Describe(chan<- *prometheus.Desc) {}
func (u unchecked) Collect(ch chan<- prometheus.Metric) {
	for _, d := range u.descs {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, 1)
	}
}

// A plugin's metric named in Ember's namespace is not served either when
// its collector describes nothing at Register (an unchecked collector, or
// a CollectorFunc with no series yet), which Register cannot refuse: the
// gather leaves it out with an error naming the plugin, and keeps the
// plugin's other series.
func TestPluginUncheckedCollectorEmberNamesLeftOut(t *testing.T) {
	own := prometheus.NewDesc("crawl_pages_total", "h", nil, nil)
	reserved := prometheus.NewDesc("ember_tasks_total", "h", nil, nil)
	var later []*prometheus.Desc // a CollectorFunc's series, none at Register
	tests := []struct {
		name string
		c    prometheus.Collector
		set  func() // before the gather
	}{
		{"unchecked collector", unchecked{[]*prometheus.Desc{own, reserved}}, func() {}},
		{"collector func with no series at Register", prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
			unchecked{later}.Collect(ch)
		}), func() { later = []*prometheus.Desc{own, reserved} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			if err := PluginRegisterer(reg, "crawl", "3").Register(tt.c); err != nil {
				t.Fatalf("Register: got %v, want nil (nothing described)", err)
			}
			tt.set()
			fams, err := reg.Gather()
			var names []string
			for _, f := range fams {
				names = append(names, f.GetName())
			}
			if want := []string{"crawl_pages_total"}; !slices.Equal(names, want) {
				t.Errorf("Gather: got families %v, want %v", names, want)
			}
			if err == nil || !strings.Contains(err.Error(), `plugin "crawl"`) || !strings.Contains(err.Error(), "the ember_ prefix is Ember's own") {
				t.Errorf("Gather error: got %v, want one naming the plugin and saying the ember_ prefix is Ember's own", err)
			}
		})
	}
}
