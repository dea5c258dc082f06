package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/emberhq/ember/internal/benchkit"
)

// Summary is one figure over the runs of -runs: the spread of its ratio
// to the baseline (or of its median, when it has no baseline) and how
// often its bar was met. A noisy machine moves single runs; how often a
// bar holds over many is what says whether it is met.
type Summary struct {
	Scenario string `json:"scenario"`
	Metric   string `json:"metric"`
	// Of is "ratio" when the spread is of the ratio to the baseline, or
	// the unit of the median otherwise.
	Of     string  `json:"of"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Runs   int     `json:"runs"`
	// Bar is the figure's bar; Met counts the runs that met it, out of
	// Judged (runs of -short judge none).
	Bar    string `json:"bar,omitempty"`
	Met    int    `json:"met,omitempty"`
	Judged int    `json:"judged,omitempty"`
}

// summarize returns a Summary for every figure of runs, in the order the
// figures first appear.
func summarize(runs [][]Result) []Summary {
	type key struct{ scenario, metric string }
	var order []key
	values := map[key][]float64{}
	sums := map[key]*Summary{}
	for _, results := range runs {
		for _, r := range results {
			k := key{r.Scenario, r.Metric}
			s, ok := sums[k]
			if !ok {
				s = &Summary{Scenario: r.Scenario, Metric: r.Metric, Of: r.Unit, Bar: r.Bar}
				if r.Baseline != "" {
					s.Of = "ratio"
				}
				sums[k] = s
				order = append(order, k)
			}
			v := r.Median
			if s.Of == "ratio" {
				v = r.Ratio
			}
			values[k] = append(values[k], v)
			s.Runs++
			if r.Pass != nil {
				s.Judged++
				if *r.Pass {
					s.Met++
				}
			}
		}
	}
	out := make([]Summary, 0, len(order))
	for _, k := range order {
		s := sums[k]
		sum := benchkit.Summarize(values[k])
		s.Median, s.Min, s.Max = sum.Median, sum.Min, sum.Max
		out = append(out, *s)
	}
	return out
}

// printSummary writes sums to out as an aligned table.
func printSummary(out io.Writer, sums []Summary) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "scenario\tmetric\tmedian of the runs [min..max]\tbar\tmet\t")
	for _, s := range sums {
		spread := fmt.Sprintf("%.2fx [%.2fx..%.2fx]", s.Median, s.Min, s.Max)
		if s.Of != "ratio" {
			spread = fmt.Sprintf("%s [%s..%s]", num(s.Median, s.Of), num(s.Min, s.Of), num(s.Max, s.Of))
		}
		met := ""
		switch {
		case s.Bar == "":
		case s.Judged == 0:
			met = "not judged: -short"
		default:
			met = fmt.Sprintf("%d of %d", s.Met, s.Judged)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\n", s.Scenario, s.Metric, spread, s.Bar, met)
	}
	w.Flush()
}
