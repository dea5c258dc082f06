package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/internal/benchkit"
	"github.com/emberhq/ember/internal/stamp"
	"github.com/emberhq/ember/plugin"
)

var breakdownFlag = flag.Bool("breakdown", false, "split the ask round trip into segments next to the raw gRPC stream's (needs -tags emberstamp)")

// envStamps names the directory where every process of a -breakdown run
// dumps its stamps.
const envStamps = "EMBER_BENCH_STAMPS"

// dumpStamps writes this process's stamps to the -breakdown directory, if
// there is one.
func dumpStamps(role string) error { return dumpStampsTo(os.Getenv(envStamps), role) }

// dumpStampsTo writes this process's stamps to dir (none if dir is "").
func dumpStampsTo(dir, role string) error {
	if dir == "" {
		return nil
	}
	return stamp.Dump(filepath.Join(dir, fmt.Sprintf("%s-%d", role, os.Getpid())))
}

// Segment is one stretch of the round trip: Ember's and, where the raw
// stream has the same stretch, the baseline's, run from its own process
// (as in the ask-latency scenario) and from inside the executor process.
type Segment struct {
	Name        string  `json:"segment"`
	EmberP50    float64 `json:"ember_p50_us"`
	EmberMean   float64 `json:"ember_mean_us"`
	RawP50      float64 `json:"raw_p50_us,omitempty"`
	RawMean     float64 `json:"raw_mean_us,omitempty"`
	RawExecP50  float64 `json:"raw_in_executor_p50_us,omitempty"`
	RawExecMean float64 `json:"raw_in_executor_mean_us,omitempty"`
	HasRaw      bool    `json:"has_raw"`
	Calls       int     `json:"calls"`
}

// segments lists the stretches: Ember's points, then the raw stream's
// (0, 0 where it has no such stretch).
var segments = []struct {
	name           string
	from, to       stamp.Point
	rawFrom, rawTo stamp.Point
	hasRaw         bool
}{
	{"asker: write the ask", stamp.AskQueued, stamp.AskWritten, stamp.RawSend, stamp.RawSent, true},
	{"wire: ask to answerer's reader", stamp.AskWritten, stamp.AskRead, stamp.RawSent, stamp.RawServerRead, true},
	{"answerer: reader to Receive (lane)", stamp.AskRead, stamp.AskDispatched, 0, 0, false},
	{"answerer: Receive", stamp.AskDispatched, stamp.ReplyQueued, 0, 0, false},
	{"answerer: reply to writer", stamp.ReplyQueued, stamp.ReplyWriting, 0, 0, false},
	{"answerer: write the reply", stamp.ReplyWriting, stamp.ReplyWritten, stamp.RawServerRead, stamp.RawServerSent, true},
	{"wire: reply to asker's reader", stamp.ReplyWritten, stamp.ReplyRead, stamp.RawServerSent, stamp.RawRead, true},
	{"asker: reader to asking goroutine", stamp.ReplyRead, stamp.ReplyDelivered, 0, 0, false},
	{"round trip", stamp.AskQueued, stamp.ReplyDelivered, stamp.RawSend, stamp.RawRead, true},
}

// breakdownBlocks is how many times a -breakdown run alternates between
// Ember and the raw stream, so that a machine whose speed drifts (a busy
// VM) weighs on both alike.
const breakdownBlocks = 10

// breakdown runs one-at-a-time asks from one executor and as many raw gRPC
// ping-pongs of each kind, in alternating blocks, with every process
// stamping each message's points, and prints where the time goes.
func breakdown(ctx context.Context) error {
	if !stamp.Enabled {
		return errors.New("-breakdown needs a binary built with the emberstamp tag: go run -tags emberstamp ./cmd/ember-bench -breakdown")
	}
	dir, err := os.MkdirTemp("", "ember-stamps")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Setenv(envStamps, dir) // the executor process inherits it
	m := min(pick(20000, 1000), stamp.MaxID-1) / breakdownBlocks
	// The first calls of a block warm up a fresh connection (the raw
	// stream's) and the driver's one ask of the block shares low call IDs
	// with the executor's: skip them.
	skip := min(100, m/4)
	// Thread switches per round trip, Ember's and the two raw runs'.
	sw := [3]switchCount{{Name: "ember"}, {Name: "raw grpc"}, {Name: "raw grpc in executor"}}
	err = ember.Run(ctx, config("local-cluster[1]"), func(ctx context.Context, _ *ember.Driver) error {
		ds := current.Load()
		srv, err := benchkit.StartGRPC()
		if err != nil {
			return err
		}
		defer srv.Stop()
		for b := range breakdownBlocks {
			d0 := switches()
			st, err := plugin.AskExecutor[AskStats](ctx, ds.dc, "1", RunAsks{N: m, Outstanding: 1, Latencies: true})
			if err != nil {
				return err
			}
			sw[0].add(st.Switches, switches()-d0, m)
			// Each raw block is a new stream whose messages are numbered
			// from 1: its client's stamps and the server's (this process)
			// go to a directory of their own.
			child, inExec := rawDir(dir, "child", b), rawDir(dir, "executor", b)
			for _, d := range []string{child, inExec} {
				if err := os.Mkdir(d, 0o755); err != nil {
					return err
				}
			}
			os.Setenv(envStamps, child)
			d0 = switches()
			br, err := runBaseline(ctx, "grpc-pingpong", srv.Addr, m, 0)
			os.Setenv(envStamps, dir)
			if err != nil {
				return err
			}
			sw[1].add(br.Switches, switches()-d0, m)
			if err := dumpStampsTo(child, "server"); err != nil {
				return err
			}
			d0 = switches()
			st, err = plugin.AskExecutor[AskStats](ctx, ds.dc, "1", RunRawPingPong{Addr: srv.Addr, N: m, StampDir: inExec})
			if err != nil {
				return err
			}
			sw[2].add(st.Switches, switches()-d0, m)
			if err := dumpStampsTo(inExec, "server"); err != nil {
				return err
			}
		}
		return dumpStamps("driver")
	})
	if err != nil {
		return err
	}
	emberFiles, err := filepath.Glob(filepath.Join(dir, "[de]*-*")) // driver-PID, executor-PID
	if err != nil {
		return err
	}
	emberRec, err := stamp.Read(emberFiles...)
	if err != nil {
		return err
	}
	raw := make([]*stamp.Record, breakdownBlocks)
	rawExec := make([]*stamp.Record, breakdownBlocks)
	for b := range raw {
		if raw[b], err = readDir(rawDir(dir, "child", b)); err != nil {
			return err
		}
		if rawExec[b], err = readDir(rawDir(dir, "executor", b)); err != nil {
			return err
		}
	}
	var out []Segment
	for _, s := range segments {
		var e, r, rx []int64
		for b := range breakdownBlocks {
			// Call IDs: Ember's run on across blocks; each raw block's
			// start again at 1.
			e = append(e, emberRec.Segment(s.from, s.to, b*m+1+skip, (b+1)*m+1)...)
			if s.hasRaw {
				r = append(r, raw[b].Segment(s.rawFrom, s.rawTo, 1+skip, m+1)...)
				rx = append(rx, rawExec[b].Segment(s.rawFrom, s.rawTo, 1+skip, m+1)...)
			}
		}
		if len(e) == 0 || (s.hasRaw && (len(r) == 0 || len(rx) == 0)) {
			return fmt.Errorf("no stamps for %q: did every process dump its stamps?", s.name)
		}
		seg := Segment{Name: s.name, Calls: len(e), HasRaw: s.hasRaw}
		seg.EmberP50, seg.EmberMean = summary(e)
		seg.RawP50, seg.RawMean = summary(r)
		seg.RawExecP50, seg.RawExecMean = summary(rx)
		out = append(out, seg)
	}
	for i := range sw {
		sw[i].finish()
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Segments []Segment      `json:"segments"`
			Switches [3]switchCount `json:"switches_per_round_trip"`
		}{out, sw})
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "segment\tember p50\tmean\traw grpc p50\tmean\traw grpc in executor p50\tmean\t")
	for _, s := range out {
		raw := "\t\t\t"
		if s.HasRaw {
			raw = fmt.Sprintf("%.2fus\t%.2fus\t%.2fus\t%.2fus", s.RawP50, s.RawMean, s.RawExecP50, s.RawExecMean)
		}
		fmt.Fprintf(w, "%s\t%.2fus\t%.2fus\t%s\t\n", s.Name, s.EmberP50, s.EmberMean, raw)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\t\t\t\t\t\t\t")
	fmt.Fprintln(w, "thread switches per round trip\tasker process\tanswerer process\t\t\t\t\t")
	for _, c := range sw {
		if c.Asker < 0 || c.Answerer < 0 {
			fmt.Fprintf(w, "%s\tunknown\tunknown\t\t\t\t\t\n", c.Name)
			continue
		}
		fmt.Fprintf(w, "%s\t%.2f\t%.2f\t\t\t\t\t\n", c.Name, c.Asker, c.Answerer)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("%d asks and as many raw round trips of each kind, one at a time, in %d alternating blocks.\n", out[0].Calls, breakdownBlocks)
	fmt.Println("Thread switches: times a thread of the process gave up its CPU (getrusage), each one a wake-up to pay for later.")
	fmt.Println("Raw grpc: the ask-latency baseline (client in a process of its own); in executor: the same client run inside the executor process.")
	fmt.Println("The means add up to the round trip's, the medians need not.")
	return nil
}

// switchCount sums the thread switches of the two processes of a round
// trip over a run's blocks, then gives them per round trip.
type switchCount struct {
	Name     string  `json:"name"`
	Asker    float64 `json:"asker"`    // per round trip, or -1 if unknown
	Answerer float64 `json:"answerer"` // per round trip, or -1 if unknown

	asker, answerer int64
	trips           int
	unknown         bool
}

func (c *switchCount) add(asker, answerer int64, trips int) {
	if asker < 0 || answerer < 0 {
		c.unknown = true
	}
	c.asker += asker
	c.answerer += answerer
	c.trips += trips
}

func (c *switchCount) finish() {
	if c.unknown || c.trips == 0 {
		c.Asker, c.Answerer = -1, -1
		return
	}
	c.Asker = float64(c.asker) / float64(c.trips)
	c.Answerer = float64(c.answerer) / float64(c.trips)
}

// summary returns the median and mean of ns, in microseconds.
func summary(ns []int64) (p50, mean float64) {
	if len(ns) == 0 {
		return 0, 0
	}
	us := make([]float64, len(ns))
	var sum float64
	for i, v := range ns {
		us[i] = float64(v) / 1e3
		sum += us[i]
	}
	return benchkit.Summarize(us).Median, sum / float64(len(us))
}

// rawDir is where raw block b of a kind ("child", "executor") keeps its
// stamps.
func rawDir(dir, kind string, b int) string {
	return filepath.Join(dir, fmt.Sprintf("raw-%s-%d", kind, b))
}

// readDir merges the stamp files in dir.
func readDir(dir string) (*stamp.Record, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return nil, err
	}
	return stamp.Read(files...)
}
