// Package embertest is Ember's public test kit: an application cluster
// that runs inside a test (executors in-process or as real child
// processes), fault injection (Kill; for in-process executors, Delay and
// Partition), and the plumbing that lets a re-executed
// test binary become an executor of the test that started it.
//
// A test package using real executor processes needs one line:
//
//	func TestMain(m *testing.M) { embertest.Main(m) }
//
// Start sets Config.ExecutorArgs to ExecutorArgs(t) when it is nil, so
// that each executor process runs only the calling test.
//
// An executor process runs the test function from its start up to Start
// (or ember.Run), where it becomes the executor and later exits without
// returning, so the test's cleanups never run there. Keep side effects out
// of that stretch, or skip them in an executor process
// (os.Getenv(ember.EnvDriver) != ""): a t.TempDir made before Start, for
// one, is left behind by every executor. Executors get the driver's
// Config.Conf, so pass them paths through it. Declare tasks
// (ember.NewTask) at package level and register message types
// (plugin.RegisterMessage) in init functions, not in a test: Main makes
// both panic once the tests have started.
package embertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/internal/fault"
	"github.com/emberhq/ember/internal/hook"
	"github.com/emberhq/ember/internal/launch"
	"github.com/emberhq/ember/plugin"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

// DefaultTimeout bounds every wait in this package (WaitFor, Close, and
// the cleanup Start registers) but one: Start waits for start-up up to
// twice the StartTimeout Run uses (cfg.StartTimeout, or its default of
// 60s) plus 10s when that is longer, so that Run reports its own start-up
// failures.
const DefaultTimeout = 60 * time.Second

// startWait is how long Start waits for the cluster to start: DefaultTimeout,
// or, when Run's StartTimeout (cfg's, or its default) lets it take longer,
// the two steps it bounds (the driver plugins' Init, then the executors'
// start) and a margin, so that a test giving a slow machine more time gets
// it, and Run reports its own failures.
func startWait(cfg ember.Config) time.Duration {
	margin := startWaitMargin
	start := cfg.StartTimeout
	if start <= 0 {
		// Run's default: each step may take a minute, and Run says why it
		// gave up only after both.
		start = defaultStartTimeout
	}
	if start > (math.MaxInt64-margin)/2 {
		return math.MaxInt64 // "no limit" set as the largest Duration: 2*StartTimeout would overflow
	}
	return max(startWaitMin, 2*start+margin)
}

// startWaitMin is the least startWait gives, DefaultTimeout,
// startWaitMargin what it adds to twice a StartTimeout, and
// defaultStartTimeout ember.Config.StartTimeout's default, which Run uses
// when cfg.StartTimeout is not positive; a test of what happens once the wait has
// passed lowers all three.
var (
	startWaitMin        = DefaultTimeout
	startWaitMargin     = 10 * time.Second
	defaultStartTimeout = time.Minute
)

// Main runs the tests and then checks that no goroutine leaked. In an
// executor process started by a test (local-cluster), the test that called
// ember.Run becomes the executor and the process exits from there; Main
// itself has nothing to do for it.
//
// Main also sets GORACE=atexit_sleep_ms=0 for child processes (unless
// GORACE is set): a race-enabled executor otherwise sleeps a second at
// exit, which every local-cluster shutdown would wait for.
//
// Main fixes the tasks and message types before the tests start:
// ember.NewTask, or plugin.RegisterMessage of a new type, called from a
// test panics there, saying where to register instead. A task made in a
// test function was registered in that test binary's process only, where
// every later ember.Run included it, and the executors of a later
// local-cluster test, which run only that test, did not have it: that
// test's start-up failed with a handshake mismatch; a message type, the
// same. Register tasks in package-level vars and message types in init
// functions (or in TestMain before calling Main).
//
// Main does not return: it exits the process with the tests' status
// (failing it for a goroutine that a test left running, one of the
// package's tests unrelated to Ember included), so a TestMain's teardown
// after it never runs; clean up in t.Cleanup instead. What a TestMain
// does before Main runs in every executor process too (each is the test
// binary started again, running one test): skip such set-up there
// (os.Getenv(ember.EnvDriver) != ""), as for a test's own code before
// Start.
func Main(m *testing.M) {
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	hook.SealRegistries()
	goleak.VerifyTestMain(m)
}

// ExecutorArgs returns the arguments that make a re-executed test binary
// run only t (a test or a benchmark), so that ember.Run in it turns the
// child process into t's executor. Start puts it in Config.ExecutorArgs
// when that is nil; set it yourself for an ember.Run of your own with a
// local-cluster master.
func ExecutorArgs(t testing.TB) []string {
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	pattern := strings.Join(parts, "/")
	if _, ok := t.(*testing.B); ok {
		return []string{"-test.run=^$", "-test.bench=" + pattern, "-test.benchtime=1x", "-test.count=1"}
	}
	return []string{"-test.run=" + pattern, "-test.count=1"}
}

// Cluster is a running application whose driver function waits for the
// test. Its methods are safe for concurrent use.
type Cluster struct {
	// Driver is the running application.
	Driver *ember.Driver

	release chan struct{}
	done    chan struct{}
	err     error // Run's result, set before done closes

	mu     sync.Mutex // protects kills, links and closed
	kills  map[string]func()
	links  map[string]*fault.Link
	closed bool // the test called Close: its error is the test's to judge
}

// Start runs cfg (Master "local[N]" or "local-cluster[N]") until its
// executors are ready and returns the cluster. It fails t if start-up
// fails. Close shuts it down; so does a cleanup registered with t, which
// fails t if the shutdown fails and the test did not call Close itself.
// A local-cluster executor process stops on its own on SIGTERM or
// os.Interrupt, as a program whose Run's ctx ends on them does. A nil
// cfg.Logger becomes slog.Default() with a "test" attribute, t's name, so
// that the lines of parallel tests' clusters say whose they are.
//
// A nil cfg.ExecutorArgs becomes ExecutorArgs(t), so that a local-cluster
// executor, the test binary re-executed, runs t alone. (With the binary's
// own arguments, the first test in it to start a cluster would become the
// executor, whichever test that is.) So a test starts one local-cluster:
// in the executor process, the test's first ember.Run becomes the
// executor, and a second cluster's executors would be the first's, refused
// at the handshake if its plugins differ. Give each cluster a subtest.
func Start(t testing.TB, cfg ember.Config) *Cluster {
	t.Helper()
	c, err := StartErr(t, cfg)
	if err != nil {
		t.Fatalf("embertest.Start: %v", err)
	}
	return c
}

// StartErr is Start returning the start-up error instead of failing t.
func StartErr(t testing.TB, cfg ember.Config) (*Cluster, error) {
	t.Helper()
	// A standalone master starts no executors: the cluster would have
	// none, and a Map on it wait for ever for executors to join.
	if m, err := launch.ParseMaster(cfg.Master); err == nil && m.Kind == "standalone" {
		return nil, errors.New(`embertest: Master "standalone" starts no executors; use "local[N]" or "local-cluster[N]"`)
	}
	c := &Cluster{
		release: make(chan struct{}),
		done:    make(chan struct{}),
		kills:   map[string]func(){},
		links:   map[string]*fault.Link{},
	}
	if cfg.ExecutorArgs == nil {
		cfg.ExecutorArgs = ExecutorArgs(t)
	}
	if cfg.Logger == nil {
		// Parallel tests' clusters log to the same place: each line says
		// whose it is.
		cfg.Logger = slog.Default().With("test", t.Name())
	}
	ctx := hook.WithLocalHooks(context.Background(), &hook.LocalHooks{
		Started: func(id string, kill func(), link *fault.Link) {
			c.mu.Lock()
			c.kills[id] = kill
			c.links[id] = link
			c.mu.Unlock()
		},
	})
	_, executor := os.LookupEnv(ember.EnvDriver)
	if executor {
		// This process is a local-cluster executor, the test binary
		// re-executed: like a program that follows the README, it stops
		// on its own on SIGTERM (Run's ctx ends), so that a test can
		// stop one the way an operator would. The process ends in Run,
		// so the signals are never given back (stop is not called: it
		// would end Run's ctx were this function to return early).
		ctx, _ = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	}
	started := make(chan *ember.Driver, 1)
	go func() {
		defer close(c.done)
		c.err = ember.Run(ctx, cfg, func(ctx context.Context, d *ember.Driver) error {
			started <- d
			<-c.release
			return nil
		})
	}()
	// In an executor process Run serves as the executor and ends the
	// process: its driver function never runs, so there is no start-up
	// to wait for, and giving up on it would fail the test there, whose
	// binary would then exit and take the executor down with it.
	var timeout <-chan time.Time
	if !executor {
		timeout = time.After(startWait(cfg))
	}
	select {
	case c.Driver = <-started:
	case <-c.done:
		return nil, c.err
	case <-timeout:
		// Let the application end when start-up does complete, rather
		// than hold its driver function (and everything else) for ever.
		close(c.release)
		return nil, fmt.Errorf("cluster not started within %v", startWait(cfg))
	}
	t.Cleanup(func() {
		err := c.shutdown()
		c.mu.Lock()
		judged := c.closed
		c.mu.Unlock()
		if err != nil && !judged {
			t.Errorf("cluster shutdown: %v", err)
		}
	})
	return c, nil
}

// Close shuts the application down as ember.Run does and returns Run's
// error. It is idempotent. It first removes every Delay and Partition
// (not a Kill), so that the shutdown's messages flow: a cluster closed
// with an executor still partitioned shuts down as quickly as a healthy
// one, where the driver waited for Config.HeartbeatTimeout to lose that
// executor. The cleanup Start registers does the same.
func (c *Cluster) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.shutdown()
}

func (c *Cluster) shutdown() error {
	c.mu.Lock()
	for _, l := range c.links {
		l.Clear()
	}
	select {
	case <-c.release:
	default:
		close(c.release)
	}
	c.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-time.After(DefaultTimeout):
		return fmt.Errorf("cluster did not shut down within %v", DefaultTimeout)
	}
}

// Kill makes an executor die abruptly: an executor process gets SIGKILL;
// an in-process executor drops its stream at once, with no word to the
// driver, as a crash would. Since a crash would also end its plugins'
// goroutines, and this executor shares the test's process, its plugins'
// Shutdown then runs (whatever they send fails: the stream is gone), so
// that goroutines they started in Init do not outlive it. A local-cluster
// replaces a killed executor process with a new one (a new executor ID);
// an in-process executor is not replaced.
//
// Kill, Delay, Partition and Heal fail with plugin.CodeNotFound, wrapping
// plugin.ErrNoSuchExecutor, for an ID that names no ready executor, as
// DriverContext.AskExecutor does. An executor killed is ready until the
// driver has seen it go (WaitFor its absence from Driver.Executors): a
// second Kill before then kills nothing and returns nil.
func (c *Cluster) Kill(executorID string) error {
	c.mu.Lock()
	kill := c.kills[executorID]
	c.mu.Unlock()
	for _, e := range c.Driver.Executors() {
		if e.ID != executorID {
			continue
		}
		// Ready, as link requires for the other faults: an in-process
		// executor keeps its kill once it has gone (killed, or lost),
		// and calling it again killed nothing and returned nil.
		if kill != nil {
			kill()
			return nil
		}
		if e.PID != os.Getpid() {
			return killProcess(e.PID)
		}
	}
	return errNoSuchExecutor(executorID)
}

// killProcess sends SIGKILL to the executor process pid. One that has
// already ended and been reaped (killed by an earlier Kill, and still
// listed until the driver has seen its connection end, which may come
// after the process's end) kills nothing and returns nil, as Kill says:
// os.Process.Kill gave "os: process already finished".
func killProcess(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// errNoSuchExecutor is the error for an ID that names no ready executor.
func errNoSuchExecutor(executorID string) error {
	return plugin.Errorf(plugin.CodeNotFound, "embertest: executor %q: %w", executorID, plugin.ErrNoSuchExecutor)
}

// Delay adds latency d to everything between the driver and an
// in-process executor (local[N]): each gRPC message, a batch of frames,
// is passed on d after the executor sends it, and d after it reaches the
// executor, so a round trip takes 2d more. Messages keep their order but
// do not wait for one another, so a burst arrives about d later, not
// spread out by d each: throughput is unchanged up to 1 MiB per d each
// way. Each way, the delay holds at most 1 MiB of messages; past that,
// the sender waits for room, as under gRPC's flow control (the
// executor's send at once, the driver's once gRPC's own window is spent
// too). A new d applies to the messages already held too: Delay(id, 0)
// removes the latency and releases them at once, in order. It fails for
// an executor process (local-cluster), whose connection the test kit
// cannot reach, with plugin.CodeUnimplemented.
func (c *Cluster) Delay(executorID string, d time.Duration) error {
	l, err := c.link(executorID)
	if err == nil {
		l.SetDelay(d)
	}
	return err
}

// Partition cuts an in-process executor (local[N]) off from its driver
// without closing their connection, as a network partition does: no
// message reaches either side until Heal. Each side sees only silence and,
// after Config.HeartbeatTimeout, loses the other: the driver reports the
// executor lost (its tasks are rescheduled, OnExecutorRemoved runs) and
// the executor shuts down. Healed sooner, nothing is lost: what waited is
// delivered, in order. It fails for an executor process (local-cluster).
//
// The partition holds messages, not the connection itself: the side whose
// timeout fires first closes its stream, and that reaches the other side
// at once. The executor's usually does (it checks as often as the
// driver), so the reason the driver reports is often the stream's end
// ("peer disconnected") rather than its own timeout ("peer silent"):
// assert that the executor was lost, not on the words of the reason.
func (c *Cluster) Partition(executorID string) error {
	l, err := c.link(executorID)
	if err == nil {
		l.Partition()
	}
	return err
}

// Heal ends a Partition of an in-process executor.
func (c *Cluster) Heal(executorID string) error {
	l, err := c.link(executorID)
	if err == nil {
		l.Heal()
	}
	return err
}

// link returns the faults of a ready in-process executor.
func (c *Cluster) link(executorID string) (*fault.Link, error) {
	c.mu.Lock()
	l := c.links[executorID]
	c.mu.Unlock()
	ready := false
	for _, e := range c.Driver.Executors() {
		ready = ready || e.ID == executorID
	}
	switch {
	case !ready:
		return nil, errNoSuchExecutor(executorID) // unknown, lost, or stopped
	case l == nil:
		return nil, plugin.Errorf(plugin.CodeUnimplemented, "embertest: executor %s is a process: network faults need Master local[N]", executorID)
	}
	return l, nil
}

// WaitFor polls cond, every few milliseconds, until it holds or
// DefaultTimeout passes, then fails t with what (t.Fatalf: call it from
// the goroutine running the test, as for t.FailNow). cond is called from
// the calling goroutine only.
//
// A test whose deadline (go test -timeout, see testing.T.Deadline) comes
// sooner gives up a little before it, so that the test fails with what
// rather than the test binary panicking with a goroutine dump.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	deadline := waitDeadline(t, start)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", time.Since(start).Round(time.Millisecond), what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDeadline is when a WaitFor started at now gives up: DefaultTimeout
// later, or sooner, leaving the test a tenth of the time it has left (at
// most 5s) to fail, clean up and report, when its deadline comes first.
func waitDeadline(t testing.TB, now time.Time) time.Time {
	deadline := now.Add(DefaultTimeout)
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if td, ok := dt.Deadline(); ok {
			grace := max(min(td.Sub(now)/10, 5*time.Second), 0)
			if giveUp := td.Add(-grace); giveUp.Before(deadline) {
				deadline = giveUp
			}
		}
	}
	return deadline
}

// Metric scrapes the driver's /metrics (Config.MetricsAddr must not be
// "off") and returns the sum of the series of family name whose labels
// include labels (every series of it, for none): a counter's or gauge's
// value, a histogram's or summary's sample count. ok is false when no
// series matches, which for a labelled counter can mean it has not
// counted yet (see the README's Metrics section). Executors' series are
// there as of their last shipment (ember.metrics.interval), so wait for a
// value with WaitFor. name is the family's name as registered, dots and
// all ("metrics.jvm.heap_bytes"), or, for a family of no such name, as a
// scraper that takes no UTF-8 names sees it, each dot an underscore
// ("metrics_jvm_heap_bytes"). Safe for concurrent use.
func (c *Cluster) Metric(name string, labels map[string]string) (value float64, ok bool, err error) {
	url := c.Driver.MetricsURL()
	if url == "" {
		return 0, false, errors.New(`embertest: Metric: the driver serves no /metrics (Config.MetricsAddr "off")`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	// Names as registered: without asking for UTF-8 names, a family
	// named "metrics.jvm.heap_bytes" is served as "metrics_jvm_heap_bytes".
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain).WithEscapingScheme(model.NoEscaping)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("embertest: Metric: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("embertest: Metric: GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, false, fmt.Errorf("embertest: Metric: parsing /metrics: %w", err)
	}
	var ms []*dto.Metric
	if f, found := fams[name]; found {
		ms = f.GetMetric()
	} else {
		for n, f := range fams {
			if model.EscapeName(n, model.UnderscoreEscaping) == name {
				ms = append(ms, f.GetMetric()...)
			}
		}
	}
next:
	for _, m := range ms {
		have := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if w, found := have[k]; !found || w != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			value += m.Counter.GetValue()
		case m.Gauge != nil:
			value += m.Gauge.GetValue()
		case m.Untyped != nil:
			value += m.Untyped.GetValue()
		case m.Histogram != nil:
			value += float64(m.Histogram.GetSampleCount())
		case m.Summary != nil:
			value += float64(m.Summary.GetSampleCount())
		}
		ok = true
	}
	return value, ok, nil
}
