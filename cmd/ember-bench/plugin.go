package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberhq/ember/internal/benchkit"
	"github.com/emberhq/ember/plugin"
)

// Messages. Ping, Note and BNote carry a body sized so that each one's
// CBOR encoding is payloadBytes long, like the baselines' payloads.
type (
	Ping  struct{ Body string } // asked; echoed
	Note  struct{ Body string } // sent; counted by the driver plugin
	BNote struct{ Body string } // broadcast; counted by each executor
	// BEnd follows Total BNotes: an executor that has received them all
	// sends BDone.
	BEnd  struct{ Total int }
	BDone struct{} // an executor received every BNote

	// RunAsks makes an executor ask Ping N times from Outstanding
	// goroutines, or with Go from one goroutine keeping Outstanding asks
	// in flight (as the pipelined baseline's client does). Only with
	// Latencies does it time each ask (the throughput baselines time
	// nothing per message, so neither does the throughput scenario).
	// With a Timeout, each ask gets a ctx of its own with that timeout,
	// as callers' asks usually do, and the deadline travels with it; its
	// making is timed too.
	RunAsks struct {
		N, Outstanding int
		Go             bool
		Latencies      bool
		Timeout        time.Duration
	}
	AskStats struct {
		Elapsed  time.Duration
		P50, P99 time.Duration
		// Switches is how many times the executor process's threads
		// gave up a CPU during the run (see switches).
		Switches int64
	}
	RunSends struct{ N int }
	SendDone struct{ Elapsed time.Duration }
	// CPUQuery asks an executor for its process's CPU time so far
	// (CPUTime; -1 if unknown).
	CPUQuery struct{}
	CPUTime  struct{ CPU time.Duration }
	// StartPinging makes an executor ask Ping once per Every for
	// Duration, then send its latencies. Each executor starts after a
	// random phase, unless Aligned: then all of them ask at the same
	// instants (multiples of Every on the shared wall clock), a burst.
	StartPinging struct {
		Every, Duration time.Duration
		Aligned         bool
	}
	// PingLatencies are an executor's successful asks' latencies, and how
	// many failed (the first one's error): a failed ask has no latency,
	// and left out it would flatter the p99.
	PingLatencies struct {
		Latencies []time.Duration
		Failed    int
		Err       string
	}
	// RunRawPingPong makes an executor run the raw gRPC ping-pong
	// baseline itself, N round trips to Addr, and dump its stamps to
	// StampDir (-breakdown: the baseline inside an executor process).
	RunRawPingPong struct {
		Addr, StampDir string
		N              int
	}
)

func init() {
	plugin.RegisterMessage[Ping]()
	plugin.RegisterMessage[Note]()
	plugin.RegisterMessage[BNote]()
	plugin.RegisterMessage[BEnd]()
	plugin.RegisterMessage[BDone]()
	plugin.RegisterMessage[RunAsks]()
	plugin.RegisterMessage[AskStats]()
	plugin.RegisterMessage[RunSends]()
	plugin.RegisterMessage[SendDone]()
	plugin.RegisterMessage[CPUQuery]()
	plugin.RegisterMessage[CPUTime]()
	plugin.RegisterMessage[StartPinging]()
	plugin.RegisterMessage[PingLatencies]()
	plugin.RegisterMessage[RunRawPingPong]()
}

// benchPlugin is the plugin every scenario runs.
type benchPlugin struct{}

func (benchPlugin) Name() string                          { return "bench" }
func (benchPlugin) DriverPlugin() plugin.DriverPlugin     { return &driverSide{} }
func (benchPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return &executorSide{} }

// current is the running application's driver side, for the scenario
// code in the same process.
var current atomic.Pointer[driverSide]

type driverSide struct {
	plugin.BaseDriverPlugin
	dc plugin.DriverContext

	notes   atomic.Int64
	target  atomic.Int64
	reached chan struct{} // closed when notes reaches target

	mu        sync.Mutex // protects the following fields
	dones     int
	doneCh    chan struct{}
	latencies []time.Duration
	failed    int    // asks that failed, in all PingLatencies
	failure   string // the first one's error
	pingers   int
	pingDone  chan struct{}
}

func (d *driverSide) Init(_ context.Context, dc plugin.DriverContext) (map[string]string, error) {
	d.dc = dc
	current.Store(d)
	return nil, nil
}

// expectNotes arms the counter for n more notes.
func (d *driverSide) expectNotes(n int) <-chan struct{} {
	d.reached = make(chan struct{})
	d.notes.Store(0)
	d.target.Store(int64(n))
	return d.reached
}

// expectDones arms the counter for n BDone messages.
func (d *driverSide) expectDones(n int) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dones = n
	d.doneCh = make(chan struct{})
	return d.doneCh
}

// expectPings arms the collector for n executors' latencies.
func (d *driverSide) expectPings(n int) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pingers = n
	d.latencies, d.failed, d.failure = nil, 0, ""
	d.pingDone = make(chan struct{})
	return d.pingDone
}

func (d *driverSide) Receive(_ context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Ping:
		return m, nil
	case Note:
		if d.notes.Add(1) == d.target.Load() {
			close(d.reached)
		}
	case BDone:
		d.mu.Lock()
		d.dones--
		if d.dones == 0 {
			close(d.doneCh)
		}
		d.mu.Unlock()
	case PingLatencies:
		d.mu.Lock()
		d.latencies = append(d.latencies, m.Latencies...)
		if d.failed += m.Failed; d.failure == "" {
			d.failure = m.Err
		}
		d.pingers--
		if d.pingers == 0 {
			close(d.pingDone)
		}
		d.mu.Unlock()
	}
	return nil, nil
}

// allLatencies returns the latencies the executors reported, or an error
// if any of their asks failed.
func (d *driverSide) allLatencies() ([]time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed > 0 {
		return nil, fmt.Errorf("%d of %d asks failed (the first: %s)", d.failed, d.failed+len(d.latencies), d.failure)
	}
	return slices.Clone(d.latencies), nil
}

type executorSide struct {
	plugin.BaseExecutorPlugin
	pc     plugin.ExecutorContext
	bnotes int
	wg     sync.WaitGroup
	stop   chan struct{}
}

func (e *executorSide) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.pc = pc
	e.stop = make(chan struct{})
	return nil
}

func (e *executorSide) Shutdown(context.Context) error {
	close(e.stop)
	e.wg.Wait()
	stopExecutorProfile()
	return nil
}

// Receive runs the driver's commands; they are asked, so the reply
// carries the measurement.
func (e *executorSide) Receive(ctx context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Ping:
		return m, nil
	case BNote:
		e.bnotes++
	case BEnd:
		n := e.bnotes
		e.bnotes = 0
		if n != m.Total {
			return nil, plugin.Errorf(plugin.CodeInternal, "received %d of %d broadcasts", n, m.Total)
		}
		return nil, e.pc.Send(ctx, BDone{})
	case RunAsks:
		return e.runAsks(ctx, m)
	case RunRawPingPong:
		s0 := switches()
		if _, err := benchkit.GRPCPingPong(ctx, m.Addr, payloadBytes, m.N); err != nil {
			return nil, err
		}
		return AskStats{Switches: switches() - s0}, dumpStampsTo(m.StampDir, "client")
	case CPUQuery:
		return CPUTime{CPU: cpuTime()}, nil
	case RunSends:
		start := time.Now()
		note := Note{Body: body}
		for range m.N {
			if err := e.pc.Send(ctx, note); err != nil {
				return nil, err
			}
		}
		return SendDone{Elapsed: time.Since(start)}, nil
	case StartPinging:
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.ping(m)
		}()
	}
	return nil, nil
}

func (e *executorSide) runAsks(ctx context.Context, m RunAsks) (AskStats, error) {
	if m.Go {
		return e.goAsks(ctx, m)
	}
	var lat []time.Duration
	if m.Latencies {
		lat = make([]time.Duration, m.N)
	}
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	s0 := switches()
	start := time.Now()
	for range max(m.Outstanding, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ping := Ping{Body: body}
			for {
				i := int(next.Add(1)) - 1
				if i >= m.N {
					return
				}
				var t time.Time
				if m.Latencies {
					t = time.Now()
				}
				actx, cancel := ctx, context.CancelFunc(nil)
				if m.Timeout > 0 {
					actx, cancel = context.WithTimeout(ctx, m.Timeout)
				}
				_, err := e.pc.Ask(actx, ping)
				if cancel != nil {
					cancel()
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if m.Latencies {
					lat[i] = time.Since(t)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sw := switches() - s0
	if firstErr != nil {
		return AskStats{}, firstErr
	}
	if err := dumpStamps("executor"); err != nil {
		return AskStats{}, err
	}
	st := AskStats{Elapsed: elapsed, Switches: sw}
	if m.Latencies {
		st.P50, st.P99 = benchkit.Percentile(lat, 50), benchkit.Percentile(lat, 99)
	}
	return st, nil
}

// goAsks asks Ping m.N times with Go, keeping m.Outstanding asks in
// flight from this one goroutine. It times nothing per ask.
func (e *executorSide) goAsks(ctx context.Context, m RunAsks) (AskStats, error) {
	if m.Latencies || m.Timeout > 0 {
		return AskStats{}, errors.New("RunAsks: Go times no ask and sets no timeout")
	}
	s0 := switches()
	start := time.Now()
	done := make(chan *plugin.Call, m.Outstanding) // room for every ask in flight
	ping := Ping{Body: body}
	started := 0
	for ; started < min(max(m.Outstanding, 1), m.N); started++ {
		e.pc.Go(ctx, ping, done)
	}
	for range m.N {
		c := <-done
		if c.Err != nil {
			return AskStats{}, c.Err // the rest fit in done: nothing waits on us
		}
		if started < m.N {
			e.pc.Go(ctx, ping, done)
			started++
		}
	}
	return AskStats{Elapsed: time.Since(start), Switches: switches() - s0}, nil
}

// ping asks once per m.Every for m.Duration and sends the latencies.
func (e *executorSide) ping(m StartPinging) {
	ctx := context.Background()
	// Executors start pinging together (one broadcast reaches them all
	// within milliseconds); a random phase spreads their asks over the
	// period, as independent executors' would be.
	phase := rand.N(m.Every)
	if m.Aligned {
		now := time.Now()
		phase = now.Truncate(m.Every).Add(m.Every).Sub(now)
	}
	select {
	case <-time.After(phase):
	case <-e.stop:
		return
	}
	t := time.NewTicker(m.Every)
	defer t.Stop()
	deadline := time.Now().Add(m.Duration)
	var r PingLatencies
	for time.Now().Before(deadline) {
		start := time.Now()
		if _, err := e.pc.Ask(ctx, Ping{Body: body}); err != nil {
			if r.Failed++; r.Err == "" {
				r.Err = err.Error()
			}
		} else {
			r.Latencies = append(r.Latencies, time.Since(start))
		}
		select {
		case <-t.C:
		case <-e.stop:
			return
		}
	}
	_ = e.pc.Send(ctx, r)
}

var (
	_ plugin.DriverPlugin     = (*driverSide)(nil)
	_ plugin.ExecutorPlugin   = (*executorSide)(nil)
	_ plugin.ExecutorReceiver = (*executorSide)(nil)
)
