// Command buildfarm runs a job of builds on a local-cluster whose executor
// crashes in the middle of it, as a build farm's worker does when a compiler
// segfaults or the OOM killer strikes. The cluster starts a new executor in
// the lost one's place, the crashed build runs again, and the job succeeds.
// Then it builds a target with a syntax error: that build fails for good
// (ember.Permanent), and its job fails after one attempt, not four.
//
// A plugin, membership, watches the cluster from the driver: it is a
// plugin.ExecutorListener, and counts the executors that joined, were lost
// and were released.
//
//	go run ./examples/buildfarm
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

const (
	executors = 2
	builds    = 12
	// crasher is the build whose first attempt kills its executor.
	crasher = 5
	// broken is a target whose sources do not compile.
	broken = 99
)

// Result is what a build returns.
type Result struct {
	Target  int
	Attempt int // 0 for the first attempt
}

// build "builds" a target. The first attempt of build crasher ends its
// executor's process at once, with status 3, as a crash would: no error
// returned, no hook run, no word to the driver. The driver runs the
// attempt again, preferably on another executor. Build broken fails with
// an error marked permanent: compiling it again would fail the same way,
// so the driver does not retry it.
var build = ember.NewTask("build", func(ctx context.Context, tc ember.TaskContext, target int) (Result, error) {
	switch {
	case target == crasher && tc.Attempt == 0:
		os.Exit(3)
	case target == broken:
		return Result{}, ember.Permanent(plugin.Errorf(plugin.CodeInvalidArgument, "target %d: syntax error at main.c:3", target))
	}
	return Result{Target: target, Attempt: tc.Attempt}, nil
})

// membership pairs the driver side with no executor side.
type membership struct{ p *driverPlugin }

func (m membership) Name() string                          { return "membership" }
func (m membership) DriverPlugin() plugin.DriverPlugin     { return m.p }
func (m membership) ExecutorPlugin() plugin.ExecutorPlugin { return nil }

// driverPlugin is a plugin.ExecutorListener, checked at compile time.
var _ plugin.ExecutorListener = (*driverPlugin)(nil)

// driverPlugin counts membership events. They arrive on the plugin's lane,
// one at a time, and Shutdown runs on the shutdown goroutine, so the counts
// are guarded.
type driverPlugin struct {
	plugin.BaseDriverPlugin

	mu                     sync.Mutex // protects the following fields
	joined, lost, released int
}

// OnExecutorAdded runs once an executor's plugins are initialised: the
// first ones, and each replacement.
func (p *driverPlugin) OnExecutorAdded(context.Context, plugin.ExecutorInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.joined++
}

// OnExecutorRemoved runs when an executor goes: with a reason when it was
// lost, with none when the driver released it (or it stopped on its own).
func (p *driverPlugin) OnExecutorRemoved(_ context.Context, e plugin.ExecutorInfo, reason error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if reason != nil {
		p.lost++
		return
	}
	p.released++
}

// Shutdown prints the counts. Driver plugins shut down after every
// executor has been released, and every event before it has been handled.
func (p *driverPlugin) Shutdown(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf("executors: %d joined, %d lost, %d released\n", p.joined, p.lost, p.released)
	return nil
}

var (
	_ plugin.DriverPlugin     = (*driverPlugin)(nil)
	_ plugin.ExecutorListener = (*driverPlugin)(nil)
)

// farm is the driver function.
func farm(ctx context.Context, d *ember.Driver) error {
	var first []string
	for _, e := range d.Executors() {
		first = append(first, e.ID)
	}
	targets := make([]int, builds)
	for i := range targets {
		targets[i] = i
	}
	results, err := ember.Map(ctx, d, build, targets)
	if err != nil {
		return err
	}
	retried := 0
	for _, r := range results {
		if r.Attempt > 0 {
			retried++
			fmt.Printf("build %d succeeded on attempt %d\n", r.Target, r.Attempt+1)
		}
	}
	fmt.Printf("%d builds done, %d of them retried\n", len(results), retried)

	// The replacement joins as soon as it has started: wait for it.
	if err := d.WaitExecutors(ctx, executors); err != nil {
		return err
	}
	for _, e := range d.Executors() {
		if !slices.Contains(first, e.ID) {
			fmt.Printf("executor %s replaced the lost one\n", e.ID)
		}
	}

	// A build that cannot succeed fails its job at once.
	_, err = ember.Map(ctx, d, build, []int{broken})
	var te *ember.TaskError
	if !errors.As(err, &te) || !te.Permanent {
		return fmt.Errorf("the broken build: got %v, want a permanent failure", err)
	}
	fmt.Printf("build %d failed for good after %d attempt: %v\n", broken, te.Attempts, te.Cause)
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal ends the program at once
	cfg := ember.Config{
		AppName: "buildfarm",
		Master:  fmt.Sprintf("local-cluster[%d]", executors),
		Plugins: []plugin.Plugin{membership{p: &driverPlugin{}}},
		// One build at a time per executor, and none sent ahead to wait
		// for it (these builds are quick enough to be), so that the crash
		// takes only its own build down with it: those waiting behind it
		// would run again too, as their second attempt. The output is
		// then the same on every run.
		Conf: map[string]string{ember.ConfExecutorSlots: "1", ember.ConfTaskPrefetch: "0"},
	}
	if err := ember.Run(ctx, cfg, farm); err != nil {
		log.Fatal(err)
	}
}
