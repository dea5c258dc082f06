package ember_test

// Benchmarks of Ember's plugin RPC against raw gRPC on loopback TCP,
// measured in the same run (DESIGN.md section 5). docs/performance.md has
// the commands and the figures.
//
//	go test -run '^$' -bench 'Ask|Send' -benchtime 2s -count 5 .
//	go test -run '^$' -bench AskPipelined -benchtime 2s -count 5 .
//
// Each sub-benchmark starts its own server (or in-process cluster) per
// invocation, outside the timer, and stops it in b.Cleanup. The baselines
// run first; the Ember sub-benchmarks then report "ratio-vs-grpc", their
// ns/op divided by the median ns/op of the baseline's completed runs in
// this process (with -count 5, all five). Run a baseline together with
// Ember (e.g. -bench 'Ask/(grpc-stream|ember)$') to get the ratio. With
// -count, the testing package runs one sub-benchmark's runs back to back;
// on a shared machine, prefer several -count 1 processes (see
// docs/performance.md) and compare "cpu-ns/op", which load barely moves.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/benchkit"
	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// benchPayloadBytes is the size of every benchmark payload on the wire: the
// encoding of a benchPing or benchNote, and the raw gRPC messages.
const benchPayloadBytes = 32

// Benchmark messages. benchBody makes their encoding exactly
// benchPayloadBytes long.
type (
	benchPing struct{ Body string } // asked; the driver plugin echoes it
	benchNote struct{ Body string } // sent; the driver plugin counts it
)

var benchBody = benchkit.Body(benchPayloadBytes, func(b string) ([]byte, error) {
	return codec.Marshal(benchPing{Body: b})
})

func init() {
	plugin.RegisterMessage[benchPing]()
	plugin.RegisterMessage[benchNote]()
	plugin.RegisterMessage[*wrapperspb.BytesValue]()
	// The server finds rawCodec by the content-subtype that
	// grpc.ForceCodec(rawCodec{}) sets on the client's calls; wire.Ember
	// keeps the default protobuf codec.
	encoding.RegisterCodec(rawCodec{})
}

// Transport settings shared by the baselines: the driver's and
// executors', so that both sides of a comparison use the same gRPC tuning.
const (
	benchWindow     = rpc.StreamWindow
	benchConnWindow = rpc.ConnWindow
)

// BenchmarkAsk times one request/reply round trip with a 32-byte payload,
// one caller, one outstanding call:
//
//   - grpc-stream: raw gRPC bidirectional stream ping-pong, []byte codec;
//   - grpc-frames: the same over Ember's own service (wire.Ember), one
//     Frame per Batch, with a trivial echo server: gRPC plus protobuf
//     framing, without Ember's runtime;
//   - ember: an executor plugin's ExecutorContext.Ask to its driver plugin,
//     which echoes the message, on an in-process local[1] cluster;
//   - ember-proto: the same with a protobuf message (a wrapperspb.BytesValue
//     whose encoding is also 32 bytes) instead of a CBOR-encoded struct,
//     which isolates the cost of CBOR in the round trip.
//
// Each reports ns/op and the p50/p99 latency of a single call in µs.
func BenchmarkAsk(b *testing.B) {
	var base benchBaseline
	b.Run("grpc-stream", func(b *testing.B) {
		base.begin(b)
		cs := startRawEcho(b)
		payload := []byte(strings.Repeat("g", benchPayloadBytes))
		var reply []byte
		call := func() {
			if err := cs.SendMsg(&payload); err != nil {
				b.Fatal(err)
			}
			if err := cs.RecvMsg(&reply); err != nil {
				b.Fatal(err)
			}
			if len(reply) != benchPayloadBytes {
				b.Fatalf("reply of %d bytes, want %d", len(reply), benchPayloadBytes)
			}
		}
		measureAsk(b, call)
		base.record(b)
		if err := cs.CloseSend(); err != nil {
			b.Fatal(err)
		}
		if err := cs.RecvMsg(&reply); !errors.Is(err, io.EOF) {
			b.Fatalf("after CloseSend: got %v, want io.EOF", err)
		}
	})

	b.Run("grpc-frames", func(b *testing.B) {
		rs := startRawGRPC(b)
		stream, err := wire.NewEmberClient(rs.cc).Connect(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		ask := &wire.Batch{Frames: []*wire.Frame{{
			Kind:    wire.Kind_KIND_ASK,
			Type:    "github.com/emberhq/ember_test.benchPing",
			Payload: []byte(strings.Repeat("f", benchPayloadBytes)),
		}}}
		call := func() {
			ask.Frames[0].Call++
			if err := stream.Send(ask); err != nil {
				b.Fatal(err)
			}
			r, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if len(r.Frames) != 1 || r.Frames[0].Call != ask.Frames[0].Call {
				b.Fatalf("reply %v, want call %d", r, ask.Frames[0].Call)
			}
		}
		measureAsk(b, call)
		if err := stream.CloseSend(); err != nil {
			b.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			b.Fatalf("after CloseSend: got %v, want io.EOF", err)
		}
	})

	// Ember's ask of a typed ping under ctx, which newCtx makes; with a
	// perAsk timeout, under a ctx of its own with that timeout.
	askPing := func(b *testing.B, newCtx func(*testing.B) context.Context, perAsk time.Duration) {
		_, pc := startBenchCluster(b)
		ctx := newCtx(b)
		var msg any = benchPing{Body: benchBody}
		call := func() {
			actx, cancel := ctx, context.CancelFunc(func() {})
			if perAsk > 0 {
				actx, cancel = context.WithTimeout(ctx, perAsk)
			}
			r, err := pc.Ask(actx, msg)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			if p, ok := r.(benchPing); !ok || p.Body != benchBody {
				b.Fatalf("reply %#v, want the ping back", r)
			}
		}
		measureAsk(b, call)
		base.reportRatio(b)
	}
	b.Run("ember", func(b *testing.B) { askPing(b, (*testing.B).Context, 0) })
	// An ask with a deadline: it travels with the ask, and bounds the
	// answering handler's ctx (rpc.handlerCtx, which arms no timer
	// unless the handler waits on it).
	b.Run("ember-deadline", func(b *testing.B) {
		askPing(b, func(b *testing.B) context.Context {
			ctx, cancel := context.WithTimeout(b.Context(), time.Hour)
			b.Cleanup(cancel)
			return ctx
		}, 0)
	})
	// Each ask under a ctx of its own with a timeout, as callers usually
	// ask: the asker's context.WithTimeout arms a timer per ask.
	b.Run("ember-timeout", func(b *testing.B) { askPing(b, (*testing.B).Context, time.Minute) })

	b.Run("ember-proto", func(b *testing.B) {
		_, pc := startBenchCluster(b)
		ctx := b.Context()
		value := []byte(strings.Repeat("p", benchPayloadBytes-2)) // tag and length bytes
		var msg any = &wrapperspb.BytesValue{Value: value}
		if n := proto.Size(msg.(proto.Message)); n != benchPayloadBytes {
			b.Fatalf("protobuf payload is %d bytes, want %d", n, benchPayloadBytes)
		}
		call := func() {
			r, err := pc.Ask(ctx, msg)
			if err != nil {
				b.Fatal(err)
			}
			if p, ok := r.(*wrapperspb.BytesValue); !ok || len(p.GetValue()) != len(value) {
				b.Fatalf("reply %#v, want the message back", r)
			}
		}
		measureAsk(b, call)
		base.reportRatio(b)
	})
}

// askOutstanding is the number of asks BenchmarkAskPipelined keeps in
// flight, as in ember-bench's ask-throughput scenario.
const askOutstanding = 64

// BenchmarkAskPipelined times request/reply throughput with askOutstanding
// calls in flight on one connection (32-byte payloads); ns/op is per call:
//
//   - grpc-pipelined: a raw gRPC bidirectional stream, one goroutine
//     sending (at most askOutstanding ahead) and one receiving;
//   - ember: askOutstanding goroutines each calling ExecutorContext.Ask
//     in a loop, on an in-process local[1] cluster;
//   - ember-go: one goroutine keeping askOutstanding asks in flight with
//     ExecutorContext.Go, on the same cluster.
func BenchmarkAskPipelined(b *testing.B) {
	var base benchBaseline
	b.Run("grpc-pipelined", func(b *testing.B) {
		base.begin(b)
		cs := startRawEcho(b)
		payload := []byte(strings.Repeat("g", benchPayloadBytes))
		tokens := make(chan struct{}, askOutstanding)
		received := make(chan error, 1)
		b.ReportAllocs()
		b.ResetTimer()
		cpu := startCPU()
		go func() {
			var reply []byte
			for range b.N {
				if err := cs.RecvMsg(&reply); err != nil {
					received <- err
					return
				}
				<-tokens
			}
			received <- nil
		}()
		for range b.N {
			tokens <- struct{}{}
			if err := cs.SendMsg(&payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-received; err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu.report(b)
		base.record(b)
		if err := cs.CloseSend(); err != nil {
			b.Fatal(err)
		}
	})

	b.Run("ember", func(b *testing.B) {
		_, pc := startBenchCluster(b)
		ctx := b.Context()
		var msg any = benchPing{Body: benchBody}
		var next atomic.Int64
		errs := make(chan error, askOutstanding)
		b.ReportAllocs()
		b.ResetTimer()
		cpu := startCPU()
		for range askOutstanding {
			go func() {
				for next.Add(1) <= int64(b.N) {
					if _, err := pc.Ask(ctx, msg); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range askOutstanding {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		cpu.report(b)
		base.reportRatio(b)
	})

	// One goroutine keeps the asks in flight with Go, as the pipelined
	// baseline's client does.
	b.Run("ember-go", func(b *testing.B) {
		_, pc := startBenchCluster(b)
		ctx := b.Context()
		var msg any = benchPing{Body: benchBody}
		done := make(chan *plugin.Call, askOutstanding)
		b.ReportAllocs()
		b.ResetTimer()
		cpu := startCPU()
		started := 0
		for ; started < min(askOutstanding, b.N); started++ {
			pc.Go(ctx, msg, done)
		}
		for range b.N {
			if c := <-done; c.Err != nil {
				b.Fatal(c.Err)
			}
			if started < b.N {
				pc.Go(ctx, msg, done)
				started++
			}
		}
		b.StopTimer()
		cpu.report(b)
		base.reportRatio(b)
	})
}

// BenchmarkSend times fire-and-forget delivery of b.N 32-byte messages from
// one sender to one receiver; the timer stops when the receiver has counted
// all b.N (none may be lost). ns/op is per message; msgs/s is the rate.
//
//   - grpc-oneway: a raw gRPC client stream, one gRPC message per payload;
//   - ember: an executor plugin's ExecutorContext.Send to its driver
//     plugin, counted in Receive, on an in-process local[1] cluster.
func BenchmarkSend(b *testing.B) {
	var base benchBaseline
	b.Run("grpc-oneway", func(b *testing.B) { rawOneWay(b, &base, benchPayloadBytes) })

	b.Run("ember", func(b *testing.B) {
		bp, pc := startBenchCluster(b)
		backlog := sendCounted(b, bp, pc, benchNote{Body: benchBody})
		base.reportRatio(b)
		b.ReportMetric(float64(backlog), "backlog-msgs")
	})
}

// rawOneWay is the grpc-oneway baseline: b.N messages of size bytes on one
// client stream, each one gRPC message, counted by the server.
func rawOneWay(b *testing.B, base *benchBaseline, size int) {
	b.Helper()
	base.begin(b)
	rs := startRawGRPC(b)
	warmRawGRPC(b, rs)
	cs, err := rs.cc.NewStream(b.Context(), &rawDesc.Streams[1], "/emberbench.Raw/Sink", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		b.Fatal(err)
	}
	rs.target.Store(int64(b.N))
	payload := []byte(strings.Repeat("g", size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if err := cs.SendMsg(&payload); err != nil {
			b.Fatal(err)
		}
	}
	waitCounted(b, rs.done, &rs.received)
	b.StopTimer()
	cpu.report(b)
	reportRate(b)
	base.record(b)
	if err := cs.CloseSend(); err != nil {
		b.Fatal(err)
	}
	var reply []byte
	if err := cs.RecvMsg(&reply); err != nil {
		b.Fatal(err)
	}
}

// sendCounted times sending msg (a benchNote) b.N times from pc until the
// driver plugin has counted every one, and reports the CPU time and the
// rate. It returns how many were still to be counted when the last Send
// returned.
func sendCounted(b *testing.B, bp *benchPlugin, pc plugin.ExecutorContext, msg any) (backlog int64) {
	b.Helper()
	ctx := b.Context()
	bp.target.Store(int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		if err := pc.Send(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	backlog = int64(b.N) - bp.notes.Load()
	waitCounted(b, bp.done, &bp.notes)
	b.StopTimer()
	cpu.report(b)
	reportRate(b)
	return backlog
}

// BenchmarkSendLarge sends messages of about 1 MiB from an executor
// plugin to its driver plugin, which counts them, with the default send
// window (1 MiB: one message in flight, the next sent once the driver
// plugin has run it) and with Config.SendWindow at 16 MiB, where sending,
// decoding and handling overlap; against the raw gRPC one-way stream
// with 1 MiB messages ("ratio-vs-grpc": time per message, Ember's over
// the baseline's).
//
//	go test -run '^$' -bench SendLarge -benchtime 1000x -count 3 .
func BenchmarkSendLarge(b *testing.B) {
	const size = 1 << 20
	var base benchBaseline
	b.Run("grpc-oneway", func(b *testing.B) {
		b.SetBytes(size)
		rawOneWay(b, &base, size)
	})
	for _, window := range []int{0, 16 << 20} {
		b.Run(fmt.Sprintf("window=%dMiB", max(window, 1<<20)>>20), func(b *testing.B) {
			bp, pc := startBenchClusterWindow(b, window)
			b.SetBytes(size)
			sendCounted(b, bp, pc, benchNote{Body: strings.Repeat("l", size)})
			base.reportRatio(b)
		})
	}
}

// measureAsk warms call up, then runs it b.N times under the timer and
// reports the p50 and p99 latency of one call.
func measureAsk(b *testing.B, call func()) {
	b.Helper()
	for range 200 {
		call()
	}
	lat := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for i := range b.N {
		t0 := time.Now()
		call()
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	cpu.report(b)
	b.ReportMetric(benchkit.Percentile(lat, 50).Seconds()*1e6, "p50-us")
	b.ReportMetric(benchkit.Percentile(lat, 99).Seconds()*1e6, "p99-us")
}

// cpuMeter measures the CPU time (user + system, all threads) the process
// uses while a benchmark runs. Both ends of every benchmark run in this
// process, so it is the CPU cost of the whole exchange; unlike ns/op it
// barely moves when other processes compete for the CPU.
type cpuMeter struct {
	start time.Duration
	ok    bool
}

func startCPU() cpuMeter {
	t, ok := processCPU()
	return cpuMeter{t, ok}
}

// report adds the "cpu-ns/op" metric where the process's CPU time can be
// read and the run used enough of it (200ms, 20 clock ticks) to be
// measured within 5%.
func (m cpuMeter) report(b *testing.B) {
	end, ok := processCPU()
	if !m.ok || !ok || b.N == 0 || end-m.start < 200*time.Millisecond {
		return
	}
	b.ReportMetric(float64((end-m.start).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time this process has used, read from
// /proc/self/stat (Linux; utime and stime in clock ticks of 10ms, the
// USER_HZ of every mainstream Linux build). ok is false elsewhere.
func processCPU() (d time.Duration, ok bool) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the parenthesised command name, from field 3 (state).
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}

func reportRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "msgs/s")
	}
}

// waitCounted waits, bounded by embertest.DefaultTimeout, until done is
// closed, which happens when the receiver has counted b.N messages.
func waitCounted(b *testing.B, done <-chan struct{}, counted *atomic.Int64) {
	b.Helper()
	t := time.NewTimer(embertest.DefaultTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		b.Fatalf("received %d of %d messages within %v", counted.Load(), b.N, embertest.DefaultTimeout)
	}
}

// benchBaseline collects the ns/op of a baseline sub-benchmark's completed
// runs so that a later sub-benchmark of the same run can report its ratio.
// The testing package calls a sub-benchmark function several times per run
// (b.N = 1, then growing); only the last call of each run is its result,
// and the next run (with -count) starts again at b.N = 1.
type benchBaseline struct {
	mu     sync.Mutex // protects the following fields
	finals []float64  // ns/op of completed runs
	last   float64    // ns/op of the latest call
	has    bool
}

// begin is called first in every call of the baseline's function.
func (bl *benchBaseline) begin(b *testing.B) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	if b.N == 1 && bl.has {
		bl.finals = append(bl.finals, bl.last)
		bl.has = false
	}
}

// record is called once the baseline's timer has stopped.
func (bl *benchBaseline) record(b *testing.B) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	bl.last, bl.has = float64(b.Elapsed().Nanoseconds())/float64(b.N), true
}

// reportRatio reports b's ns/op divided by the baseline's median ns/op,
// when the baseline ran in this process.
func (bl *benchBaseline) reportRatio(b *testing.B) {
	bl.mu.Lock()
	all := slices.Clone(bl.finals)
	if bl.has {
		all = append(all, bl.last)
	}
	bl.mu.Unlock()
	if len(all) == 0 || b.N == 0 {
		return
	}
	slices.Sort(all)
	median := all[len(all)/2]
	if len(all)%2 == 0 {
		median = (all[len(all)/2-1] + median) / 2
	}
	nsPerOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(nsPerOp/median, "ratio-vs-grpc")
}

// benchPlugin is the plugin under test: its executor side hands its
// ExecutorContext to the benchmark; its driver side echoes pings and
// counts notes.
type benchPlugin struct {
	pcs    chan plugin.ExecutorContext
	notes  atomic.Int64
	target atomic.Int64
	done   chan struct{} // closed when notes reaches target
}

func (p *benchPlugin) Name() string                          { return "bench" }
func (p *benchPlugin) DriverPlugin() plugin.DriverPlugin     { return &benchDriver{p: p} }
func (p *benchPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return &benchExecutor{p: p} }

type benchDriver struct {
	plugin.BaseDriverPlugin
	p *benchPlugin
}

func (d *benchDriver) Receive(ctx context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case benchPing, *wrapperspb.BytesValue:
		return m, nil
	case benchNote:
		if d.p.notes.Add(1) == d.p.target.Load() {
			close(d.p.done)
		}
		return nil, nil
	}
	return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
}

type benchExecutor struct {
	plugin.BaseExecutorPlugin
	p *benchPlugin
}

func (e *benchExecutor) Init(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.p.pcs <- pc
	return nil
}

var (
	_ plugin.Plugin         = (*benchPlugin)(nil)
	_ plugin.DriverPlugin   = (*benchDriver)(nil)
	_ plugin.ExecutorPlugin = (*benchExecutor)(nil)
)

// startBenchCluster starts a local[1] cluster running benchPlugin (shut
// down by b.Cleanup) and returns the plugin and its executor's context,
// warmed up with a few asks.
func startBenchCluster(b *testing.B) (*benchPlugin, plugin.ExecutorContext) {
	b.Helper()
	return startBenchClusterWindow(b, 0)
}

// startBenchClusterWindow is startBenchCluster with Config.SendWindow set
// to window (0: the default).
func startBenchClusterWindow(b *testing.B, window int) (*benchPlugin, plugin.ExecutorContext) {
	b.Helper()
	if data, _ := codec.Marshal(benchPing{Body: benchBody}); len(data) != benchPayloadBytes {
		b.Fatalf("benchmark payload is %d bytes, want %d", len(data), benchPayloadBytes)
	}
	bp := &benchPlugin{pcs: make(chan plugin.ExecutorContext, 1), done: make(chan struct{})}
	embertest.Start(b, ember.Config{
		AppName: "bench",
		Master:  "local[1]",
		Plugins: []plugin.Plugin{bp},
		Logger:  slog.New(slog.DiscardHandler),
		// Room for a few large messages in flight (BenchmarkSendLarge).
		SendWindow: window,
	})
	var pc plugin.ExecutorContext
	select {
	case pc = <-bp.pcs:
	default:
		b.Fatal("the executor plugin did not hand over its context before the cluster was ready")
	}
	for range 200 {
		if _, err := pc.Ask(b.Context(), benchPing{Body: benchBody}); err != nil {
			b.Fatal(err)
		}
	}
	return bp, pc
}

// rawCodec passes []byte messages through gRPC unchanged. Its name is the
// content-subtype of the raw calls.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	// A copy, as a real codec's encoding is: gRPC's writer may still read
	// it after SendMsg returns, when the caller is reusing *p (a data race
	// in the pipelined baseline's echo otherwise).
	return append([]byte(nil), *p...), nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...) // data is only valid during the call
	return nil
}

func (rawCodec) Name() string { return "ember-bench-raw" }

// rawDesc is a hand-written gRPC service over rawCodec: Echo answers each
// message on a bidirectional stream; Sink counts a client stream's
// messages and answers once at the end.
var rawDesc = grpc.ServiceDesc{
	ServiceName: "emberbench.Raw",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{
		{StreamName: "Echo", ServerStreams: true, ClientStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			var buf []byte
			for {
				if err := ss.RecvMsg(&buf); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if err := ss.SendMsg(&buf); err != nil {
					return err
				}
			}
		}},
		{StreamName: "Sink", ClientStreams: true, Handler: func(srv any, ss grpc.ServerStream) error {
			rs := srv.(*rawServer)
			var buf []byte
			for {
				if err := ss.RecvMsg(&buf); err != nil {
					if errors.Is(err, io.EOF) {
						return ss.SendMsg(&buf)
					}
					return err
				}
				if rs.received.Add(1) == rs.target.Load() {
					close(rs.done)
				}
			}
		}},
	},
}

// rawServer is a loopback gRPC server with rawDesc and wire.Ember (an echo
// of Batches), and a client connected to it.
type rawServer struct {
	wire.UnimplementedEmberServer
	cc       *grpc.ClientConn
	received atomic.Int64
	target   atomic.Int64
	done     chan struct{} // closed when received reaches target
}

// Connect echoes every Batch, turning its frames into replies.
func (rs *rawServer) Connect(stream wire.Ember_ConnectServer) error {
	for {
		batch, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		for _, f := range batch.Frames {
			f.Kind = wire.Kind_KIND_REPLY
		}
		if err := stream.Send(batch); err != nil {
			return err
		}
	}
}

// startRawEcho starts a raw gRPC server and opens its echo stream.
func startRawEcho(b *testing.B) grpc.ClientStream {
	b.Helper()
	rs := startRawGRPC(b)
	cs, err := rs.cc.NewStream(b.Context(), &rawDesc.Streams[0], "/emberbench.Raw/Echo", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		b.Fatal(err)
	}
	return cs
}

// startRawGRPC starts a rawServer on 127.0.0.1 and connects to it, with the
// window sizes Ember's driver and executor use. b.Cleanup stops both.
func startRawGRPC(b *testing.B) *rawServer {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	rs := &rawServer{done: make(chan struct{})}
	srv := grpc.NewServer(
		grpc.InitialWindowSize(benchWindow),
		grpc.InitialConnWindowSize(benchConnWindow),
	)
	srv.RegisterService(&rawDesc, rs)
	wire.RegisterEmberServer(srv, rs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	b.Cleanup(func() {
		srv.Stop()
		<-served
	})
	rs.cc, err = grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(benchWindow),
		grpc.WithInitialConnWindowSize(benchConnWindow),
	)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rs.cc.Close() })
	return rs
}

// warmRawGRPC makes a few Echo round trips so the connection is up and
// warm before a one-way stream is timed.
func warmRawGRPC(b *testing.B, rs *rawServer) {
	b.Helper()
	cs, err := rs.cc.NewStream(b.Context(), &rawDesc.Streams[0], "/emberbench.Raw/Echo", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(strings.Repeat("w", benchPayloadBytes))
	var reply []byte
	for range 200 {
		if err := cs.SendMsg(&payload); err != nil {
			b.Fatal(err)
		}
		if err := cs.RecvMsg(&reply); err != nil {
			b.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		b.Fatal(err)
	}
	if err := cs.RecvMsg(&reply); !errors.Is(err, io.EOF) {
		b.Fatalf("after CloseSend: got %v, want io.EOF", err)
	}
}
