package main

import (
	"slices"
	"strings"
	"testing"
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
