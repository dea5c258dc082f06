// Command loadgen is a load generator. The driver plugin plays the service
// under load: it answers every Request with a Response. On the driver's
// signal, each executor keeps a number of asks in flight from one goroutine
// with pc.Go, checks every reply, and reports its counts to the driver,
// which prints them once every executor has reported.
//
//	go run ./examples/loadgen
package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"log"
	"maps"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

// The messages. Every process registers them, in init.
type (
	// Request is one ask of the load: the N-th from the executor Key names.
	Request struct {
		Key string
		N   int
	}
	Response struct{ Hash uint64 } // the answer to a Request
	// Start is the driver's go: make Requests asks, InFlight at a time.
	Start struct{ Requests, InFlight int }
	// Report is what an executor made of its Start.
	Report struct {
		Executor   string
		OK, Failed int
	}
)

func init() {
	plugin.RegisterMessage[Request]()
	plugin.RegisterMessage[Response]()
	plugin.RegisterMessage[Start]()
	plugin.RegisterMessage[Report]()
}

// The load: each executor makes requests asks, inFlight at a time. timeout
// bounds each executor's run (every process runs this binary, so all read
// the same constant); the driver waits a little longer, so that the
// reports of runs cut short still arrive.
const (
	requests = 5000
	inFlight = 32
	timeout  = 60 * time.Second
)

// answer is the service's work, cheap on purpose: the load is the messages.
// The executors call it too, to check every reply.
func answer(r Request) Response {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", r.Key, r.N)
	return Response{Hash: h.Sum64()}
}

// loadgen pairs the two sides under one name. main builds the driver side
// before ember.Run, so that the driver function can reach it.
type loadgen struct{ svc *service }

func (loadgen) Name() string                          { return "loadgen" }
func (l loadgen) DriverPlugin() plugin.DriverPlugin   { return l.svc }
func (loadgen) ExecutorPlugin() plugin.ExecutorPlugin { return &generator{} }

// service is the driver side: the service under load, and where the
// reports arrive.
type service struct {
	plugin.BaseDriverPlugin
	dc       plugin.DriverContext // set by Init, which Run calls before the driver function
	answered atomic.Int64

	mu      sync.Mutex
	reports map[string]Report // by executor ID
	arrived chan struct{}     // has a value once a report arrives
}

func (s *service) Init(_ context.Context, dc plugin.DriverContext) (map[string]string, error) {
	s.dc = dc
	return nil, nil
}

// Receive answers Requests and records Reports. It runs on the plugin's
// lane, one message at a time: cheap answers keep up with the load.
func (s *service) Receive(_ context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Request:
		s.answered.Add(1)
		return answer(m), nil
	case Report:
		s.mu.Lock()
		s.reports[m.Executor] = m
		s.mu.Unlock()
		select {
		case s.arrived <- struct{}{}:
		default: // the waiter has a wake-up pending already
		}
		return nil, nil
	}
	return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
}

// waitReports waits until every executor in ids has reported, and returns
// the reports by executor ID.
func (s *service) waitReports(ctx context.Context, ids []string) (map[string]Report, error) {
	for {
		s.mu.Lock()
		missing := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { _, ok := s.reports[id]; return ok })
		reports := maps.Clone(s.reports)
		s.mu.Unlock()
		if len(missing) == 0 {
			return reports, nil
		}
		select {
		case <-s.arrived:
		case <-ctx.Done():
			return nil, fmt.Errorf("no report from executors %v: %w", missing, ctx.Err())
		}
	}
}

// generator is the executor side. It keeps no state of its own: the load
// runs inside Receive, whose ctx ends if the executor stops meanwhile. That
// holds the plugin's lane on this executor for the run, which is fine here:
// the driver pushes nothing else.
type generator struct {
	plugin.BaseExecutorPlugin
	pc plugin.ExecutorContext
}

func (g *generator) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	g.pc = pc
	return nil
}

// Receive makes m.Requests asks, keeping m.InFlight of them in flight from
// this one goroutine, then sends its Report. Every Go delivers exactly one
// Call on done, even when the ask fails or ctx ends, so Receive waits on
// done alone and never loses count. done has room for every ask in flight,
// so the connection never needs a goroutine to deliver a Call.
func (g *generator) Receive(ctx context.Context, msg any) (any, error) {
	m, isStart := msg.(Start)
	if !isStart {
		return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
	}
	load, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := g.pc.ExecutorID()
	done := make(chan *plugin.Call, m.InFlight)
	started, ok, failed := 0, 0, 0
	next := func() {
		g.pc.Go(load, Request{Key: "executor-" + id, N: started}, done)
		started++
	}
	begin := time.Now()
	for started < min(m.InFlight, m.Requests) {
		next()
	}
	for ok+failed < started {
		c := <-done
		resp, err := plugin.Reply[Response](c) // c.Msg is the Request asked
		if err == nil && resp != answer(c.Msg.(Request)) {
			err = fmt.Errorf("wrong answer %+v to %+v", resp, c.Msg)
		}
		if err != nil {
			if failed == 0 { // log the first failure; the Report counts them all
				g.pc.Logger().Error("request failed", "err", err)
			}
			failed++
		} else {
			ok++
		}
		if started < m.Requests && load.Err() == nil {
			next()
		}
	}
	g.pc.Logger().Info("load done", "requests", started, "elapsed", time.Since(begin))
	// The Report follows the asks on the wire, so the driver has answered
	// them all when it reads it. It goes under Receive's ctx, not the
	// load's, which may have ended.
	if err := g.pc.Send(ctx, Report{Executor: id, OK: ok, Failed: failed}); err != nil {
		g.pc.Logger().Error("sending the report", "err", err)
	}
	return nil, nil
}

var (
	_ plugin.DriverPlugin     = (*service)(nil)
	_ plugin.ExecutorPlugin   = (*generator)(nil)
	_ plugin.ExecutorReceiver = (*generator)(nil) // without it, Broadcast skips this side
)

// generate is the driver function: start the load on every executor, wait
// for their reports, print them (on stdout only what is the same every run).
func (s *service) generate(ctx context.Context, d *ember.Driver) error {
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	var ids []string // ordered by ID, as Executors lists them
	for _, e := range d.Executors() {
		ids = append(ids, e.ID)
	}
	begin := time.Now()
	if err := s.dc.Broadcast(ctx, Start{Requests: requests, InFlight: inFlight}); err != nil {
		return err
	}
	reports, err := s.waitReports(ctx, ids)
	if err != nil {
		return err
	}
	log.Printf("%d requests in %v", s.answered.Load(), time.Since(begin).Round(time.Millisecond))
	failed := 0
	for _, id := range ids {
		r := reports[id]
		fmt.Printf("executor %s made %d requests, %d failed\n", id, r.OK+r.Failed, r.Failed)
		failed += r.Failed
	}
	fmt.Printf("the service answered %d requests\n", s.answered.Load())
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once a signal has started the shutdown, a second one ends the
	// program at once (the default action), should the shutdown take long.
	context.AfterFunc(ctx, stop)
	svc := &service{reports: map[string]Report{}, arrived: make(chan struct{}, 1)}
	err := ember.Run(ctx, ember.Config{
		AppName: "loadgen",
		Master:  "local-cluster[2]",
		Plugins: []plugin.Plugin{loadgen{svc}},
	}, svc.generate)
	if err != nil {
		log.Fatal(err)
	}
}
