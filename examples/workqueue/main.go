// Command workqueue is a coordinator that hands jobs to workers on its
// executors, as a crawler or a build farm does. Each worker long-polls the
// driver for its next job (an Ask that the driver answers once it has
// one), and sends the result back. The queue loses no job: it leases each
// job it hands out to the executor that asked, for a limited time, and
// hands the job out again if the worker gives it back (its poll had given
// up when the job came), if that executor leaves, or if the lease runs
// out before the result comes. A job may so be done more than once: its first
// result counts, and the others are ignored.
//
//	go run ./examples/workqueue
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"maps"
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
	// NextJob asks the driver for a job.
	NextJob struct{}
	// Job is a job to do. Attempt counts the times it was handed out
	// before this one, but for those its worker gave back (which no
	// worker took): 0 the first time.
	Job struct{ ID, N, Attempt int }
	// Result is a job's outcome.
	Result struct{ ID, Value int }
	// Returned gives back a job whose poll had given up when the job
	// came: the worker never took it (Attempt tells that hand-out from
	// one after its lease ran out).
	Returned struct{ ID, Attempt int }
)

func init() {
	plugin.RegisterMessage[NextJob]()
	plugin.RegisterMessage[Job]()
	plugin.RegisterMessage[Result]()
	plugin.RegisterMessage[Returned]()
}

const (
	// workersPerExecutor is how many jobs each executor runs at once.
	workersPerExecutor = 4

	// pollTimeout bounds each poll for a job: a worker asks again after
	// it. A poll that waits for ever holds its driver-side handler for
	// ever, and a worker whose driver is cut off (no error yet, the
	// connection half-open) waits as long. A poll that gives up as a job
	// comes makes the job's reply come too late, and the worker gives
	// the job back (OnReplyDropped).
	pollTimeout = time.Second

	// leaseTime is how long a worker may hold a job before the queue
	// hands it out again. Choose it well above the longest a job may
	// take, the way back of its result included: a lease that runs out
	// under a job still running has the job done again, for nothing
	// (and again each time the lease runs out, until a result comes).
	// But not far above: it is how long a job waits when its worker is
	// stuck, or never got it and could not say so (its executor was cut
	// off as the reply came). These jobs take
	// microseconds, so half a second has room to spare, even under the
	// race detector, and keeps the run short; real jobs need seconds or
	// minutes. Jobs whose time varies widely are better served by a
	// short lease that their worker renews as it goes (a heartbeat) than
	// by one long enough for the slowest.
	leaseTime = 500 * time.Millisecond

	// slowJob is a job whose first attempt overruns its lease, as a job
	// on a stuck or overloaded worker does: the queue hands it out again,
	// another worker does it, and the first worker's result, when it
	// comes, is ignored. To show this in every run, and quickly, that
	// attempt does not sleep for longer than the lease (a sleep would race
	// the lease's timer, and slow the run): it goes on until its executor
	// stops, which is once every job is done, so long after the lease ran
	// out and the job was done elsewhere. Its worker then sends the
	// result all the same.
	slowJob = 7
)

// workqueue pairs the two sides under one name. The driver side is q,
// which main also uses to add jobs and wait for their results; poll is
// the workers' poll timeout (0: pollTimeout).
type workqueue struct {
	q    *queue
	poll time.Duration
}

func (workqueue) Name() string                            { return "workqueue" }
func (w workqueue) DriverPlugin() plugin.DriverPlugin     { return w.q }
func (w workqueue) ExecutorPlugin() plugin.ExecutorPlugin { return &worker{poll: w.poll} }

// The optional interfaces queue implements, checked at compile time: a
// method with another signature would compile, and never be called.
var (
	_ plugin.ConcurrentReceiver = (*queue)(nil)
	_ plugin.ExecutorListener   = (*queue)(nil)
)

// queue is the driver side: the jobs to hand out, those leased and not
// yet done, and the results.
type queue struct {
	plugin.BaseDriverPlugin

	mu       sync.Mutex     // guards the fields below
	pending  []Job          // to hand out, in order
	leased   map[int]*lease // handed out, no result yet; by job ID
	results  map[int]int    // the first result of each job, by job ID
	more     chan struct{}  // closed and replaced when jobs are queued
	want     int            // results to wait for
	done     chan struct{}  // closed once want results have come
	reissued int            // jobs handed out again
	returned int            // of those, jobs given back by their worker
	expired  map[int]int    // of those, jobs whose lease ran out: times, by job ID
	ignored  int            // results that came for a job done already
}

// lease is a job handed out to a worker on executor. Its result is due
// within leaseTime: timer fires then, and hands the job out again unless
// the lease has ended first. A lease is known by its pointer, so that a
// timer that fires just as its lease ends (its executor left, say)
// cannot end the lease that replaced it.
type lease struct {
	job      Job
	executor string // who asked for it: plugin.SenderID
	timer    *time.Timer
}

func newQueue() *queue {
	return &queue{
		leased:  map[int]*lease{},
		results: map[int]int{},
		expired: map[int]int{},
		more:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// add queues jobs; wait returns once all of them are done.
func (q *queue) add(jobs []Job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(q.pending, jobs...)
	q.want += len(jobs)
	q.wakeLocked()
}

// wait waits until every job added is done, or ctx ends, and returns
// their results by job ID.
func (q *queue) wait(ctx context.Context) (map[int]int, error) {
	select {
	case <-q.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return maps.Clone(q.results), nil
}

// sum adds up results.
func sum(results map[int]int) int {
	n := 0
	for _, v := range results {
		n += v
	}
	return n
}

// wakeLocked wakes the polls waiting for jobs; q.mu is held.
func (q *queue) wakeLocked() {
	close(q.more)
	q.more = make(chan struct{})
}

// takeLocked hands the next pending job to executor and leases it; ok is
// false when no job is pending. q.mu is held.
func (q *queue) takeLocked(executor string) (j Job, ok bool) {
	for len(q.pending) > 0 {
		j = q.pending[0]
		q.pending = q.pending[1:]
		if _, done := q.results[j.ID]; done {
			continue // queued again, then a late result came for it
		}
		l := &lease{job: j, executor: executor}
		l.timer = time.AfterFunc(leaseTime, func() { q.expire(l) })
		q.leased[j.ID] = l
		return j, true
	}
	return Job{}, false
}

// expire hands l's job out again: l ran out before the result came. It
// does nothing if l has ended meanwhile (the result came, or its
// executor left, as the timer fired).
func (q *queue) expire(l *lease) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.leased[l.job.ID] != l {
		return
	}
	log.Printf("workqueue: job %d: its lease on executor %s ran out; handing it out again", l.job.ID, l.executor)
	q.expired[l.job.ID]++
	q.requeueLocked(l, true)
}

// requeueLocked ends l and puts its job back in the queue, for its next
// attempt if its worker took it (taken: not given back); q.mu is held.
func (q *queue) requeueLocked(l *lease, taken bool) {
	l.timer.Stop()
	delete(q.leased, l.job.ID)
	j := l.job
	if taken {
		j.Attempt++
	}
	q.pending = append(q.pending, j)
	q.reissued++
	q.wakeLocked()
}

// Receive answers NextJob with a job, waiting for one if none is queued,
// for as long as the asker waits: its ctx ends when the worker gives up
// (its poll timed out, or it is stopping), so no job is taken for a
// worker that has gone. It records Results, and hands out again the jobs
// Returned.
func (q *queue) Receive(ctx context.Context, msg any) (any, error) {
	executor, _ := plugin.SenderID(ctx)
	switch m := msg.(type) {
	case NextJob:
		for {
			// Checked first: when a job comes as the asker gives up,
			// the select below may pick either.
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			q.mu.Lock()
			j, ok := q.takeLocked(executor)
			more := q.more
			q.mu.Unlock()
			if ok {
				return j, nil
			}
			select {
			case <-more:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	case Returned:
		q.mu.Lock()
		defer q.mu.Unlock()
		// Only the lease of that hand-out: the job may have been handed
		// out again since (its lease ran out), or be done.
		if l := q.leased[m.ID]; l != nil && l.executor == executor && l.job.Attempt == m.Attempt {
			q.returned++
			q.requeueLocked(l, false)
		}
		return nil, nil
	case Result:
		q.mu.Lock()
		defer q.mu.Unlock()
		// The first result of a job wins, whoever sends it. It may come
		// from a worker whose lease ran out: the job is done all the same
		// (its result does not depend on who did it), and a worker it was
		// handed to again, if any, works for nothing. A result that comes
		// second (the late one, or the next worker's) is ignored, so the
		// job counts once.
		if _, done := q.results[m.ID]; done {
			q.ignored++
			log.Printf("workqueue: job %d: ignoring a result from executor %s: done already", m.ID, executor)
			return nil, nil
		}
		if l := q.leased[m.ID]; l != nil {
			l.timer.Stop()
			delete(q.leased, m.ID)
		}
		q.results[m.ID] = m.Value
		if len(q.results) == q.want {
			close(q.done)
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
// plugin.ExecutorListener: the jobs leased to an executor that leaves go
// back in the queue at once, without waiting for their leases to run
// out. A job taken just as its worker gave up is among them: the worker
// never got it.
func (*queue) OnExecutorAdded(context.Context, plugin.ExecutorInfo) {}

func (q *queue) OnExecutorRemoved(_ context.Context, e plugin.ExecutorInfo, _ error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range q.leased {
		if l.executor == e.ID {
			log.Printf("workqueue: job %d: executor %s left; handing it out again", l.job.ID, e.ID)
			q.requeueLocked(l, true)
		}
	}
}

// Shutdown stops the lease timers, so that none fires once the plugin
// has gone, and logs how often a job was handed out again. It runs once
// every executor has gone and all they sent has been received, late
// results included.
func (q *queue) Shutdown(context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range q.leased {
		l.timer.Stop()
	}
	log.Printf("workqueue: jobs handed out again: %d (given back by their worker: %d); results ignored: %d", q.reissued, q.returned, q.ignored)
	return nil
}

// worker is the executor side: workersPerExecutor goroutines that ask for
// jobs and send back their results until the plugin shuts down.
type worker struct {
	plugin.BaseExecutorPlugin
	poll time.Duration // each poll's timeout; 0: pollTimeout
	pc   plugin.ExecutorContext
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func (w *worker) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	if w.poll <= 0 {
		w.poll = pollTimeout
	}
	w.pc = pc
	ctx, stop := context.WithCancel(context.Background())
	w.stop = stop
	for range workersPerExecutor {
		w.wg.Go(func() { w.work(ctx) })
	}
	return nil
}

// OnReplyDropped makes worker a plugin.DroppedReplyListener: a job that
// came after its poll had timed out went to nobody, and goes back to the
// queue at once, rather than when its lease runs out. (Once the plugin's
// workers are stopping, the executor no longer calls it; the queue then
// takes back that executor's jobs when it leaves.)
func (w *worker) OnReplyDropped(ctx context.Context, reply any) {
	j, ok := reply.(Job)
	if !ok {
		return
	}
	if err := w.pc.Send(ctx, Returned{ID: j.ID, Attempt: j.Attempt}); err != nil {
		log.Printf("worker: giving back job %d: %v (its lease will run out)", j.ID, err)
	}
}

// work runs jobs until ctx ends. Canceling ctx while it waits for a job
// ends the driver's wait too; a job it is running, it finishes, and sends
// the result.
func (w *worker) work(ctx context.Context) {
	for ctx.Err() == nil {
		pollCtx, cancel := context.WithTimeout(ctx, w.poll)
		j, err := plugin.Ask[Job](pollCtx, w.pc, NextJob{})
		cancel()
		switch {
		case ctx.Err() != nil || errors.Is(err, plugin.ErrClosed):
			return // stopping, or the driver has gone
		case errors.Is(err, context.DeadlineExceeded):
			continue // no job in time: poll again
		case err != nil:
			log.Printf("worker: asking for a job: %v", err)
			select { // then ask again
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		v := run(ctx, j)
		// A Send that need not wait does not fail for an ended ctx, so a
		// worker that is stopping still delivers the result it holds: the
		// driver receives what executors send as they shut down.
		if err := w.pc.Send(ctx, Result{ID: j.ID, Value: v}); err != nil && ctx.Err() == nil {
			log.Printf("worker: sending the result of job %d: %v", j.ID, err)
		}
	}
}

// run does a job: the sum of the squares up to N. Like much real work, it
// does not stop halfway when ctx ends; it uses ctx only to make the first
// attempt of slowJob overrun its lease.
func run(ctx context.Context, j Job) int {
	if j.ID == slowJob && j.Attempt == 0 {
		<-ctx.Done() // see slowJob
	}
	v := 0
	for i := 1; i <= j.N; i++ {
		v += i * i
	}
	return v
}

// Shutdown stops the workers: those waiting for a job give up, and the
// driver's waits for them end; those running one finish it first.
func (w *worker) Shutdown(context.Context) error {
	w.stop()
	w.wg.Wait()
	return nil
}

var (
	_ plugin.DriverPlugin         = (*queue)(nil)
	_ plugin.ConcurrentReceiver   = (*queue)(nil)
	_ plugin.ExecutorListener     = (*queue)(nil)
	_ plugin.ExecutorPlugin       = (*worker)(nil)
	_ plugin.DroppedReplyListener = (*worker)(nil)
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
		Plugins: []plugin.Plugin{workqueue{q: q}},
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
		fmt.Printf("%d jobs done\n", len(results))
		fmt.Printf("the sum of their results is %d\n", sum(results))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
