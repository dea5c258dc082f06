package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
func dumpStamps(role string) error {
	dir := os.Getenv(envStamps)
	if dir == "" {
		return nil
	}
	return stamp.Dump(filepath.Join(dir, fmt.Sprintf("%s-%d", role, os.Getpid())))
}

// Segment is one stretch of the round trip: Ember's and, where the raw
// stream has the same stretch, the baseline's.
type Segment struct {
	Name      string  `json:"segment"`
	EmberP50  float64 `json:"ember_p50_us"`
	EmberMean float64 `json:"ember_mean_us"`
	RawP50    float64 `json:"raw_p50_us,omitempty"`
	RawMean   float64 `json:"raw_mean_us,omitempty"`
	HasRaw    bool    `json:"has_raw"`
	Calls     int     `json:"calls"`
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

// breakdown runs n one-at-a-time asks from one executor and n raw gRPC
// ping-pongs, with every process stamping each message's points, and
// prints where the time goes.
func breakdown(ctx context.Context) error {
	if !stamp.Enabled {
		return errors.New("-breakdown needs a binary built with the emberstamp tag: go run -tags emberstamp ./cmd/ember-bench -breakdown")
	}
	dir, err := os.MkdirTemp("", "ember-stamps")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Setenv(envStamps, dir) // children inherit it
	n := min(pick(20000, 1000), stamp.MaxID-1)
	err = ember.Run(ctx, config("local-cluster[1]"), func(ctx context.Context, _ *ember.Driver) error {
		ds := current.Load()
		srv, err := benchkit.StartGRPC()
		if err != nil {
			return err
		}
		defer srv.Stop()
		if _, err := plugin.AskExecutor[AskStats](ctx, ds.dc, "1", RunAsks{N: n, Outstanding: 1, Latencies: true}); err != nil {
			return err
		}
		if _, err := runBaseline(ctx, "grpc-pingpong", srv.Addr, n, 0); err != nil {
			return err
		}
		return dumpStamps("driver")
	})
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return err
	}
	rec, err := stamp.Read(files...)
	if err != nil {
		return err
	}
	// The first calls warm up (and the driver's one ask to the executor
	// shares low call IDs with the executor's asks): skip them.
	const skip = 100
	var out []Segment
	for _, s := range segments {
		e := rec.Segment(s.from, s.to, skip, n)
		if len(e) == 0 {
			return fmt.Errorf("no stamps for %q: did every process dump its stamps?", s.name)
		}
		seg := Segment{Name: s.name, Calls: len(e), HasRaw: s.hasRaw}
		seg.EmberP50, seg.EmberMean = summary(e)
		if s.hasRaw {
			seg.RawP50, seg.RawMean = summary(rec.Segment(s.rawFrom, s.rawTo, skip, n))
		}
		out = append(out, seg)
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "segment\tember p50\tember mean\traw grpc p50\traw grpc mean\t")
	for _, s := range out {
		raw := "\t"
		if s.HasRaw {
			raw = fmt.Sprintf("%.2fus\t%.2fus", s.RawP50, s.RawMean)
		}
		fmt.Fprintf(w, "%s\t%.2fus\t%.2fus\t%s\t\n", s.Name, s.EmberP50, s.EmberMean, raw)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("%d asks and %d raw round trips, one at a time; the means add up to the round trip's, the medians need not.\n", out[0].Calls, n)
	return nil
}

// summary returns the median and mean of ns, in microseconds.
func summary(ns []int64) (p50, mean float64) {
	if len(ns) == 0 {
		return 0, 0
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	return float64(s[len(s)/2]) / 1e3, sum / float64(len(s)) / 1e3
}
