package driver

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// executorInfoDesc describes ember_executor_info.
var executorInfoDesc = prometheus.NewDesc("ember_executor_info",
	"1 for each executor connected and ready, labelled with its ID, host and process ID: join on executor to group other series by host.",
	[]string{"executor", "host", "pid"}, nil)

// executorInfo serves ember_executor_info, made at each scrape from the
// executors ready then: a series is there while its executor is, and
// goes with it, unlike the series an executor ships, which a scrape
// still reads for a while after it left.
type executorInfo struct{ d *Driver }

// Describe implements prometheus.Collector.
func (c executorInfo) Describe(ch chan<- *prometheus.Desc) { ch <- executorInfoDesc }

// Collect implements prometheus.Collector.
func (c executorInfo) Collect(ch chan<- prometheus.Metric) {
	type info struct {
		id, host string
		pid      int
	}
	c.d.mu.Lock()
	ready := make([]info, 0, len(c.d.execs))
	for _, es := range c.d.execs {
		if es.ready {
			ready = append(ready, info{es.info.ID, es.info.Host, es.info.PID})
		}
	}
	c.d.mu.Unlock()
	for _, e := range ready {
		ch <- prometheus.MustNewConstMetric(executorInfoDesc, prometheus.GaugeValue, 1, e.id, e.host, strconv.Itoa(e.pid))
	}
}
