// Command workqueue is a coordinator that hands jobs to workers on its
// executors, as a crawler or a build farm does. Each worker long-polls the
// driver for its next job (an Ask that the driver answers once it has
// one), and sends the result back. The queue loses no job: it keeps each
// job it hands out, by the executor that asked, until the result comes,
// and hands it out again if that executor leaves first.
//
//	go run ./examples/workqueue
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

// The messages. Every process registers them, in init.
type (
	NextJob struct{}
	Job     struct{ ID, N int }
	Result  struct{ ID, Value int }
)

func init() {
	plugin.RegisterMessage[NextJob]()
	plugin.RegisterMessage[Job]()
	plugin.RegisterMessage[Result]()
}

// workersPerExecutor is how many jobs each executor runs at once.
const workersPerExecutor = 4

// workqueue pairs the two sides under one name. The driver side is q,
// which main also uses to add jobs and wait for their results.
type workqueue struct{ q *queue }

func (workqueue) Name() string                          { return "workqueue" }
func (w workqueue) DriverPlugin() plugin.DriverPlugin   { return w.q }
func (workqueue) ExecutorPlugin() plugin.ExecutorPlugin { return &worker{} }

// queue is the driver side: the jobs to hand out, those handed out and
// not yet done, and the results.
type queue struct {
	plugin.BaseDriverPlugin

	mu      sync.Mutex
	pending []Job
	taken   map[int]takenJob // by job ID
	results map[int]int      // by job ID
	more    chan struct{}    // closed and replaced when jobs are added
	want    int              // results to wait for
	done    chan struct{}    // closed once want results have come
}

type takenJob struct {
	job      Job
	executor string
}

func newQueue() *queue {
	return &queue{taken: map[int]takenJob{}, results: map[int]int{}, more: make(chan struct{}), done: make(chan struct{})}
}

// add queues jobs; Wait returns once all of them are done.
func (q *queue) add(jobs []Job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(q.pending, jobs...)
	q.want += len(jobs)
	q.wakeLocked()
}

// wakeLocked wakes the polls waiting for jobs; q.mu is held.
func (q *queue) wakeLocked() {
	close(q.more)
	q.more = make(chan struct{})
}

func (q *queue) wait(ctx context.Context) (map[int]int, error) {
	select {
	case <-q.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.results, nil
}

// Receive answers NextJob with a job, waiting for one if none is queued,
// for as long as the asker waits: its ctx ends when the worker gives up
// (it is stopping), so no job is taken for a worker that has gone. It
// records Results.
func (q *queue) Receive(ctx context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case NextJob:
		for {
			q.mu.Lock()
			if len(q.pending) > 0 {
				j := q.pending[0]
				q.pending = q.pending[1:]
				id, _ := plugin.SenderID(ctx)
				q.taken[j.ID] = takenJob{j, id}
				q.mu.Unlock()
				return j, nil
			}
			more := q.more
			q.mu.Unlock()
			select {
			case <-more:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	case Result:
		q.mu.Lock()
		defer q.mu.Unlock()
		delete(q.taken, m.ID)
		if _, dup := q.results[m.ID]; !dup {
			q.results[m.ID] = m.Value
			if len(q.results) == q.want {
				close(q.done)
			}
		}
		return nil, nil
	}
	return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
}

// MaxConcurrentReceives makes queue a plugin.ConcurrentReceiver: each
// waiting worker holds one Receive, so this must be more than all the
// workers there may be, or the Results behind their polls would wait.
func (*queue) MaxConcurrentReceives() int { return 256 }

// OnExecutorAdded and OnExecutorRemoved make queue a
// plugin.ExecutorListener: the jobs an executor took and did not finish
// go back in the queue when it leaves. A job taken just as its worker gave
// up is among them: the worker never got it.
func (*queue) OnExecutorAdded(context.Context, plugin.ExecutorInfo) {}

func (q *queue) OnExecutorRemoved(_ context.Context, e plugin.ExecutorInfo, _ error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	requeued := false
	for id, t := range q.taken {
		if t.executor == e.ID {
			delete(q.taken, id)
			q.pending = append(q.pending, t.job)
			requeued = true
		}
	}
	if requeued {
		q.wakeLocked()
	}
}

// worker is the executor side: workersPerExecutor goroutines that ask for
// jobs and send back their results until the plugin shuts down.
type worker struct {
	plugin.BaseExecutorPlugin
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func (w *worker) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	ctx, stop := context.WithCancel(context.Background())
	w.stop = stop
	for range workersPerExecutor {
		w.wg.Go(func() { work(ctx, pc) })
	}
	return nil
}

// work runs jobs until ctx ends. Canceling ctx while it waits for a job
// ends the driver's wait too.
func work(ctx context.Context, pc plugin.ExecutorContext) {
	for ctx.Err() == nil {
		j, err := plugin.Ask[Job](ctx, pc, NextJob{})
		switch {
		case ctx.Err() != nil || errors.Is(err, plugin.ErrClosed):
			return // stopping, or the driver has gone
		case err != nil:
			log.Printf("worker: asking for a job: %v", err)
			select { // then ask again
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		// The job: the sum of the squares up to N.
		v := 0
		for i := 1; i <= j.N; i++ {
			v += i * i
		}
		if err := pc.Send(ctx, Result{ID: j.ID, Value: v}); err != nil && ctx.Err() == nil {
			log.Printf("worker: sending the result of job %d: %v", j.ID, err)
		}
	}
}

// Shutdown stops the workers: those waiting for a job give up, and the
// driver's waits for them end.
func (w *worker) Shutdown(context.Context) error {
	w.stop()
	w.wg.Wait()
	return nil
}

var (
	_ plugin.DriverPlugin       = (*queue)(nil)
	_ plugin.ConcurrentReceiver = (*queue)(nil)
	_ plugin.ExecutorListener   = (*queue)(nil)
	_ plugin.ExecutorPlugin     = (*worker)(nil)
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once a signal has started the shutdown, a second one ends the
	// program at once (the default action), should the shutdown take long.
	context.AfterFunc(ctx, stop)
	q := newQueue()
	err := ember.Run(ctx, ember.Config{
		AppName: "workqueue",
		Master:  "local-cluster[2]",
		Plugins: []plugin.Plugin{workqueue{q}},
	}, func(ctx context.Context, d *ember.Driver) error {
		const jobs = 40
		var js []Job
		for i := 1; i <= jobs; i++ {
			js = append(js, Job{ID: i, N: i})
		}
		q.add(js)
		results, err := q.wait(ctx)
		if err != nil {
			return err
		}
		sum := 0
		for _, v := range results {
			sum += v
		}
		fmt.Printf("%d jobs done\n", len(results))
		fmt.Printf("the sum of their results is %d\n", sum)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
