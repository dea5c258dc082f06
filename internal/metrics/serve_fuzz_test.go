package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// FuzzServe merges the heartbeat metrics of two executors, each an
// arbitrary wire.Metrics of any number of families, with the driver's own
// built-in metrics, and serves them as the driver's /metrics does
// (Unambiguous, promhttp with ContinueOnError) in the text format, names
// escaped as for scrapers that take no UTF-8 names, and in protobuf.
// FuzzDecode stops at one family of one executor, gathered alone. It must
// never panic, /metrics must answer 200 whatever the executors disagree
// on, and the text served must parse.
func FuzzServe(f *testing.F) {
	enc := func(reg *prometheus.Registry) []byte {
		m, err := Encode(reg)
		if err != nil {
			f.Fatal(err)
		}
		data, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	counter := enc(registry(f, "1", 1))
	gauge := func() []byte { // things_total again, of another type
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "things_total", Help: "Other things."}))
		return enc(reg)
	}()
	builtin := func() []byte { // the driver's own families, as an executor ships them
		reg := prometheus.NewRegistry()
		lh := NewLimitHits(prometheus.Labels{"executor": "1"})
		lh.WithLabelValues("send_queue").Inc()
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ember_handler_seconds", Help: "h"}, []string{"plugin"})
		h.WithLabelValues("p").Observe(1)
		reg.MustRegister(lh, h)
		return enc(reg)
	}()
	f.Add(counter, counter)
	f.Add(counter, gauge)
	f.Add(builtin, counter)
	f.Add([]byte{}, builtin)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var s Store
		for i, data := range [][]byte{a, b} {
			var m wire.Metrics
			if proto.Unmarshal(data, &m) != nil {
				return
			}
			fams, _ := Decode(&m) // the valid families are kept
			id := string(rune('1' + i))
			SetLabel(fams, "executor", id)
			s.Set(id, fams)
		}
		reg := prometheus.NewRegistry()
		NewBuiltin(reg).LimitHits.WithLabelValues("driver", "send_queue").Inc()
		h := promhttp.HandlerFor(Unambiguous(prometheus.Gatherers{reg, &s}), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
		for _, accept := range []string{"text/plain", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"} {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept", accept)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				t.Fatalf("/metrics (%s) answered %d: %s", accept, w.Code, w.Body.String())
			}
			if accept != "text/plain" {
				continue
			}
			parser := expfmt.NewTextParser(model.UTF8Validation)
			if _, err := parser.TextToMetricFamilies(w.Body); err != nil {
				t.Fatalf("served exposition does not parse: %v\n%s", err, w.Body.String())
			}
		}
	})
}
