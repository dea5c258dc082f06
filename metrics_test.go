package ember_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches and parses /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the value of the metric in fams[name] whose labels include
// want, and whether there is one.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// Spark's "plugin initialization and communication" metrics part, across
// processes and in one: each side's plugin registers a gauge, and the
// driver's /metrics shows the driver's and every executor's own value,
// labelled. (Executors in the driver's process used to share one registry,
// so each shipped the others' series too, and /metrics showed executor 1's
// value for both.)
func TestPluginMetrics(t *testing.T) {
	for _, master := range []string{"local-cluster[2]", "local[2]"} {
		t.Run(master, func(t *testing.T) { testPluginMetrics(t, master) })
	}
}

func testPluginMetrics(t *testing.T, master string) {
	p := fakePlugin{
		name: "metered",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{
				InitF: func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) {
					g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "driver_metric", Help: "A driver gauge."})
					g.Set(42)
					return nil, pc.Metrics().Register(g)
				},
				ReceiveF: func(context.Context, any) (any, error) { return nil, nil },
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "executor_metric", Help: "An executor gauge."})
				id, err := strconv.Atoi(pc.ExecutorID())
				if err != nil {
					return err
				}
				g.Set(float64(80 + id)) // each executor its own value
				if err := pc.Metrics().Register(g); err != nil {
					return err
				}
				if err := pc.Send(ctx, text("hi")); err != nil {
					return err
				}
				_, err = pc.Ask(ctx, text("q"))
				return err
			}}
		},
	}
	cfg := ember.Config{
		Master:       master,
		Plugins:      []plugin.Plugin{p},
		ExecutorArgs: embertest.ExecutorArgs(t),
		Conf:         map[string]string{"ember.metrics.interval": "20ms"},
	}
	if isChild() {
		runChild(cfg, nil)
	}
	c := embertest.Start(t, cfg)
	url := c.Driver.MetricsURL()
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("MetricsURL: got %q, want a loopback URL", url)
	}
	var fams map[string]*dto.MetricFamily
	embertest.WaitFor(t, "both executors' metrics", func() bool {
		fams = scrape(t, url)
		_, ok1 := value(fams, "executor_metric", map[string]string{"executor": "1"})
		_, ok2 := value(fams, "executor_metric", map[string]string{"executor": "2"})
		return ok1 && ok2
	})
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"driver_metric", map[string]string{"plugin": "metered", "executor": "driver"}, 42},
		{"executor_metric", map[string]string{"plugin": "metered", "executor": "1"}, 81},
		{"executor_metric", map[string]string{"plugin": "metered", "executor": "2"}, 82},
		{"ember_executors_alive", nil, 2},
		{"ember_executors_lost_total", nil, 0}, // served from the start, for an alert on its increase
		{"ember_messages_total", map[string]string{"plugin": "metered", "type": "github.com/emberhq/ember_test.text", "direction": "to_driver", "kind": "send"}, 2},
		{"ember_messages_total", map[string]string{"plugin": "metered", "direction": "to_driver", "kind": "ask"}, 2},
		{"ember_handler_seconds", map[string]string{"plugin": "metered"}, 1}, // 4 messages, sampled 1 in 8: the first
		{"ember_lane_queue_depth", map[string]string{"plugin": "metered"}, 0},
	}
	for _, tt := range checks {
		got, ok := value(fams, tt.name, tt.labels)
		if !ok || got != tt.want {
			t.Errorf("%s%v: got %v (present %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
}

func TestMetricsOff(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", MetricsAddr: "off", Logger: quiet})
	if got := c.Driver.MetricsURL(); got != "" {
		t.Errorf("MetricsURL with metrics off: got %q, want empty", got)
	}
}

// The metrics endpoint answers GET /metrics and nothing else, as
// docs/security.md says: HEAD was answered, and paths that needed cleaning
// were redirected to /metrics.
func TestMetricsEndpointServesOnlyGetMetrics(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet})
	base := strings.TrimSuffix(c.Driver.MetricsURL(), "/metrics")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodHead, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "//metrics", http.StatusNotFound},
		{http.MethodGet, "/x/../metrics", http.StatusNotFound},
		{http.MethodGet, "/metrics/", http.StatusNotFound},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, base, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = tt.path // sent as written, not cleaned
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s: got %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
}

// A send from the driver that an executor cannot deliver (here one it
// cannot decode) is counted on that executor, and the count is shipped to
// the driver's /metrics under the executor's ID, in the same family as
// the driver's own drops (executor "driver"). It used to be logged on the
// executor only.
func TestExecutorDropsAreCounted(t *testing.T) {
	var dc plugin.DriverContext
	passive := fakePlugin{
		name:      "passive",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
		newExecutor: func() plugin.ExecutorPlugin {
			return &receivingExecutor{ReceiveF: func(context.Context, any) (any, error) { return nil, nil }}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{passive}, Logger: quiet, MetricsAddr: "127.0.0.1:0",
		Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
	if err := dc.SendExecutor(testCtx(t), "1", undecodable{X: 1}); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "the executor's drop in /metrics", func() bool {
		n, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_messages_dropped_total",
			map[string]string{"executor": "1", "plugin": "passive", "reason": "undecodable"})
		return n == 1
	})
}

// queueCollector is a plugin's hand-written collector with a common
// mistake: it reports the same series twice (two queues that map to one
// label value). Gathering it fails for the second series; the rest is kept.
type queueCollector struct{ desc *prometheus.Desc }

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, "default")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 2, "default")
}

// An executor plugin's metric that cannot be gathered cleanly is served
// in part (or not at all). Someone must say why: the driver logs its own
// registry's gather errors (promhttp's ErrorLog), but an executor dropped
// its own silently (metrics.Encode discarded the error whenever some
// families were gathered).
func TestExecutorMetricGatherErrorIsLogged(t *testing.T) {
	var logs logtest.Buffer
	p := fakePlugin{
		name:      "queues",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{} },
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
				ok := prometheus.NewCounter(prometheus.CounterOpts{Name: "farm_ok_total", Help: "ok"})
				ok.Inc()
				if err := pc.Metrics().Register(ok); err != nil {
					return err
				}
				return pc.Metrics().Register(queueCollector{prometheus.NewDesc("farm_queue_depth", "depth", []string{"queue"}, nil)})
			}}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
	embertest.WaitFor(t, "the executor's good metric", func() bool {
		_, ok := value(scrape(t, c.Driver.MetricsURL()), "farm_ok_total", map[string]string{"plugin": "queues"})
		return ok
	})
	embertest.WaitFor(t, "a warning naming farm_queue_depth", func() bool {
		return strings.Contains(logs.String(), "farm_queue_depth")
	})
}

// A plugin's metric collector is plugin code, and plugin code that panics
// (Receive, task hooks, the Plugin methods) never takes a process down. A
// GaugeFunc reading state its plugin's Shutdown has cleared is the common
// case: the executor gathers its metrics once more after Shutdown, for
// STOPPED. The panic escaped from the registry's gathering goroutine and
// killed the process: with local[N] the driver's (this test binary), with
// local-cluster the executor's, whose final metrics were then lost while
// Run still returned nil. It must cost only the panicking collector's
// series, with a warning naming the plugin.
func TestPluginCollectorPanicIsContained(t *testing.T) {
	for _, master := range []string{"local[1]", "local-cluster[1]"} {
		t.Run(master, func(t *testing.T) {
			var logs logtest.Buffer
			var boom atomic.Bool
			p := fakePlugin{
				name:      "gauges",
				newDriver: func() plugin.DriverPlugin { return &fakeDriver{} },
				newExecutor: func() plugin.ExecutorPlugin {
					type state struct{ depth float64 }
					// Atomic: the periodic gather may run while Shutdown
					// does (collectors must be safe for concurrent use), and
					// a plain variable made that a data race, which fails
					// the executor process (exit status 66) under -race.
					var st atomic.Pointer[state]
					st.Store(&state{depth: 3})
					return &fakeExecutor{
						InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
							ok := prometheus.NewCounter(prometheus.CounterOpts{Name: "gauges_ok_total", Help: "ok"})
							ok.Inc()
							pc.Metrics().MustRegister(ok)
							return pc.Metrics().Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gauges_depth", Help: "depth"},
								func() float64 {
									if boom.Load() {
										panic("collector boom")
									}
									return st.Load().depth
								}))
						},
						// The mistake: Shutdown clears what the GaugeFunc reads.
						ShutdownF: func(context.Context) error { st.Store(nil); return nil },
					}
				},
			}
			c := embertest.Start(t, ember.Config{Master: master, Plugins: []plugin.Plugin{p},
				Logger: slog.New(slog.NewTextHandler(&logs, nil)), Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
			embertest.WaitFor(t, "the executor's metrics", func() bool {
				_, ok := value(scrape(t, c.Driver.MetricsURL()), "gauges_depth", map[string]string{"plugin": "gauges"})
				return ok
			})
			if master == "local[1]" {
				boom.Store(true) // in this process: a panic in the periodic gather
				embertest.WaitFor(t, "a warning naming the plugin", func() bool {
					return strings.Contains(logs.String(), "collector boom")
				})
				if _, ok := value(scrape(t, c.Driver.MetricsURL()), "gauges_ok_total", map[string]string{"plugin": "gauges"}); !ok {
					t.Error("the plugin's other metric is no longer served")
				}
				boom.Store(false)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs.String(), "executor lost") {
				t.Errorf("the executor was lost as it shut down:\n%s", logs.String())
			}
		})
	}
}

// Operators alert on increase(ember_auth_failures_total[5m]) > 0, as the
// checklist asks, and on ember_limit_hits_total. A series that first
// appears at 1 never shows an increase, so the first refused executor
// goes unnoticed: the series of the known reasons, and of the driver's
// limits, must be there, at 0, from the start.
func TestAuthFailuresServedFromTheStart(t *testing.T) {
	d := standalone(t, ember.Config{Secret: "right secret right secret", BuildID: "test", MetricsAddr: "127.0.0.1:0"})
	fams := scrape(t, d.MetricsURL())
	for _, reason := range []string{"wrong proof", "no proof"} {
		if _, ok := value(fams, "ember_auth_failures_total", map[string]string{"reason": reason}); !ok {
			t.Errorf("ember_auth_failures_total{reason=%q} is not served before the first failure", reason)
		}
	}
	for _, limit := range []string{"message_size", "max_executors", "handshake_timeout"} {
		if _, ok := value(fams, "ember_limit_hits_total", map[string]string{"executor": "driver", "limit": limit}); !ok {
			t.Errorf("ember_limit_hits_total{executor=\"driver\",limit=%q} is not served before the first hit", limit)
		}
	}
}

// The same holds for the limits an executor counts, shipped to the
// driver: an executor's first send_window or lane_queue hit must show as
// an increase, so the driver serves its series at 0 from the moment it is
// ready until it ships them. They used to be born at 1, with the first
// hit.
func TestExecutorLimitHitsServedFromTheStart(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet,
		Plugins: []plugin.Plugin{fakePlugin{name: "p", newDriver: func() plugin.DriverPlugin { return &fakeDriver{} }}},
		Conf:    map[string]string{ember.ConfMetricsInterval: "20ms"}})
	limits := []string{"message_size", "send_queue", "send_window", "lane_queue", "queue_overflow"}
	embertest.WaitFor(t, "the executor's ember_limit_hits_total series in /metrics", func() bool {
		fams := scrape(t, c.Driver.MetricsURL())
		for _, limit := range limits {
			if absent(fams, "ember_limit_hits_total", map[string]string{"executor": "1", "limit": limit}) {
				return false
			}
		}
		return true
	})
	fams := scrape(t, c.Driver.MetricsURL())
	for _, limit := range limits {
		if got, _ := value(fams, "ember_limit_hits_total", map[string]string{"executor": "1", "limit": limit}); got != 0 {
			t.Errorf("ember_limit_hits_total{executor=\"1\",limit=%q}: got %v, want 0", limit, got)
		}
	}
}

// absent reports whether fams has no metric named name whose labels
// include want.
func absent(fams map[string]*dto.MetricFamily, name string, want map[string]string) bool {
	_, ok := value(fams, name, want)
	return !ok
}

// A series an executor plugin stops reporting leaves the driver's
// /metrics with the executor's next shipment, as the README's "the latest
// set per executor" says. When it was the executor's last (a plugin
// unregistering its only collector, or deleting a vector's last child),
// the executor shipped nothing at all, and the driver served the last
// values for the executor's life.
func TestExecutorSeriesGoWhenTheLastIsRemoved(t *testing.T) {
	tests := []struct {
		name   string
		remove func(pc plugin.ExecutorContext, g *prometheus.GaugeVec)
	}{
		{"unregistered", func(pc plugin.ExecutorContext, g *prometheus.GaugeVec) {
			if !pc.Metrics().Unregister(g) {
				t.Error("Unregister: got false, want true")
			}
		}},
		{"last child deleted", func(_ plugin.ExecutorContext, g *prometheus.GaugeVec) { g.DeleteLabelValues("a") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready := make(chan func(), 1)
			p := fakePlugin{
				name:      "jobs",
				newDriver: func() plugin.DriverPlugin { return &fakeDriver{} },
				newExecutor: func() plugin.ExecutorPlugin {
					return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
						g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jobs_running", Help: "Jobs running."}, []string{"job"})
						g.WithLabelValues("a").Set(1)
						ready <- func() { tt.remove(pc, g) }
						return pc.Metrics().Register(g)
					}}
				},
			}
			c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet,
				Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
			want := map[string]string{"executor": "1", "plugin": "jobs", "job": "a"}
			embertest.WaitFor(t, "jobs_running in /metrics", func() bool {
				return !absent(scrape(t, c.Driver.MetricsURL()), "jobs_running", want)
			})
			(<-ready)()
			embertest.WaitFor(t, "jobs_running to leave /metrics", func() bool {
				return absent(scrape(t, c.Driver.MetricsURL()), "jobs_running", want)
			})
		})
	}
}

// An executor whose metrics are over the message size is counted in
// ember_limit_hits_total{limit="message_size"} on the executor, as
// docs/security.md says, and the count reaches the driver's /metrics.
// The executor used to ship nothing: the count, part of the set it could
// not ship, never arrived, and the driver served the last set that fit,
// its values frozen, as if current.
func TestExecutorMetricsOverTheSizeLimit(t *testing.T) {
	grow := make(chan *prometheus.CounterVec, 1)
	p := fakePlugin{
		name:      "wide",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{} },
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
				v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wide_items_total", Help: "Items."}, []string{"key"})
				v.WithLabelValues("first").Inc()
				grow <- v
				return pc.Metrics().Register(v)
			}}
		},
	}
	const maxMsg = 64 << 10
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, MaxMessageBytes: maxMsg,
		Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
	first := map[string]string{"executor": "1", "plugin": "wide", "key": "first"}
	embertest.WaitFor(t, "wide_items_total in /metrics", func() bool {
		return !absent(scrape(t, c.Driver.MetricsURL()), "wide_items_total", first)
	})
	v := <-grow
	for i := range maxMsg / 16 { // well over maxMsg encoded
		v.WithLabelValues("key-" + strconv.Itoa(i)).Inc()
	}
	hit := map[string]string{"executor": "1", "limit": "message_size"}
	embertest.WaitFor(t, "the executor's message_size hit in /metrics, and its frozen series gone", func() bool {
		fams := scrape(t, c.Driver.MetricsURL())
		n, _ := value(fams, "ember_limit_hits_total", hit)
		return n >= 1 && absent(fams, "wide_items_total", first)
	})
}

// ember_messages_total counts the sends a driver plugin made, not those
// it tried: a SendExecutor or Broadcast copy that fails (here: ctx ended
// while the executor's send window was spent, its plugin stuck on the
// first message) sent nothing. Both counted every attempt.
func TestFailedPushesAreNotCounted(t *testing.T) {
	release := make(chan struct{})
	var pc atomic.Pointer[plugin.DriverContext]
	p := fakePlugin{
		name: "stuck",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: func(_ context.Context, c plugin.DriverContext) (map[string]string, error) {
				pc.Store(&c)
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &receivingExecutor{ReceiveF: func(ctx context.Context, _ any) (any, error) {
				select { // the first message holds the lane: no window comes back
				case <-release:
				case <-ctx.Done():
				}
				return nil, nil
			}}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	defer close(release)
	dc := *pc.Load()
	big := text(strings.Repeat("x", 64<<10))
	sent := 0
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("1000 sends of 64 KiB, and the send window never ran out")
		}
		ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
		err := dc.SendExecutor(ctx, "1", big)
		cancel()
		if err != nil {
			break // the window is spent (or, on a loaded machine, the queue was full that long)
		}
		sent++
	}
	// Broadcast with its ctx ended: a copy that must wait fails. Until
	// then (a send above may have failed for want of queue room alone),
	// the copies that go are counted.
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	for i := 0; dc.Broadcast(ctx, big) == nil; i++ {
		if i > 1000 {
			t.Fatal("1000 Broadcasts of 64 KiB, and the send window never ran out")
		}
		sent++
	}
	got, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_messages_total",
		map[string]string{"plugin": "stuck", "direction": "to_executor", "kind": "send"})
	if int(got) != sent {
		t.Errorf("ember_messages_total of sends to executors: got %v, want %d (the sends that succeeded)", got, sent)
	}
}

// Every ask a driver plugin answers with an error counts in
// ember_message_errors_total, however the error came about: returned, a
// panic, or a runtime.Goexit (a test's t.Fatal in the plugin), which
// Dispatch answers from a deferred call. The lane is serial: once a later
// ask has its answer, the earlier ones have been counted.
func TestAskErrorsAreCounted(t *testing.T) {
	pc, c := askCluster(t, func(_ context.Context, msg any) (any, error) {
		switch msg {
		case text("fail"):
			return nil, plugin.NewError(plugin.CodeInternal, "failed")
		case text("panic"):
			panic("handler bug")
		case text("goexit"):
			runtime.Goexit()
		case text("unencodable"):
			return unregistered{X: 1}, nil // the asker gets InvalidArgument
		}
		return text("fine"), nil
	}, ember.Config{})
	ctx := testCtx(t)
	tests := []struct {
		msg  text
		want float64 // internal errors counted, this one included
	}{
		{msg: "fail", want: 1},
		{msg: "panic", want: 2},
		{msg: "goexit", want: 3},
	}
	for _, tt := range tests {
		if _, err := pc.Ask(ctx, tt.msg); plugin.CodeOf(err) != plugin.CodeInternal {
			t.Fatalf("Ask(%q): got %v, want an internal error", tt.msg, err)
		}
		if _, err := pc.Ask(ctx, text("ok")); err != nil {
			t.Fatalf("Ask(ok) after %q: %v", tt.msg, err)
		}
		got, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_message_errors_total",
			map[string]string{"plugin": "asker", "code": plugin.CodeInternal.String(), "kind": "ask"})
		if got != tt.want {
			t.Errorf("after Ask(%q): ember_message_errors_total{code=internal} got %v, want %v", tt.msg, got, tt.want)
		}
	}
	// A reply that cannot be encoded is answered with an error too.
	if _, err := pc.Ask(ctx, text("unencodable")); plugin.CodeOf(err) != plugin.CodeInvalidArgument {
		t.Fatalf("Ask(unencodable): got %v, want InvalidArgument", err)
	}
	if _, err := pc.Ask(ctx, text("ok")); err != nil {
		t.Fatalf("Ask(ok) after unencodable: %v", err)
	}
	got, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_message_errors_total",
		map[string]string{"plugin": "asker", "code": plugin.CodeInvalidArgument.String(), "kind": "ask"})
	if got != 1 {
		t.Errorf("after an unencodable reply: ember_message_errors_total{code=invalid_argument} got %v, want 1", got)
	}
}

// Sends whose Receive fails count in ember_message_errors_total too, under
// kind "send", whether the handler returned an error, panicked or called
// runtime.Goexit: the sender is not told, so the metric is how anyone
// sees them. A Receive that ends with Canceled (the driver stopping) is
// not counted. The lane is serial: once a later ask has its answer, the
// sends before it have been counted.
func TestSendErrorsAreCounted(t *testing.T) {
	pc, c := askCluster(t, func(_ context.Context, msg any) (any, error) {
		switch msg {
		case text("fail"):
			return nil, plugin.NewError(plugin.CodeInternal, "failed")
		case text("plain"):
			return nil, errors.New("plain failure")
		case text("panic"):
			panic("handler bug")
		case text("goexit"):
			runtime.Goexit()
		case text("canceled"):
			return nil, context.Canceled
		}
		return text("fine"), nil
	}, ember.Config{})
	ctx := testCtx(t)
	for _, msg := range []text{"fail", "plain", "panic", "goexit", "canceled", "ok"} {
		if err := pc.Send(ctx, msg); err != nil {
			t.Fatalf("Send(%q): %v", msg, err)
		}
	}
	if _, err := pc.Ask(ctx, text("ok")); err != nil {
		t.Fatalf("Ask(ok) after the sends: %v", err)
	}
	m := scrape(t, c.Driver.MetricsURL())
	for _, tt := range []struct {
		code plugin.Code
		kind string
		want float64
	}{
		{plugin.CodeInternal, "send", 3}, // fail, panic, goexit
		{plugin.CodeUnknown, "send", 1},  // plain
		{plugin.CodeCanceled, "send", 0},
		{plugin.CodeInternal, "ask", 0},
	} {
		labels := map[string]string{"plugin": "asker", "code": tt.code.String(), "kind": tt.kind}
		if got, _ := value(m, "ember_message_errors_total", labels); got != tt.want {
			t.Errorf("ember_message_errors_total%v: got %v, want %v", labels, got, tt.want)
		}
	}
}

// A long poll whose asker gives up answers with its ctx's end, which
// nobody hears: not an error of the plugin's, and not counted in
// ember_message_errors_total (every executor that stops would otherwise
// add one for each of its waiting workers). An error the handler makes of
// its own, with its asker still there, is counted, whatever its code.
func TestGoneAskersAreNotErrors(t *testing.T) {
	pc, c := askCluster(t, func(ctx context.Context, msg any) (any, error) {
		switch msg {
		case text("own"):
			return nil, fmt.Errorf("a call of its own: %w", context.DeadlineExceeded)
		case text("ok"):
			return msg, nil
		}
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}, ember.Config{})
	ctx, cancel := context.WithCancel(testCtx(t))
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := pc.Ask(ctx, text("wait")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ask: got %v, want Canceled", err)
	}
	ctx, cancel = context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	if _, err := pc.Ask(ctx, text("wait")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ask: got %v, want DeadlineExceeded", err)
	}
	if _, err := pc.Ask(testCtx(t), text("own")); plugin.CodeOf(err) != plugin.CodeDeadlineExceeded {
		t.Fatalf("Ask(own): got %v, want DeadlineExceeded", err)
	}
	// The lane counts an ask after answering it, before it runs the next.
	if _, err := pc.Ask(testCtx(t), text("ok")); err != nil {
		t.Fatalf("Ask(ok): %v", err)
	}
	m := scrape(t, c.Driver.MetricsURL())
	for code, want := range map[plugin.Code]float64{plugin.CodeCanceled: 0, plugin.CodeDeadlineExceeded: 1} {
		if got, _ := value(m, "ember_message_errors_total", map[string]string{"plugin": "asker", "code": code.String(), "kind": "ask"}); got != want {
			t.Errorf("ember_message_errors_total{code=%v}: got %v, want %v", code, got, want)
		}
	}
}

// A metrics address already in use fails start-up before any driver
// plugin's Init runs (it was found only after them), and says which.
func TestMetricsAddrInUseFailsBeforeInit(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var inits atomic.Int32
	p := fakePlugin{name: "counted", newDriver: func() plugin.DriverPlugin {
		return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
			inits.Add(1)
			return nil, nil
		}}
	}}
	err = ember.Run(testCtx(t), ember.Config{Master: "local[1]", Logger: quiet, Plugins: []plugin.Plugin{p}, MetricsAddr: taken.Addr().String()},
		func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
	if want := "metrics: listen on " + taken.Addr().String(); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run with the metrics address in use: got %v, want an error saying %q", err, want)
	}
	if n := inits.Load(); n != 0 {
		t.Errorf("driver plugin Init ran %d times, want none before the metrics address failed", n)
	}
}

// A standalone driver's one Info line at start-up, which tells the
// operator how to start executors, also says where /metrics is: on a
// port the kernel chose, it could not be found otherwise.
func TestStandaloneStartLineNamesTheMetricsURL(t *testing.T) {
	var buf logtest.Buffer
	d := standalone(t, ember.Config{Secret: "right secret right secret", BuildID: "test", MetricsAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	for line := range strings.SplitSeq(buf.String(), "\n") {
		if strings.Contains(line, "driver listening for executors") {
			if want := "metrics=" + d.MetricsURL(); !strings.Contains(line, want) {
				t.Errorf("start line %q does not say %q", line, want)
			}
			return
		}
	}
	t.Errorf("no start line in the driver's log:\n%s", buf.String())
}

// An executor refused for a handshake mismatch (another build, a plugin
// missing) is counted in ember_handshake_mismatches_total, served at 0
// from the start: it was in the logs alone, where a wrong secret is
// counted too.
func TestHandshakeMismatchesCounted(t *testing.T) {
	const secret = "mismatch secret"
	d := standalone(t, ember.Config{Secret: secret, BuildID: "test", Plugins: []plugin.Plugin{named("wanted")}})
	mismatches := func() float64 {
		v, ok := value(scrape(t, d.MetricsURL()), "ember_handshake_mismatches_total", nil)
		if !ok {
			t.Fatal("no ember_handshake_mismatches_total series")
		}
		return v
	}
	if got := mismatches(); got != 0 {
		t.Fatalf("ember_handshake_mismatches_total at start: got %v, want 0", got)
	}
	if err := joinErr(t, d.Addr(), secret); plugin.CodeOf(err) != plugin.CodeInvalidArgument {
		t.Fatalf("executor without the plugin: got %v, want refused with InvalidArgument", err)
	}
	embertest.WaitFor(t, "ember_handshake_mismatches_total at 1", func() bool { return mismatches() == 1 })
}

// A service with a /metrics of its own serves Ember's there: the driver's
// Gatherer, listed beside the service's registry, gathers Ember's series
// (executors' included) with the service's, with MetricsAddr "off", and
// still does once Run has returned.
func TestDriverGathererBesideAServiceRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounter(prometheus.CounterOpts{Name: "svc_requests_total", Help: "The service's own."})
	reg.MustRegister(requests)
	requests.Add(3)
	gathered := func(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
		t.Helper()
		fams, err := g.Gather()
		if err != nil {
			t.Fatalf("Gather: %v", err)
		}
		byName := map[string]*dto.MetricFamily{}
		for _, f := range fams {
			byName[f.GetName()] = f
		}
		return byName
	}
	var g prometheus.Gatherer
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", MetricsAddr: "off", Logger: quiet,
		Conf: map[string]string{ember.ConfMetricsInterval: "10ms"}},
		func(ctx context.Context, d *ember.Driver) error {
			g = prometheus.Gatherers{reg, d.Gatherer()}
			embertest.WaitFor(t, "an executor's shipped series among the service's", func() bool {
				_, ok := value(gathered(t, g), "ember_limit_hits_total", map[string]string{"executor": "1", "limit": "message_size"})
				return ok
			})
			return nil
		})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	fams := gathered(t, g) // after Run: the last values
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"svc_requests_total", nil, 3},
		{"ember_executors_alive", nil, 0},
		{"ember_limit_hits_total", map[string]string{"executor": "1", "limit": "message_size"}, 0},
	} {
		if got, ok := value(fams, tt.name, tt.labels); !ok || got != tt.want {
			t.Errorf("%s%v after Run: got %v (present %v), want %v", tt.name, tt.labels, got, ok, tt.want)
		}
	}
}

// ember_tasks_total has a series for every state from a task's first
// job, at 0 until its first count: the README tells operators to alert on
// the failed and lost states, and a series born at 1 shows no increase,
// so the first attempt lost with its executor went unnoticed. The states
// are a closed set and the tasks registered: the series are bounded.
func TestTaskStatesServedFromTheFirstJob(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet})
	if _, err := ember.Map(testCtx(t), c.Driver, double, []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, c.Driver.MetricsURL())
	for state, want := range map[string]float64{"started": 2, "succeeded": 2, "failed": 0, "lost": 0, "canceled": 0} {
		got, ok := value(fams, "ember_tasks_total", map[string]string{"task": "test.double", "state": state})
		if !ok {
			t.Errorf("ember_tasks_total{task=\"test.double\",state=%q} is not served after the task's first job", state)
		} else if got != want {
			t.Errorf("ember_tasks_total{task=\"test.double\",state=%q}: got %v, want %v", state, got, want)
		}
	}
}

// ember_handler_seconds times a driver plugin's Receive: a plugin with an
// executor side only has none, and no series, as it has no
// ember_lane_queue_depth or ember_lane_stalled series. It used to be
// served an empty histogram (custommetrics' even-counter, say), which
// read as a plugin whose driver side was never called.
func TestNoHandlerSeriesWithoutADriverSide(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Plugins: []plugin.Plugin{
		fakePlugin{name: "executor-only", newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{} }},
		fakePlugin{name: "both", newDriver: func() plugin.DriverPlugin { return &fakeDriver{} }, newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{} }},
	}})
	fams := scrape(t, c.Driver.MetricsURL())
	for _, name := range []string{"ember_handler_seconds", "ember_lane_queue_depth", "ember_lane_stalled"} {
		for _, m := range fams[name].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "plugin" && l.GetValue() == "executor-only" {
					t.Errorf("%s has a series for a plugin with no driver side", name)
				}
			}
		}
	}
	if fams["ember_handler_seconds"] == nil || len(fams["ember_handler_seconds"].GetMetric()) != 1 {
		t.Errorf("ember_handler_seconds: got %v, want one series, the driver plugin's", fams["ember_handler_seconds"])
	}
}

// ember_executor_info has a series, at 1, for each ready executor, naming
// its ID, host and PID, and only while it is connected: an operator groups
// other series by host with it, and counts executors up.
func TestExecutorInfoSeries(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet})
	execs := c.Driver.Executors()
	if len(execs) != 2 {
		t.Fatalf("executors: got %d, want 2", len(execs))
	}
	fams := scrape(t, c.Driver.MetricsURL())
	if got := len(fams["ember_executor_info"].GetMetric()); got != 2 {
		t.Fatalf("ember_executor_info series: got %d, want 2 (one per executor)", got)
	}
	for _, e := range execs {
		want := map[string]string{"executor": e.ID, "host": e.Host, "pid": strconv.Itoa(e.PID)}
		if v, ok := value(fams, "ember_executor_info", want); !ok || v != 1 {
			t.Errorf("ember_executor_info%v: got %v (served: %v), want 1", want, v, ok)
		}
	}
	gone := execs[0].ID
	if err := c.Kill(gone); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "the killed executor's series to go", func() bool {
		_, ok := value(scrape(t, c.Driver.MetricsURL()), "ember_executor_info", map[string]string{"executor": gone})
		return !ok
	})
	if _, ok := value(scrape(t, c.Driver.MetricsURL()), "ember_executor_info", map[string]string{"executor": execs[1].ID}); !ok {
		t.Errorf("ember_executor_info{executor=%q} went with the other executor's", execs[1].ID)
	}
}
