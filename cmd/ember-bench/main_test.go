package main

import (
	"context"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/codec"
)

func TestRatioText(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ratio float64
		bar   float64
		want  string
	}{
		{"no bar", 1.1549, 0, "1.15x"},
		{"well under the bar", 1.0912, 1.15, "1.09x"},
		{"over the bar, rounding to it", 1.1534, 1.15, "1.153x"},
		{"under the bar, rounding to it", 1.1468, 1.15, "1.147x"},
		{"exactly the bar", 1.15, 1.15, "1.15x"},
		{"over the bar", 1.1712, 1.15, "1.17x"},
		{"rate bar", 0.9961, 1.0, "0.996x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ratioText(Result{Ratio: tc.ratio, ratioBar: tc.bar}); got != tc.want {
				t.Errorf("ratioText(%v, bar %v) = %q, want %q", tc.ratio, tc.bar, got, tc.want)
			}
		})
	}
}

func TestSelectScenarios(t *testing.T) {
	for _, tc := range []struct {
		expr    string
		want    []string
		wantErr string
	}{
		{"", []string{"ask-latency", "ask-throughput", "send-throughput", "driver-to-executors", "tasks", "startup", "scale"}, ""},
		{"ask-|send-", []string{"ask-latency", "ask-throughput", "send-throughput"}, ""},
		{"^scale$", []string{"scale"}, ""},
		{"nothing", nil, `-run "nothing" matches no scenario (scenarios: ask-latency, ask-throughput, send-throughput, driver-to-executors, tasks, startup, scale)`},
		{"(", nil, "-run: error parsing regexp"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			got, err := selectScenarios(tc.expr)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("selectScenarios(%q) error = %v, want one starting %q", tc.expr, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("selectScenarios(%q): %v", tc.expr, err)
			}
			var names []string
			for _, s := range got {
				names = append(names, s.name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("selectScenarios(%q) = %v, want %v", tc.expr, names, tc.want)
			}
		})
	}
}

func TestCPUSeries(t *testing.T) {
	ms := time.Millisecond
	known := func(c *cpuSeries) {
		// 1,000 messages: Ember's driver used 2ms and its executors 3ms;
		// the baseline's server 4ms and its two clients 2.5ms each.
		c.add(1000, cpuUse{driver: 10 * ms, executors: 20 * ms}, cpuUse{driver: 12 * ms, executors: 23 * ms}, 4*ms,
			[]baselineResult{{CPU: 2500 * time.Microsecond}, {CPU: 2500 * time.Microsecond}})
	}
	for _, tc := range []struct {
		name string
		add  func(c *cpuSeries)
		want []Result // Scenario, Metric, Median, BaselineMedian, Ratio
	}{
		{"known", known, []Result{
			{Scenario: "s", Metric: "driver CPU per ask", Median: 2000, BaselineMedian: 4000, Ratio: 0.5},
			{Scenario: "s", Metric: "executors' CPU per ask", Median: 3000, BaselineMedian: 5000, Ratio: 0.6},
		}},
		{"nothing recorded", func(*cpuSeries) {}, nil},
		{"executor CPU unknown", func(c *cpuSeries) {
			known(c)
			c.add(1000, cpuUse{driver: 10 * ms, executors: -1}, cpuUse{driver: 12 * ms, executors: -1}, 4*ms, []baselineResult{{CPU: ms}})
		}, nil},
		{"client CPU unknown", func(c *cpuSeries) {
			c.add(1000, cpuUse{driver: 10 * ms, executors: 20 * ms}, cpuUse{driver: 12 * ms, executors: 23 * ms}, 4*ms, []baselineResult{{}})
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c cpuSeries
			tc.add(&c)
			got := c.results("s", "ask")
			if len(got) != len(tc.want) {
				t.Fatalf("got %d rows, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.Scenario != w.Scenario || g.Metric != w.Metric || g.Unit != "ns" || g.Median != w.Median || g.BaselineMedian != w.BaselineMedian || g.Ratio != w.Ratio {
					t.Errorf("row %d = %s/%s %v%s vs %v (%vx), want %s/%s %vns vs %v (%vx)", i,
						g.Scenario, g.Metric, g.Median, g.Unit, g.BaselineMedian, g.Ratio,
						w.Scenario, w.Metric, w.Median, w.BaselineMedian, w.Ratio)
				}
				if g.Pass != nil {
					t.Errorf("row %d has a bar (%q); CPU figures have none", i, g.Bar)
				}
			}
		})
	}
}

func TestCPUTimeAdvances(t *testing.T) {
	before := cpuTime()
	if before < 0 {
		t.Skip("no getrusage here")
	}
	// Spin until the process has used 20ms more CPU, or give up after
	// 10s of wall time: getrusage must see work done.
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for cpuTime()-before < 20*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("cpuTime advanced %v in 10s of spinning, want at least 20ms", cpuTime()-before)
		}
		for i := range 100000 {
			x += i
		}
	}
	_ = x
}

func TestPrintTableBarColumn(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name string
		r    Result
		want string
	}{
		{"met", Result{Bar: ">= 20000", Pass: &yes}, ">= 20000 ok"},
		{"missed", Result{Bar: ">= 20000", Pass: &no}, ">= 20000 MISSED"},
		{"short run", Result{Bar: ">= 20000"}, ">= 20000 (not judged: -short)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			printTable(&b, []Result{tc.r})
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			if got := strings.TrimSpace(lines[len(lines)-1]); !strings.HasSuffix(got, tc.want) {
				t.Errorf("row = %q, want it to end with %q", got, tc.want)
			}
		})
	}
	var b strings.Builder
	printTable(&b, []Result{{Metric: "no bar"}})
	if strings.Contains(b.String(), "not judged") {
		t.Errorf("a figure without a bar printed %q, want no verdict", b.String())
	}
}

func TestUsageHidesInternalFlags(t *testing.T) {
	var b strings.Builder
	flag.CommandLine.SetOutput(&b)
	defer flag.CommandLine.SetOutput(nil)
	usage(flag.CommandLine)
	got := b.String()
	for _, want := range []string{"-run string", "-reps int", "(default 5)", "-short", "-breakdown"} {
		if !strings.Contains(got, want) {
			t.Errorf("usage does not mention %q:\n%s", want, got)
		}
	}
	for _, hidden := range []string{"internal:", "-role", "-barrier"} {
		if strings.Contains(got, hidden) {
			t.Errorf("usage mentions %q, an internal flag:\n%s", hidden, got)
		}
	}
}

func TestSummarize(t *testing.T) {
	pass := func(b bool) *bool { return &b }
	p50 := func(ratio float64, met bool) Result {
		return Result{Scenario: "ask-latency", Metric: "p50", Unit: "us", Median: 60, Baseline: "grpc", BaselineMedian: 60 / ratio, Ratio: ratio, Bar: "ratio <= 1.15", Pass: pass(met)}
	}
	startup := func(ms float64, pass *bool) Result {
		return Result{Scenario: "startup", Metric: "ready", Unit: "ms", Median: ms, Bar: "< 500.0ms", Pass: pass}
	}
	floor := Result{Scenario: "ask-latency", Metric: "p50 (floor)", Unit: "us", Median: 60, Baseline: "tcp", BaselineMedian: 30, Ratio: 2}
	got := summarize([][]Result{
		{p50(1.10, true), floor, startup(12, pass(true))},
		{p50(1.20, false), floor, startup(14, pass(true))},
		{p50(1.12, true), floor, startup(13, nil)}, // a -short run judges nothing
	})
	want := []Summary{
		{Scenario: "ask-latency", Metric: "p50", Of: "ratio", Median: 1.12, Min: 1.10, Max: 1.20, Runs: 3, Bar: "ratio <= 1.15", Met: 2, Judged: 3},
		{Scenario: "ask-latency", Metric: "p50 (floor)", Of: "ratio", Median: 2, Min: 2, Max: 2, Runs: 3},
		{Scenario: "startup", Metric: "ready", Of: "ms", Median: 13, Min: 12, Max: 14, Runs: 3, Bar: "< 500.0ms", Met: 2, Judged: 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("summarize:\n got %+v\nwant %+v", got, want)
	}

	var b strings.Builder
	printSummary(&b, got)
	for _, line := range []string{"1.12x [1.10x..1.20x]", "2 of 3", "13.0ms [12.0ms..14.0ms]", "2 of 2"} {
		if !strings.Contains(b.String(), line) {
			t.Errorf("printSummary: no %q in\n%s", line, b.String())
		}
	}
}

// The messages the scenarios time carry payloads as large as the
// baselines': a broadcast note used to be half the baseline's size.
func TestMessagesArePayloadSized(t *testing.T) {
	for _, m := range []any{Ping{Body: body}, Note{Body: body}, BNote{Body: body}} {
		b, err := codec.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != payloadBytes {
			t.Errorf("%T encodes to %d bytes, want %d", m, len(b), payloadBytes)
		}
	}
}

// A bar is judged by its own operator, and a ratio bar without a baseline
// is missed: a baseline median of 0 made a ratio of 0, which met "<=".
func TestBars(t *testing.T) {
	tests := []struct {
		name string
		r    Result
		want bool
	}{
		{"under a < bar", result("s", "m", "ms", series{9}).absolute("<", 10), true},
		{"at a < bar", result("s", "m", "ms", series{10}).absolute("<", 10), false},
		{"at a <= ratio bar", result("s", "m", "us", series{115}).vs("b", series{100}, "<=", 1.15), true},
		{"over a <= ratio bar", result("s", "m", "us", series{116}).vs("b", series{100}, "<=", 1.15), false},
		{"no baseline", result("s", "m", "us", series{50}).vs("b", series{0}, "<=", 1.15), false},
		{"at a >= ratio bar", result("s", "m", "/s", series{100}).vs("b", series{100}, ">=", 1), true},
	}
	for _, tt := range tests {
		if tt.r.Pass == nil || *tt.r.Pass != tt.want {
			t.Errorf("%s: got pass %v, want %v", tt.name, tt.r.Pass, tt.want)
		}
	}
}

// The scale scenario's p99 counts every ask or none: an executor's failed
// asks, which have no latency, used to be left out, so a run whose asks
// all failed reported a p99 of 0 and met its bar.
func TestFailedPingsFailTheScenario(t *testing.T) {
	var d driverSide
	done := d.expectPings(2)
	ctx := context.Background()
	_, _ = d.Receive(ctx, PingLatencies{Latencies: []time.Duration{time.Millisecond}})
	_, _ = d.Receive(ctx, PingLatencies{Failed: 3, Err: "unavailable: gone"})
	<-done
	if lat, err := d.allLatencies(); err == nil || !strings.Contains(err.Error(), "3 of 4 asks failed (the first: unavailable: gone)") {
		t.Errorf("latencies with failed asks: got %v, %v; want an error counting them", lat, err)
	}
	done = d.expectPings(1)
	_, _ = d.Receive(ctx, PingLatencies{Latencies: []time.Duration{time.Millisecond}})
	<-done
	if lat, err := d.allLatencies(); err != nil || len(lat) != 1 {
		t.Errorf("latencies of asks that all succeeded: got %v, %v", lat, err)
	}
}
