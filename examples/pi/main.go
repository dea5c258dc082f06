// Command pi estimates π with Monte Carlo tasks, as Spark's SparkPi does:
// each task draws random points in the square [-1, 1)² and counts those
// inside the unit circle, and the driver adds the counts up. Each task seeds
// its generator from its index, so the estimate is the same on every run.
//
// A plugin, task-timer, times the tasks: its executor side is a
// plugin.TaskListener that logs every task's duration (on stderr) and, when
// the executor shuts down, sends its driver side how many tasks it timed.
//
//	go run ./examples/pi
package main

import (
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

const (
	pluginName = "task-timer"
	// The job: tasks tasks of pointsPerTask points each.
	tasks         = 20
	pointsPerTask = 200_000
	// stream is the second half of every task's PCG seed; the first is
	// the task's index.
	stream = 0x656d626572 // "ember"
)

// The messages. Every process registers them, in init.
type (
	// TasksTimed tells the driver plugin how many task durations an
	// executor logged.
	TasksTimed struct{ Count int }
)

func init() {
	plugin.RegisterMessage[TasksTimed]()
}

// Sample is a task's input: how many points to draw, and the seed of the
// generator that draws them.
type Sample struct {
	Seed   uint64
	Points int
}

// countInside draws the points of a sample and returns how many fall
// inside the unit circle. The same sample gives the same count on any
// executor, in any attempt.
var countInside = ember.NewTask("count-inside", func(ctx context.Context, _ ember.TaskContext, s Sample) (int, error) {
	r := rand.New(rand.NewPCG(s.Seed, stream))
	inside := 0
	for i := range s.Points {
		if i%(1<<16) == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		x, y := r.Float64()*2-1, r.Float64()*2-1
		// The conversions round each product, so that no platform fuses
		// the sum into one multiply-add and draws the boundary elsewhere:
		// the count, hence the output, is the same everywhere.
		if float64(x*x)+float64(y*y) <= 1 {
			inside++
		}
	}
	return inside, nil
})

// taskTimer pairs the two sides under one name.
type taskTimer struct{}

func (taskTimer) Name() string                          { return pluginName }
func (taskTimer) DriverPlugin() plugin.DriverPlugin     { return &driverPlugin{} }
func (taskTimer) ExecutorPlugin() plugin.ExecutorPlugin { return &executorPlugin{} }

// driverPlugin adds up the executors' counts. Receive runs on the plugin's
// lane and Shutdown on the shutdown goroutine, so the total is guarded.
type driverPlugin struct {
	plugin.BaseDriverPlugin

	mu    sync.Mutex // protects timed
	timed int
}

// Receive adds an executor's count.
func (p *driverPlugin) Receive(ctx context.Context, msg any) (any, error) {
	m, ok := msg.(TasksTimed)
	if !ok {
		return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
	}
	p.mu.Lock()
	p.timed += m.Count
	p.mu.Unlock()
	return nil, nil
}

// Shutdown prints the total. It runs after every executor has shut down
// and every message it sent has been received, so the total is complete.
func (p *driverPlugin) Shutdown(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf("task durations logged: %d\n", p.timed)
	return nil
}

// taskKey identifies one attempt of one task.
type taskKey struct {
	job            string
	index, attempt int
}

// executorPlugin is a plugin.TaskListener, checked at compile time.
var _ plugin.TaskListener = (*executorPlugin)(nil)

// executorPlugin times the tasks of its executor. The hooks run on the
// tasks' goroutines, several at once (one per slot), so its state is
// guarded.
type executorPlugin struct {
	plugin.BaseExecutorPlugin
	pc plugin.ExecutorContext

	mu      sync.Mutex // protects the following fields
	started map[taskKey]time.Time
	timed   int
}

func (p *executorPlugin) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	p.pc = pc
	p.started = make(map[taskKey]time.Time)
	return nil
}

// OnTaskStart records when the attempt started.
func (p *executorPlugin) OnTaskStart(_ context.Context, t plugin.TaskInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started[taskKey{t.JobID, t.Index, t.Attempt}] = time.Now()
}

// OnTaskSucceeded logs the attempt's duration.
func (p *executorPlugin) OnTaskSucceeded(_ context.Context, t plugin.TaskInfo) {
	p.finish(t, nil)
}

// OnTaskFailed logs the attempt's duration and why it failed.
func (p *executorPlugin) OnTaskFailed(_ context.Context, t plugin.TaskInfo, reason error) {
	p.finish(t, reason)
}

func (p *executorPlugin) finish(t plugin.TaskInfo, reason error) {
	k := taskKey{t.JobID, t.Index, t.Attempt}
	p.mu.Lock()
	start, ok := p.started[k]
	delete(p.started, k)
	if ok {
		p.timed++
	}
	p.mu.Unlock()
	log := p.pc.Logger().With("task", t.TaskName, "job", t.JobID, "index", t.Index, "attempt", t.Attempt)
	switch {
	case !ok: // OnTaskStart did not run to the end; nothing to time
		log.Warn("task ended without a start time")
	case reason != nil:
		log.Warn("task failed", "duration", time.Since(start), "err", reason)
	default:
		log.Info("task succeeded", "duration", time.Since(start))
	}
}

// Shutdown sends the driver plugin how many tasks this executor timed.
// Executors shut down before the driver plugins, so the message arrives.
func (p *executorPlugin) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	n := p.timed
	p.mu.Unlock()
	return p.pc.Send(ctx, TasksTimed{Count: n})
}

var (
	_ plugin.Plugin         = taskTimer{}
	_ plugin.DriverPlugin   = (*driverPlugin)(nil)
	_ plugin.ExecutorPlugin = (*executorPlugin)(nil)
	_ plugin.TaskListener   = (*executorPlugin)(nil)
)

// estimate is the driver function.
func estimate(ctx context.Context, d *ember.Driver) error {
	samples := make([]Sample, tasks)
	for i := range samples {
		samples[i] = Sample{Seed: uint64(i), Points: pointsPerTask}
	}
	counts, err := ember.Map(ctx, d, countInside, samples)
	if err != nil {
		return err
	}
	var inside int64
	for _, n := range counts {
		inside += int64(n)
	}
	fmt.Printf("pi is roughly %.4f\n", 4*float64(inside)/float64(tasks*pointsPerTask))
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once a signal has started the shutdown, a second one ends the
	// program at once (the default action), should the shutdown take long.
	context.AfterFunc(ctx, stop)
	err := ember.Run(ctx, ember.Config{
		AppName: "pi",
		Master:  "local-cluster[2]",
		Plugins: []plugin.Plugin{taskTimer{}},
	}, estimate)
	if err != nil {
		log.Fatal(err)
	}
}
