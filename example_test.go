package ember_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type (
	ConfigRequest struct{}
	ConfigReply   struct{ Value int }
	FinalValue    struct{ Value int }
)

func init() {
	plugin.RegisterMessage[ConfigRequest]()
	plugin.RegisterMessage[ConfigReply]()
	plugin.RegisterMessage[FinalValue]()
}

type demo struct{}

func (demo) Name() string                          { return "demo" }
func (demo) DriverPlugin() plugin.DriverPlugin     { return &demoDriver{} }
func (demo) ExecutorPlugin() plugin.ExecutorPlugin { return &demoExecutor{} }

type demoDriver struct{ plugin.BaseDriverPlugin }

func (*demoDriver) Receive(ctx context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case ConfigRequest:
		return ConfigReply{Value: 10}, nil
	case FinalValue:
		fmt.Println("driver: the final value is", m.Value)
		return nil, nil
	}
	return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected %T", msg)
}

type demoExecutor struct {
	plugin.BaseExecutorPlugin
	pc plugin.ExecutorContext
}

func (e *demoExecutor) Init(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.pc = pc
	r, err := plugin.Ask[ConfigReply](ctx, pc, ConfigRequest{})
	if err != nil {
		return err
	}
	fmt.Println("executor: the initial configuration is", r.Value)
	return nil
}

func (e *demoExecutor) Shutdown(ctx context.Context) error {
	return e.pc.Send(ctx, FinalValue{Value: 100})
}

var (
	_ plugin.DriverPlugin   = (*demoDriver)(nil)
	_ plugin.ExecutorPlugin = (*demoExecutor)(nil)
)

// A plugin whose executor side asks the driver side for its configuration
// when it starts and sends a final value when it stops: Spark's plugin RPC
// example. local[1] runs the executor inside this process, over the real
// transport.
func Example() {
	err := ember.Run(context.Background(), ember.Config{
		Master:  "local[1]",
		Plugins: []plugin.Plugin{demo{}},
		Logger:  slog.New(slog.DiscardHandler),
	}, func(ctx context.Context, d *ember.Driver) error {
		fmt.Println("driver function: executors ready:", len(d.Executors()))
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// executor: the initial configuration is 10
	// driver function: executors ready: 1
	// driver: the final value is 100
}

type (
	SetLevel struct{ Level string }
	Applied  struct{ Level string }
)

func init() {
	plugin.RegisterMessage[SetLevel]()
	plugin.RegisterMessage[Applied]()
}

// levels is a plugin whose driver side pushes a setting to every executor.
type levels struct {
	mu      sync.Mutex
	dc      plugin.DriverContext
	applied chan string
}

func (l *levels) Name() string                      { return "levels" }
func (l *levels) DriverPlugin() plugin.DriverPlugin { return &levelsDriver{l: l} }
func (l *levels) ExecutorPlugin() plugin.ExecutorPlugin {
	return &levelsExecutor{}
}

type levelsDriver struct {
	plugin.BaseDriverPlugin
	l *levels
}

func (d *levelsDriver) Init(_ context.Context, dc plugin.DriverContext) (map[string]string, error) {
	d.l.mu.Lock()
	d.l.dc = dc
	d.l.mu.Unlock()
	return nil, nil
}

func (d *levelsDriver) Receive(ctx context.Context, msg any) (any, error) {
	id, _ := plugin.SenderID(ctx)
	d.l.applied <- fmt.Sprintf("executor %s applied %s", id, msg.(Applied).Level)
	return nil, nil
}

type levelsExecutor struct {
	plugin.BaseExecutorPlugin
	pc plugin.ExecutorContext
}

func (e *levelsExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.pc = pc
	return nil
}

// Receive makes levelsExecutor a plugin.ExecutorReceiver.
func (e *levelsExecutor) Receive(ctx context.Context, msg any) (any, error) {
	return nil, e.pc.Send(ctx, Applied{Level: msg.(SetLevel).Level})
}

// The driver side of a plugin broadcasts a setting; every executor applies
// it and acknowledges.
func Example_broadcast() {
	l := &levels{applied: make(chan string, 2)}
	err := ember.Run(context.Background(), ember.Config{
		Master:  "local[1]",
		Plugins: []plugin.Plugin{l},
		Logger:  slog.New(slog.DiscardHandler),
	}, func(ctx context.Context, d *ember.Driver) error {
		l.mu.Lock()
		dc := l.dc
		l.mu.Unlock()
		if err := dc.Broadcast(ctx, SetLevel{Level: "debug"}); err != nil {
			return err
		}
		fmt.Println(<-l.applied)
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// executor 1 applied debug
}

// words is a plugin with an executor side only: a tally of the words its
// executor's tasks have seen.
type words struct{}

func (words) Name() string                          { return "words" }
func (words) DriverPlugin() plugin.DriverPlugin     { return nil }
func (words) ExecutorPlugin() plugin.ExecutorPlugin { return &wordsExecutor{} }

type wordsExecutor struct {
	plugin.BaseExecutorPlugin
	mu   sync.Mutex // tasks run concurrently
	seen int
}

func (w *wordsExecutor) Shutdown(context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Println("the executor's words plugin saw", w.seen, "words")
	return nil
}

// countWords finds its executor's instance of the words plugin and adds
// to its tally.
var countWords = ember.NewTask("example.countWords", func(_ context.Context, tc ember.TaskContext, line string) (int, error) {
	n := len(strings.Fields(line))
	if p, ok := tc.Plugin("words"); ok {
		w := p.(*wordsExecutor)
		w.mu.Lock()
		w.seen += n
		w.mu.Unlock()
	}
	return n, nil
})

// A task reaches its executor's instance of a plugin through its
// TaskContext, to update the plugin's state or use the context the plugin
// kept from Init.
func ExampleTaskContext_Plugin() {
	err := ember.Run(context.Background(), ember.Config{
		Master:  "local[1]",
		Plugins: []plugin.Plugin{words{}},
		Logger:  slog.New(slog.DiscardHandler),
	}, func(ctx context.Context, d *ember.Driver) error {
		counts, err := ember.Map(ctx, d, countWords, []string{"to be or not to be", "that is the question"})
		fmt.Println(counts, err)
		return err
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// [6 4] <nil>
	// the executor's words plugin saw 10 words
}

type (
	NextJob struct{}
	Job     struct{ ID int }
)

func init() {
	plugin.RegisterMessage[NextJob]()
	plugin.RegisterMessage[Job]()
}

// jobs is a plugin whose driver side hands out jobs to executors that
// ask for one, and whose executor side asks for one.
type jobs struct {
	work    chan Job      // jobs to hand out; none in the example
	waiting chan struct{} // a Receive has begun to wait: the executor's cue to give up
	gaveUp  chan error    // why a wait for a job ended
}

func (*jobs) Name() string                            { return "jobs" }
func (q *jobs) DriverPlugin() plugin.DriverPlugin     { return &jobsDriver{q: q} }
func (q *jobs) ExecutorPlugin() plugin.ExecutorPlugin { return &jobsExecutor{q: q} }

type jobsDriver struct {
	plugin.BaseDriverPlugin
	q *jobs
}

// Receive answers NextJob once there is a job: a long poll. It waits on
// ctx, which ends if the asker gives up, so that it stops taking jobs for
// an asker that has gone. (A job taken as the asker gives up is lost with
// its dropped reply: a real queue keeps what it handed out until the
// result comes, see DriverPlugin.Receive.)
func (d *jobsDriver) Receive(ctx context.Context, msg any) (any, error) {
	select {
	case d.q.waiting <- struct{}{}:
	default:
	}
	select {
	case j := <-d.q.work:
		return j, nil
	case <-ctx.Done():
		d.q.gaveUp <- context.Cause(ctx)
		return nil, ctx.Err()
	}
}

// MaxConcurrentReceives makes jobsDriver a plugin.ConcurrentReceiver:
// executors wait for jobs side by side, not one behind the other.
func (*jobsDriver) MaxConcurrentReceives() int { return 16 }

type jobsExecutor struct {
	plugin.BaseExecutorPlugin
	q *jobs
}

func (e *jobsExecutor) Init(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Anything can end the wait: a deadline, the executor stopping. Here
	// the executor gives up once the driver side waits (local[1] shares
	// q), so that the ask has surely gone out: a timer could fire first.
	go func() {
		select {
		case <-e.q.waiting:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := plugin.Ask[Job](ctx, pc, NextJob{})
	fmt.Println("executor: no job, canceled:", errors.Is(err, context.Canceled))
	return nil
}

// An asker that gives up cancels its ask on the other side too: the
// handler's ctx ends, with the cause plugin.ErrAskCanceled, as a gRPC
// client's cancel reaches its server's handler.
func Example_longPoll() {
	q := &jobs{work: make(chan Job), waiting: make(chan struct{}, 1), gaveUp: make(chan error, 1)}
	err := ember.Run(context.Background(), ember.Config{
		Master:  "local[1]",
		Plugins: []plugin.Plugin{q},
		Logger:  slog.New(slog.DiscardHandler),
	}, func(ctx context.Context, d *ember.Driver) error {
		fmt.Println("driver: stopped waiting:", <-q.gaveUp)
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// executor: no job, canceled: true
	// driver: stopped waiting: ember: the asker canceled the ask: context canceled
}

// square is a task: declared at package level, so that the driver and
// every executor register it in the same order.
var square = ember.NewTask("example.square", func(_ context.Context, _ ember.TaskContext, n int) (int, error) {
	if n < 0 {
		return 0, plugin.Errorf(plugin.CodeInvalidArgument, "negative input %d", n)
	}
	return n * n, nil
})

// Map runs a task over its inputs on the executors and returns the outputs
// in input order. An input that fails ConfMaxTaskFailures times fails the
// Map with a *TaskError, which keeps the task's error code.
func ExampleMap() {
	err := ember.Run(context.Background(), ember.Config{
		Master: "local[1]",
		Conf:   map[string]string{ember.ConfMaxTaskFailures: "1"},
		Logger: slog.New(slog.DiscardHandler),
	}, func(ctx context.Context, d *ember.Driver) error {
		squares, err := ember.Map(ctx, d, square, []int{1, 2, 3})
		fmt.Println(squares, err)

		_, err = ember.Map(ctx, d, square, []int{4, -5})
		var te *ember.TaskError
		if errors.As(err, &te) {
			fmt.Printf("input %d failed %d time(s): %v (code %v)\n", te.Index, te.Attempts, te.Cause, plugin.CodeOf(err))
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// [1 4 9] <nil>
	// input 1 failed 1 time(s): invalid_argument: negative input -5 (code invalid_argument)
}

// MapEach runs every input to its end: a task that fails for good fails
// its own input, and the others run on. A test farm gets each shard's
// outcome.
func ExampleMapEach() {
	err := ember.Run(context.Background(), ember.Config{
		Master: "local[1]",
		Conf:   map[string]string{ember.ConfMaxTaskFailures: "1"},
		Logger: slog.New(slog.DiscardHandler),
	}, func(ctx context.Context, d *ember.Driver) error {
		results, err := ember.MapEach(ctx, d, square, []int{4, -5, 6})
		if err != nil {
			return err // the job as a whole: ctx ended, the driver stopping
		}
		for i, r := range results {
			if r.Err != nil {
				fmt.Printf("inputs[%d]: %v\n", i, plugin.CodeOf(r.Err))
				continue
			}
			fmt.Printf("inputs[%d]: %d\n", i, r.Out)
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// inputs[0]: 16
	// inputs[1]: invalid_argument
	// inputs[2]: 36
}

// A service with a /metrics of its own serves Ember's series there, from
// the driver's Gatherer listed beside its registry, and turns Ember's own
// endpoint off.
func ExampleDriver_Gatherer() {
	reg := prometheus.NewRegistry() // the service's
	err := ember.Run(context.Background(), ember.Config{
		Master:      "local[1]",
		MetricsAddr: "off",
		Logger:      slog.New(slog.DiscardHandler),
	}, func(ctx context.Context, d *ember.Driver) error {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, d.Gatherer()}, promhttp.HandlerOpts{}))

		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for line := range strings.Lines(rec.Body.String()) {
			if strings.HasPrefix(line, "ember_executors_alive ") {
				fmt.Print(line)
			}
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// ember_executors_alive 1
}
