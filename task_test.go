package ember_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/fxamacker/cbor/v2"
	"google.golang.org/grpc"
)

// Tasks are package-level so every process registers the same ones.
var (
	double = ember.NewTask("test.double", func(_ context.Context, _ ember.TaskContext, n int) (int, error) {
		return 2 * n, nil
	})
	flaky = ember.NewTask("test.flaky", func(_ context.Context, tc ember.TaskContext, n int) (string, error) {
		if tc.Attempt < n { // input n fails its first n attempts
			return "", fmt.Errorf("attempt %d of input %d fails", tc.Attempt, n)
		}
		return fmt.Sprintf("%d@%d", n, tc.Attempt), nil
	})
	broken = ember.NewTask("test.broken", func(_ context.Context, tc ember.TaskContext, n int) (int, error) {
		if n == 1 {
			panic("task bug")
		}
		return 0, plugin.NewError(plugin.CodeNotFound, "no input "+fmt.Sprint(n))
	})
	waitCancel = ember.NewTask("test.wait", func(ctx context.Context, tc ember.TaskContext, _ int) (int, error) {
		waitStarted <- tc.ExecutorID
		<-ctx.Done()
		waitCanceled <- tc.ExecutorID
		return 0, ctx.Err()
	})
	waitStarted, waitCanceled = make(chan string, 100), make(chan string, 100)
	logs                      = ember.NewTask("test.logs", func(_ context.Context, tc ember.TaskContext, _ int) (int, error) {
		tc.Logger.Info("task says hello")
		return 0, nil
	})
)

// TaskContext.Logger names the attempt, executor included: with local[N]
// the executors share the application's logger, and task lines could not
// be told apart.
func TestTaskLoggerNamesTheAttempt(t *testing.T) {
	var buf logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if _, err := ember.Map(testCtx(t), c.Driver, logs, []int{0}); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(line, "task says hello") {
			continue
		}
		for _, want := range []string{"executor=1", "task=test.logs", "job=", "index=0", "attempt=0"} {
			if !strings.Contains(line, want) {
				t.Errorf("task's log line %q: want %s", line, want)
			}
		}
		return
	}
	t.Errorf("no line of the task's in the log:\n%s", buf.String())
}

// NewTask refuses an input or output type that would travel as its zero
// value: a struct whose fields are all unexported. Its tasks used to
// return zero values with no error anywhere.
func TestNewTaskRefusesUnexportedFields(t *testing.T) {
	type point struct{ x, y int }
	for _, tt := range []struct {
		name string
		new  func()
	}{
		{"input", func() {
			ember.NewTask("test.hidden-in", func(context.Context, ember.TaskContext, point) (int, error) { return 0, nil })
		}},
		{"output", func() {
			ember.NewTask("test.hidden-out", func(context.Context, ember.TaskContext, int) (*point, error) { return nil, nil })
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := fmt.Sprint(recover()); !strings.Contains(r, "point has no exported fields") {
					t.Errorf("NewTask panicked with %q, want it to say point has no exported fields", r)
				}
			}()
			tt.new()
		})
	}
}

// NewTask in a test function panics there (TestMain is embertest.Main),
// saying to register at package level. It used to register the task in
// this process only: a later test's local-cluster executors, which run
// only their own test, lacked it, and that test's start-up failed with a
// handshake mismatch naming a task it had never heard of.
func TestNewTaskInATestPanics(t *testing.T) {
	before := ember.Tasks()
	defer func() {
		r := fmt.Sprint(recover())
		for _, want := range []string{
			`ember.NewTask "test.made-in-a-test": called from a test, after embertest.Main started the tests`,
			`at package level instead, var t = ember.NewTask("test.made-in-a-test", ...),`,
		} {
			if !strings.Contains(r, want) {
				t.Errorf("NewTask in a test: got panic %q, want it to contain %q", r, want)
			}
		}
		if got := ember.Tasks(); !slices.Equal(got, before) {
			t.Errorf("Tasks() after the panic = %q, want it unchanged, %q", got, before)
		}
	}()
	ember.NewTask("test.made-in-a-test", func(_ context.Context, _ ember.TaskContext, n int) (int, error) { return n, nil })
}

// plugin.RegisterMessage of a new type in a test function panics there
// (TestMain is embertest.Main), as NewTask does: the type would be missing
// from every later local-cluster test's executors, whose handshake would
// fail in a test that had done nothing wrong. A type registered in an
// init function may be registered again.
func TestRegisterMessageInATestPanics(t *testing.T) {
	type madeInATest struct{ N int }
	plugin.RegisterMessage[hookEvent]() // registered in init: a no-op
	defer func() {
		r := fmt.Sprint(recover())
		for _, want := range []string{
			"plugin.RegisterMessage: ember_test.madeInATest: registered from a test, after embertest.Main started the tests",
			"register message types in an init function",
		} {
			if !strings.Contains(r, want) {
				t.Errorf("RegisterMessage in a test: got panic %q, want it to contain %q", r, want)
			}
		}
	}()
	plugin.RegisterMessage[madeInATest]()
}

func TestMapResultsInOrder(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet})
	inputs := make([]int, 1000)
	for i := range inputs {
		inputs[i] = i
	}
	got, err := ember.Map(testCtx(t), c.Driver, double, inputs)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != 2*i {
			t.Fatalf("output %d: got %d, want %d", i, v, 2*i)
		}
	}
	if got, err := ember.Map(testCtx(t), c.Driver, double, nil); err != nil || len(got) != 0 {
		t.Errorf("Map of no inputs: got %v, %v; want empty, nil", got, err)
	}
}

func TestMapRetriesThenFails(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet})
	ctx := testCtx(t)
	got, err := ember.Map(ctx, c.Driver, flaky, []int{0, 1, 3})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0@0", "1@1", "3@3"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %v, want %v", got, want)
	}

	_, err = ember.Map(ctx, c.Driver, flaky, []int{0, 4})
	var te *ember.TaskError
	if !errors.As(err, &te) {
		t.Fatalf("got %v, want a *ember.TaskError", err)
	}
	if te.Task != "test.flaky" || te.Index != 1 || te.Attempts != 4 || te.ExecutorID == "" {
		t.Errorf("got %+v, want task test.flaky, index 1, 4 attempts, an executor", te)
	}
	if !strings.Contains(err.Error(), "attempt 3 of input 4 fails") {
		t.Errorf("error %q does not carry the last cause", err)
	}

	for _, tt := range []struct {
		in   int
		code plugin.Code
		text string
	}{
		{0, plugin.CodeNotFound, "no input 0"},
		{1, plugin.CodeInternal, "task bug"},
	} {
		_, err := ember.Map(ctx, c.Driver, broken, []int{tt.in})
		if plugin.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("input %d: got %v, want code %v and %q", tt.in, err, tt.code, tt.text)
		}
	}
}

// The driver logs a job's failed attempts, up to ten of them, and then
// says the rest are only counted: they used to be counted alone, in
// ember_tasks_total, where a user following the log saw nothing.
func TestFailedAttemptsAreLogged(t *testing.T) {
	var buf logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	ctx := testCtx(t)
	if _, err := ember.Map(ctx, c.Driver, flaky, []int{0, 2}); err != nil { // job 1: two failures
		t.Fatal(err)
	}
	many := make([]int, 15) // job 2: fifteen failures, one per input
	for i := range many {
		many[i] = 1
	}
	if _, err := ember.Map(ctx, c.Driver, flaky, many); err != nil {
		t.Fatal(err)
	}
	var job1, job2, further []string
	for _, line := range strings.Split(buf.String(), "\n") {
		switch {
		case strings.Contains(line, "further failed attempts"):
			further = append(further, line)
		case !strings.Contains(line, "task attempt failed"):
		case strings.Contains(line, "job=1 "):
			job1 = append(job1, line)
		case strings.Contains(line, "job=2 "):
			job2 = append(job2, line)
		}
	}
	if len(job1) != 2 {
		t.Fatalf("job 1: %d lines of failed attempts, want 2:\n%s", len(job1), strings.Join(job1, "\n"))
	}
	for i, line := range job1 {
		for _, want := range []string{"level=WARN", "task=test.flaky", "index=1", fmt.Sprintf("failures=%d", i+1), "max_failures=4", "retry=true", "executor=", "attempt " + fmt.Sprint(i) + " of input 2 fails"} {
			if !strings.Contains(line, want) {
				t.Errorf("job 1, line %d %q: want %s", i, line, want)
			}
		}
	}
	if len(job2) != 10 || len(further) != 1 || !strings.Contains(further[0], "job=2") {
		t.Errorf("job 2: %d lines of failed attempts and %d saying the rest are not logged, want 10 and 1 (for job 2):\n%s", len(job2), len(further), strings.Join(further, "\n"))
	}
}

func TestMapCancel(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, Conf: map[string]string{ember.ConfExecutorSlots: "2"}})
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := ember.Map(ctx, c.Driver, waitCancel, make([]int, 10))
		errc <- err
	}()
	for range 4 { // 2 executors x 2 slots
		select {
		case <-waitStarted:
		case err := <-errc: // not a hang until the test's deadline
			t.Fatalf("Map ended before its tasks started: %v", err)
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Map: got %v, want context.Canceled", err)
	}
	for range 4 {
		<-waitCanceled
	}
	if len(waitStarted) != 0 {
		t.Errorf("%d more tasks started after the cancel", len(waitStarted))
	}
}

var (
	ranAfterCancel   atomic.Int64
	countsItsAttempt = ember.NewTask("test.counts-its-attempt", func(_ context.Context, _ ember.TaskContext, n int) (int, error) {
		ranAfterCancel.Add(1) // a side effect before the task looks at its ctx
		return n, nil
	})
)

// A Map whose ctx has already ended runs nothing: it used to queue its
// attempts and send a TASK to every free slot before it noticed, so that a
// canceled load run still fired a wave of requests.
func TestMapWithEndedCtxRunsNothing(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, Conf: map[string]string{ember.ConfExecutorSlots: "4"}})
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	_, err := ember.Map(ctx, c.Driver, countsItsAttempt, make([]int, 100))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Map: got %v, want context.Canceled", err)
	}
	// The attempts it would have started are one TASK frame away.
	if _, err := ember.Map(testCtx(t), c.Driver, double, []int{1}); err != nil {
		t.Fatal(err)
	}
	if n := ranAfterCancel.Load(); n != 0 {
		t.Errorf("%d attempts ran for a Map whose ctx had ended before it was called", n)
	}
}

var (
	failAttempts atomic.Int64
	targetDown   = ember.NewTask("test.target-down", func(context.Context, ember.TaskContext, int) (int, error) {
		failAttempts.Add(1)
		return 0, errors.New("target down")
	})
)

// A failed attempt runs again ahead of the inputs not yet started, as in
// Spark: a job whose every task fails ends after maxFailures attempts on
// one slot. It used to run every input once, then again, and fail only on
// the last round (a 2,000-input job ran 6,006 attempts).
func TestRetriesGoFirst(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet,
		Conf: map[string]string{ember.ConfExecutorSlots: "1", ember.ConfMaxTaskFailures: "3"}})
	failAttempts.Store(0)
	_, err := ember.Map(testCtx(t), c.Driver, targetDown, make([]int, 50))
	var te *ember.TaskError
	if !errors.As(err, &te) || te.Index != 0 || te.Attempts != 3 {
		t.Fatalf("Map: got %v, want a TaskError for inputs[0] after 3 attempts", err)
	}
	if got := failAttempts.Load(); got != 3 {
		t.Errorf("attempts run: got %d, want 3 (inputs[0]'s, retried before the others start)", got)
	}
}

// Map's error keeps the cause its ctx was cancelled with.
func TestMapKeepsTheCancelCause(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet})
	stop := errors.New("load test over")
	tests := []struct {
		name   string
		before bool // cancelled before Map is called
	}{{"cancelled during Map", false}, {"cancelled before", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(testCtx(t))
			defer cancel(nil)
			if tt.before {
				cancel(stop)
			}
			hung.Store(0)
			mapped := make(chan error, 1)
			go func() {
				_, err := ember.Map(ctx, c.Driver, hangUntilCanceled, []int{1})
				mapped <- err
			}()
			if !tt.before {
				embertest.WaitFor(t, "the task running", func() bool { return hung.Load() > 0 })
				cancel(stop)
			}
			err := <-mapped
			if !errors.Is(err, context.Canceled) || !errors.Is(err, stop) || !strings.Contains(err.Error(), "load test over") {
				t.Errorf("Map: got %v, want it to match context.Canceled and the cause", err)
			}
		})
	}
}

var (
	hung              atomic.Int64
	hangUntilCanceled = ember.NewTask("test.hang-until-canceled", func(ctx context.Context, _ ember.TaskContext, n int) (int, error) {
		hung.Add(1)
		<-ctx.Done()
		return n, ctx.Err()
	})
)

var (
	ignoring   atomic.Int64
	released   atomic.Pointer[chan struct{}] // closed: ignoresCtx returns
	ignoresCtx = ember.NewTask("test.ignores-its-ctx", func(_ context.Context, _ ember.TaskContext, n int) (int, error) {
		ignoring.Add(1)
		<-*released.Load()
		return n, nil
	})
)

// A job that waited in vain for a slot held by a task of an ended job
// (told to stop, and not returning) says so when its ctx ends: it used to
// end with a plain deadline_exceeded.
func TestMapSaysWhenSlotsWereHeld(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Conf: map[string]string{ember.ConfExecutorSlots: "1"}})
	release := make(chan struct{})
	released.Store(&release)
	ignoring.Store(0)
	defer close(release) // before the cluster stops: the task returns
	ctx, cancel := context.WithCancel(testCtx(t))
	mapped := make(chan error, 1)
	go func() {
		_, err := ember.Map(ctx, c.Driver, ignoresCtx, []int{1})
		mapped <- err
	}()
	embertest.WaitFor(t, "the task running", func() bool { return ignoring.Load() == 1 })
	cancel()
	if err := <-mapped; !errors.Is(err, context.Canceled) {
		t.Fatalf("first Map: got %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer cancel()
	_, err := ember.Map(ctx, c.Driver, double, []int{1, 2})
	if want := "2 of its tasks were waiting for a slot; tasks of ended jobs, told to stop, had not returned, holding 1 of the executors' slots (1 in all"; !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), want) {
		t.Errorf("second Map: got %v, want DeadlineExceeded saying %q", err, want)
	}
}

var panicsFirstTime = ember.NewTask("test.panics-first-time", func(_ context.Context, tc ember.TaskContext, n int) (int, error) {
	if tc.Attempt == 0 {
		panic("first time")
	}
	return n, nil
})

// An executor logs the stacks of a job's first ten task panics, then says
// it logs no more: a job whose every task panicked wrote a stack per
// attempt (2,994 of them, 5.4 MB, for 1,000 inputs).
func TestTaskPanicsLoggedTenPerJob(t *testing.T) {
	var logs logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Conf: map[string]string{ember.ConfExecutorSlots: "2"}})
	for range 2 { // each job has ten of its own
		if _, err := ember.Map(testCtx(t), c.Driver, panicsFirstTime, make([]int, 30)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Count(logs.String(), `msg="task panicked"`); got != 20 {
		t.Errorf("task panics logged: got %d, want 20 (ten per job)", got)
	}
	if got := strings.Count(logs.String(), "further panics of this job's tasks are not logged"); got != 2 {
		t.Errorf("notes that no more are logged: got %d, want 2 (one per job)", got)
	}
}

var (
	hang = ember.NewTask("test.hang-on-1", func(ctx context.Context, tc ember.TaskContext, n int) (int, error) {
		if tc.ExecutorID == "1" {
			hangStarted <- n
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return n * n, nil
	})
	hangStarted = make(chan int, 100)
)

// An executor that dies mid-job has its tasks rescheduled on the others,
// and the job still returns the right answer.
func TestExecutorDiesMidJob(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[3]", Logger: quiet, Conf: map[string]string{ember.ConfExecutorSlots: "1"}})
	done := make(chan struct{})
	var got []int
	var err error
	go func() {
		defer close(done)
		got, err = ember.Map(testCtx(t), c.Driver, hang, []int{1, 2, 3, 4, 5, 6})
	}()
	<-hangStarted
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	<-done
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if want := (i + 1) * (i + 1); v != want {
			t.Errorf("output %d: got %d, want %d", i, v, want)
		}
	}
}

type (
	hookEvent struct{ Kind, Executor string }
	// hookCounter counts task hooks seen on executors, by kind, at the
	// driver (so it works across processes).
	hookCounter struct {
		start, ok, failed atomic.Int32
		noStartTime       atomic.Int32 // closing hooks whose TaskInfo.Started was zero or ahead
	}
)

func init() { plugin.RegisterMessage[hookEvent]() }

func hookPlugin(hc *hookCounter, panicky bool) plugin.Plugin {
	return fakePlugin{
		name: "hooks",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(_ context.Context, msg any) (any, error) {
				switch msg.(hookEvent).Kind {
				case "start":
					hc.start.Add(1)
				case "ok":
					hc.ok.Add(1)
				case "failed":
					hc.failed.Add(1)
				case "no start time":
					hc.noStartTime.Add(1)
				}
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin { return &hookListener{panicky: panicky} },
	}
}

type hookListener struct {
	fakeExecutor
	pc      plugin.ExecutorContext
	panicky bool
}

func (h *hookListener) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	h.pc = pc
	return nil
}

func (h *hookListener) send(ctx context.Context, kind string) {
	_ = h.pc.Send(ctx, hookEvent{Kind: kind, Executor: h.pc.ExecutorID()})
}

func (h *hookListener) OnTaskStart(ctx context.Context, _ plugin.TaskInfo) {
	h.send(ctx, "start")
	if h.panicky {
		panic("hook bug")
	}
}
func (h *hookListener) OnTaskSucceeded(ctx context.Context, t plugin.TaskInfo) {
	h.checkStarted(ctx, t)
	h.send(ctx, "ok")
}
func (h *hookListener) OnTaskFailed(ctx context.Context, t plugin.TaskInfo, _ error) {
	h.checkStarted(ctx, t)
	h.send(ctx, "failed")
}

// checkStarted tells the driver when t has no start time, or one ahead.
func (h *hookListener) checkStarted(ctx context.Context, t plugin.TaskInfo) {
	if t.Started.IsZero() || time.Since(t.Started) < 0 {
		h.send(ctx, "no start time")
	}
}

var _ plugin.TaskListener = (*hookListener)(nil)

var alwaysFails = ember.NewTask("test.always-fails", func(context.Context, ember.TaskContext, int) (int, error) {
	return 0, errors.New("nope")
})

// Spark's SPARK-33088 tests across processes: 2 tasks give 2 starts and
// 2 successes; 2 failing tasks give 2 starts and 2 failures. A panicking
// OnTaskStart neither fails the task nor stops the other hooks.
func TestTaskHooks(t *testing.T) {
	tests := []struct {
		name                string
		fail, panicky       bool
		start, ok, failures int32
	}{
		{name: "succeed", start: 2, ok: 2},
		{name: "fail", fail: true, start: 2, failures: 2},
		{name: "panicking start hook", panicky: true, start: 2, ok: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hc hookCounter
			cfg := ember.Config{
				Master:       "local-cluster[2]",
				Plugins:      []plugin.Plugin{hookPlugin(&hc, tt.panicky)},
				ExecutorArgs: embertest.ExecutorArgs(t),
				Conf:         map[string]string{ember.ConfMaxTaskFailures: "1"},
			}
			if isChild() {
				runChild(cfg, nil)
			}
			c := embertest.Start(t, cfg)
			var err error
			if tt.fail {
				_, err = ember.Map(testCtx(t), c.Driver, alwaysFails, []int{1, 2})
				if err == nil {
					t.Fatal("Map of failing tasks succeeded")
				}
				// The job fails at the first failure; wait for the other.
				embertest.WaitFor(t, "both failures", func() bool { return hc.failed.Load() == 2 })
			} else if _, err = ember.Map(testCtx(t), c.Driver, double, []int{1, 2}); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil { // delivers every hook event
				t.Fatal(err)
			}
			if s, o, f := hc.start.Load(), hc.ok.Load(), hc.failed.Load(); s != tt.start || o != tt.ok || f != tt.failures {
				t.Errorf("hooks: got start=%d succeeded=%d failed=%d, want %d, %d, %d", s, o, f, tt.start, tt.ok, tt.failures)
			}
			if n := hc.noStartTime.Load(); n != 0 {
				t.Errorf("%d closing hooks got a TaskInfo whose Started was zero or ahead of the clock, want none", n)
			}
		})
	}
}

var bigOutput = ember.NewTask("test.big-output", func(_ context.Context, _ ember.TaskContext, n int) ([]byte, error) {
	return make([]byte, n), nil
})

var bigInput = ember.NewTask("test.big-input", func(_ context.Context, _ ember.TaskContext, s string) (int, error) {
	return len(s), nil
})

var longError = ember.NewTask("test.long-error", func(_ context.Context, _ ember.TaskContext, n int) (int, error) {
	return 0, errors.New("bad input: " + strings.Repeat("x", n))
})

// Task inputs and outputs obey the message size limit with a clear error,
// and the executors survive. An output too large fails its task at the
// first attempt: another would make the same output (it was made
// maxFailures times over).
func TestTaskSizeLimit(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, MaxMessageBytes: 64 << 10})
	ctx := testCtx(t)
	_, err := ember.Map(ctx, c.Driver, bigOutput, []int{1 << 20})
	if plugin.CodeOf(err) != plugin.CodeResourceExhausted || !strings.Contains(err.Error(), "over the 65536-byte limit") {
		t.Errorf("oversized output: got %v, want ResourceExhausted naming the limit", err)
	}
	if te := (*ember.TaskError)(nil); !errors.As(err, &te) || !te.Permanent || te.Attempts != 1 {
		t.Errorf("oversized output: got %v, want a permanent TaskError after 1 attempt", err)
	}
	_, err = ember.Map(ctx, c.Driver, double, make([]int, 1))
	if err != nil {
		t.Errorf("a small job after the oversized one: %v", err)
	}
	_, err = ember.Map(ctx, c.Driver, bigInput, []string{strings.Repeat("x", 100<<10)})
	if plugin.CodeOf(err) != plugin.CodeResourceExhausted || !strings.Contains(err.Error(), "inputs[0]") {
		t.Errorf("oversized input: got %v, want ResourceExhausted naming inputs[0]", err)
	}
	// An error's text is cut to fit on the wire: a task failing with a
	// long one is a failed task, not a lost executor.
	_, err = ember.Map(ctx, c.Driver, longError, []int{200 << 10})
	if te := (*ember.TaskError)(nil); !errors.As(err, &te) || !strings.Contains(err.Error(), "more bytes)") {
		t.Errorf("a task failing with a 200 KiB error: got %.200v, want a TaskError with the text cut", err)
	}
	if got := len(c.Driver.Executors()); got != 2 {
		t.Errorf("executors after oversized outputs and errors: got %d, want 2", got)
	}
}

// An attempt whose output is over MaxMessageBytes fails (ResourceExhausted,
// for good: it is not retried), so its executor's task hooks must say it
// failed: a plugin counting builds by outcome otherwise counts an attempt
// of a job that failed as a success.
func TestOversizedOutputRunsOnTaskFailed(t *testing.T) {
	var hc hookCounter
	c := embertest.Start(t, ember.Config{
		Master:          "local[1]",
		Logger:          quiet,
		MaxMessageBytes: 64 << 10,
		Plugins:         []plugin.Plugin{hookPlugin(&hc, false)},
		Conf:            map[string]string{ember.ConfMaxTaskFailures: "2"},
	})
	_, err := ember.Map(testCtx(t), c.Driver, bigOutput, []int{1 << 20})
	if plugin.CodeOf(err) != plugin.CodeResourceExhausted {
		t.Fatalf("oversized output: got %v, want ResourceExhausted", err)
	}
	if err := c.Close(); err != nil { // delivers every hook event
		t.Fatal(err)
	}
	if s, o, f := hc.start.Load(), hc.ok.Load(), hc.failed.Load(); s != 1 || o != 0 || f != 1 {
		t.Errorf("hooks of 1 failed attempt: got start=%d succeeded=%d failed=%d, want 1, 0, 1", s, o, f)
	}
}

// On a local master, whose executors are never replaced, a job fails when
// the last executor is lost instead of waiting for ever.
func TestMapFailsWhenNoExecutorIsLeft(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Conf: map[string]string{ember.ConfExecutorSlots: "1"}})
	errc := make(chan error, 1)
	go func() {
		_, err := ember.Map(testCtx(t), c.Driver, waitCancel, []int{1, 2})
		errc <- err
	}()
	select {
	case <-waitStarted:
	case err := <-errc: // not a hang until the test's deadline
		t.Fatalf("Map ended before its task started: %v", err)
	}
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	// The error names what the executor was running: the task may be
	// what killed it.
	if err := <-errc; plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), "no executors left") ||
		!strings.Contains(err.Error(), `while running task "test.wait" on inputs[0]`) {
		t.Errorf("Map after the last executor died: got %v, want CodeUnavailable naming the task it ran", err)
	}
	<-waitCanceled // the dead executor's task saw its ctx end
	_, err := ember.Map(testCtx(t), c.Driver, double, []int{1})
	if plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("Map with no executors: got %v, want CodeUnavailable", err)
	}
}

var (
	windDown = ember.NewTask("test.wind-down", func(ctx context.Context, _ ember.TaskContext, _ int) (int, error) {
		windDownStarted <- struct{}{}
		<-ctx.Done()
		time.Sleep(100 * time.Millisecond) // cleaning up takes a moment
		return 0, ctx.Err()
	})
	windDownStarted = make(chan struct{}, 10)
)

// orderListener records an executor plugin's task hooks and its Shutdown.
type orderListener struct {
	fakeExecutor
	rec *recorder
}

func (o *orderListener) OnTaskStart(context.Context, plugin.TaskInfo)     { o.rec.add("start") }
func (o *orderListener) OnTaskSucceeded(context.Context, plugin.TaskInfo) { o.rec.add("succeeded") }
func (o *orderListener) OnTaskFailed(context.Context, plugin.TaskInfo, error) {
	o.rec.add("failed")
}

// A Map still running when the application shuts down fails with
// CodeUnavailable: its attempts are cancelled, not retried, and each ends
// (its hooks run) before the plugins shut down. A Map after Close fails at
// once. Before, the executor's shutdown cancelled the attempt as a
// failure, the driver retried it on the stopping executor, hooks ran after
// Shutdown, and a standalone driver's Map waited for ever for executors
// that could no longer join.
func TestCloseWhileMapRuns(t *testing.T) {
	var rec recorder
	p := fakePlugin{name: "order", newExecutor: func() plugin.ExecutorPlugin {
		return &orderListener{rec: &rec, fakeExecutor: fakeExecutor{ShutdownF: func(context.Context) error {
			rec.add("shutdown")
			return nil
		}}}
	}}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Plugins: []plugin.Plugin{p},
		Conf: map[string]string{ember.ConfExecutorSlots: "1"}})
	errc := make(chan error, 1)
	go func() {
		_, err := ember.Map(testCtx(t), c.Driver, windDown, []int{1})
		errc <- err
	}()
	<-windDownStarted
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	err := <-errc
	if plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) || !strings.Contains(err.Error(), "the driver is shutting down") {
		t.Errorf("Map running at Close: got %v, want Unavailable: the driver is shutting down", err)
	}
	if got, want := rec.get(), []string{"start", "failed", "shutdown"}; !slices.Equal(got, want) {
		t.Errorf("executor plugin events: got %v, want %v", got, want)
	}
	start := time.Now()
	_, err = ember.Map(testCtx(t), c.Driver, double, []int{1})
	if plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("Map after Close: got %v after %v, want Unavailable at once", err, time.Since(start))
	}
}

var (
	// firstAttemptWaits: the first attempt waits for its ctx to end; the
	// next ones double their input.
	firstAttemptWaits = ember.NewTask("test.first-attempt-waits", func(ctx context.Context, tc ember.TaskContext, n int) (int, error) {
		if tc.Attempt == 0 {
			firstAttemptStarted <- tc.ExecutorID
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return 2 * n, nil
	})
	firstAttemptStarted = make(chan string, 10)
	// killsItsExecutor crashes the in-process executor it runs on, as a
	// fatal error or os.Exit in a task would kill its process.
	killsItsExecutor = ember.NewTask("test.kills-its-executor", func(ctx context.Context, tc ember.TaskContext, _ int) (int, error) {
		if crash, ok := crashes.Load(tc.ExecutorID); ok {
			crash.(func())()
		}
		<-ctx.Done()
		return 0, ctx.Err()
	})
	crashes sync.Map // executor ID → func that crashes it (joinExecutor)
)

// joinExecutor runs an in-process executor of the tests' tasks against a
// standalone driver at addr until the test ends, and returns its ID once it
// has joined ("" if it could not: the test has failed), a func that stops
// it as a SIGTERM would, and its Run's error. The task killsItsExecutor
// crashes it. Safe to call from any of the test's goroutines.
func joinExecutor(t *testing.T, addr string) (id string, stop func(), errc <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	crash := make(chan struct{})
	var once sync.Once
	joined := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- executor.Run(ctx, executor.Config{
			DriverAddr: addr,
			Logger:     quiet,
			BuildID:    "test",
			Tasks:      ember.Tasks(),
			RunTask:    ember.RunTask(quiet),
			Crash:      crash,
			OnWelcome: func(id string) {
				crashes.Store(id, func() { once.Do(func() { close(crash) }) })
				joined <- id
			},
		})
	}()
	errs := make(chan error, 1)
	finished := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	select {
	case id = <-joined:
	case err := <-done:
		select {
		case id = <-joined: // it joined, then ended: reported below
			done <- err
		default:
			// t.Errorf, not Fatalf: a test's goroutine may be calling.
			t.Errorf("executor did not join: %v", err)
			errs <- err
			close(finished)
			return "", cancel, errs
		}
	}
	go func() {
		errs <- <-done
		close(finished)
	}()
	return id, cancel, errs
}

// An executor that stops on its own (here its ctx ends, as on SIGTERM)
// while running an attempt cuts it short, and the driver runs it again
// on another executor without counting a failure, though
// ember.task.maxFailures is 1. Before, the cut-short attempt counted, and
// the Map failed.
func TestStoppingExecutorsAttemptRunsElsewhere(t *testing.T) {
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test",
		Conf: map[string]string{ember.ConfMaxTaskFailures: "1", ember.ConfExecutorSlots: "1"}})
	first, stopFirst, firstErr := joinExecutor(t, d.Addr())
	if first == "" {
		return
	}
	result := make(chan []int, 1)
	errc := make(chan error, 1)
	go func() {
		out, err := ember.Map(testCtx(t), d, firstAttemptWaits, []int{21})
		result <- out
		errc <- err
	}()
	select {
	case got := <-firstAttemptStarted:
		if got != first {
			t.Fatalf("first attempt on executor %s, want %s", got, first)
		}
	case err := <-errc: // not a hang until the test's deadline
		t.Fatalf("Map ended before its task started: %v", err)
	}
	joinExecutor(t, d.Addr())
	stopFirst()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Errorf("stopped executor's Run: got %v, want context.Canceled", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Map: got %v, want the attempt run again on the other executor", err)
	}
	if got := <-result; !slices.Equal(got, []int{42}) {
		t.Errorf("Map: got %v, want [42]", got)
	}
}

// A task that kills its executor fails its job once it has done so
// ember.task.maxFailures times, with an error saying so, instead of
// killing every executor that joins for ever (a standalone driver's
// executors may be restarted by a supervisor, as here). Before, attempts
// lost with their executor never counted.
func TestTaskThatKillsItsExecutorFailsItsJob(t *testing.T) {
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test",
		Conf: map[string]string{ember.ConfMaxTaskFailures: "2"}})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	// The supervisor: an executor always alive, up to five.
	supervised := make(chan struct{})
	go func() {
		defer close(supervised)
		for range 5 {
			_, _, errc := joinExecutor(t, d.Addr())
			select {
			case <-errc:
			case <-ctx.Done():
				return
			}
		}
	}()
	_, err := ember.Map(ctx, d, killsItsExecutor, []int{1})
	cancel()
	<-supervised
	var te *ember.TaskError
	if !errors.As(err, &te) || te.Attempts != 2 || plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), "was lost while running it") {
		t.Errorf("Map of a task that kills its executor: got %v, want a TaskError after 2 attempts saying the executor was lost", err)
	}
}

var doubleOnce = ember.NewTask("test.double-once", func(ctx context.Context, tc ember.TaskContext, n int) (int, error) {
	return 2 * n, nil
})

// holdStream holds, once hold is set, the first received batch that
// carries a TASK until release closes: the TASK is "in flight".
type holdStream struct {
	grpc.ClientStream
	hold    *atomic.Bool
	gotTask chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *holdStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil && s.hold.Load() {
		if b, ok := m.(*wire.Batch); ok {
			for _, f := range b.Frames {
				if f.Kind == wire.Kind_KIND_TASK {
					s.once.Do(func() { close(s.gotTask) })
					<-s.release
					break
				}
			}
		}
	}
	return err
}

// An executor that stops on its own (SIGTERM) while a TASK for it is on
// the wire: the attempt runs elsewhere without counting, though
// ember.task.maxFailures is 1. The executor tells the driver it is
// stopping before anything else (LEAVING), so a TASK it never answers
// does not count when it goes. Before, it counted as lost with its executor, and the Map failed.
func TestTaskOnItsWayToAStoppingExecutorRunsElsewhere(t *testing.T) {
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test", ShutdownTimeout: 2 * time.Second,
		Conf: map[string]string{ember.ConfMaxTaskFailures: "1", ember.ConfExecutorSlots: "1"}})

	var hold atomic.Bool
	gotTask := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	rel := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(rel)

	ctx, cancel := context.WithCancel(context.Background())
	joined := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- executor.Run(ctx, executor.Config{
			DriverAddr: d.Addr(), Logger: quiet, BuildID: "test", ShutdownTimeout: 2 * time.Second,
			Tasks: ember.Tasks(), RunTask: ember.RunTask(quiet),
			OnWelcome: func(id string) { joined <- id },
			DialOptions: []grpc.DialOption{grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				s, err := streamer(ctx, desc, cc, method, opts...)
				if err != nil {
					return nil, err
				}
				return &holdStream{ClientStream: s, hold: &hold, gotTask: gotTask, release: release}, nil
			})},
		})
	}()
	t.Cleanup(func() { cancel(); rel(); <-done })
	<-joined
	if err := d.WaitExecutors(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	hold.Store(true)

	errc := make(chan error, 1)
	out := make(chan []int, 1)
	go func() {
		o, err := ember.Map(testCtx(t), d, doubleOnce, []int{21})
		out <- o
		errc <- err
	}()
	<-gotTask // the TASK is on its way to the executor, not yet read
	// Another executor, to run it again, then the first stops on its own.
	if id, _, _ := joinExecutor(t, d.Addr()); id == "" {
		return
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Map: got %v, want the attempt run again on the other executor without counting", err)
		}
		if o := <-out; len(o) != 1 || o[0] != 42 {
			t.Errorf("Map: got %v", o)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Map hangs")
	}
}

var (
	stuck = ember.NewTask("test.stuck", func(ctx context.Context, tc ember.TaskContext, _ int) (int, error) {
		stuckStarted <- tc.ExecutorID
		<-*stuckRelease.Load() // ignores its ctx
		return 0, nil
	})
	stuckStarted = make(chan string, 10)
	stuckRelease atomic.Pointer[chan struct{}] // one per test run (-count)
)

// An in-process executor killed while its task ignores its ctx does not
// hold Close: a crash would have ended the task, and the killed
// executor's shutdown waited three quarters of ShutdownTimeout for it
// (15s here); it now waits a twentieth (1s) for tasks to return.
func TestKilledExecutorsStuckTaskDoesNotHoldClose(t *testing.T) {
	release := make(chan struct{})
	stuckRelease.Store(&release)
	defer close(release)
	const shutdown = 20 * time.Second
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, ShutdownTimeout: shutdown})
	go func() { _, _ = ember.Map(context.Background(), c.Driver, stuck, []int{1}) }()
	<-stuckStarted
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := c.Close()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	// A bound far from either: 1s now, 15s before.
	if took > shutdown/4 {
		t.Errorf("Close took %v after executor 1 was killed (its task ignores its ctx), want about a twentieth of ShutdownTimeout (%v)", took, shutdown)
	}
}

// An executor waiting at shutdown for a task that ignores its ctx says so
// after a second, with how many tasks and how long until they are
// abandoned: the shutdown used to wait in silence (up to three quarters of
// ShutdownTimeout), looking hung.
func TestShutdownWaitingForATaskSaysSo(t *testing.T) {
	release := make(chan struct{})
	stuckRelease.Store(&release)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	var buf logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: slog.New(slog.NewTextHandler(&buf, nil)), ShutdownTimeout: time.Minute})
	go func() { _, _ = ember.Map(context.Background(), c.Driver, stuck, []int{1}) }()
	<-stuckStarted
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	const notice = "waiting for tasks to return at shutdown"
	embertest.WaitFor(t, "the executor's notice", func() bool { return strings.Contains(buf.String(), notice) })
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, notice) && !(strings.Contains(line, "level=WARN") && strings.Contains(line, "tasks=1") && strings.Contains(line, "deadline=")) {
			t.Errorf("notice %q: want level WARN, tasks=1 and the time to the deadline", line)
		}
	}
	unblock()
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

var goexits = ember.NewTask("test.goexits", func(_ context.Context, tc ember.TaskContext, n int) (int, error) {
	if n == 1 && tc.Attempt == 0 {
		runtime.Goexit() // what t.FailNow, t.Fatal or t.SkipNow call in a task run by local[N]
	}
	return 2 * n, nil
})

// A task that ends its goroutine with runtime.Goexit (t.Fatal in a test's
// task, say) neither returns nor panics: its attempt fails like a panic,
// with CodeInternal and OnTaskFailed, and is retried. Before, no result was
// ever sent: the Map hung until its ctx ended, and the attempt held its
// slot for the driver's life.
func TestTaskCallingGoexitFails(t *testing.T) {
	var hc hookCounter
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet,
		Plugins: []plugin.Plugin{hookPlugin(&hc, false)},
		Conf:    map[string]string{ember.ConfExecutorSlots: "1"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := ember.Map(ctx, c.Driver, goexits, []int{0, 1, 2})
	if err != nil {
		t.Fatalf("Map: got %v, want the attempt that called Goexit retried", err)
	}
	if want := []int{0, 2, 4}; !slices.Equal(got, want) {
		t.Errorf("Map: got %v, want %v", got, want)
	}
	// The executor's one slot is free again: a second Map runs.
	if _, err := ember.Map(ctx, c.Driver, goexits, []int{1}); err != nil {
		t.Fatalf("a second Map: %v", err)
	}
	if err := c.Close(); err != nil { // delivers every hook event
		t.Fatal(err)
	}
	// 6 attempts: 4 of the first Map (input 1's first one failed), 2 of
	// the second (its first one failed).
	if s, o, f := hc.start.Load(), hc.ok.Load(), hc.failed.Load(); s != 6 || o != 4 || f != 2 {
		t.Errorf("hooks: got start=%d succeeded=%d failed=%d, want 6, 4, 2", s, o, f)
	}
}

// goexitHook's OnTaskStart ends the task's goroutine, as t.Fatal in a
// test's plugin does.
type goexitHook struct{ fakeExecutor }

func (goexitHook) OnTaskStart(context.Context, plugin.TaskInfo)         { runtime.Goexit() }
func (goexitHook) OnTaskSucceeded(context.Context, plugin.TaskInfo)     {}
func (goexitHook) OnTaskFailed(context.Context, plugin.TaskInfo, error) {}

// An OnTaskStart hook that calls runtime.Goexit ends the attempt before
// its task runs. The attempt's error names the plugin and the hook: it
// used to blame the task ("task exited its goroutine ... t.Fatal in a
// task?"), whose code never ran, sending its author to the wrong place.
// The listeners before it see the attempt start and fail; those after it
// see neither (they used to get OnTaskFailed alone).
func TestGoexitInStartHookNamesTheHook(t *testing.T) {
	fatal := fakePlugin{name: "fatal-hook", newExecutor: func() plugin.ExecutorPlugin { return &goexitHook{} }}
	for _, tt := range []struct {
		name          string
		listenerFirst bool
		start, failed int32
	}{
		{"the listener after it", false, 0, 0},
		{"the listener before it", true, 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var hc hookCounter
			plugins := []plugin.Plugin{fatal, hookPlugin(&hc, false)}
			if tt.listenerFirst {
				plugins[0], plugins[1] = plugins[1], plugins[0]
			}
			c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Plugins: plugins,
				Conf: map[string]string{ember.ConfMaxTaskFailures: "1"}})
			_, err := ember.Map(testCtx(t), c.Driver, double, []int{1})
			var te *ember.TaskError
			if !errors.As(err, &te) {
				t.Fatalf("Map: got %v, want a *TaskError", err)
			}
			if got, want := plugin.CodeOf(te.Cause), plugin.CodeInternal; got != want {
				t.Errorf("cause code: got %v, want %v", got, want)
			}
			for _, want := range []string{`plugin "fatal-hook"`, "OnTaskStart"} {
				if !strings.Contains(te.Cause.Error(), want) {
					t.Errorf("cause: got %q, want it to name %s", te.Cause, want)
				}
			}
			if err := c.Close(); err != nil { // delivers every hook event
				t.Fatal(err)
			}
			if s, o, f := hc.start.Load(), hc.ok.Load(), hc.failed.Load(); s != tt.start || o != 0 || f != tt.failed {
				t.Errorf("the listener's hooks: got start=%d succeeded=%d failed=%d, want %d, 0, %d", s, o, f, tt.start, tt.failed)
			}
		})
	}
}

// tallyPlugin's executor side is what its tasks find through
// TaskContext.Plugin.
type tallyPlugin struct{}

func (tallyPlugin) Name() string                          { return "tally" }
func (tallyPlugin) DriverPlugin() plugin.DriverPlugin     { return nil }
func (tallyPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return &tallyExecutor{} }

type tallyExecutor struct {
	plugin.BaseExecutorPlugin
	id string // set by Init, before any task runs
}

func (p *tallyExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	p.id = pc.ExecutorID()
	return nil
}

var tallies = ember.NewTask("test.tallies", func(_ context.Context, tc ember.TaskContext, _ int) (string, error) {
	if p, ok := tc.Plugin("absent"); ok || p != nil {
		return "", plugin.Errorf(plugin.CodeInvalidArgument, "Plugin(absent) = %v, %v; want nil, false", p, ok)
	}
	p, ok := tc.Plugin("tally")
	if !ok {
		return "", plugin.NewError(plugin.CodeInvalidArgument, "Plugin(tally) not found")
	}
	if id := p.(*tallyExecutor).id; id != tc.ExecutorID {
		return "", plugin.Errorf(plugin.CodeInvalidArgument, "executor %s's task found executor %s's plugin", tc.ExecutorID, id)
	}
	return tc.ExecutorID, nil
})

// TaskContext stays comparable, as it was before it carried the
// executor's plugins (Plugin): == and map keys must keep compiling.
func TestTaskContextIsComparable(t *testing.T) {
	if !reflect.TypeFor[ember.TaskContext]().Comparable() {
		t.Error("ember.TaskContext is not comparable")
	}
	if p, ok := (ember.TaskContext{}).Plugin("tally"); ok || p != nil {
		t.Errorf("Plugin on a zero TaskContext = %v, %v; want nil, false", p, ok)
	}
}

// A task finds its executor's instance of a plugin with
// TaskContext.Plugin: with local[N], where the executors share one
// process, each its own.
func TestTaskFindsItsExecutorsPlugin(t *testing.T) {
	other := fakePlugin{name: "other", newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{} }}
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, Plugins: []plugin.Plugin{other, tallyPlugin{}},
		Conf: map[string]string{ember.ConfMaxTaskFailures: "1"}})
	if _, err := ember.Map(testCtx(t), c.Driver, tallies, make([]int, 200)); err != nil {
		t.Fatal(err)
	}
}

var (
	permanentRuns atomic.Int64
	failsForGood  = ember.NewTask("test.fails-for-good", func(_ context.Context, tc ember.TaskContext, mode int) (int, error) {
		permanentRuns.Add(1)
		switch {
		case mode == 0:
			return 0, ember.Permanent(plugin.NewError(plugin.CodeInvalidArgument, "syntax error"))
		case mode == 1:
			return 0, fmt.Errorf("compile: %w", ember.Permanent(errors.New("syntax error")))
		case mode == 2 && tc.Attempt == 0:
			return 0, errors.New("checkout failed")
		case mode == 2:
			return 0, ember.Permanent(errors.New("syntax error"))
		}
		return mode, ember.Permanent(nil) // nil: a success
	})
	undecodableInput = ember.NewTask("test.undecodable-input", func(context.Context, ember.TaskContext, refusesToDecode) (int, error) {
		permanentRuns.Add(1)
		return 0, nil
	})
)

// refusesToDecode encodes, and no executor can decode it.
type refusesToDecode struct{ int }

func (refusesToDecode) MarshalBinary() ([]byte, error) { return []byte{1}, nil }
func (*refusesToDecode) UnmarshalBinary([]byte) error  { return errors.New("refused") }

// A task error marked Permanent fails its Map after that attempt, where
// any other is retried up to maxFailures times: a build farm's compile
// error is not compiled four times. The mark holds however deeply the
// error is wrapped, and after ordinary failures of the same input; a task
// whose input cannot be decoded fails for good too.
func TestPermanentFailuresAreNotRetried(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet})
	tests := []struct {
		name     string
		run      func() error
		runs     int64 // times the task function ran
		attempts int   // TaskError.Attempts
		code     plugin.Code
		text     string
	}{
		{"marked", func() error { _, err := ember.Map(testCtx(t), c.Driver, failsForGood, []int{0}); return err },
			1, 1, plugin.CodeInvalidArgument, "syntax error"},
		{"marked and wrapped", func() error { _, err := ember.Map(testCtx(t), c.Driver, failsForGood, []int{1}); return err },
			1, 1, plugin.CodeUnknown, "compile: syntax error"},
		{"marked on the second attempt", func() error { _, err := ember.Map(testCtx(t), c.Driver, failsForGood, []int{2}); return err },
			2, 2, plugin.CodeUnknown, "syntax error"},
		{"undecodable input", func() error {
			_, err := ember.Map(testCtx(t), c.Driver, undecodableInput, []refusesToDecode{{}})
			return err
		}, 0, 1, plugin.CodeInvalidArgument, "decode input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			permanentRuns.Store(0)
			err := tt.run()
			var te *ember.TaskError
			if !errors.As(err, &te) {
				t.Fatalf("Map: got %v, want a *ember.TaskError", err)
			}
			if !te.Permanent || te.Attempts != tt.attempts || plugin.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Map: got %v (permanent %v, %d attempts), want a permanent failure after %d attempts, code %v, saying %q",
					err, te.Permanent, te.Attempts, tt.attempts, tt.code, tt.text)
			}
			if !strings.Contains(err.Error(), "failed permanently") || !ember.IsPermanent(err) {
				t.Errorf("Map: got %q (IsPermanent %v), want it to say the task failed permanently, and IsPermanent true", err, ember.IsPermanent(err))
			}
			if got := permanentRuns.Load(); got != tt.runs {
				t.Errorf("task function ran %d times, want %d", got, tt.runs)
			}
		})
	}
	got, err := ember.Map(testCtx(t), c.Driver, failsForGood, []int{3, 4})
	if err != nil || !slices.Equal(got, []int{3, 4}) {
		t.Errorf("Map of tasks returning Permanent(nil): got %v, %v; want [3 4], nil", got, err)
	}
}

func TestPermanentMark(t *testing.T) {
	if err := ember.Permanent(nil); err != nil {
		t.Errorf("Permanent(nil) = %v, want nil", err)
	}
	base := plugin.NewError(plugin.CodeNotFound, "no such target")
	err := fmt.Errorf("build: %w", ember.Permanent(base))
	var pe *plugin.Error
	if !errors.Is(err, base) || !errors.As(err, &pe) || pe != base {
		t.Errorf("errors.Is/As through the mark: got %v, want %v", err, base)
	}
	if got, want := err.Error(), "build: "+base.Error(); got != want {
		t.Errorf("text: got %q, want %q", got, want)
	}
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{err, true}, // what OnTaskFailed receives
		{ember.Permanent(base), true},
		{base, false},
		{nil, false},
		{fmt.Errorf("ember.Map: %w", &ember.TaskError{Permanent: true, Cause: base}), true},
		{fmt.Errorf("ember.Map: %w", &ember.TaskError{Attempts: 4, Cause: base}), false},
	} {
		if got := ember.IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// A task hook that panics does so for every task: its stacks are logged
// within the plugin's budget (ten a minute per executor), not one per
// task, and every task still runs.
func TestTaskHookPanicsLoggedWithinBudget(t *testing.T) {
	var hc hookCounter
	var logs logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Plugins: []plugin.Plugin{hookPlugin(&hc, true)}})
	if _, err := ember.Map(testCtx(t), c.Driver, double, make([]int, 30)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "task hook panicked"); n != 10 {
		t.Errorf("30 panicking OnTaskStart hooks logged %d times, want 10", n)
	}
	if n := strings.Count(logs.String(), "more panics of this plugin's task hooks are held back"); n != 1 {
		t.Errorf("the notice that more are held back: logged %d times, want once", n)
	}
}

// awaitsCancel's attempts say on taskStarted that they run, and on
// taskCauses the cause of their ctx's end (in-process executors only).
var (
	taskStarted = make(chan struct{}, 16)
	taskCauses  = make(chan error, 16)
)

// awaitsCancel waits for its ctx to end, and reports why; input 1 fails
// for good instead, once input 0 runs.
var awaitsCancel = ember.NewTask("test.awaits-cancel", func(ctx context.Context, _ ember.TaskContext, n int) (int, error) {
	if n == 1 {
		<-taskStarted
		return 0, ember.Permanent(errors.New("compile error in pkg/x"))
	}
	taskStarted <- struct{}{}
	<-ctx.Done()
	taskCauses <- context.Cause(ctx)
	return 0, ctx.Err()
})

// A task whose job ends while it runs sees why in its ctx's cause: the
// Map's ctx canceled, with that ctx's own cause, or another task's
// failure. It was a bare context.Canceled, and a task could not tell a
// user's cancel from anything else.
func TestTaskCtxCauseSaysWhyItsJobEnded(t *testing.T) {
	tests := []struct {
		name   string
		inputs []int
		cancel bool // the Map's ctx is canceled, with a cause
		want   string
	}{
		{"Map canceled", []int{0}, true, "build t2 canceled by user"},
		{"another task failed", []int{0, 1}, false, "compile error in pkg/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet})
			ctx, cancel := context.WithCancelCause(testCtx(t))
			defer cancel(nil)
			errc := make(chan error, 1)
			go func() {
				_, err := ember.Map(ctx, c.Driver, awaitsCancel, tt.inputs)
				errc <- err
			}()
			if tt.cancel {
				<-taskStarted
				cancel(errors.New("build t2 canceled by user"))
			}
			if err := <-errc; err == nil {
				t.Fatal("Map: got nil error, want its job's end")
			}
			var cause error
			select {
			case cause = <-taskCauses:
			case <-testCtx(t).Done():
				t.Fatal("the running task never saw its ctx end")
			}
			if cause == nil || !strings.Contains(cause.Error(), "the driver canceled this attempt: its job has ended") || !strings.Contains(cause.Error(), tt.want) {
				t.Errorf("the task's ctx cause: got %v, want one saying the driver canceled it, and %q", cause, tt.want)
			}
			// A cancel, whatever ended the job: what OnTaskFailed gets
			// from a task returning its ctx's cause tells a kill from a
			// failure (it had the job's code, here unknown).
			if !errors.Is(cause, context.Canceled) || plugin.CodeOf(cause) != plugin.CodeCanceled {
				t.Errorf("the task's ctx cause: got %v (code %v), want CodeCanceled, matching context.Canceled", cause, plugin.CodeOf(cause))
			}
		})
	}
}

// shard is a test farm's shard: n%3 == 0 fails for good, n%3 == 1 fails
// its first attempt and passes its second, the rest pass at once; n == 7
// says on shard7 where it runs, and waits for its ctx to end (so that a
// test can end its job, or kill its executor).
var shard = ember.NewTask("test.shard", func(ctx context.Context, tc ember.TaskContext, n int) (string, error) {
	switch {
	case n == 7:
		shard7 <- tc.ExecutorID
		<-ctx.Done()
		return "", ctx.Err()
	case n%3 == 0:
		return "", ember.Permanent(plugin.Errorf(plugin.CodeInvalidArgument, "shard %d: 2 tests failed", n))
	case n%3 == 1 && tc.Attempt == 0:
		return "", fmt.Errorf("shard %d: flaky runner", n)
	}
	return fmt.Sprintf("shard %d passed", n), nil
})

// shard7 gets the executor of each attempt of shard 7 (in-process
// executors only).
var shard7 = make(chan string, 16)

// MapEach runs every input to its end: a task that fails for good fails
// its own input (a *TaskError in its Result), a flaky one is retried as in
// Map, and the others run on, where Map cancels them and fails. A test
// farm gets every shard's pass or fail.
func TestMapEachRunsEveryInput(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet})
	ctx := testCtx(t)
	inputs := []int{1, 2, 3, 4, 5, 6, 8}
	results, err := ember.MapEach(ctx, c.Driver, shard, inputs)
	if err != nil {
		t.Fatalf("MapEach: %v", err)
	}
	if len(results) != len(inputs) {
		t.Fatalf("MapEach: got %d results, want %d", len(results), len(inputs))
	}
	for i, n := range inputs {
		r := results[i]
		if n%3 != 0 {
			if want := fmt.Sprintf("shard %d passed", n); r.Err != nil || r.Out != want {
				t.Errorf("inputs[%d] (%d): got %q, %v; want %q", i, n, r.Out, r.Err, want)
			}
			continue
		}
		var te *ember.TaskError
		if !errors.As(r.Err, &te) || te.Index != i || !te.Permanent || te.Attempts != 1 ||
			plugin.CodeOf(r.Err) != plugin.CodeInvalidArgument || !strings.Contains(r.Err.Error(), "2 tests failed") || r.Out != "" {
			t.Errorf("inputs[%d] (%d): got %q, %v; want a permanent *TaskError for index %d after 1 attempt, InvalidArgument", i, n, r.Out, r.Err, i)
		}
	}
	// Map, on the same inputs, fails at the first shard that fails.
	if _, err := ember.Map(ctx, c.Driver, shard, inputs); !ember.IsPermanent(err) {
		t.Errorf("Map on the same inputs: got %v, want a permanent failure", err)
	}
}

// MapEach fails as a whole for what ends every input: its ctx ending,
// with the ctx's cause, gives an error and no results. An input whose
// executor is lost under it as often as ConfMaxTaskFailures allows fails
// alone: the job returns its Result.
func TestMapEachJobErrors(t *testing.T) {
	// The inputs that had finished keep their outcomes: a job ended at its
	// deadline used to return nothing of what it had done.
	t.Run("ctx ended", func(t *testing.T) {
		// One slot: shard 2 has run (its result is in) when shard 7 starts.
		c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Conf: map[string]string{ember.ConfExecutorSlots: "1"}})
		ctx, cancel := context.WithCancelCause(testCtx(t))
		defer cancel(nil)
		go func() {
			<-shard7
			cancel(errors.New("build 12 canceled"))
		}()
		results, err := ember.MapEach(ctx, c.Driver, shard, []int{2, 7})
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "build 12 canceled") {
			t.Errorf("MapEach whose ctx was canceled: got %v, want an error matching context.Canceled, with the cause", err)
		}
		if len(results) != 2 {
			t.Fatalf("MapEach whose ctx was canceled: got %d results, want 2", len(results))
		}
		if r := results[0]; r.Err != nil || r.Out != "shard 2 passed" {
			t.Errorf("inputs[0], finished before the cancel: got %q, %v; want %q", r.Out, r.Err, "shard 2 passed")
		}
		if r := results[1]; !errors.Is(r.Err, context.Canceled) || !strings.Contains(r.Err.Error(), "build 12 canceled") {
			t.Errorf("inputs[1], running at the cancel: got %v, want the job's error", r.Err)
		}
	})
	t.Run("executor lost", func(t *testing.T) {
		c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, Conf: map[string]string{ember.ConfMaxTaskFailures: "1"}})
		ctx := testCtx(t)
		type outcome struct {
			results []ember.Result[string]
			err     error
		}
		done := make(chan outcome, 1)
		go func() {
			results, err := ember.MapEach(ctx, c.Driver, shard, []int{7})
			done <- outcome{results, err}
		}()
		if err := c.Kill(<-shard7); err != nil {
			t.Fatal(err)
		}
		o := <-done
		if o.err != nil || len(o.results) != 1 {
			t.Fatalf("MapEach with an executor lost: got %v, %v; want 1 result", o.results, o.err)
		}
		var te *ember.TaskError
		if r := o.results[0]; !errors.As(r.Err, &te) || plugin.CodeOf(r.Err) != plugin.CodeUnavailable || !strings.Contains(r.Err.Error(), "was lost while running it") {
			t.Errorf("inputs[0], on the executor lost: got %v, want a *TaskError, CodeUnavailable, saying it was lost", r.Err)
		}
	})
}

// MapEach with executors in processes of their own: each shard's outcome
// comes back, the failed one's error with its code and text.
func TestMapEachLocalCluster(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local-cluster[2]", Logger: quiet})
	results, err := ember.MapEach(testCtx(t), c.Driver, shard, []int{1, 2, 3})
	if err != nil || len(results) != 3 {
		t.Fatalf("MapEach: got %v, %v; want 3 results", results, err)
	}
	for i, want := range []string{"shard 1 passed", "shard 2 passed"} {
		if r := results[i]; r.Err != nil || r.Out != want {
			t.Errorf("inputs[%d]: got %q, %v; want %q", i, r.Out, r.Err, want)
		}
	}
	if r := results[2]; !ember.IsPermanent(r.Err) || plugin.CodeOf(r.Err) != plugin.CodeInvalidArgument || !strings.Contains(r.Err.Error(), "shard 3: 2 tests failed") {
		t.Errorf("inputs[2]: got %v, want a permanent InvalidArgument failure saying 2 tests failed", r.Err)
	}
}

// An executor process's EMBER_EXECUTOR_SLOTS is its own task slots, over
// the driver's ember.executor.slots (a farm machine that should take
// fewer builds than the rest), and Driver.Executors says what each runs.
// An in-process executor (local[N]) has the driver's.
func TestExecutorSlotsFromItsEnvironment(t *testing.T) {
	t.Setenv(ember.EnvExecutorSlots, "3")
	conf := map[string]string{ember.ConfExecutorSlots: "1"}
	for _, tt := range []struct {
		master string
		want   int
	}{
		{"local-cluster[2]", 3},
		{"local[1]", 1},
	} {
		c := embertest.Start(t, ember.Config{Master: tt.master, Logger: quiet, Conf: conf})
		execs := c.Driver.Executors()
		for _, e := range execs {
			if e.Slots != tt.want {
				t.Errorf("%s: executor %s has %d slots, want %d", tt.master, e.ID, e.Slots, tt.want)
			}
		}
		if len(execs) == 0 {
			t.Errorf("%s: no executors", tt.master)
		}
		c.Close()
	}
}

// A bad EMBER_EXECUTOR_SLOTS fails a local-cluster's start-up at once,
// naming it: each executor, inheriting it, used to exit with status 1,
// saying why in its own log alone (TestOwnSlots has the message).
func TestExecutorSlotsFromItsEnvironmentRefused(t *testing.T) {
	t.Setenv(ember.EnvExecutorSlots, "0")
	err := ember.Run(testCtx(t), ember.Config{Master: "local-cluster[1]", Logger: quiet, ExecutorArgs: embertest.ExecutorArgs(t)},
		func(context.Context, *ember.Driver) error { return nil })
	if want := `EMBER_EXECUTOR_SLOTS="0": want a whole number from 1 to 16384 (local-cluster executors take it from this process's environment)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: got %v, want an error containing %q", err, want)
	}
}

// heapProbe is a task output that measures, as the last output of a job
// of probeOutputs is decoded on the driver, the heap that the job's
// outputs hold then (after a GC).
type heapProbe []byte

const (
	probeOutputs = 16
	probeBytes   = 2 << 20
)

var (
	probeDecoded atomic.Int64
	probeHeap    atomic.Uint64

	makeProbe = ember.NewTask("test.heap-probe", func(_ context.Context, _ ember.TaskContext, _ int) (heapProbe, error) {
		return make(heapProbe, probeBytes), nil
	})
)

func (p *heapProbe) UnmarshalCBOR(data []byte) error {
	var b []byte
	if err := cbor.Unmarshal(data, &b); err != nil {
		return err
	}
	*p = b
	if probeDecoded.Add(1) == probeOutputs {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		probeHeap.Store(ms.HeapAlloc)
	}
	return nil
}

// Map and MapEach let go of each encoded output once they have decoded
// it: they held every output twice, encoded and decoded, until they
// returned, so a job whose outputs took 1.2 GiB made the driver's heap
// 2.4 GiB.
func TestMapDoesNotHoldOutputsTwice(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", MaxMessageBytes: 2*probeBytes + 1024})
	total := uint64(probeOutputs * probeBytes)
	for _, each := range []bool{false, true} {
		probeDecoded.Store(0)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		var err error
		var keep any
		if each {
			keep, err = ember.MapEach(testCtx(t), c.Driver, makeProbe, make([]int, probeOutputs))
		} else {
			keep, err = ember.Map(testCtx(t), c.Driver, makeProbe, make([]int, probeOutputs))
		}
		if err != nil {
			t.Fatal(err)
		}
		grew := probeHeap.Load() - min(before, probeHeap.Load())
		if grew > total*3/2 {
			t.Errorf("MapEach=%v: the heap grew by %d MiB while the last of %d MiB of outputs was decoded; want at most %d MiB (the outputs once)",
				each, grew>>20, total>>20, total*3/2>>20)
		}
		runtime.KeepAlive(keep)
	}
}

const hugePanicBytes = 1 << 20

var panicsHuge = ember.NewTask("test.panics-huge", func(_ context.Context, tc ember.TaskContext, _ int) (int, error) {
	panic(strings.Repeat("p", hugePanicBytes))
})

// A task's panic value is logged cut, as its error's text is cut on the
// wire (rpc.MaxErrorBytes): a panic with a value of 8 MiB wrote a log line
// of 8 MiB on the executor for each attempt.
func TestTaskPanicValueLoggedCut(t *testing.T) {
	var logs logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Conf: map[string]string{ember.ConfMaxTaskFailures: "1"}})
	_, err := ember.Map(testCtx(t), c.Driver, panicsHuge, []int{0})
	if err == nil || !strings.Contains(err.Error(), "panicked: ppp") {
		t.Fatalf("Map: got %v, want the task's panic", err)
	}
	// Cut once, saying how much of the panic's text was left out: cut
	// again on the wire, it said 58 bytes where a MiB was.
	if m := regexp.MustCompile(`… \((\d+) more bytes\)`).FindAllStringSubmatch(err.Error(), -1); len(m) != 1 {
		t.Errorf("Map's error: got %d notes of bytes left out, want 1: %.100s…%s", len(m), err.Error(), err.Error()[max(len(err.Error())-100, 0):])
	} else if n, _ := strconv.Atoi(m[0][1]); n < hugePanicBytes-rpc.MaxErrorBytes {
		t.Errorf("Map's error says %d more bytes, want at least %d of the panic's %d left out", n, hugePanicBytes-rpc.MaxErrorBytes, hugePanicBytes)
	}
	found := false
	for line := range strings.Lines(logs.String()) {
		if !strings.Contains(line, `msg="task panicked"`) {
			continue
		}
		found = true
		if len(line) > hugePanicBytes/8 {
			t.Errorf("the panic's log line is %d bytes, for a panic value of %d: want it cut", len(line), hugePanicBytes)
		}
		if !strings.Contains(line, "more bytes)") {
			t.Errorf("the panic's log line does not say how much was cut: %.300s", line)
		}
	}
	if !found {
		t.Fatalf("no task panicked logged:\n%.2000s", logs.String())
	}
}

// NewTask refuses a name over MaxTaskNameBytes: every TASK frame carries
// it next to its input, and a 70 KiB name with an input at
// MaxMessageBytes made a frame past the 64 KiB of headroom executors
// accept, which ended each executor's connection that the attempt went to
// (the job failed with four executors lost, a local-cluster replacing
// them one after another), where Map should have run it.
func TestNewTaskRefusesLongName(t *testing.T) {
	defer func() {
		r := recover()
		if msg := fmt.Sprint(r); !strings.Contains(msg, "over the 1024-byte limit") {
			t.Errorf("NewTask with a name of 70 KiB: got panic %v, want one saying it is over the limit", r)
		}
	}()
	ember.NewTask(strings.Repeat("n", 70<<10), func(context.Context, ember.TaskContext, int) (int, error) { return 0, nil })
}

var (
	cancelAt   atomic.Int64                            // the input whose task cancels its job
	cancelJob  atomic.Pointer[context.CancelCauseFunc] // what it calls
	cancelsJob = ember.NewTask("test.cancels-its-job", func(ctx context.Context, _ ember.TaskContext, n int) (int, error) {
		if int64(n) == cancelAt.Load() {
			// Holds the slot until the job's TASK_CANCELs come, so that
			// those sent ahead are still waiting for it.
			(*cancelJob.Load())(errors.New("enough"))
			<-ctx.Done()
			return 0, context.Cause(ctx)
		}
		return n, nil
	})
)

// A job of short tasks sends attempts ahead of the executor's free slots.
// When it ends, those still waiting there are canceled with it, and
// reported without running: the next job has the executor's slots. Had
// they stayed the driver's to wait for, the next job (not yet known to be
// short) would have found no room, and waited for ever.
func TestJobEndsWithAttemptsWaitingForASlot(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet,
		Conf: map[string]string{ember.ConfExecutorSlots: "1"}})
	ctx, cancel := context.WithCancelCause(testCtx(t))
	defer cancel(nil)
	cancelJob.Store(&cancel)
	cancelAt.Store(500)
	inputs := make([]int, 1000)
	for i := range inputs {
		inputs[i] = i
	}
	if _, err := ember.Map(ctx, c.Driver, cancelsJob, inputs); !errors.Is(err, context.Canceled) {
		t.Fatalf("Map: got %v, want context.Canceled", err)
	}
	cancelAt.Store(-1)
	out, err := ember.Map(testCtx(t), c.Driver, cancelsJob, inputs[:10])
	if err != nil || len(out) != 10 || out[9] != 9 {
		t.Fatalf("the next Map: got %v, %v; want inputs[:10]", out, err)
	}
}
