// Command custommetrics is Spark's custom-metrics plugin example, made to
// work across processes. An executor plugin registers a Prometheus counter;
// tasks running on the executors count even numbers into it; the driver
// reads the total from its own /metrics endpoint, where every executor's
// plugin metrics arrive with its heartbeats, labelled with the plugin and
// the executor.
//
//	go run ./examples/custommetrics
package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const (
	pluginName = "even-counter"
	metricName = "even_numbers_total"
	// The job: count the even numbers of range(numbers), split into
	// partitions.
	numbers    = 5000
	partitions = 5
	// metricsInterval is how often executors ship their metrics (the
	// default is the heartbeat interval, 1s); metricsTimeout bounds the
	// wait for the total to reach the driver.
	metricsInterval = "100ms"
	metricsTimeout  = 10 * time.Second
)

// Partition is a task's input: the numbers in [Lo, Hi).
type Partition struct{ Lo, Hi int }

// countEvens counts the even numbers of a partition into the counter of
// the executor it runs on, and returns how many it counted.
var countEvens = ember.NewTask("count-evens", func(_ context.Context, tc ember.TaskContext, p Partition) (int, error) {
	// The task finds its executor's instance of the plugin, whose Init
	// has run: with local[N], where the executors share one process, each
	// has its own.
	ep, ok := tc.Plugin(pluginName)
	if !ok {
		return 0, plugin.Errorf(plugin.CodeUnavailable, "plugin %s is not running on executor %s", pluginName, tc.ExecutorID)
	}
	c := ep.(*executorPlugin).counter
	n := 0
	for i := p.Lo; i < p.Hi; i++ {
		if i%2 == 0 {
			n++
		}
	}
	// Add once, at the end: an attempt that fails leaves the counter
	// alone, so its retry does not count the partition twice.
	c.Add(float64(n))
	return n, nil
})

// evenCounter has an executor side only.
type evenCounter struct{}

func (evenCounter) Name() string                          { return pluginName }
func (evenCounter) DriverPlugin() plugin.DriverPlugin     { return nil }
func (evenCounter) ExecutorPlugin() plugin.ExecutorPlugin { return &executorPlugin{} }

type executorPlugin struct {
	plugin.BaseExecutorPlugin
	counter prometheus.Counter // set by Init, before the executor takes any task
}

// Init registers the counter with the plugin's registerer, which adds the
// "plugin" and "executor" labels; the tasks find it in the plugin.
func (p *executorPlugin) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: metricName,
		Help: "Even numbers counted by the tasks of one executor.",
	})
	if err := pc.Metrics().Register(c); err != nil {
		return err
	}
	p.counter = c
	return nil
}

var (
	_ plugin.Plugin         = evenCounter{}
	_ plugin.ExecutorPlugin = (*executorPlugin)(nil)
)

// count is the driver function: it runs the job, then waits until the
// executors' counters, as the driver's /metrics shows them, add up to what
// the tasks returned.
func count(ctx context.Context, d *ember.Driver) error {
	parts := make([]Partition, partitions)
	for i := range parts {
		parts[i] = Partition{Lo: i * numbers / partitions, Hi: (i + 1) * numbers / partitions}
	}
	counts, err := ember.Map(ctx, d, countEvens, parts)
	if err != nil {
		return err
	}
	want := 0
	for _, n := range counts {
		want += n
	}
	got, err := waitForTotal(ctx, d.MetricsURL(), want)
	if err != nil {
		return err
	}
	fmt.Printf("even numbers counted across executors: %d\n", got)
	return nil
}

// waitForTotal scrapes url until the counters of all executors add up to
// want. Executor metrics reach the driver with heartbeats, every
// metricsInterval, so the first scrapes may see less, or nothing yet.
func waitForTotal(ctx context.Context, url string, want int) (int, error) {
	if url == "" {
		return 0, fmt.Errorf("the driver serves no /metrics (Config.MetricsAddr is off)")
	}
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		perExecutor, err := scrape(ctx, client, url)
		if err != nil {
			return 0, err
		}
		total := 0.0
		for _, v := range perExecutor {
			total += v
		}
		switch {
		case total == float64(want):
			slog.Info("even numbers per executor", "counts", perExecutor)
			return want, nil
		case total > float64(want):
			return 0, fmt.Errorf("%s: executors counted %v even numbers, more than the tasks' %d", metricName, total, want)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, fmt.Errorf("%s: executors counted %v of %d even numbers when the wait ended: %w", metricName, total, want, ctx.Err())
		}
	}
}

// scrape fetches url and returns the plugin's counter by executor ID.
func scrape(ctx context.Context, client *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	// TextToMetricFamilies has a pointer receiver: keep the parser in a
	// variable.
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	out := make(map[string]float64)
	for _, m := range fams[metricName].GetMetric() {
		labels := make(map[string]string)
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["plugin"] == pluginName {
			out[labels["executor"]] += m.GetCounter().GetValue()
		}
	}
	return out, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once a signal has started the shutdown, a second one ends the
	// program at once (the default action), should the shutdown take long.
	context.AfterFunc(ctx, stop)
	err := ember.Run(ctx, ember.Config{
		AppName: "custommetrics",
		Master:  "local-cluster[2]",
		Plugins: []plugin.Plugin{evenCounter{}},
		Conf:    map[string]string{"ember.metrics.interval": metricsInterval},
	}, count)
	if err != nil {
		log.Fatal(err)
	}
}
