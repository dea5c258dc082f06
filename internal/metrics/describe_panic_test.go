package metrics

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A collector whose Describe panics (a prometheus.CollectorFunc, or any
// collector using DescribeByCollect, runs its Collect there) is plugin
// code as much as its Collect: the registry calls Describe, in Register
// and Unregister, on a goroutine of its own, so the panic ends the
// process. It must come back as Register's error instead. Run in a child
// process, since the failure is the process's end.
func TestPluginCollectorDescribePanicIsContained(t *testing.T) {
	if os.Getenv("EMBER_TEST_DESCRIBE_PANIC") == "1" {
		reg := prometheus.NewRegistry()
		r := PluginRegisterer(reg, "p", "1")
		err := r.Register(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
			var st map[string]*prometheus.Desc // state the plugin's Init has not filled yet
			ch <- prometheus.MustNewConstMetric(st["depth"], prometheus.GaugeValue, 1)
		}))
		if err == nil || !strings.Contains(err.Error(), `plugin "p"`) {
			t.Fatalf("Register of a collector whose Describe panics: got %v, want an error naming the plugin", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPluginCollectorDescribePanicIsContained$", "-test.v")
	cmd.Env = append(os.Environ(), "EMBER_TEST_DESCRIBE_PANIC=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the process ended: %v\n%s", err, out)
	}
}

// panickyDescribe panics in Describe.
type panickyDescribe struct{}

func (panickyDescribe) Describe(chan<- *prometheus.Desc) { panic("describe boom") }
func (panickyDescribe) Collect(chan<- prometheus.Metric) {}

func TestPluginDescribePanicIsContained(t *testing.T) {
	if os.Getenv("EMBER_TEST_DESCRIBE_PANIC") == "1" {
		r := PluginRegisterer(prometheus.NewRegistry(), "p", "1")
		if err := r.Register(panickyDescribe{}); err == nil || !strings.Contains(err.Error(), "describe boom") {
			t.Fatalf("Register: got %v, want the panic as an error", err)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPluginDescribePanicIsContained$", "-test.v")
	cmd.Env = append(os.Environ(), "EMBER_TEST_DESCRIBE_PANIC=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the process ended: %v\n%s", err, out)
	}
}
