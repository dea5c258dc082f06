package driver

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/emberhq/ember/internal/metrics"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// TaskFailure is the error of a job whose task failed too often, or
// failed permanently.
type TaskFailure struct {
	Task       string
	Index      int
	Attempts   int
	ExecutorID string // where the last attempt ran
	Cause      error
	Permanent  bool // the last attempt said another would fail the same way
}

func (e *TaskFailure) Error() string {
	return FailureText(e.Task, e.Index, e.Attempts, e.ExecutorID, e.Cause, e.Permanent)
}

// FailureText is the text of a job's failure: which task and input failed,
// how many times, where it last ran and why, and whether its last failure
// was permanent (so not retried).
func FailureText(task string, index, attempts int, executorID string, cause error, permanent bool) string {
	switch {
	case permanent && attempts > 1:
		// Earlier attempts failed without the mark, and were retried.
		return fmt.Sprintf("task %q failed permanently on inputs[%d] after %d failed attempts, not retried further; last attempt on executor %s: %v", task, index, attempts, executorID, cause)
	case permanent:
		return fmt.Sprintf("task %q failed permanently on inputs[%d], not retried; on executor %s: %v", task, index, executorID, cause)
	case attempts == 1: // ember.task.maxFailures set to 1
		return fmt.Sprintf("task %q failed on inputs[%d], its one attempt allowed (ember.task.maxFailures), on executor %s: %v", task, index, executorID, cause)
	}
	return fmt.Sprintf("task %q failed %d times on inputs[%d]; last attempt on executor %s: %v", task, attempts, index, executorID, cause)
}

func (e *TaskFailure) Unwrap() error { return e.Cause }

// Progress is a job's counts, safe to read while it runs. Make one with
// NewProgress.
type Progress struct {
	total         int
	done, running atomic.Int64
	job           atomic.Int64 // the job's ID, once RunJob has given it one
}

// NewProgress returns the Progress of a job of total tasks. The total is
// set here, before anyone can read it.
func NewProgress(total int) *Progress { return &Progress{total: total} }

// Job returns the ID of the job, or 0 before RunJob has given it one.
func (p *Progress) Job() int { return int(p.job.Load()) }

// Counts returns tasks done (in a job of RunJobEach, inputs failed for
// good included), running (on executors, as the driver reckons it: an
// attempt sent ahead of the slots counts once one ahead of it on its
// executor has ended; see execState.waiting) and in total.
func (p *Progress) Counts() (done, running, total int) {
	return int(p.done.Load()), int(p.running.Load()), p.total
}

// job is one RunJob call.
type job struct {
	id       string
	task     string
	inputs   [][]byte
	results  [][]byte
	failures []int
	logged   int // failed attempts logged (see maxFailuresLogged)
	left     int
	progress *Progress
	running  prometheus.Gauge // its task's ember_tasks_running, looked up once
	err      error
	// cancelCode and cancelText are err as its TASK_CANCELs carry it
	// (cancelFrame), computed once by failJobLocked.
	cancelCode uint32
	cancelText string
	done       chan struct{} // closed when finished (err set or all results in)
	// errs, in a job of RunJobEach (non-nil there, even for no inputs),
	// holds the error of each input whose task failed for good: it fails
	// that input alone, and the others run on; in a job of RunJob it
	// fails the job. finished, there, marks the inputs whose task has
	// succeeded or failed for good.
	errs     []error
	finished []bool
	// ranShort: an attempt has succeeded holding its slot for less than
	// ShortTask, and ranLong: one has held it longer (succeeding or not);
	// slotMean is the mean time its successful attempts held their slot,
	// weighted to the recent ones. See aheadPerSlot.
	ranShort, ranLong bool
	slotMean          time.Duration
}

// ShortTask is how long an attempt may hold its executor slot for its task
// to count as short. The attempts of a job whose attempts have all run
// shorter are sent to executors ahead of free slots, to wait there for
// one (Config.TaskPrefetch): a slot would otherwise stand idle between an
// attempt's end and the next TASK's arrival, a round trip to the driver
// that costs short tasks a good share of their job's time. No more are
// sent ahead than make about ShortTask of work per slot, so that at the
// job's end an executor's slots finish at most about that much later than
// they would have without.
const ShortTask = 5 * time.Millisecond

const (
	// maxAheadPerSlot bounds the attempts sent ahead per slot of an
	// executor, however short a job's tasks (see aheadPerSlot).
	maxAheadPerSlot = 4
	// maxAheadInput is the largest input sent ahead of a free slot: the
	// attempts waiting on an executor hold their inputs there, and
	// maxAheadPerSlot inputs of the default MaxMessageBytes (4 MiB) would
	// be 16 MiB per slot.
	maxAheadInput = 64 << 10
)

// aheadPerSlot is how many of j's attempts may be sent ahead of free slots
// per slot of an executor: none until one has reported running short, and
// none once one has run long; otherwise as many as fit in ShortTask at the
// mean time its attempts held their slot, from 1 to maxAheadPerSlot.
func (j *job) aheadPerSlot() int {
	if !j.ranShort || j.ranLong {
		return 0
	}
	return int(min(max(ShortTask/max(j.slotMean, time.Microsecond), 1), maxAheadPerSlot))
}

// ran records how long one of j's attempts held its slot, and whether it
// succeeded. A failure that was quick says nothing of the job's tasks:
// one whose every attempt fails must not send attempts ahead, where they
// would run before its retries had failed the job (maxFailures rounds on
// one slot would have become rounds on each slot and those sent ahead).
func (j *job) ran(slot time.Duration, ok bool) {
	switch {
	case slot >= ShortTask:
		j.ranLong = true
	case !ok:
	case !j.ranShort:
		j.ranShort, j.slotMean = true, slot
	default:
		j.slotMean += (slot - j.slotMean) / 8
	}
}

// slotTime is how long f's attempt held its slot, as its TASK_RESULT says;
// a value past what a Duration holds is the longest one (it wrapped to a
// negative, a short task).
func slotTime(f *wire.Frame) time.Duration {
	return time.Duration(min(f.SlotMicros, uint64(math.MaxInt64/int64(time.Microsecond)))) * time.Microsecond
}

// ended returns what runJob returns for j, ended by err: a job of RunJob
// returns err alone; one of RunJobEach keeps the outcomes of the inputs
// that had finished, and gives the others err. j's results no longer
// change: once j.err is set, results that come are not kept.
func (j *job) ended(err error) ([][]byte, []error, error) {
	if j.errs == nil {
		return nil, nil, err
	}
	for i, done := range j.finished {
		if !done {
			j.errs[i] = err
		}
	}
	return j.results, j.errs, err
}

// attempt is one run of one task of a job.
type attempt struct {
	run     uint64
	job     *job
	index   int
	attempt int
	avoid   string // executor of the previous failed attempt
	// noAhead: sent only into a free slot, never ahead of one: the
	// previous attempt was lost with its executor, not counted, behind
	// attempts that may have been running (see removeExecutor).
	noAhead bool
	exec    *execState
	// sent: its TASK is queued on the connection; cancel: its job ended
	// before that, so whoever queues the TASK queues its TASK_CANCEL next.
	// A TASK_CANCEL queued first would reach the executor before the TASK,
	// find nothing to cancel, and the attempt would run on.
	sent, cancel bool
	// undelivered: the connection had closed when its TASK was queued, so
	// it never ran, and its loss is not the task's.
	undelivered bool
	// waiting: sent beyond its executor's slots, and in its waiting list
	// (see execState.waiting); not counted as running yet.
	waiting bool
}

// countRunning adds delta to the running count of a's job: its Progress
// and its task's ember_tasks_running.
func (a *attempt) countRunning(delta int) {
	a.job.progress.running.Add(int64(delta))
	a.job.running.Add(float64(delta))
}

// countEndLocked takes a, ended on e (a result, or e lost), off the
// running count: if it was running there, the attempt waiting longest on
// e takes its slot, and counts as running from now. s.mu is held.
func (e *execState) countEndLocked(a *attempt) {
	if a.waiting {
		e.waiting = slices.DeleteFunc(e.waiting, func(w *attempt) bool { return w == a })
		return
	}
	a.countRunning(-1)
	if len(e.waiting) > 0 {
		next := e.waiting[0]
		e.waiting = slices.Delete(e.waiting, 0, 1)
		next.waiting = false
		next.countRunning(1)
	}
}

// scheduler assigns task attempts to executor slots.
type scheduler struct {
	maxFailures int
	prefetch    int // Config.TaskPrefetch
	builtin     *metrics.Builtin
	log         *slog.Logger

	mu sync.Mutex // protects the following fields
	// noReplacements: executors that leave are not replaced (local
	// masters, from the start or once EndReplacements is called), so jobs
	// fail when the last one goes instead of waiting.
	noReplacements bool
	endedWhy       string // why EndReplacements ended them, if it did
	closed         error  // set by close: jobs fail with it
	// Attempts waiting for a slot: those that ran and are to run again
	// (failed, lost or cut short) go ahead of first attempts, so that a
	// job whose every task fails ends after about maxFailures rounds, not
	// after every input has run once (as Spark retries a failed task
	// before the rest of its task set).
	retries, pending queue
	runs             map[uint64]*attempt
	nextRun          uint64
	nextJob          int
	execs            []*execState // ready executors, in arrival order
	// noneSince is when the last ready executor left (zero before any
	// did): a job's warning that it waits for executors counts from it,
	// or from the job's start if that was later.
	noneSince time.Time
}

// RunJob runs task on every input and returns the outputs in input order.
// An attempt that fails is retried, preferably on another executor, until
// a task has failed maxFailures times. An attempt lost with its executor
// counts as a failure (a task that kills its process must not kill
// executor after executor), unless the executor was released or said it
// was stopping on its own (removeExecutor, result). Ending ctx cancels the
// running attempts. Without executors, the job waits for some to join
// (standalone, or a local-cluster replacing lost executors) or fails with
// CodeUnavailable when none can (NoReplacements, EndReplacements).
// Once the driver is closing, jobs fail with CodeUnavailable.
//
// RunJob lets go of each input, setting inputs[i] to nil, once its outcome
// is final (its task has succeeded, or in RunJobEach failed for good): no
// attempt of it runs again, and a job of large inputs held them all until
// it ended, on top of the outputs coming in.
func (d *Driver) RunJob(ctx context.Context, task string, inputs [][]byte, progress *Progress) ([][]byte, error) {
	results, _, err := d.runJob(ctx, task, inputs, progress, false)
	return results, err
}

// RunJobEach is RunJob for inputs that stand alone: a task that fails for
// good (ConfMaxTaskFailures attempts, or one marked permanent) fails its
// own input, with a *TaskFailure in errs at its index, and the others run
// on. The error is the job's (its ctx ended, the driver shut down, no
// executors left), as RunJob's; results and errs then keep the outcomes
// of the inputs that had finished, and errs holds it for the others. They
// are nil only when no job was made (an unregistered task, the driver
// closed).
func (d *Driver) RunJobEach(ctx context.Context, task string, inputs [][]byte, progress *Progress) (results [][]byte, errs []error, err error) {
	return d.runJob(ctx, task, inputs, progress, true)
}

func (d *Driver) runJob(ctx context.Context, task string, inputs [][]byte, progress *Progress, each bool) ([][]byte, []error, error) {
	if progress == nil {
		progress = NewProgress(len(inputs))
	}
	if !slices.Contains(d.cfg.Tasks, task) {
		// Executors have the tasks registered when they started, which
		// the handshake checked against this list.
		return nil, nil, plugin.Errorf(plugin.CodeNotFound,
			"task %q was not registered when Run started (declare tasks with ember.NewTask in package-level vars, so that every process has them)", task)
	}
	s := &d.sched
	s.mu.Lock()
	if err := s.closed; err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	s.nextJob++
	progress.job.Store(int64(s.nextJob))
	// Every state's series is served at 0 from the task's first job, so
	// that an alert on increase() sees the first lost or failed attempt:
	// a series born at 1 shows none. The states are a closed set and the
	// tasks registered, so these series are bounded.
	for _, state := range metrics.TaskStates {
		s.builtin.Tasks.WithLabelValues(task, state)
	}
	j := &job{
		id:       strconv.Itoa(s.nextJob),
		task:     task,
		inputs:   inputs,
		results:  make([][]byte, len(inputs)),
		failures: make([]int, len(inputs)),
		left:     len(inputs),
		progress: progress,
		running:  s.builtin.TasksRunning.WithLabelValues(task),
		done:     make(chan struct{}),
	}
	if each {
		j.errs, j.finished = make([]error, len(inputs)), make([]bool, len(inputs))
	}
	if ctx.Err() != nil && len(inputs) > 0 {
		// Before queueing its attempts: a TASK sent now would run the
		// task, side effects and all, for a caller that has gone (it
		// used to fill every free slot before the wait below saw ctx).
		s.mu.Unlock()
		return j.ended(jobEnded(ctx, j, ""))
	}
	if len(inputs) == 0 {
		close(j.done)
	}
	if len(s.execs) == 0 && s.noReplacements && len(inputs) > 0 {
		// Before queueing its attempts: without executors nothing
		// schedules again, and they would stay queued for ever.
		// A local master that never replaced executors (local[N], or
		// ember.executor.maxRetries 0) has no why of its own.
		err := plugin.Errorf(plugin.CodeUnavailable, "no executors to run tasks: lost executors are not replaced (local[N], or local-cluster[N] with ember.executor.maxRetries=0)")
		if s.endedWhy != "" {
			err = plugin.Errorf(plugin.CodeUnavailable, "no executors to run tasks, and lost executors are no longer replaced: %s", s.endedWhy)
		}
		sends := s.failJobLocked(j, err)
		s.mu.Unlock()
		s.send(sends)
		return j.ended(j.err)
	}
	for i := range inputs {
		s.pending.push(&attempt{job: j, index: i})
	}
	sends := s.scheduleLocked()
	waits := !s.noReplacements
	s.mu.Unlock()
	s.send(sends)

	// A job left without executors (standalone: none connected yet, or
	// all gone; local-cluster: a replacement starting) says so from time
	// to time, rather than wait in silence.
	var warn <-chan time.Time
	if waits && len(inputs) > 0 {
		t := time.NewTicker(d.cfg.NoExecutorsWarning)
		defer t.Stop()
		warn = t.C
	}
	start := time.Now()
	for ended := false; !ended; {
		select {
		case <-j.done:
			ended = true
		case <-ctx.Done():
			s.mu.Lock()
			sends := s.failJobLocked(j, jobEnded(ctx, j, s.heldNoteLocked(j)))
			s.mu.Unlock()
			s.send(sends)
			<-j.done
			ended = true
		case now := <-warn:
			s.mu.Lock()
			none := len(s.execs) == 0
			waited := waitedForExecutors(start, s.noneSince, now)
			s.mu.Unlock()
			if !none {
				continue
			}
			if d.cfg.Local {
				d.log.Warn("job waiting for executors: none is ready (replacements of the lost ones are starting; give Map a ctx with a deadline to bound the wait)",
					"job", j.id, "task", task, "waited", waited)
				continue
			}
			d.log.Warn("job waiting for executors: none is connected (start some with the command logged at start-up, or give Map a ctx with a deadline)",
				"job", j.id, "task", task, "waited", waited, "driver", d.Addr())
		}
	}
	if j.err != nil {
		return j.ended(j.err)
	}
	return j.results, j.errs, nil
}

// jobEnded is the error of job j, whose ctx has ended: it matches
// ctx.Err() and, when the ctx was given one, its cause (context.Cause).
// A note, if any, follows in parentheses.
func jobEnded(ctx context.Context, j *job, note string) error {
	err := ctx.Err()
	if note != "" {
		note = " (" + note + ")"
	}
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return plugin.Errorf(plugin.CodeOf(err), "job %s: %w: %w%s", j.id, err, cause, note)
	}
	return plugin.Errorf(plugin.CodeOf(err), "job %s: %w%s", j.id, err, note)
}

// heldNoteLocked says why j's waiting attempts may not have run, when
// slots are held by attempts of jobs that have ended: their tasks were
// told to stop (their ctx ended) and have not returned, and a slot is
// free only once its task returns. "" otherwise. s.mu is held.
func (s *scheduler) heldNoteLocked(j *job) string {
	waiting := j.left - int(j.progress.running.Load())
	if j.err != nil || waiting <= 0 {
		return ""
	}
	held, slots := 0, 0
	for _, a := range s.runs {
		if a.job.err != nil {
			held++
		}
	}
	if held == 0 {
		return ""
	}
	for _, e := range s.execs {
		slots += e.slots
	}
	return fmt.Sprintf("%d of its tasks were waiting for a slot; tasks of ended jobs, told to stop, had not returned, holding %d of the executors' slots (%d in all; a task must return once its ctx ends)", waiting, held, slots)
}

// EndReplacements says that executors which leave will no longer be
// replaced (a local-cluster that gave up replacing them, why saying
// why): from now on jobs fail when no executor is left, and those
// waiting for one with none left fail at once.
func (d *Driver) EndReplacements(why string) {
	s := &d.sched
	s.mu.Lock()
	s.noReplacements, s.endedWhy = true, why
	var out []outFrame
	if len(s.execs) == 0 {
		out = s.failPendingLocked(plugin.Errorf(plugin.CodeUnavailable, "no executors left to run tasks, and lost executors are no longer replaced: %s", why))
	}
	s.mu.Unlock()
	s.send(out)
}

// failPendingLocked fails the jobs of the queued attempts with err, for
// want of executors, and empties the queue: nothing schedules again, so
// their inputs are let go. s.mu must be held.
func (s *scheduler) failPendingLocked(err error) []outFrame {
	var out []outFrame
	for _, q := range []*queue{&s.retries, &s.pending} {
		for _, a := range q.queued() {
			out = append(out, s.failJobLocked(a.job, err)...)
		}
		q.empty()
	}
	return out
}

// retryLocked queues the attempt after a, which ran (or was to run) on e,
// among the retries, avoiding e, and returns it. s.mu is held.
func (s *scheduler) retryLocked(a *attempt, e *execState) *attempt {
	r := &attempt{job: a.job, index: a.index, attempt: a.attempt + 1, avoid: e.info.ID}
	s.retries.push(r)
	return r
}

// queue is a FIFO of attempts.
type queue struct {
	items []*attempt
	head  int // items[:head] are taken, and nil
}

func (q *queue) push(a *attempt) { q.items = append(q.items, a) }

// first returns the attempt next in line, or nil.
func (q *queue) first() *attempt {
	if q.head == len(q.items) {
		return nil
	}
	return q.items[q.head]
}

// take removes the first attempt.
func (q *queue) take() {
	q.items[q.head] = nil
	q.head++
}

// queued returns the attempts in line, first first.
func (q *queue) queued() []*attempt { return q.items[q.head:] }

func (q *queue) empty() {
	clear(q.items)
	q.items, q.head = q.items[:0], 0
}

// compact reuses the room of taken attempts once they are half the queue:
// jobs that keep it from emptying would otherwise grow it by one entry per
// attempt ever queued.
func (q *queue) compact() {
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head > len(q.items)/2:
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
}

type outFrame struct {
	conn *rpc.Conn
	f    *wire.Frame
	task *attempt // a TASK's attempt; nil for other frames
}

// send queues frames computed under the lock, after releasing it. Frames
// computed by different goroutines may be queued in either order, so the
// TASK_CANCEL of an attempt whose TASK is not yet queued waits for it (see
// attempt.cancel).
func (s *scheduler) send(out []outFrame) {
	tasks := false
	var failed map[*attempt]bool
	for _, o := range out {
		if err := o.conn.SendControl(o.f); err != nil && o.task != nil {
			if failed == nil {
				failed = map[*attempt]bool{}
			}
			failed[o.task] = true
		}
		tasks = tasks || o.task != nil
	}
	if !tasks {
		return
	}
	var cancels []outFrame
	s.mu.Lock()
	for _, o := range out {
		if a := o.task; a != nil {
			a.sent, a.undelivered = true, failed[a]
			if a.cancel && !a.undelivered { // nothing to cancel where it never went
				cancels = append(cancels, cancelFrame(a))
			}
		}
	}
	s.mu.Unlock()
	s.send(cancels)
}

// cancelFrame is the TASK_CANCEL of a, whose job has ended: it carries the
// job's error (its code and text, cut to maxCancelText), which the task's
// ctx gets as its cause (context.Cause), so that a task can tell why: its
// Map's ctx canceled (with that ctx's own cause), another task failed, the
// driver stopping.
func cancelFrame(a *attempt) outFrame {
	j := a.job
	return outFrame{conn: a.exec.conn, f: &wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: a.run, Code: j.cancelCode, Error: j.cancelText}}
}

// maxCancelText bounds the job's error text that each TASK_CANCEL carries:
// a job ends with one TASK_CANCEL per running attempt (up to MaxSlots per
// executor), and a task needs to know why, not the whole of a long error
// (rpc.MaxErrorBytes, 16 KiB, made 256 MiB for one executor's slots).
const maxCancelText = 1 << 10

// cancelParts returns the code and text of err for TASK_CANCEL frames.
func cancelParts(err error) (uint32, string) {
	code, msg := rpc.ErrorParts(err)
	return uint32(code), rpc.CutText(msg, maxCancelText)
}

// scheduleLocked assigns queued attempts to free slots, retries first,
// and returns the TASK frames to send.
func (s *scheduler) scheduleLocked() []outFrame {
	var out []outFrame
	for {
		q := &s.retries
		a := q.first()
		if a == nil {
			q = &s.pending
			if a = q.first(); a == nil {
				break
			}
		}
		if a.job.err != nil { // job already over
			q.take()
			continue
		}
		perSlot := 0
		if !a.noAhead && len(a.job.inputs[a.index]) <= maxAheadInput {
			perSlot = a.job.aheadPerSlot()
		}
		e := s.pickLocked(a.avoid, perSlot)
		if e == nil {
			break
		}
		q.take()
		s.nextRun++
		a.run = s.nextRun
		a.exec = e
		e.running[a.run] = a
		e.jobs[a.job]++
		s.runs[a.run] = a
		if len(e.running) > e.slots {
			a.waiting = true
			e.waiting = append(e.waiting, a)
		} else {
			a.countRunning(1)
		}
		s.builtin.Tasks.WithLabelValues(a.job.task, "started").Inc()
		out = append(out, outFrame{task: a, conn: e.conn, f: &wire.Frame{
			Kind:    wire.Kind_KIND_TASK,
			Call:    a.run,
			Payload: a.job.inputs[a.index],
			Task: &wire.Task{
				JobId:   a.job.id,
				Name:    a.job.task,
				Index:   int32(a.index),
				Attempt: int32(a.attempt),
			},
		}})
	}
	s.retries.compact()
	s.pending.compact()
	return out
}

// close fails every job still running with err, cancelling its attempts,
// and makes later jobs fail with it at once. It returns the TASK_CANCEL
// frames to send.
func (s *scheduler) close(err error) []outFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = err
	out := s.failPendingLocked(err)
	for _, a := range s.runs {
		out = append(out, s.failJobLocked(a.job, err)...)
	}
	return out
}

// pickLocked returns the executor with the most room, preferring one
// other than avoid, and one with a free slot; nil when none has room. An
// executor's room is its free slots, and the attempts it may hold waiting
// for one: perSlot per slot, up to its ahead, while all it holds are
// attempts of jobs of short tasks (aheadOK). Executors leaving get none.
func (s *scheduler) pickLocked(avoid string, perSlot int) *execState {
	var best, fallback *execState
	bestFree, bestRoom := false, 0
	for _, e := range s.execs {
		if e.leaving {
			continue
		}
		r := e.slots - len(e.running)
		free := r > 0
		if perSlot > 0 && e.aheadOK() {
			r += min(perSlot*e.slots, e.ahead)
		}
		if r <= 0 {
			continue
		}
		if e.info.ID == avoid {
			fallback = e
			continue
		}
		// A free slot first: the attempt starts at once there, where
		// one sent ahead waits while that slot stands idle.
		if best == nil || free && !bestFree || free == bestFree && r > bestRoom {
			best, bestFree, bestRoom = e, free, r
		}
	}
	if best == nil {
		return fallback
	}
	return best
}

// aheadOK says whether e may take attempts ahead of its slots: every
// attempt it holds is of a job that sends attempts ahead, and that has not
// ended. An attempt of another job (one whose tasks run long, or not yet
// known to run short), or of one that has ended (its task told to stop,
// but a slot is free only once it returns), may hold its slot for
// minutes: attempts queued behind it would wait for it, and hold their
// job open, while another executor's slot stood free. s.mu is held.
func (e *execState) aheadOK() bool {
	for j := range e.jobs {
		if j.err != nil || j.aheadPerSlot() == 0 {
			return false
		}
	}
	return true
}

// leave handles e's LEAVING: it is stopping on its own, so it gets no
// more attempts, and those whose TASK is still on its way to it (it may
// close its stream before reading them) do not count when it goes.
func (s *scheduler) leave(e *execState) {
	s.mu.Lock()
	e.leaving = true
	s.mu.Unlock()
}

// MaxSlots bounds the slots the scheduler uses of one executor. Each
// running attempt may have a TASK and a TASK_CANCEL queued on the
// executor's connection at once, control frames that never wait for room,
// and a connection whose queue runs rpc.DefaultOverflowFrames past its
// bound closes as if the executor had stopped reading: with more slots
// than this, one Map's TASKs lost a healthy executor, and counted every
// attempt on it as failed.
const MaxSlots = rpc.DefaultOverflowFrames / 4

// UsableSlots is how many of the slots an executor reports the scheduler
// uses: at least one, at most MaxSlots.
func UsableSlots(reported int) int { return min(max(reported, 1), MaxSlots) }

// addExecutor makes a ready executor's slots available, up to MaxSlots.
func (s *scheduler) addExecutor(e *execState, slots int) {
	slots = UsableSlots(slots)
	s.mu.Lock()
	e.slots = slots
	e.ahead = s.aheadFor(slots)
	e.running = map[uint64]*attempt{}
	e.jobs = map[*job]int{}
	s.execs = append(s.execs, e)
	out := s.scheduleLocked()
	s.mu.Unlock()
	s.send(out)
}

// aheadFor is the most attempts beyond its slots an executor of slots may
// hold for jobs of short tasks: Config.TaskPrefetch, by default
// maxAheadPerSlot per slot, and never more than MaxSlots in all.
func (s *scheduler) aheadFor(slots int) int {
	n := s.prefetch
	switch {
	case n < 0:
		n = 0
	case n == 0:
		n = maxAheadPerSlot * slots
	}
	return min(n, MaxSlots-slots)
}

// waitedForExecutors is how long, at now, a job started at start has
// waited with no executor, the last having left at noneSince (zero if none
// has): since the later of the two, to the second. The job's age alone
// said a job that had run for minutes before its executors were lost had
// waited minutes.
func waitedForExecutors(start, noneSince, now time.Time) time.Duration {
	if noneSince.After(start) {
		start = noneSince
	}
	return now.Sub(start).Round(time.Second)
}

// removeExecutor reschedules the attempts running on an executor that
// has gone: lost with cause, or released (cause nil). An attempt lost with
// its executor counts as one of its task's failures, as in Spark: the task
// may be what killed the process (a fatal error, os.Exit, the kernel's
// OOM killer), and an executor that comes back, or the next one, would
// meet the same fate. Attempts of a released executor, or of one that
// said it was stopping on its own, do not count.
func (s *scheduler) removeExecutor(e *execState, cause error) {
	s.mu.Lock()
	for i, x := range s.execs {
		if x == e {
			s.execs = append(s.execs[:i], s.execs[i+1:]...)
			if len(s.execs) == 0 {
				s.noneSince = time.Now()
			}
			break
		}
	}
	var out []outFrame
	var running []string // what it may have been running, for the error below
	var failed []string  // those of running whose jobs had not ended: failed attempts
	// In run order, so that which attempts are requeued and which job
	// fails first do not depend on map order.
	for _, run := range slices.Sorted(maps.Keys(e.running)) {
		a := e.running[run]
		// An attempt whose TASK could not be queued (the connection had
		// closed) never ran. Nor did one whose TASK was not queued yet
		// (!sent): the connection has ended, so it cannot be. Of the
		// others, only those the driver counts as running (not waiting:
		// see execState.waiting) may have been: the executor starts TASKs
		// in the order they come, its slots at a time, and those sent
		// ahead of free slots wait behind them. (The order they come is
		// run order but where two goroutines queued TASKs for it at once:
		// then one that waited may be counted in place of one that ran.
		// An attempt sent into a free slot never waits, which is what
		// noAhead below relies on.)
		reached := a.sent && !a.undelivered
		mayHaveRun := reached && !a.waiting
		if mayHaveRun {
			what := fmt.Sprintf("task %q on inputs[%d]", a.job.task, a.index)
			running = append(running, what)
			if a.job.err == nil {
				failed = append(failed, what)
			}
		}
		delete(s.runs, run)
		if !a.waiting {
			a.countRunning(-1)
		}
		s.builtin.Tasks.WithLabelValues(a.job.task, "lost").Inc()
		j := a.job
		if j.err != nil {
			continue
		}
		if cause != nil && !e.leaving && mayHaveRun {
			j.failures[a.index]++
			if j.failures[a.index] >= s.maxFailures {
				lost := plugin.Errorf(plugin.CodeUnavailable, "executor %s was lost while running it: %v", e.info.ID, cause)
				out = append(out, s.taskFailedLocked(a, &TaskFailure{Task: j.task, Index: a.index, Attempts: j.failures[a.index], ExecutorID: e.info.ID, Cause: lost})...)
				continue
			}
		}
		// One that reached it behind those is not counted: it was
		// waiting for a slot, unless an attempt ahead of it had ended
		// with its result lost with the executor. Its next attempt goes
		// only into a free slot (noAhead), where it never waits: a task
		// that kills its executor as it starts is counted at every second
		// loss at least, and fails its job.
		r := s.retryLocked(a, e)
		r.noAhead = reached && !mayHaveRun
	}
	e.running, e.jobs, e.waiting = nil, nil, nil
	out = append(out, s.scheduleLocked()...)
	if len(s.execs) == 0 && s.noReplacements {
		what := ""
		if len(running) > 0 {
			// The task may be what killed it.
			what = " while running " + listRunning(running)
		}
		if cause != nil {
			what += ": " + cause.Error()
		}
		how := "was lost"
		if cause == nil {
			how = "left" // it stopped on its own
		}
		err := plugin.Errorf(plugin.CodeUnavailable, "no executors left to run tasks (the last one, %s, %s%s)", e.info.ID, how, what)
		out = append(out, s.failPendingLocked(err)...)
	}
	s.mu.Unlock()
	if cause != nil && !e.leaving && len(failed) > 0 {
		// Failed attempts, as those that return an error are (result).
		// Not those of jobs that had ended (failed, canceled, or failed
		// by the driver's shutdown): nobody waits for them.
		s.log.Warn("task attempts lost with their executor", "executor", e.info.ID, "attempts", listRunning(failed), "err", cause)
	}
	s.send(out)
}

// listRunning names up to three of the attempts an executor was running,
// and how many more there were.
func listRunning(running []string) string {
	s := strings.Join(running[:min(len(running), 3)], ", ")
	if len(running) > 3 {
		s += fmt.Sprintf(" and %d more", len(running)-3)
	}
	return s
}

// result handles a TASK_RESULT frame.
func (s *scheduler) result(e *execState, f *wire.Frame) {
	s.mu.Lock()
	a, ok := s.runs[f.Call]
	if !ok || a.exec != e { // lost, or not this executor's to report
		s.mu.Unlock()
		return
	}
	delete(s.runs, f.Call)
	delete(e.running, f.Call)
	j := a.job
	if e.jobs[j]--; e.jobs[j] == 0 {
		delete(e.jobs, j)
	}
	e.countEndLocked(a)
	var out []outFrame
	var logFailure func() // after the lock
	// Cut short by its executor stopping on its own, which said so first
	// (LEAVING: it gets nothing more). Not the task's failure: it runs
	// elsewhere. (One told to stop by STOP was, by Close, after its job
	// had ended.) The flag alone, from an executor that never said it was
	// leaving, would have attempts rerun without end.
	stopping := f.Code != 0 && f.ExecutorStopping && e.leaving
	state := "succeeded"
	switch {
	case j.err != nil:
		state = "canceled" // its job had ended: the attempt was told to stop
	case stopping:
		state = "lost"
	case f.Code != 0:
		state = "failed"
	}
	s.builtin.Tasks.WithLabelValues(j.task, state).Inc()
	switch {
	case j.err != nil:
	case stopping:
		s.retryLocked(a, e)
	case f.Code == 0:
		j.ran(slotTime(f), true)
		j.results[a.index] = f.Payload
		j.inputs[a.index] = nil // no attempt of it runs again
		if j.finished != nil {
			j.finished[a.index] = true
		}
		j.progress.done.Add(1)
		j.left--
		if j.left == 0 {
			close(j.done)
		}
	default:
		j.ran(slotTime(f), false)
		j.failures[a.index]++
		cause := rpc.WireError(f.Code, f.Error)
		retry := !f.Permanent && j.failures[a.index] < s.maxFailures
		if retry {
			s.retryLocked(a, e)
		} else {
			out = s.taskFailedLocked(a, &TaskFailure{Task: j.task, Index: a.index, Attempts: j.failures[a.index], ExecutorID: e.info.ID, Cause: cause, Permanent: f.Permanent})
		}
		if j.logged < maxFailuresLogged {
			j.logged++
			failures, last := j.failures[a.index], j.logged == maxFailuresLogged
			logFailure = func() {
				s.log.Warn("task attempt failed", "job", j.id, "task", j.task, "index", a.index,
					"failures", failures, "max_failures", s.maxFailures, "retry", retry, "permanent", f.Permanent, "executor", e.info.ID, "err", cause)
				if last {
					s.log.Warn("further failed attempts of this job are not logged; ember_tasks_total{state=\"failed\"} counts them", "job", j.id, "task", j.task)
				}
			}
		}
	}
	out = append(out, s.scheduleLocked()...)
	s.mu.Unlock()
	if logFailure != nil {
		logFailure()
	}
	s.send(out)
}

// maxFailuresLogged bounds the failed attempts of one job that are logged,
// one line each: a job whose every task fails would otherwise log
// maxFailures lines per input.
const maxFailuresLogged = 10

// taskFailedLocked records that a's task has failed for good: its input's
// error in a job of RunJobEach, whose other inputs run on; the job's
// otherwise (failJobLocked). s.mu is held.
func (s *scheduler) taskFailedLocked(a *attempt, failure *TaskFailure) []outFrame {
	j := a.job
	if j.errs == nil {
		return s.failJobLocked(j, failure)
	}
	j.errs[a.index] = failure
	j.finished[a.index] = true
	j.inputs[a.index] = nil // no attempt of it runs again
	j.progress.done.Add(1)
	j.left--
	if j.left == 0 {
		close(j.done)
	}
	return nil
}

// failJobLocked ends j with err and cancels its running attempts. They
// keep their slots until their executors report them ended (result) or are
// lost: a task function that does not watch its ctx runs on regardless,
// and the slot is not free until it returns. Pending attempts are dropped
// lazily by scheduleLocked.
func (s *scheduler) failJobLocked(j *job, err error) []outFrame {
	if j.err != nil || j.left == 0 {
		return nil
	}
	j.err = err
	j.cancelCode, j.cancelText = cancelParts(err)
	var out []outFrame
	for _, a := range s.runs {
		switch {
		case a.job != j:
		case a.sent:
			out = append(out, cancelFrame(a))
		default:
			a.cancel = true // its TASK's sender sends it
		}
	}
	close(j.done)
	return out
}
