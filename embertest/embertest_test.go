package embertest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMain(m *testing.M) { embertest.Main(m) }

type note string

func init() { plugin.RegisterMessage[note]() }

// recorder is a plugin whose driver side records what it receives and
// answers asks with what it got, and whose executor sides hand their
// contexts to the test. An executor side sent a note waits on its
// handler's ctx and records why it ended, unless the note begins with
// counted: then it counts it and returns.
type recorder struct {
	mu      sync.Mutex
	got     []note
	removed []error
	pcs     map[string]plugin.ExecutorContext
	dc      plugin.DriverContext
	waiting int     // executor handlers that have started waiting on their ctx
	ended   []error // context.Cause of their ctxs, once ended
	counted int     // counted notes the executor sides received
}

// counted begins the notes an executor side counts, instead of waiting.
const counted = note("counted:")

func (r *recorder) Name() string                          { return "recorder" }
func (r *recorder) DriverPlugin() plugin.DriverPlugin     { return (*recorderDriver)(r) }
func (r *recorder) ExecutorPlugin() plugin.ExecutorPlugin { return &recorderExecutor{r: r} }

func (r *recorder) notes() []note {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *recorder) removals() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.removed)
}

func (r *recorder) pc(id string) plugin.ExecutorContext {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pcs[id]
}

type recorderDriver recorder

func (d *recorderDriver) Init(_ context.Context, dc plugin.DriverContext) (map[string]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dc = dc
	return nil, nil
}
func (d *recorderDriver) Shutdown(context.Context) error { return nil }
func (d *recorderDriver) Receive(_ context.Context, msg any) (any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, msg.(note))
	return msg, nil
}
func (d *recorderDriver) OnExecutorAdded(context.Context, plugin.ExecutorInfo) {}
func (d *recorderDriver) OnExecutorRemoved(_ context.Context, _ plugin.ExecutorInfo, reason error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.removed = append(d.removed, reason)
}

type recorderExecutor struct{ r *recorder }

func (e *recorderExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	if e.r.pcs == nil {
		e.r.pcs = map[string]plugin.ExecutorContext{}
	}
	e.r.pcs[pc.ExecutorID()] = pc
	return nil
}
func (e *recorderExecutor) Shutdown(context.Context) error { return nil }
func (e *recorderExecutor) Receive(ctx context.Context, msg any) (any, error) {
	if strings.HasPrefix(string(msg.(note)), string(counted)) {
		e.r.mu.Lock()
		defer e.r.mu.Unlock()
		e.r.counted++
		return nil, nil
	}
	e.r.mu.Lock()
	e.r.waiting++
	e.r.mu.Unlock()
	<-ctx.Done()
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	e.r.ended = append(e.r.ended, context.Cause(ctx))
	return nil, nil
}

func (r *recorder) countedNotes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counted
}

func (r *recorder) endedHandlers() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ended)
}

func start(t *testing.T, cfg ember.Config) (*embertest.Cluster, *recorder) {
	t.Helper()
	r := &recorder{}
	cfg.Plugins = []plugin.Plugin{r}
	cfg.Logger = slog.New(slog.DiscardHandler)
	return embertest.Start(t, cfg), r
}

// Delay slows an in-process executor's round trips by twice the delay,
// and Delay 0 restores them.
func TestDelay(t *testing.T) {
	c, r := start(t, ember.Config{Master: "local[1]"})
	const d = 50 * time.Millisecond
	if err := c.Delay("1", d); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	begin := time.Now()
	got, err := plugin.Ask[note](ctx, r.pc("1"), note("slow"))
	// The upper limit allows a loaded machine 900ms beyond the delay.
	if took := time.Since(begin); err != nil || got != "slow" || took < 2*d || took > 20*d {
		t.Errorf("Ask with a %v delay: got %q, %v after %v; want the echo after %v to %v", d, got, err, took, 2*d, 20*d)
	}
	if err := c.Delay("1", 0); err != nil {
		t.Fatal(err)
	}
	if got, err := plugin.Ask[note](ctx, r.pc("1"), note("fast")); err != nil || got != "fast" {
		t.Errorf("Ask without delay: got %q, %v; want the echo", got, err)
	}
	if err := c.Delay("7", d); err == nil {
		t.Error("Delay of an unknown executor: got nil, want an error")
	}
}

// Delay is a latency, not a slow link: a burst of sends, each its own
// gRPC message (MaxMessageBytes holds one per batch), arrives about d
// after it was sent, either way. Each message waited its turn, d after
// the previous one, so a burst of n took n*d (and round trips under load
// grew from 13ms to 1.2s in a user's trial); the test allows a quarter
// of that.
func TestDelayDoesNotLimitThroughput(t *testing.T) {
	const (
		d = 20 * time.Millisecond
		n = 200
	)
	big := note(strings.Repeat("x", 600)) // two do not fit in one batch
	tests := []struct {
		name    string
		send    func(*recorder) error
		arrived func(*recorder) int
	}{
		{
			name:    "executor to driver",
			send:    func(r *recorder) error { return r.pc("1").Send(context.Background(), big) },
			arrived: func(r *recorder) int { return len(r.notes()) },
		},
		{
			name: "driver to executor",
			send: func(r *recorder) error {
				r.mu.Lock()
				dc := r.dc
				r.mu.Unlock()
				return dc.SendExecutor(context.Background(), "1", counted+big)
			},
			arrived: func(r *recorder) int { return r.countedNotes() },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, r := start(t, ember.Config{Master: "local[1]", MaxMessageBytes: 1 << 10})
			if err := c.Delay("1", d); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			for i := range n {
				if err := tt.send(r); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			embertest.WaitFor(t, "the burst to arrive", func() bool { return tt.arrived(r) == n })
			if took, limit := time.Since(begin), n*d/4; took < d || took > limit {
				t.Errorf("%d sends with a %v delay arrived after %v, want %v to %v (one after another: %v)", n, d, took, d, limit, n*d)
			}
		})
	}
}

// Close removes the faults a test left, so that the cluster shuts down
// as quickly as a healthy one: with an executor still partitioned, it
// waited for the heartbeat timeout to lose it (10s by default), and
// with a long delay, for the delay of each message of the shutdown.
func TestCloseRemovesFaults(t *testing.T) {
	// Long, so that waiting for it cannot pass for a quick shutdown.
	const heartbeatTimeout = 30 * time.Second
	tests := []struct {
		name  string
		fault func(*embertest.Cluster) error
	}{
		{"partition", func(c *embertest.Cluster) error { return c.Partition("1") }},
		{"delay", func(c *embertest.Cluster) error { return c.Delay("1", time.Hour) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := start(t, ember.Config{Master: "local[2]", HeartbeatTimeout: heartbeatTimeout})
			if err := tt.fault(c); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			err := c.Close()
			if took, limit := time.Since(begin), heartbeatTimeout/3; err != nil || took > limit {
				t.Errorf("Close with a %s left: got %v after %v, want nil within %v", tt.name, err, took, limit)
			}
		})
	}
}

// An ID that names no ready executor fails each fault with CodeNotFound,
// wrapping plugin.ErrNoSuchExecutor, as DriverContext.AskExecutor does;
// the errors could not be told apart from any other.
func TestFaultsOfUnknownExecutorAreNotFound(t *testing.T) {
	c, _ := start(t, ember.Config{Master: "local[1]"})
	faults := map[string]func() error{
		"Kill":      func() error { return c.Kill("7") },
		"Delay":     func() error { return c.Delay("7", time.Millisecond) },
		"Partition": func() error { return c.Partition("7") },
		"Heal":      func() error { return c.Heal("7") },
	}
	for name, fault := range faults {
		if err := fault(); !errors.Is(err, plugin.ErrNoSuchExecutor) || plugin.CodeOf(err) != plugin.CodeNotFound {
			t.Errorf("%s of executor 7: got %v, want CodeNotFound wrapping plugin.ErrNoSuchExecutor", name, err)
		}
	}
}

// An executor that has gone names no ready executor either: a second Kill
// of an in-process executor fails as a Kill of an unknown one does, where
// it ran the kill again and returned nil, as if it had killed something.
func TestFaultsOfAKilledExecutorAreNotFound(t *testing.T) {
	c, _ := start(t, ember.Config{Master: "local[2]"})
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "the driver to remove executor 1", func() bool {
		for _, e := range c.Driver.Executors() {
			if e.ID == "1" {
				return false
			}
		}
		return true
	})
	faults := map[string]func() error{
		"Kill":      func() error { return c.Kill("1") },
		"Delay":     func() error { return c.Delay("1", time.Millisecond) },
		"Partition": func() error { return c.Partition("1") },
		"Heal":      func() error { return c.Heal("1") },
	}
	for name, fault := range faults {
		if err := fault(); !errors.Is(err, plugin.ErrNoSuchExecutor) || plugin.CodeOf(err) != plugin.CodeNotFound {
			t.Errorf("%s of executor 1, killed: got %v, want CodeNotFound wrapping plugin.ErrNoSuchExecutor", name, err)
		}
	}
	if err := c.Kill("2"); err != nil {
		t.Errorf("Kill of executor 2, still ready: %v", err)
	}
}

// A partition healed before the heartbeat timeout loses nothing: what the
// executor sent meanwhile arrives afterwards, in order.
func TestHealedPartitionLosesNothing(t *testing.T) {
	c, r := start(t, ember.Config{Master: "local[1]"})
	if err := c.Partition("1"); err != nil {
		t.Fatal(err)
	}
	var want []note
	for i := range 100 {
		n := note(rune('a' + i%26))
		want = append(want, n)
		if err := r.pc("1").Send(context.Background(), n); err != nil {
			t.Fatalf("Send %d during the partition: %v", i, err)
		}
	}
	// An ask meanwhile gets no answer, and by then nothing has arrived.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := plugin.Ask[note](ctx, r.pc("1"), note("anyone?"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ask during the partition: got %v, want its deadline", err)
	}
	if got := r.notes(); len(got) != 0 {
		t.Fatalf("during the partition the driver received %q, want nothing", got)
	}
	if err := c.Heal("1"); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "the messages sent during the partition", func() bool { return len(r.notes()) >= len(want) })
	if got := r.notes(); !slices.Equal(got[:len(want)], want) { // then perhaps the late ask
		t.Errorf("after healing: got %q, want %q", got, want)
	}
}

// A partition longer than the heartbeat timeout loses the executor: the
// driver removes it, the executor's calls fail with Unavailable, and its
// handlers' ctx ends saying it lost its driver.
func TestPartitionLosesTheExecutor(t *testing.T) {
	// A timeout short for the test's sake, not so short that a loaded
	// machine loses executor 2 as well.
	c, r := start(t, ember.Config{Master: "local[2]", HeartbeatInterval: 50 * time.Millisecond, HeartbeatTimeout: time.Second})
	r.mu.Lock()
	dc := r.dc
	r.mu.Unlock()
	if err := dc.SendExecutor(context.Background(), "1", note("wait")); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "executor 1's handler to wait on its ctx", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.waiting == 1
	})
	if err := c.Partition("1"); err != nil {
		t.Fatal(err)
	}
	_, err := plugin.Ask[note](context.Background(), r.pc("1"), note("anyone?"))
	if plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("Ask across the partition: got %v, want Unavailable once the driver is lost", err)
	}
	embertest.WaitFor(t, "the driver to remove executor 1", func() bool {
		ids := []string{}
		for _, e := range c.Driver.Executors() {
			ids = append(ids, e.ID)
		}
		return slices.Equal(ids, []string{"2"}) && r.removals() == 1
	})
	if got, err := plugin.Ask[note](context.Background(), r.pc("2"), note("still here")); err != nil || got != "still here" {
		t.Errorf("Ask from the other executor: got %q, %v; want the echo", got, err)
	}
	if err := c.Heal("1"); err == nil {
		t.Error("Heal of the lost executor: got nil, want an error saying it is not ready")
	}
	embertest.WaitFor(t, "executor 1's handler to see its ctx end", func() bool { return len(r.endedHandlers()) > 0 })
	if cause := r.endedHandlers()[0]; !errors.Is(cause, context.Canceled) || cause.Error() != "executor 1 lost its driver: context canceled" {
		t.Errorf("the handler's ctx's cause: got %v, want Canceled, saying executor 1 lost its driver", cause)
	}
}

// An ask made across a partition ends with its ctx, as across a real
// network partition (gRPC buffers the bytes; the asker waits on its ctx).
// The fault used to block the ask's own write (a lone ask is written by
// its caller), deaf to its ctx, until the executor was lost.
func TestAskAcrossAPartitionEndsWithItsCtx(t *testing.T) {
	c, r := start(t, ember.Config{Master: "local[1]"})
	if err := c.Partition("1"); err != nil {
		t.Fatal(err)
	}
	defer c.Heal("1")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// Held in its write, it ended only when the executor was lost, with
	// Unavailable ("peer silent for 10s").
	_, err := plugin.Ask[note](ctx, r.pc("1"), note("anyone?"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ask with a 200ms ctx across a partition: got %v, want its deadline", err)
	}
}

// looper's executor side runs a goroutine from Init to Shutdown, as the
// plugin API asks of background work.
type looper struct {
	mu       sync.Mutex
	shutdown map[string]bool
}

func (l *looper) Name() string                          { return "looper" }
func (l *looper) DriverPlugin() plugin.DriverPlugin     { return nil }
func (l *looper) ExecutorPlugin() plugin.ExecutorPlugin { return &looperExecutor{l: l} }

func (l *looper) wasShutDown(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.shutdown[id]
}

type looperExecutor struct {
	l    *looper
	id   string
	stop chan struct{}
	done chan struct{}
}

func (e *looperExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.id, e.stop, e.done = pc.ExecutorID(), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.done)
		<-e.stop
	}()
	return nil
}

func (e *looperExecutor) Shutdown(context.Context) error {
	close(e.stop)
	<-e.done
	e.l.mu.Lock()
	defer e.l.mu.Unlock()
	if e.l.shutdown == nil {
		e.l.shutdown = map[string]bool{}
	}
	e.l.shutdown[e.id] = true
	return nil
}

// An in-process executor killed shuts its plugins down after dropping its
// stream, since a crash would have ended their goroutines too: they used
// to outlive it, and embertest.Main's leak check failed a package whose
// tests all passed.
func TestKilledInProcessExecutorShutsItsPluginsDown(t *testing.T) {
	l := &looper{}
	c := embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{l}, Logger: slog.New(slog.DiscardHandler)})
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "executor 1's plugins to shut down", func() bool { return l.wasShutDown("1") })
	embertest.WaitFor(t, "the driver to remove executor 1", func() bool {
		for _, e := range c.Driver.Executors() {
			if e.ID == "1" {
				return false
			}
		}
		return true
	})
	if l.wasShutDown("2") {
		t.Error("executor 2 was shut down too, want it running")
	}
}

// A local-cluster test need not set ExecutorArgs: the executor process,
// this test binary re-executed, runs only this test. With the binary's
// own arguments it ran every test, and the first to start a cluster
// (TestDelay's, another plugin list) became the executor: the handshake
// failed, naming plugins the test never used.
func TestLocalClusterRunsTheCallingTest(t *testing.T) {
	l := &looper{}
	c := embertest.Start(t, ember.Config{Master: "local-cluster[1]", Plugins: []plugin.Plugin{l}, Logger: slog.New(slog.DiscardHandler)})
	if n := len(c.Driver.Executors()); n != 1 {
		t.Errorf("executors: got %d, want 1", n)
	}
}

// failingShutdown is a plugin whose driver side fails its Shutdown.
type failingShutdown struct{ plugin.BaseDriverPlugin }

func (failingShutdown) Name() string                          { return "failing-shutdown" }
func (f failingShutdown) DriverPlugin() plugin.DriverPlugin   { return f }
func (failingShutdown) ExecutorPlugin() plugin.ExecutorPlugin { return nil }
func (failingShutdown) Shutdown(context.Context) error        { return errors.New("boom") }

// cleanups is a testing.TB that keeps its cleanups and errors for the test
// to run and read.
type cleanups struct {
	testing.TB
	fns    []func()
	errors []string
}

func (c *cleanups) Cleanup(f func()) { c.fns = append(c.fns, f) }
func (c *cleanups) Errorf(format string, a ...any) {
	c.errors = append(c.errors, fmt.Sprintf(format, a...))
}
func (c *cleanups) run() {
	for _, f := range slices.Backward(c.fns) {
		f()
	}
}

// A shutdown error fails the test from Start's cleanup, unless the test
// called Close itself, which returns that error for the test to judge: a
// test expecting a shutdown error used to fail anyway, from the cleanup.
func TestShutdownErrorIsTheCallersWhenItCloses(t *testing.T) {
	for _, closes := range []bool{true, false} {
		tb := &cleanups{TB: t}
		c := embertest.Start(tb, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{failingShutdown{}}, Logger: slog.New(slog.DiscardHandler)})
		if closes {
			if err := c.Close(); err == nil {
				t.Error("Close: got nil, want the plugin's Shutdown error")
			}
		}
		tb.run()
		if got := len(tb.errors) > 0; got == closes {
			t.Errorf("the test called Close: %v; the cleanup failed it: %v (%q), want %v", closes, got, tb.errors, !closes)
		}
	}
}

// Start takes local masters only. Given an application's own Config
// (Master "standalone"), it returned a cluster with no executors, on
// which the test's first Map waited until the test timed out.
func TestStartRefusesStandalone(t *testing.T) {
	_, err := embertest.StartErr(t, ember.Config{Master: "standalone", Secret: "0123456789abcdef0123456789abcdef", Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), `"standalone"`) {
		t.Fatalf("StartErr with Master standalone: got %v, want an error naming the master", err)
	}
}

// counting is a plugin whose executor side counts its Init in
// embertest_inits_total.
type counting struct{}

func (counting) Name() string                          { return "counting" }
func (counting) DriverPlugin() plugin.DriverPlugin     { return nil }
func (counting) ExecutorPlugin() plugin.ExecutorPlugin { return &countingExecutor{} }

type countingExecutor struct{ plugin.BaseExecutorPlugin }

func (*countingExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	inits := prometheus.NewCounter(prometheus.CounterOpts{Name: "embertest_inits_total", Help: "Inits."})
	inits.Inc()
	return pc.Metrics().Register(inits)
}

// Metric reads a family's series from the driver's /metrics, summed over
// those whose labels include the given ones: the built-in gauge of
// executors alive, a counter served per executor and limit, a plugin's
// counter summed over the executors, and nothing for a family or label
// value that is not there. Users wrote a parser of the exposition format
// each.
func TestMetric(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: slog.New(slog.DiscardHandler), Plugins: []plugin.Plugin{counting{}},
		Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
	embertest.WaitFor(t, "embertest_inits_total summed over both executors at 2", func() bool {
		v, ok, err := c.Metric("embertest_inits_total", nil)
		return err == nil && ok && v == 2
	})
	if v, ok, err := c.Metric("embertest_inits_total", map[string]string{"executor": "2", "plugin": "counting"}); err != nil || !ok || v != 1 {
		t.Errorf("embertest_inits_total of executor 2: got %v, %v, %v; want 1, true, nil", v, ok, err)
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
		wantOK bool
	}{
		{"ember_executors_alive", nil, 2, true},
		{"ember_auth_failures_total", map[string]string{"reason": "wrong proof"}, 0, true},
		{"ember_limit_hits_total", map[string]string{"limit": "message_size"}, 0, true},
		{"ember_limit_hits_total", map[string]string{"limit": "no such limit"}, 0, false},
		{"no_such_family", nil, 0, false},
	}
	for _, tt := range tests {
		got, ok, err := c.Metric(tt.name, tt.labels)
		if err != nil || got != tt.want || ok != tt.wantOK {
			t.Errorf("Metric(%s, %v): got %v, %v, %v; want %v, %v, nil", tt.name, tt.labels, got, ok, err, tt.want, tt.wantOK)
		}
	}
	// Summed: the driver's series and each executor's, once they have
	// been shipped (served at 0 until then, so counted either way).
	embertest.WaitFor(t, "three ember_limit_hits_total series of message_size", func() bool {
		n := 0
		for _, id := range []string{"driver", "1", "2"} {
			if _, ok, _ := c.Metric("ember_limit_hits_total", map[string]string{"limit": "message_size", "executor": id}); ok {
				n++
			}
		}
		return n == 3
	})
	off := embertest.Start(t, ember.Config{Master: "local[1]", Logger: slog.New(slog.DiscardHandler), MetricsAddr: "off"})
	if _, _, err := off.Metric("ember_executors_alive", nil); err == nil || !strings.Contains(err.Error(), `"off"`) {
		t.Errorf("Metric with MetricsAddr off: got %v, want an error saying the driver serves none", err)
	}
}

// A cluster started without a Logger logs through slog.Default with the
// test's name: parallel tests' clusters logged to the same place, and
// their lines could not be told apart.
func TestStartNamesTheTestInItsLogs(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	c := embertest.Start(t, ember.Config{Master: "local[1]"})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "test=TestStartNamesTheTestInItsLogs") {
		t.Errorf("the cluster's log lines do not name the test:\n%s", logs.String())
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixed is a plugin named as the plugin docs name one ("metrics.jvm")
// whose two sides register a gauge prefixed with that name, as the README
// advises: the name has dots, which Prometheus 3 and client_golang take
// as they are, and which the exposition escapes only for scrapers that do
// not ask for UTF-8 names.
type prefixed struct{}

func (prefixed) Name() string                          { return "metrics.jvm" }
func (prefixed) DriverPlugin() plugin.DriverPlugin     { return &prefixedDriver{} }
func (prefixed) ExecutorPlugin() plugin.ExecutorPlugin { return &prefixedExecutor{} }

type prefixedDriver struct{ plugin.BaseDriverPlugin }

func (*prefixedDriver) Init(_ context.Context, dc plugin.DriverContext) (map[string]string, error) {
	return nil, registerHeap(dc.Metrics(), 1)
}

type prefixedExecutor struct{ plugin.BaseExecutorPlugin }

func (*prefixedExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	return registerHeap(pc.Metrics(), 10)
}

func registerHeap(reg prometheus.Registerer, v float64) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "metrics.jvm.heap_bytes", Help: "Heap in use."})
	g.Set(v)
	return reg.Register(g)
}

// Metric finds a family by the name it was registered under, dots
// included: it read the page as served to scrapers that take no UTF-8
// names, where "metrics.jvm.heap_bytes" is "metrics_jvm_heap_bytes", and
// reported such a family missing. The name such a scraper sees finds it
// too, as it did before.
func TestMetricFindsUTF8Names(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: slog.New(slog.DiscardHandler), Plugins: []plugin.Plugin{prefixed{}},
		Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
	embertest.WaitFor(t, "every executor's series shipped", func() bool {
		n := 0
		for _, id := range []string{"1", "2"} {
			if v, ok, _ := c.Metric("metrics.jvm.heap_bytes", map[string]string{"executor": id}); ok && v == 10 {
				n++
			}
		}
		return n == 2
	})
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
		wantOK bool
	}{
		{"metrics.jvm.heap_bytes", nil, 21, true},
		{"metrics.jvm.heap_bytes", map[string]string{"executor": "driver", "plugin": "metrics.jvm"}, 1, true},
		{"metrics_jvm_heap_bytes", nil, 21, true}, // as a scraper without UTF-8 names sees it
		{"metrics_jvm_heap", nil, 0, false},
		{"ember_executors_alive", nil, 2, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s%v", tt.name, tt.labels), func(t *testing.T) {
			got, ok, err := c.Metric(tt.name, tt.labels)
			if err != nil || got != tt.want || ok != tt.wantOK {
				t.Errorf("Metric(%s, %v): got %v, %v, %v; want %v, %v, nil", tt.name, tt.labels, got, ok, err, tt.want, tt.wantOK)
			}
		})
	}
}
