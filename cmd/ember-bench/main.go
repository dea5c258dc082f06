// Command ember-bench measures Ember on loopback against the raw
// transports beneath it, in the same run, and checks the performance bar
// (docs/performance.md).
//
//	go run ./cmd/ember-bench            # full run, a few minutes
//	go run ./cmd/ember-bench -short     # seconds: CI's smoke run
//	go run ./cmd/ember-bench -json      # machine-readable results
//	go run ./cmd/ember-bench -run 'ask' # only scenarios matching a regexp
//	go run ./cmd/ember-bench -run ask-latency -runs 10 # how often the bar holds
//	go run -tags emberstamp ./cmd/ember-bench -breakdown # where an ask's time goes
//
// Every scenario starts its own application (driver in this process,
// executors as child processes of this binary) and repeats its
// measurement -reps times, next to its baselines; each figure is the
// median of the repetitions, shown with the minimum and maximum. Baseline
// clients also run in child processes, so both sides of a comparison cross
// the same process boundary. Every loop is bounded in count, and every
// scenario in time (-timeout, 15 minutes by default: a stalled peer ends
// the run with an error instead of hanging it). A ratio bar without a
// baseline figure is missed, not met.
//
// The throughput scenarios also report each side's CPU time per message
// (getrusage, where the OS has it): Ember's driver against the baseline's
// server, which runs in the same process, and Ember's executors against
// the baseline's clients. Those figures have no bar; they say which side
// an end-to-end ratio comes from, and what the driver, the one process
// every executor shares, spends per message.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/internal/benchkit"
	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/plugin"
)

// payloadBytes is every scenario's message size on the wire (the encoded
// Ping and Note, and the baselines' raw payloads).
const payloadBytes = 32

// body makes an encoded Ping exactly payloadBytes long.
var body = benchkit.Body(payloadBytes, func(b string) ([]byte, error) {
	return codec.Marshal(Ping{Body: b})
})

var (
	short    = flag.Bool("short", false, "tiny counts and one repetition: a smoke run of seconds")
	jsonOut  = flag.Bool("json", false, "print results as JSON instead of a table")
	reps     = flag.Int("reps", 5, "repetitions of each measurement")
	runsN    = flag.Int("runs", 1, "run the selected scenarios this many times, then summarize how often each bar was met")
	runRE    = flag.String("run", "", "run only scenarios whose name matches this regexp")
	scaleN   = flag.Int("scale", 1000, "executors in the scale scenario")
	timeout  = flag.Duration("timeout", 15*time.Minute, "abandon a scenario, as stalled, that runs longer than this")
	roleFlag = flag.String("role", "", "internal: the role of a child process (baseline, executors)")
	cpuProf  = flag.String("cpuprofile", "", "write the driver process's CPU profile to this file")
	execProf = flag.String("execcpuprofile", "", "write each executor process's CPU profile to `dir`/exec-PID.prof")
)

// config is the application every scenario runs; only Master changes, so
// executor processes (this binary re-executed) build the same one.
func config(master string) ember.Config {
	return ember.Config{
		AppName:      "ember-bench",
		Master:       master,
		Plugins:      []plugin.Plugin{benchPlugin{}},
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		BuildID:      "ember-bench",
		MetricsAddr:  "off",
		ExecutorArgs: []string{},
		Conf:         map[string]string{ember.ConfShowProgress: "false"},
	}
}

func main() {
	flag.Usage = func() { usage(flag.CommandLine) }
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if os.Getenv(ember.EnvDriver) != "" {
		// An executor process of one of the scenarios' applications.
		if dir := os.Getenv(envExecProfile); dir != "" {
			startExecutorProfile(dir)
		}
		_ = ember.Run(ctx, config("local-cluster[1]"), nil)
		return
	}
	var err error
	switch *roleFlag {
	case "":
		if *breakdownFlag {
			err = breakdown(ctx)
		} else {
			err = bench(ctx)
		}
	case "baseline":
		err = baselineChild(ctx)
	case "executors":
		err = executorsChild(ctx)
	default:
		err = fmt.Errorf("unknown -role %q", *roleFlag)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ember-bench:", err)
		os.Exit(1)
	}
}

// usage prints the flags a user may set: those whose usage starts with
// "internal:" are how the tool starts its own child processes.
func usage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprintf(out, "Usage: ember-bench [flags]\n\n"+
		"Measures Ember against raw gRPC and TCP on loopback, in the same run, and checks\n"+
		"the performance bar (docs/performance.md).\n\n")
	public := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	public.SetOutput(out)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Usage, "internal:") {
			public.Var(f.Value, f.Name, f.Usage)
			public.Lookup(f.Name).DefValue = f.DefValue // not the value parsed so far
		}
	})
	public.PrintDefaults()
}

// Result is one measured figure.
type Result struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Unit     string  `json:"unit"`
	Median   float64 `json:"median"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	// Baseline is the comparison's name and median, when there is one;
	// Ratio is Median/BaselineMedian.
	Baseline       string  `json:"baseline,omitempty"`
	BaselineMedian float64 `json:"baseline_median,omitempty"`
	Ratio          float64 `json:"ratio,omitempty"`
	// Bar is the target ("ratio <= 1.15", ">= 20000"), and Pass whether
	// it was met; nil in a -short run, whose tiny counts judge nothing.
	Bar  string `json:"bar,omitempty"`
	Pass *bool  `json:"pass,omitempty"`

	ratioBar float64 // the bar on Ratio, when there is one
}

func bench(ctx context.Context) error {
	if *short {
		*reps = 1
		*scaleN = min(*scaleN, 50)
	}
	if *reps < 1 {
		return fmt.Errorf("-reps %d: want at least 1", *reps)
	}
	if *scaleN < 1 {
		return fmt.Errorf("-scale %d: want at least 1", *scaleN)
	}
	if *runsN < 1 {
		return fmt.Errorf("-runs %d: want at least 1", *runsN)
	}
	selected, err := selectScenarios(*runRE)
	if err != nil {
		return err
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *execProf != "" {
		// Executor processes inherit the environment.
		os.Setenv(envExecProfile, *execProf)
	}
	var runs [][]Result
	for run := range *runsN {
		results, err := runScenarios(ctx, selected)
		if err != nil {
			return err
		}
		runs = append(runs, results)
		if *jsonOut {
			continue
		}
		if *runsN > 1 {
			fmt.Printf("run %d of %d\n", run+1, *runsN)
		}
		printTable(os.Stdout, results)
		if *runsN > 1 {
			fmt.Println()
		}
	}
	switch {
	case *jsonOut && *runsN == 1:
		return encodeJSON(runs[0])
	case *jsonOut:
		return encodeJSON(struct {
			Runs    [][]Result `json:"runs"`
			Summary []Summary  `json:"summary"`
		}{runs, summarize(runs)})
	case *runsN > 1:
		fmt.Printf("summary of %d runs\n", *runsN)
		printSummary(os.Stdout, summarize(runs))
	}
	return nil
}

// runScenarios runs the selected scenarios once, in order.
func runScenarios(ctx context.Context, selected []scenario) ([]Result, error) {
	var results []Result
	for _, s := range selected {
		fmt.Fprintf(os.Stderr, "ember-bench: %s...\n", s.name)
		// Every wait of a scenario (asks, baseline processes) ends with
		// this ctx: a stalled peer cannot hang the tool. It is cancelled
		// by a timer rather than given a deadline: a deadline would travel
		// with every ask the scenario times, which the baselines' pings
		// do not carry (ask-latency's "ask timeout" row measures asks
		// with one).
		sctx, cancel := context.WithCancelCause(ctx)
		stalled := fmt.Errorf("did not finish within -timeout %v", *timeout)
		timer := time.AfterFunc(*timeout, func() { cancel(stalled) })
		rs, err := s.run(sctx)
		timer.Stop()
		if err != nil && context.Cause(sctx) == stalled {
			err = fmt.Errorf("%w (%w)", stalled, err)
		}
		cancel(nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		results = append(results, rs...)
	}
	if *short {
		for i := range results {
			results[i].Pass = nil
		}
	}
	return results, nil
}

func encodeJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // bars read "< 500.0ms", not "\u003c 500.0ms"
	return enc.Encode(v)
}

// selectScenarios returns the scenarios whose names match the -run
// regexp expr (all of them for ""), in table order, and an error naming
// the scenarios when none does: an empty table would look like a run.
func selectScenarios(expr string) ([]scenario, error) {
	if expr == "" {
		return scenarios, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("-run: %w", err)
	}
	var out []scenario
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
		if re.MatchString(s.name) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-run %q matches no scenario (scenarios: %s)", expr, strings.Join(names, ", "))
	}
	return out, nil
}

// envExecProfile passes -execcpuprofile to executor processes.
const envExecProfile = "EMBER_BENCH_EXEC_CPUPROFILE"

// stopExecutorProfile ends the executor process's profile; the executor
// plugin calls it in Shutdown, the last code of the process that is ours
// (ember.Run ends an executor process with os.Exit).
var stopExecutorProfile = func() {}

func startExecutorProfile(dir string) {
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("exec-%d.prof", os.Getpid())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ember-bench:", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "ember-bench:", err)
		f.Close()
		return
	}
	stopExecutorProfile = func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// printTable writes results to out as an aligned table.
func printTable(out io.Writer, results []Result) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "scenario\tmetric\tember (median [min..max])\tbaseline\tratio\tbar\t")
	for _, r := range results {
		base, ratio := "", ""
		if r.Baseline != "" {
			base = fmt.Sprintf("%s %s", r.Baseline, num(r.BaselineMedian, r.Unit))
			ratio = ratioText(r)
		}
		bar := r.Bar
		switch {
		case r.Pass != nil:
			bar += map[bool]string{true: " ok", false: " MISSED"}[*r.Pass]
		case bar != "":
			bar += " (not judged: -short)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s [%s..%s]\t%s\t%s\t%s\t\n", r.Scenario, r.Metric,
			num(r.Median, r.Unit), num(r.Min, r.Unit), num(r.Max, r.Unit), base, ratio, bar)
	}
	w.Flush()
}

// ratioText formats r's ratio with two decimals, or three when two would
// print the bar's own value: "1.15x ... MISSED" would read as a
// contradiction where the ratio is 1.154.
func ratioText(r Result) string {
	s := fmt.Sprintf("%.2fx", r.Ratio)
	if r.ratioBar != 0 && s == fmt.Sprintf("%.2fx", r.ratioBar) && r.Ratio != r.ratioBar {
		s = fmt.Sprintf("%.3fx", r.Ratio)
	}
	return s
}

func num(v float64, unit string) string {
	switch {
	case unit == "us" || unit == "ms":
		return fmt.Sprintf("%.1f%s", v, unit)
	case unit == "ns":
		return fmt.Sprintf("%.0f%s", v, unit)
	case v >= 1e6:
		return fmt.Sprintf("%.2fM%s", v/1e6, unit)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk%s", v/1e3, unit)
	}
	return fmt.Sprintf("%.1f%s", v, unit)
}
