package benchkit

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p <= 100) of ds, by the
// nearest-rank method. ds is sorted in place.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	// The smallest rank with at least p% of the values at or below it:
	// ceil(p/100 × n), less a hair for p/100 × n computed a hair over a
	// whole number (it rounded to the nearest rank, one too low for p99 of
	// about half of all counts).
	rank := int(math.Ceil(p/100*float64(len(ds)) - 1e-9))
	rank = min(max(rank, 1), len(ds))
	return ds[rank-1]
}

// Summary is the median, minimum and maximum of repeated measurements.
type Summary struct {
	Median, Min, Max float64
}

// Summarize returns the summary of xs, which it leaves as it is: a
// caller may pair xs[i] with another series' i-th value.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	xs = slices.Sorted(slices.Values(xs))
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return Summary{Median: m, Min: xs[0], Max: xs[len(xs)-1]}
}
