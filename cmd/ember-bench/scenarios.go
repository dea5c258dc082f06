package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/internal/benchkit"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/plugin"
)

type scenario struct {
	name string
	run  func(ctx context.Context) ([]Result, error)
}

var scenarios = []scenario{
	{"ask-latency", askLatency},
	{"ask-throughput", askThroughput},
	{"send-throughput", sendThroughput},
	{"driver-to-executors", driverToExecutors},
	{"tasks", tasks},
	{"startup", startup},
	{"scale", scale},
}

// pick returns full or, with -short, small.
func pick(full, small int) int {
	if *short {
		return small
	}
	return full
}

// withApp runs one application on master and calls fn once it is ready.
func withApp(ctx context.Context, master string, fn func(ctx context.Context, d *ember.Driver, ds *driverSide) error) error {
	return ember.Run(ctx, config(master), func(ctx context.Context, d *ember.Driver) error {
		return fn(ctx, d, current.Load())
	})
}

// series collects one figure's repetitions.
type series []float64

func (s *series) add(v float64) { *s = append(*s, v) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func result(scenario, metric, unit string, ember series) Result {
	sum := benchkit.Summarize(ember)
	return Result{Scenario: scenario, Metric: metric, Unit: unit, Median: sum.Median, Min: sum.Min, Max: sum.Max}
}

// vs adds a baseline comparison and a bar on the ratio: "<=" for costs,
// ">=" for rates.
func (r Result) vs(name string, base series, op string, bar float64) Result {
	b := benchkit.Summarize(base)
	r.Baseline, r.BaselineMedian = name, b.Median
	if b.Median > 0 {
		r.Ratio = r.Median / b.Median
	}
	if op != "" {
		// Without a baseline there is no ratio to judge: the bar is
		// missed, not met by a ratio of 0.
		r = r.bar(fmt.Sprintf("ratio %s %.2f", op, bar), b.Median > 0 && check(r.Ratio, op, bar))
		r.ratioBar = bar
	}
	return r
}

// absolute adds a bar on the median itself.
func (r Result) absolute(op string, bar float64) Result {
	return r.bar(fmt.Sprintf("%s %s", op, num(bar, r.Unit)), check(r.Median, op, bar))
}

func (r Result) bar(text string, pass bool) Result {
	r.Bar, r.Pass = text, &pass
	return r
}

func check(v float64, op string, bar float64) bool {
	switch op {
	case "<":
		return v < bar
	case "<=":
		return v <= bar
	case ">":
		return v > bar
	}
	return v >= bar
}

// 1. Ask round trip, one executor, one outstanding ask.
func askLatency(ctx context.Context) ([]Result, error) {
	n := pick(20000, 1000)
	var p50, p99, d50, g50, g99, t50, u50 series
	err := withApp(ctx, "local-cluster[1]", func(ctx context.Context, d *ember.Driver, ds *driverSide) error {
		srv, err := benchkit.StartGRPC()
		if err != nil {
			return err
		}
		defer srv.Stop()
		tcp, err := benchkit.StartTCP(payloadBytes)
		if err != nil {
			return err
		}
		defer tcp.Stop()
		for range *reps {
			st, err := plugin.AskExecutor[AskStats](ctx, ds.dc, "1", RunAsks{N: n, Outstanding: 1, Latencies: true})
			if err != nil {
				return err
			}
			p50.add(us(st.P50))
			p99.add(us(st.P99))
			g, err := runBaseline(ctx, "grpc-pingpong", srv.Addr, n, 0)
			if err != nil {
				return err
			}
			g50.add(us(g.P50))
			g99.add(us(g.P99))
			tc, err := runBaseline(ctx, "tcp-pingpong", tcp.Addr, n, 0)
			if err != nil {
				return err
			}
			t50.add(us(tc.P50))
			un, err := runBaseline(ctx, "grpc-unary", srv.Addr, n, 0)
			if err != nil {
				return err
			}
			u50.add(us(un.P50))
			st, err = plugin.AskExecutor[AskStats](ctx, ds.dc, "1", RunAsks{N: n, Outstanding: 1, Latencies: true, Timeout: askTimeout})
			if err != nil {
				return err
			}
			d50.add(us(st.P50))
		}
		return nil
	})
	return []Result{
		result("ask-latency", "p50", "us", p50).vs("grpc stream ping-pong", g50, "<=", 1.15),
		result("ask-latency", "p99", "us", p99).vs("grpc stream ping-pong", g99, "<=", 1.5),
		result("ask-latency", "p50 (floor)", "us", p50).vs("tcp ping-pong", t50, "", 0),
		result("ask-latency", "p50 (unary)", "us", p50).vs("grpc unary", u50, "", 0),
		result("ask-latency", "p50 (ask timeout)", "us", d50).vs("grpc stream ping-pong", g50, "", 0),
	}, err
}

// askTimeout is the timeout of each ask in ask-latency's "ask timeout"
// row: long enough never to fire.
const askTimeout = time.Minute

// 2. Ask throughput: 8 executors x 64 outstanding asks, kept in flight by
// one goroutine with Go (as the pipelined baseline's client keeps its
// requests), and by 64 goroutines each waiting in Ask.
func askThroughput(ctx context.Context) ([]Result, error) {
	const execs, outstanding = 8, 64
	n := pick(20000, 1000)
	var rate, goRate, base series
	var cpu, goCPU cpuSeries
	err := withApp(ctx, fmt.Sprintf("local-cluster[%d]", execs), func(ctx context.Context, d *ember.Driver, ds *driverSide) error {
		srv, err := benchkit.StartGRPC()
		if err != nil {
			return err
		}
		defer srv.Stop()
		// run runs one of Ember's two forms and records its rate and CPU
		// (the baseline's columns are added after both have run).
		run := func(useGo bool) (float64, cpuUse, cpuUse, error) {
			c0, err := clusterCPU(ctx, d, ds)
			if err != nil {
				return 0, c0, c0, err
			}
			start := time.Now()
			if err := onEach(d, func(id string) error {
				_, err := plugin.AskExecutor[AskStats](ctx, ds.dc, id, RunAsks{N: n, Outstanding: outstanding, Go: useGo})
				return err
			}); err != nil {
				return 0, c0, c0, err
			}
			r := float64(execs*n) / time.Since(start).Seconds()
			c1, err := clusterCPU(ctx, d, ds)
			return r, c0, c1, err
		}
		for rep := range *reps {
			// The two forms take turns at going first, so that neither
			// has the other's wake to run in every repetition.
			first := rep%2 == 0
			gr, g0, g1, err := run(first)
			if err != nil {
				return err
			}
			r, c0, c1, err := run(!first)
			if err != nil {
				return err
			}
			if !first {
				gr, g0, g1, r, c0, c1 = r, c0, c1, gr, g0, g1
			}
			rs, elapsed, server, err := runBaselines(ctx, execs, "grpc-pipelined", srv.Addr, n, outstanding)
			if err != nil {
				return err
			}
			goRate.add(gr)
			rate.add(r)
			base.add(float64(execs*n) / elapsed.Seconds())
			goCPU.add(execs*n, g0, g1, server, rs)
			cpu.add(execs*n, c0, c1, server, rs)
		}
		return nil
	})
	out := []Result{
		result("ask-throughput", "8 executors x 64 outstanding (Go)", "/s", goRate).vs("grpc pipelined, 8 clients x 64", base, ">=", 1.0),
	}
	out = append(out, goCPU.results("ask-throughput", "ask (Go)")...)
	out = append(out, result("ask-throughput", "8 x 64 goroutines in Ask (no bar)", "/s", rate).vs("grpc pipelined, 8 clients x 64", base, "", 0))
	return append(out, cpu.results("ask-throughput", "ask (64 goroutines)")...), err
}

// 3. Send throughput, counted at the driver plugin until all arrive.
func sendThroughput(ctx context.Context) ([]Result, error) {
	var out []Result
	for _, execs := range []int{1, 8} {
		n := pick(1_000_000, 20_000) / execs
		var rate, base series
		var cpu cpuSeries
		err := withApp(ctx, fmt.Sprintf("local-cluster[%d]", execs), func(ctx context.Context, d *ember.Driver, ds *driverSide) error {
			srv, err := benchkit.StartGRPC()
			if err != nil {
				return err
			}
			defer srv.Stop()
			for range *reps {
				reached := ds.expectNotes(execs * n)
				var c0 cpuUse // CPU per send is compared from one executor only
				if execs == 1 {
					if c0, err = clusterCPU(ctx, d, ds); err != nil {
						return err
					}
				}
				start := time.Now()
				if err := onEach(d, func(id string) error {
					_, err := plugin.AskExecutor[SendDone](ctx, ds.dc, id, RunSends{N: n})
					return err
				}); err != nil {
					return err
				}
				select {
				case <-reached:
				case <-time.After(time.Minute):
					return fmt.Errorf("only %d of %d sends arrived", ds.notes.Load(), execs*n)
				}
				rate.add(float64(execs*n) / time.Since(start).Seconds())
				if execs > 1 {
					continue
				}
				c1, err := clusterCPU(ctx, d, ds)
				if err != nil {
					return err
				}
				rs, _, server, err := runBaselines(ctx, 1, "grpc-oneway", srv.Addr, n, 0)
				if err != nil {
					return err
				}
				base.add(float64(n) / rs[0].Elapsed.Seconds())
				cpu.add(n, c0, c1, server, rs)
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		if execs == 1 {
			out = append(out, result("send-throughput", "1 executor", "/s", rate).vs("grpc one-way stream", base, ">=", 1.0))
			out = append(out, cpu.results("send-throughput", "send")...)
		} else {
			out = append(out, result("send-throughput", "8 executors", "/s", rate).absolute(">=", 500_000))
		}
	}
	return out, nil
}

// cpuUse is the CPU time used so far by the driver process (this one)
// and by the executor processes together; negative if unknown.
type cpuUse struct{ driver, executors time.Duration }

// clusterCPU reads the driver's CPU time and asks every executor for its
// own.
func clusterCPU(ctx context.Context, d *ember.Driver, ds *driverSide) (cpuUse, error) {
	var mu sync.Mutex
	u := cpuUse{driver: cpuTime()}
	err := onEach(d, func(id string) error {
		t, err := plugin.AskExecutor[CPUTime](ctx, ds.dc, id, CPUQuery{})
		mu.Lock()
		defer mu.Unlock()
		if t.CPU < 0 || u.executors < 0 {
			u.executors = -1
		} else {
			u.executors += t.CPU
		}
		return err
	})
	return u, err
}

// cpuSeries is the CPU time per message of a throughput scenario's
// processes, repetition by repetition: Ember's driver and executors, and
// the baseline's server (which runs in the driver process, so that the
// driver is compared like with like) and clients.
type cpuSeries struct {
	driver, executors, server, clients series
	unknown                            bool
}

// add records one repetition of msgs messages: Ember's cluster used
// after-before, the baseline's server used server and its clients say
// what they used in rs.
func (c *cpuSeries) add(msgs int, before, after cpuUse, server time.Duration, rs []baselineResult) {
	var clients time.Duration
	for _, r := range rs {
		clients += r.CPU
	}
	if before.driver < 0 || before.executors < 0 || after.executors < 0 || server < 0 || clients <= 0 {
		c.unknown = true
		return
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(msgs) }
	c.driver.add(per(after.driver - before.driver))
	c.executors.add(per(after.executors - before.executors))
	c.server.add(per(server))
	c.clients.add(per(clients))
}

// results are the rows for c, none where CPU time is unknown; what names
// the message ("ask", "send").
func (c *cpuSeries) results(scenario, what string) []Result {
	if c.unknown || len(c.driver) == 0 {
		return nil
	}
	return []Result{
		result(scenario, "driver CPU per "+what, "ns", c.driver).vs("grpc server, same process", c.server, "", 0),
		result(scenario, "executors' CPU per "+what, "ns", c.executors).vs("grpc clients", c.clients, "", 0),
	}
}

// 4. Driver to executors: AskExecutor round trip, and Broadcast to 8.
func driverToExecutors(ctx context.Context) ([]Result, error) {
	const execs = 8
	n := pick(10000, 500)
	total := pick(20000, 500)
	var p50, p99, g50, g99, bcast, push series
	err := withApp(ctx, fmt.Sprintf("local-cluster[%d]", execs), func(ctx context.Context, d *ember.Driver, ds *driverSide) error {
		srv, err := benchkit.StartGRPC()
		if err != nil {
			return err
		}
		defer srv.Stop()
		for range *reps {
			lat := make([]time.Duration, n)
			ping := Ping{Body: body}
			for i := range n {
				start := time.Now()
				if _, err := ds.dc.AskExecutor(ctx, "1", ping); err != nil {
					return err
				}
				lat[i] = time.Since(start)
			}
			p50.add(us(benchkit.Percentile(lat, 50)))
			p99.add(us(benchkit.Percentile(lat, 99)))
			g, err := runBaseline(ctx, "grpc-pingpong", srv.Addr, n, 0)
			if err != nil {
				return err
			}
			g50.add(us(g.P50))
			g99.add(us(g.P99))

			done := ds.expectDones(execs)
			start := time.Now()
			note := BNote{Body: body}
			for range total {
				if err := ds.dc.Broadcast(ctx, note); err != nil {
					return err
				}
			}
			if err := ds.dc.Broadcast(ctx, BEnd{Total: total}); err != nil {
				return err
			}
			select {
			case <-done:
			case <-time.After(time.Minute):
				return fmt.Errorf("broadcasts not all received")
			}
			bcast.add(float64(execs*total) / time.Since(start).Seconds())
			_, elapsed, _, err := runBaselines(ctx, execs, "grpc-push", srv.Addr, total, 0)
			if err != nil {
				return err
			}
			push.add(float64(execs*total) / elapsed.Seconds())
		}
		return nil
	})
	// No bars: the issue sets none for this scenario. The baselines are the
	// same round trip initiated by the client, and the server pushing
	// every message as a gRPC message of its own to each of 8 clients.
	return []Result{
		result("driver-to-executors", "AskExecutor p50", "us", p50).vs("grpc stream ping-pong", g50, "", 0),
		result("driver-to-executors", "AskExecutor p99", "us", p99).vs("grpc stream ping-pong", g99, "", 0),
		result("driver-to-executors", "Broadcast to 8, deliveries", "/s", bcast).vs("grpc server push to 8 clients", push, "", 0),
	}, err
}

var identity = ember.NewTask("ember-bench.identity", func(_ context.Context, _ ember.TaskContext, n int) (int, error) {
	return n, nil
})

// 5. Trivial tasks on local-cluster[2].
func tasks(ctx context.Context) ([]Result, error) {
	n := pick(10000, 1000)
	var rate, wall series
	err := withApp(ctx, "local-cluster[2]", func(ctx context.Context, d *ember.Driver, _ *driverSide) error {
		inputs := make([]int, n)
		for i := range inputs {
			inputs[i] = i
		}
		for range *reps {
			start := time.Now()
			out, err := ember.Map(ctx, d, identity, inputs)
			if err != nil {
				return err
			}
			if len(out) != n || out[n-1] != n-1 {
				return fmt.Errorf("wrong results")
			}
			el := time.Since(start)
			rate.add(float64(n) / el.Seconds())
			wall.add(float64(el) / float64(time.Millisecond))
		}
		return nil
	})
	return []Result{
		result("tasks", "trivial tasks, local-cluster[2]", "/s", rate).absolute(">=", 20000),
		result("tasks", fmt.Sprintf("%d-task job wall time", n), "ms", wall),
	}, err
}

// 6. Start-up: local-cluster[4] from Run to every executor ready.
func startup(ctx context.Context) ([]Result, error) {
	var ready series
	for range *reps {
		start := time.Now()
		var took time.Duration
		if err := withApp(ctx, "local-cluster[4]", func(context.Context, *ember.Driver, *driverSide) error {
			took = time.Since(start)
			return nil
		}); err != nil {
			return nil, err
		}
		ready.add(float64(took) / float64(time.Millisecond))
	}
	return []Result{result("startup", "local-cluster[4] ready", "ms", ready).absolute("<", 500)}, nil
}

// 7. Scale: many executors, sharing a few processes, on one driver.
func scale(ctx context.Context) ([]Result, error) {
	execs := *scaleN
	const procs = 4
	pingFor := time.Duration(pick(5, 2)) * time.Second
	secret := strconv.FormatInt(time.Now().UnixNano(), 36) + "-bench"
	cfg := config("standalone")
	cfg.Secret = secret
	cfg.MinExecutors = 0
	var fig scaleFigures
	for range *reps {
		if err := scaleOnce(ctx, cfg, execs, procs, pingFor, secret, &fig); err != nil {
			return nil, err
		}
	}
	name := fmt.Sprintf("%d executors", execs)
	return []Result{
		result("scale", name+": all registered", "ms", fig.register).absolute("<", 10000),
		result("scale", name+": driver resident memory", "MiB", fig.rss).absolute("<", 256),
		result("scale", name+": ask p99, each asking once a second", "ms", fig.p99).absolute("<", 10),
		result("scale", name+": ask p99, all asking at the same instants", "ms", fig.burst),
	}, nil
}

// scaleFigures collects the scale scenario's repetitions.
type scaleFigures struct {
	register, rss series
	p99, burst    series // ask p99: independent phases; all at once
}

// scaleOnce runs one repetition of the scale scenario.
func scaleOnce(ctx context.Context, cfg ember.Config, execs, procs int, pingFor time.Duration, secret string, fig *scaleFigures) error {
	// The executor processes end once Run releases them; wait for them
	// after it returns.
	var wg sync.WaitGroup
	errs := make(chan error, procs)
	start := time.Now()
	err := ember.Run(ctx, cfg, func(ctx context.Context, d *ember.Driver) error {
		ds := current.Load()
		for i := range procs {
			count := execs / procs
			if i < execs%procs {
				count++
			}
			cmd := exec.CommandContext(ctx, self(), "-role=executors", "-addr="+d.Addr(), "-count="+strconv.Itoa(count))
			cmd.Stderr = os.Stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				return err
			}
			if err := cmd.Start(); err != nil {
				return err
			}
			if _, err := io.WriteString(stdin, secret+"\n"); err != nil {
				return err
			}
			stdin.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := cmd.Wait(); err != nil {
					errs <- fmt.Errorf("executors process: %w", err)
				}
			}()
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := d.WaitExecutors(wctx, execs); err != nil {
			return err
		}
		fig.register.add(float64(time.Since(start)) / float64(time.Millisecond))
		// The bar's figure: each executor asks once a second at its own
		// phase. Then, for information, the worst case: all at once.
		for _, aligned := range []bool{false, true} {
			done := ds.expectPings(execs)
			if err := ds.dc.Broadcast(ctx, StartPinging{Every: time.Second, Duration: pingFor, Aligned: aligned}); err != nil {
				return err
			}
			select {
			case <-done:
			case <-time.After(pingFor + time.Minute):
				return fmt.Errorf("not every executor reported its pings")
			}
			lat, err := ds.allLatencies()
			if err != nil {
				return err
			}
			if !aligned {
				fig.rss.add(residentMiB())
				fig.p99.add(us(benchkit.Percentile(lat, 99)) / 1000)
			} else {
				fig.burst.add(us(benchkit.Percentile(lat, 99)) / 1000)
			}
		}
		return nil
	})
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	return err
}

// onEach runs fn for every ready executor at once.
func onEach(d *ember.Driver, fn func(id string) error) error {
	execs := d.Executors()
	return parallel(len(execs), func(i int) error { return fn(execs[i].ID) })
}

func parallel(n int, fn func(i int) error) error {
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- fn(i) }()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func self() string {
	path, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return path
}

// residentMiB is this process's resident set size.
func residentMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// baselineResult is what a baseline child prints.
type baselineResult struct {
	P50, P99, Elapsed time.Duration
	// Switches is how many times the client process's threads gave up a
	// CPU during the run (see switches).
	Switches int64
	// CPU is the client process's CPU time over the run (see cpuTime);
	// zero if unknown.
	CPU time.Duration
}

var (
	kindFlag        = flag.String("kind", "", "internal: baseline kind")
	addrFlag        = flag.String("addr", "", "internal: address to connect to")
	nFlag           = flag.Int("n", 0, "internal: messages")
	outstandingFlag = flag.Int("outstanding", 0, "internal: messages in flight")
	countFlag       = flag.Int("count", 0, "internal: executors to run in this process")
	barrierFlag     = flag.Bool("barrier", false, "internal: a baseline client says ready once connected and waits for go")
)

// runBaseline runs one baseline client in a child process.
func runBaseline(ctx context.Context, kind, addr string, n, outstanding int) (baselineResult, error) {
	cmd := baselineCmd(ctx, kind, addr, n, outstanding)
	out, err := cmd.Output()
	if err != nil {
		return baselineResult{}, fmt.Errorf("baseline %s: %w", kind, err)
	}
	var r baselineResult
	return r, json.Unmarshal(out, &r)
}

// baselineCmd is a baseline client process of this binary, its stderr
// passed through; extra flags go before the others.
func baselineCmd(ctx context.Context, kind, addr string, n, outstanding int, extra ...string) *exec.Cmd {
	args := append([]string{"-role=baseline"}, extra...)
	args = append(args, "-kind="+kind, "-addr="+addr, "-n="+strconv.Itoa(n), "-outstanding="+strconv.Itoa(outstanding))
	cmd := exec.CommandContext(ctx, self(), args...)
	cmd.Stderr = os.Stderr
	return cmd
}

// runBaselines runs count baseline clients of one kind together. Ember's
// executors are connected before they are asked to start; so are these
// clients before the clock starts. It returns their results, the time
// from the start signal until the last one ended, and the CPU time this
// process (where the baseline's server runs) used meanwhile.
func runBaselines(ctx context.Context, count int, kind, addr string, n, outstanding int) (rs []baselineResult, elapsed, server time.Duration, err error) {
	g, err := startBaselines(ctx, count, kind, addr, n, outstanding)
	if err != nil {
		return nil, 0, 0, err
	}
	cpu0, start := cpuTime(), time.Now()
	rs, err = g.run()
	return rs, time.Since(start), cpuTime() - cpu0, err
}

// startBaselines starts count baseline client processes of one kind with
// -barrier and waits until every one has connected and said so.
func startBaselines(ctx context.Context, count int, kind, addr string, n, outstanding int) (*baselineGroup, error) {
	g := &baselineGroup{}
	for range count {
		cmd := baselineCmd(ctx, kind, addr, n, outstanding, "-barrier")
		in, err := cmd.StdinPipe()
		if err != nil {
			g.kill()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			g.kill()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			g.kill()
			return nil, fmt.Errorf("baseline %s: %w", kind, err)
		}
		g.clients = append(g.clients, baselineClient{cmd: cmd, in: in, out: bufio.NewReader(out)})
	}
	for _, c := range g.clients {
		if line, err := c.out.ReadString('\n'); err != nil || line != readyLine {
			g.kill()
			return nil, fmt.Errorf("baseline %s: got %q (%v) before starting, want %q", kind, line, err, readyLine)
		}
	}
	return g, nil
}

// baselineGroup is baseline clients started together: each connects, says
// readyLine on its stdout and waits for goLine on its stdin, so that time
// measured from run covers their messages, not their processes' start-up
// and connection set-up.
type baselineGroup struct{ clients []baselineClient }

type baselineClient struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

const (
	readyLine = "ready\n"
	goLine    = "go\n"
)

// run starts every client and returns their results once all have
// ended; the caller times it.
func (g *baselineGroup) run() ([]baselineResult, error) {
	for _, c := range g.clients {
		if _, err := io.WriteString(c.in, goLine); err != nil {
			g.kill()
			return nil, fmt.Errorf("baseline: starting a client: %w", err)
		}
		c.in.Close()
	}
	var first error
	results := make([]baselineResult, len(g.clients))
	for i, c := range g.clients {
		out, err := io.ReadAll(c.out) // read before Wait closes it
		if werr := c.cmd.Wait(); err == nil {
			err = werr
		}
		if err == nil {
			err = json.Unmarshal(out, &results[i])
		}
		if err != nil && first == nil {
			first = fmt.Errorf("baseline: %w", err)
		}
	}
	return results, first
}

// kill ends the clients started so far and reaps them.
func (g *baselineGroup) kill() {
	for _, c := range g.clients {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// awaitGo is a -barrier baseline client's side of baselineGroup.
func awaitGo() error {
	if _, err := io.WriteString(os.Stdout, readyLine); err != nil {
		return err
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil || line != goLine {
		return fmt.Errorf("waiting for %q on stdin: got %q (%v)", goLine, line, err)
	}
	return nil
}

// baselineChild is a baseline client process.
func baselineChild(ctx context.Context) error {
	var r baselineResult
	// The throughput clients' CPU time counts from the clock's start (go,
	// with -barrier), as their Elapsed does.
	cpu0 := cpuTime()
	var ready func() error
	waited := false // whether the baseline called ready
	if *barrierFlag {
		ready = func() error {
			waited = true
			err := awaitGo()
			cpu0 = cpuTime()
			return err
		}
	}
	var lat []time.Duration
	var err error
	switch *kindFlag {
	case "grpc-pingpong":
		s0 := switches()
		lat, err = benchkit.GRPCPingPong(ctx, *addrFlag, payloadBytes, *nFlag)
		r.Switches = switches() - s0
		if err == nil {
			err = dumpStamps("baseline")
		}
	case "grpc-unary":
		lat, err = benchkit.GRPCUnary(ctx, *addrFlag, payloadBytes, *nFlag)
	case "tcp-pingpong":
		lat, err = benchkit.TCPPingPong(*addrFlag, payloadBytes, *nFlag)
	case "grpc-oneway":
		r.Elapsed, err = benchkit.GRPCOneWay(ctx, *addrFlag, payloadBytes, *nFlag, ready)
	case "grpc-pipelined":
		r.Elapsed, err = benchkit.GRPCPipelined(ctx, *addrFlag, payloadBytes, *nFlag, *outstandingFlag, ready)
	case "grpc-push":
		r.Elapsed, err = benchkit.GRPCPush(ctx, *addrFlag, payloadBytes, *nFlag, ready)
	default:
		return fmt.Errorf("unknown baseline %q", *kindFlag)
	}
	if err != nil {
		return err
	}
	if *barrierFlag && !waited {
		// Its parent waited for a ready line and read a result instead.
		return fmt.Errorf("-barrier: baseline %q does not wait for go", *kindFlag)
	}
	if cpu1 := cpuTime(); cpu0 >= 0 && cpu1 >= 0 {
		r.CPU = cpu1 - cpu0
	}
	if lat != nil {
		r.P50, r.P99 = benchkit.Percentile(lat, 50), benchkit.Percentile(lat, 99)
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// executorsChild runs -count executors in this process, for the scale
// scenario. The secret arrives on stdin.
func executorsChild(ctx context.Context) error {
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no secret on stdin: %w", err)
	}
	secret := strings.TrimSpace(line)
	cfg := config("standalone")
	return parallel(*countFlag, func(int) error {
		return executor.Run(ctx, executor.Config{
			DriverAddr:      *addrFlag,
			Plugins:         cfg.Plugins,
			Logger:          cfg.Logger,
			BuildID:         cfg.BuildID,
			Secret:          secret,
			Tasks:           ember.Tasks(),
			Slots:           1,
			ConnectTimeout:  time.Minute,
			ShutdownTimeout: 30 * time.Second,
		})
	})
}
