package main

import "testing"

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
