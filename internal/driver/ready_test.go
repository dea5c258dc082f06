package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/metrics"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// readyDriver returns a driver with one connected executor that has not
// sent READY yet, and that READY.
func readyDriver(t *testing.T) (*Driver, *execState, *wire.Frame) {
	t.Helper()
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoReplacements: true})
	if err != nil {
		t.Fatal(err)
	}
	es := testExecState(d, plugin.ExecutorInfo{ID: "1"})
	d.mu.Lock()
	d.execs[es.info.ID] = es
	d.mu.Unlock()
	return d, es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 2}}
}

// schedulerHas reports whether d's scheduler counts es.
func schedulerHas(d *Driver, es *execState) bool {
	d.sched.mu.Lock()
	defer d.sched.mu.Unlock()
	for _, e := range d.sched.execs {
		if e == es {
			return true
		}
	}
	return false
}

// An executor is seen ready (WaitExecutors returns, so the driver function
// starts) only once the scheduler has it: a Map started at that moment
// runs, instead of failing for want of executors on a local master.
func TestReadyReachesTheSchedulerFirst(t *testing.T) {
	d, es, ready := readyDriver(t)
	d.sched.mu.Lock() // the scheduler is busy: ready must wait for it before announcing
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		d.ready(es, ready)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := d.WaitExecutors(ctx, 1)
	d.sched.mu.Unlock()
	if err == nil {
		t.Fatal("WaitExecutors saw the executor ready before the scheduler had it")
	}
	<-handled
	if err := d.WaitExecutors(context.Background(), 1); err != nil {
		t.Fatalf("WaitExecutors after READY: %v", err)
	}
	if !schedulerHas(d, es) {
		t.Error("the scheduler does not have the ready executor")
	}
}

// A READY handled as the connection closes (HandleClose ran first, saw
// the executor not ready, and left the scheduler alone) leaves no dead
// executor in the scheduler for tasks to wait on.
func TestReadyAfterCloseLeavesTheSchedulerClean(t *testing.T) {
	d, es, ready := readyDriver(t)
	d.mu.Lock()
	delete(d.execs, es.info.ID) // what HandleClose does first
	d.mu.Unlock()
	d.ready(es, ready)
	if schedulerHas(d, es) {
		t.Error("a closed executor is in the scheduler after its READY")
	}
	if es.ready {
		t.Error("a closed executor is marked ready")
	}
}

// pauseOnLog is a slog handler that stops the goroutine logging msg until
// released: a way into the middle of a driver method.
type pauseOnLog struct {
	msg              string
	reached, release chan struct{}
}

func (p pauseOnLog) Enabled(context.Context, slog.Level) bool { return true }
func (p pauseOnLog) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p pauseOnLog) WithGroup(string) slog.Handler            { return p }
func (p pauseOnLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == p.msg {
		close(p.reached)
		<-p.release
	}
	return nil
}

// membership records a listener's events and the messages it receives.
type membership struct {
	mu      sync.Mutex
	events  []string
	reasons map[string]error // by executor ID, from OnExecutorRemoved
}

func (m *membership) Name() string                          { return "members" }
func (m *membership) DriverPlugin() plugin.DriverPlugin     { return m }
func (m *membership) ExecutorPlugin() plugin.ExecutorPlugin { return nil }
func (m *membership) Init(context.Context, plugin.DriverContext) (map[string]string, error) {
	return nil, nil
}
func (m *membership) Receive(context.Context, any) (any, error) {
	m.record("message")
	return nil, nil
}
func (m *membership) Shutdown(context.Context) error { return nil }
func (m *membership) OnExecutorAdded(_ context.Context, e plugin.ExecutorInfo) {
	m.record("added " + e.ID)
}
func (m *membership) OnExecutorRemoved(_ context.Context, e plugin.ExecutorInfo, reason error) {
	m.mu.Lock()
	if m.reasons == nil {
		m.reasons = map[string]error{}
	}
	m.reasons[e.ID] = reason
	m.mu.Unlock()
	m.record("removed " + e.ID)
}

// reason returns the reason OnExecutorRemoved gave for executor id.
func (m *membership) reason(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reasons[id]
}
func (m *membership) record(ev string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, ev)
}

// memberDriver returns a driver, logging to log, whose one plugin records
// membership events and messages, with executor "1" listed and not yet
// ready, on a connection that is never started (only closed).
func memberDriver(t *testing.T, log *slog.Logger) (*Driver, *membership, *execState, *rpc.Conn) {
	t.Helper()
	m := &membership{}
	d, err := New(Config{Logger: log, Plugins: []plugin.Plugin{m}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	es := testExecState(d, plugin.ExecutorInfo{ID: "1"})
	c := rpc.New(nil, nil, d, rpc.Options{})
	c.Peer = es
	es.conn = c
	d.mu.Lock()
	d.execs["1"] = es
	d.mu.Unlock()
	return d, m, es, c
}

// testExecState returns the state of an executor described by info, as
// the handshake would make it, but with no connection and ctxs of the
// test's own.
func testExecState(d *Driver, info plugin.ExecutorInfo) *execState {
	es := &execState{ctx: context.Background(), askCtx: context.Background(), log: d.log, senderLog: d.log, info: info, stopped: make(chan struct{})}
	d.markHandlers(es)
	return es
}

// listedExecutor returns executor 1 (host h, process 42) of d on a
// connection of its own, listed as Connect lists it: in d.execs, with its
// process's record on a local master.
func listedExecutor(d *Driver) *execState {
	es := testExecState(d, plugin.ExecutorInfo{ID: "1", Host: "h", PID: 42})
	c := rpc.New(nil, nil, d, rpc.Options{})
	c.Peer, es.conn = es, c
	d.mu.Lock()
	defer d.mu.Unlock()
	d.execs["1"] = es
	d.listProcessLocked(es)
	return es
}

// flushLanes waits until d's lanes have run everything queued.
func flushLanes(t *testing.T, d *Driver) {
	t.Helper()
	for _, e := range d.endpoints {
		if err := e.lane.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// An executor whose connection closes on another goroutine (a failed
// write, a heartbeat timeout) while its READY is being handled is removed
// after it was added, for every listener: the events used to be queued
// outside the lock, and OnExecutorRemoved could come first, leaving the
// plugin believing a dead executor alive.
func TestRemovedNeverPrecedesAdded(t *testing.T) {
	pause := pauseOnLog{msg: "executor ready", reached: make(chan struct{}), release: make(chan struct{})}
	d, m, es, c := memberDriver(t, slog.New(pause))

	handled := make(chan struct{})
	go func() { // the reader, handling READY
		defer close(handled)
		d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
	}()
	<-pause.reached
	d.HandleClose(c, errors.New("stream send: peer disconnected"))
	close(pause.release)
	<-handled
	flushLanes(t, d)
	m.mu.Lock()
	defer m.mu.Unlock()
	if want := []string{"added 1", "removed 1"}; !slices.Equal(m.events, want) {
		t.Errorf("listener events: got %v, want %v", m.events, want)
	}
	if n := len(d.Executors()); n != 0 {
		t.Errorf("executors listed: %d, want 0", n)
	}
}

// Frames the reader handles after an executor's connection has ended on
// another goroutine (HandleClose has run there) leave no trace: a SEND
// never reaches the plugin after OnExecutorRemoved (it is counted as
// dropped), and a heartbeat does not bring back the lost executor's
// metrics. Both used to happen.
func TestFramesAfterCloseLeaveNoTrace(t *testing.T) {
	d, m, es, c := memberDriver(t, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})

	reg := prometheus.NewRegistry()
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "executor_work_total", Help: "Work."})
	reg.MustRegister(counter)
	beat, err := metrics.Encode(reg)
	if err != nil {
		t.Fatal(err)
	}
	d.executorMetrics(es, beat)
	if !gathers(t, d, "executor_work_total") {
		t.Fatal("the executor's metrics are not served while it is connected")
	}

	c.Close(errors.New("heartbeat timeout")) // on another goroutine than the reader
	// What the reader still had in hand:
	d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 0})
	d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: beat})

	flushLanes(t, d)
	m.mu.Lock()
	events := slices.Clone(m.events)
	m.mu.Unlock()
	if want := []string{"added 1", "removed 1"}; !slices.Equal(events, want) {
		t.Errorf("plugin saw %v, want %v", events, want)
	}
	var dropped dto.Metric
	if err := d.builtin.Dropped.WithLabelValues("driver", "members", "executor_lost").Write(&dropped); err != nil {
		t.Fatal(err)
	}
	if got := dropped.GetCounter().GetValue(); got != 1 {
		t.Errorf("sends dropped as executor_lost: got %v, want 1", got)
	}
	if gathers(t, d, "executor_work_total") {
		t.Error("a lost executor's metrics are served again after a late heartbeat")
	}
}

// gathers reports whether d's /metrics has a family called name.
func gathers(t *testing.T, d *Driver, name string) bool {
	t.Helper()
	fams, err := d.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return true
		}
	}
	return false
}

// READY is sent once. A failed READY is recorded for WaitExecutors; a peer
// that repeats it (each frame a few bytes, or up to the message limit of
// error text) must not grow the driver's memory for the driver's life,
// nor be logged again each time.
func TestRepeatedFailedReadyIsRecordedOnce(t *testing.T) {
	d, es, _ := readyDriver(t)
	long := strings.Repeat("x", 1<<20)
	for range 64 {
		d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Code: uint32(plugin.CodeInternal), Error: long})
	}
	d.mu.Lock()
	n, size := len(d.failures), 0
	for _, err := range d.failures {
		size += len(err.Error())
	}
	d.mu.Unlock()
	if n != 1 {
		t.Errorf("64 failed READYs from one executor: the driver keeps %d failures, want 1", n)
	}
	if max := rpc.MaxErrorBytes + 1024; size > max {
		t.Errorf("a failed READY of 1 MiB of error text: the driver keeps %d bytes of it, want at most %d", size, max)
	}
}

// Readies counts the executors that became ready, not one whose READY
// failed: a local-cluster's replacer ends a row of failed replacements
// when one becomes ready, even one that stays up.
func TestReadiesCountsReadyExecutors(t *testing.T) {
	d, es, ready := readyDriver(t)
	failed := testExecState(d, plugin.ExecutorInfo{ID: "2"})
	d.mu.Lock()
	d.execs[failed.info.ID] = failed
	d.mu.Unlock()
	d.ready(failed, &wire.Frame{Kind: wire.Kind_KIND_READY, Code: uint32(plugin.CodeInternal), Error: "init failed"})
	if got := d.Readies(); got != 0 {
		t.Errorf("Readies after a failed READY: got %d, want 0", got)
	}
	d.ready(es, ready)
	if got := d.Readies(); got != 1 {
		t.Errorf("Readies after a READY: got %d, want 1", got)
	}
}

// A failed READY ends the executor's start; a READY after it must not
// make it ready (and schedule tasks on it) after all.
func TestReadyAfterFailedReadyIsDropped(t *testing.T) {
	d, es, ready := readyDriver(t)
	d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Code: uint32(plugin.CodeInternal), Error: "init failed"})
	d.ready(es, ready)
	if es.ready || schedulerHas(d, es) {
		t.Error("an executor whose READY failed became ready on a second READY")
	}
}

// An executor that left cleanly (LEAVING, then the end of its stream)
// shipped its final metrics as it stopped: the driver serves them for
// departedSeriesKept, long enough for a scrape, and then drops them. A lost
// executor's go at once. They used to go at once in both cases.
func TestDepartedExecutorsMetrics(t *testing.T) {
	tests := []struct {
		name     string
		leaving  bool
		closeErr error
		kept     bool
	}{
		{"left cleanly", true, plugin.Errorf(plugin.CodeUnavailable, "%w", rpc.ErrPeerClosed), true},
		{"lost as it left", true, errors.New("connection reset"), false},
		{"lost", false, errors.New("heartbeat timeout"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _, es, c := memberDriver(t, slog.New(slog.NewTextHandler(io.Discard, nil)))
			d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
			reg := prometheus.NewRegistry()
			reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "executor_work_total", Help: "Work."}))
			final, err := metrics.Encode(reg)
			if err != nil {
				t.Fatal(err)
			}
			if tt.leaving {
				d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_LEAVING})
			}
			d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: final})
			c.Close(tt.closeErr)
			if got := gathers(t, d, "executor_work_total"); got != tt.kept {
				t.Fatalf("the executor's final metrics served once it has gone: %v, want %v", got, tt.kept)
			}
			if !tt.kept {
				return
			}
			d.mu.Lock()
			timer := d.departed["1"]
			d.mu.Unlock()
			if timer == nil {
				t.Fatal("no timer to drop the final metrics of an executor that left")
			}
			timer.Reset(0) // departedSeriesKept has passed
			deadline := time.Now().Add(10 * time.Second)
			for gathers(t, d, "executor_work_total") {
				if time.Now().After(deadline) {
					t.Fatal("the final metrics of an executor that left are still served once its timer has fired")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// A driver keeps the latest maxFailuresKept executor failures, not all of
// them: a standalone driver with an executor failing its Init in a restart
// loop kept one more for every restart, for its life. WaitStart still says
// how many it no longer holds; WaitExecutors reports those after its call.
func TestFailuresKeptAreBounded(t *testing.T) {
	d, _, _ := readyDriver(t)
	for i := range maxFailuresKept + 36 {
		d.fail(fmt.Errorf("failure %d", i))
	}
	if n := len(d.failures); n != maxFailuresKept {
		t.Errorf("after %d failures the driver keeps %d, want %d", maxFailuresKept+36, n, maxFailuresKept)
	}
	err := d.WaitStart(context.Background(), 1)
	if err == nil || !strings.Contains(err.Error(), "36 more executors failed before these") ||
		!strings.Contains(err.Error(), fmt.Sprintf("failure %d", maxFailuresKept+35)) || strings.Contains(err.Error(), "failure 35\n") {
		t.Errorf("WaitStart: got %v, want the %d kept and a count of the 36 others", err, maxFailuresKept)
	}
	d.mu.Lock()
	since := d.failuresSeen // as WaitExecutors starts
	d.mu.Unlock()
	d.fail(errors.New("the new one"))
	d.mu.Lock()
	err = d.failuresSinceLocked(since)
	d.mu.Unlock()
	if err == nil || err.Error() != "the new one" {
		t.Errorf("WaitExecutors: got %v, want only the failure after its call", err)
	}
}

// STOPPED answers the driver's STOP. One sent before (a buggy or hostile
// executor) is dropped: taken, it made the executor's later loss a
// release, with a nil reason and its attempts not counted.
func TestStoppedBeforeStopIsDropped(t *testing.T) {
	d, m, es, c := memberDriver(t, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
	d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_STOPPED})
	select {
	case <-es.stopped:
		t.Error("a STOPPED before any STOP was taken")
	default:
	}
	lost := errors.New("connection reset")
	c.Close(lost)
	flushLanes(t, d)
	if got := m.reason("1"); !errors.Is(got, lost) {
		t.Errorf("OnExecutorRemoved reason after an early STOPPED and a broken stream: got %v, want %v", got, lost)
	}
}

// Close wakes a WaitExecutors in progress, which then fails with
// ErrClosed, also when no executor is connected: no executor's leaving
// then wakes it (TestWaitExecutorsEndsAtShutdown has one, whose release
// did, so it passes without Close's own notify).
func TestCloseEndsWaitWithoutExecutors(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- d.WaitExecutors(ctx, 1) }()
	// Either order must end the wait; the one that needs Close's notify
	// (the wait already blocked) is the likely one after a yield.
	runtime.Gosched()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if !errors.Is(err, plugin.ErrClosed) || plugin.CodeOf(err) != plugin.CodeUnavailable {
			t.Errorf("WaitExecutors at Close: got %v, want Unavailable wrapping ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WaitExecutors still waiting 30s after Close")
	}
}

// An executor whose plugins failed to initialise is logged with its host
// and PID, as a lost one is: the Error line a crash-looping replacement
// leaves named its ID alone, which the executor's own log does not know
// until it has been welcomed, and a standalone fleet's hosts share.
func TestInitFailureNamesHostAndPID(t *testing.T) {
	var logs logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	es := testExecState(d, plugin.ExecutorInfo{ID: "1", Host: "h", PID: 42})
	c := rpc.New(nil, nil, d, rpc.Options{})
	c.Peer, es.conn = es, c
	d.mu.Lock()
	d.execs["1"] = es
	d.mu.Unlock()
	d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_READY, Code: uint32(plugin.CodeInternal), Error: "broken"})
	const want = `level=ERROR msg="executor failed to initialise" executor=1 host=h pid=42 err=`
	if s := logs.String(); !strings.Contains(s, want) {
		t.Errorf("logs: got %q, want %q", s, want)
	}
}

// A local master's driver keeps what it learns of each executor process
// (ready, failed to initialise, leaving) and says it once, when the
// launcher reports the process's end, then forgets the PID: a replacement
// may get it, and a local-cluster replacing executors for days must not
// keep an entry for each. A standalone driver keeps nothing.
func TestEndedSaysWhatTheDriverLearntOnce(t *testing.T) {
	initFailed := &wire.Frame{Kind: wire.Kind_KIND_READY, Code: uint32(plugin.CodeInternal), Error: "broken"}
	ready := &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}}
	leaving := &wire.Frame{Kind: wire.Kind_KIND_LEAVING}
	tests := []struct {
		name   string
		local  bool
		frames []*wire.Frame
		want   Process
	}{
		{"nothing yet", true, nil, Process{ID: "1"}},
		{"ready", true, []*wire.Frame{ready}, Process{ID: "1", ReadyAt: time.Unix(1, 0)}},
		{"ready, then leaving", true, []*wire.Frame{ready, leaving}, Process{ID: "1", ReadyAt: time.Unix(1, 0), Leaving: true}},
		{"failed to initialise", true, []*wire.Frame{initFailed}, Process{ID: "1", InitFailure: errors.New("executor 1 (host h, pid 42): internal: broken")}},
		{"standalone: not kept", false, []*wire.Frame{ready, leaving}, Process{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Local: tt.local})
			if err != nil {
				t.Fatal(err)
			}
			es := listedExecutor(d)
			c := es.conn
			for _, f := range tt.frames {
				d.HandleFrame(c, f)
			}
			got := d.Ended(42, nil)
			if got.ID != tt.want.ID || got.Ready() != tt.want.Ready() || got.Leaving != tt.want.Leaving || fmt.Sprint(got.InitFailure) != fmt.Sprint(tt.want.InitFailure) || got.Refused != nil {
				t.Errorf("Ended(42): got %+v, want %+v", got, tt.want)
			}
			if again := d.Ended(42, nil); again != (Process{}) {
				t.Errorf("Ended(42) asked again: got %+v, want nothing (forgotten)", again)
			}
			d.mu.Lock()
			n := len(d.procs)
			d.mu.Unlock()
			if n != 0 {
				t.Errorf("processes kept once asked: got %d, want 0", n)
			}
		})
	}
}

// Executors whose plugins failed to initialise are logged within a
// budget: a standalone fleet with a broken deployment, its supervisor
// restarting each executor as it exits, logged an Error per attempt.
func TestInitFailuresAreBounded(t *testing.T) {
	var logs logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	const n = rpc.LogBurst + 3
	for i := range n {
		es := testExecState(d, plugin.ExecutorInfo{ID: fmt.Sprint(i + 1), Host: "h", PID: 42})
		c := rpc.New(nil, nil, d, rpc.Options{})
		c.Peer, es.conn = es, c
		d.mu.Lock()
		d.execs[es.info.ID] = es
		d.mu.Unlock()
		d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_READY, Code: uint32(plugin.CodeInternal), Error: "broken"})
	}
	s := logs.String()
	if got := strings.Count(s, `msg="executor failed to initialise"`); got != rpc.LogBurst {
		t.Errorf("lines of executors that failed to initialise: got %d, want %d (the budget); the log:\n%s", got, rpc.LogBurst, s)
	}
	if !strings.Contains(s, `msg="more errors of executors whose plugins failed to initialise are held back`) {
		t.Errorf("the log does not say that more are held back:\n%s", s)
	}
}
