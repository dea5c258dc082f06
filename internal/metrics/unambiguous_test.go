package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// A scraper that takes no UTF-8 names (Prometheus 2, curl) reads them
// escaped, "a b" as a_b: an executor's family whose name escapes to
// another's made the driver's whole /metrics unparseable for it (two TYPE
// lines for ember_limit_hits_total, found by FuzzServe), and so did two
// labels of one series that escape alike. The family is left out, the
// driver's own kept, and the exposition parses.
func TestUnambiguousNames(t *testing.T) {
	counter := func(name string, labels ...string) []byte {
		typ, v := dto.MetricType_COUNTER, 1.0
		m := &dto.Metric{Counter: &dto.Counter{Value: &v}}
		for _, l := range labels {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l), Value: proto.String("v")})
		}
		b, err := proto.Marshal(&dto.MetricFamily{Name: &name, Type: &typ, Metric: []*dto.Metric{m}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fams, err := Decode(&wire.Metrics{Families: [][]byte{
		counter("ember limit hits total", "limit"),
		counter("a.b_total"),
		counter("a b_total"),
		counter("labels_total", "x y", "x_y"),
	}})
	if err == nil || !strings.Contains(err.Error(), `label "x_y" repeated`) || len(fams) != 3 {
		t.Fatalf("Decode: %d families, %v; want 3, and labels_total refused for its labels", len(fams), err)
	}
	SetLabel(fams, "executor", "1")
	var s Store
	s.Set("1", fams)
	reg := prometheus.NewRegistry()
	NewBuiltin(reg).LimitHits.WithLabelValues("driver", "send_queue").Inc()
	h := promhttp.HandlerFor(Unambiguous(prometheus.Gatherers{reg, &s}), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept", "text/plain")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	limits := parsed["ember_limit_hits_total"]
	if limits == nil || len(limits.Metric) == 0 {
		t.Fatalf("the driver's ember_limit_hits_total is not served")
	}
	for _, m := range limits.Metric {
		for _, l := range m.Label {
			if l.GetName() == "executor" && l.GetValue() != "driver" {
				t.Errorf("ember_limit_hits_total serves executor %s's look-alike family", l.GetValue())
			}
		}
	}
	if parsed["a_b_total"] == nil {
		t.Errorf("neither a.b_total nor a b_total is served, want the first of them")
	}
}
