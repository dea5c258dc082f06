package driver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// taskStream is an executor's end of a stream as the scheduler sees it:
// it records the frames written to it (their kind, call and error) and
// never delivers anything.
type taskStream struct {
	mu     sync.Mutex
	frames []*wire.Frame // copies
	done   chan struct{}
}

func (s *taskStream) Send(b *wire.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range b.Frames {
		s.frames = append(s.frames, &wire.Frame{Kind: f.Kind, Call: f.Call, Code: f.Code, Error: f.Error, Closed: f.Closed})
	}
	return nil
}

func (s *taskStream) RecvMsg(any) error {
	<-s.done
	return io.EOF
}

// sent returns the calls of the frames of kind sent so far.
func (s *taskStream) sent(kind wire.Kind) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var calls []uint64
	for _, f := range s.frames {
		if f.Kind == kind {
			calls = append(calls, f.Call)
		}
	}
	return calls
}

// pollSent waits until the stream has n frames of kind.
func pollSent(t *testing.T, s *taskStream, kind wire.Kind, n int) []uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if calls := s.sent(kind); len(calls) >= n {
			return calls
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v frames: got %v, want %d", kind, s.sent(kind), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// schedDriver returns a driver with one ready executor of the given slots
// whose stream records what the scheduler sends it.
func schedDriver(t *testing.T, slots int) (*Driver, *taskStream, *execState) {
	t.Helper()
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	stream, es := schedExecutor(t, d, "1", slots)
	return d, stream, es
}

// schedExecutor adds a ready executor of the given slots to d's scheduler,
// with a stream that records what the scheduler sends it.
func schedExecutor(t *testing.T, d *Driver, id string, slots int) (*taskStream, *execState) {
	t.Helper()
	stream := &taskStream{done: make(chan struct{})}
	conn := rpc.New(stream, nil, d, rpc.Options{})
	es := testExecState(d, plugin.ExecutorInfo{ID: id})
	es.conn = conn
	conn.Peer = es
	conn.Start()
	t.Cleanup(func() {
		close(stream.done)
		conn.Close(nil)
		conn.Wait()
	})
	d.sched.addExecutor(es, slots)
	return stream, es
}

// RunJob gives a job's Progress the job's ID, which the console's
// progress bar shows beside the task's name.
func TestProgressNamesItsJob(t *testing.T) {
	d, stream, es := schedDriver(t, 1)
	for want := 1; want <= 2; want++ {
		p := NewProgress(1)
		if got := p.Job(); got != 0 {
			t.Fatalf("Job before RunJob: got %d, want 0", got)
		}
		errs := make(chan error, 1)
		go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil}, p); errs <- err }()
		run := pollSent(t, stream, wire.Kind_KIND_TASK, want)[want-1]
		if got := p.Job(); got != want {
			t.Errorf("Job of job %d: got %d", want, got)
		}
		d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// A job's Progress can be read from another goroutine (the console
// progress bar) from the moment it is made; RunJob used to set its total
// meanwhile, a data race.
func TestProgressReadableWhileJobRuns(t *testing.T) {
	d, stream, es := schedDriver(t, 1)
	progress := NewProgress(1)
	stop := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			if _, _, total := progress.Counts(); total != 1 {
				t.Errorf("total: got %d, want 1", total)
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	job := make(chan error, 1)
	go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil}, progress); job <- err }()
	run := pollSent(t, stream, wire.Kind_KIND_TASK, 1)[0]
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
	if err := <-job; err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-read
	if done, running, total := progress.Counts(); done != 1 || running != 0 || total != 1 {
		t.Errorf("Counts: got %d done, %d running of %d; want 1, 0 of 1", done, running, total)
	}
}

// A canceled attempt keeps its slot until its executor reports it ended:
// the task function may not watch its ctx and run on, and a slot freed at
// once put the next job's attempts on top of it (an executor with one slot
// ran two attempts at once).
func TestCanceledAttemptKeepsItsSlotUntilItEnds(t *testing.T) {
	d, stream, es := schedDriver(t, 1)

	// Job 1 starts on the only slot, then its ctx ends.
	ctx, cancel := context.WithCancel(context.Background())
	job1 := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", [][]byte{nil}, nil); job1 <- err }()
	first := pollSent(t, stream, wire.Kind_KIND_TASK, 1)[0]
	cancel()
	if err := <-job1; plugin.CodeOf(err) != plugin.CodeCanceled {
		t.Fatalf("job 1: got %v, want CodeCanceled", err)
	}
	if got := pollSent(t, stream, wire.Kind_KIND_TASK_CANCEL, 1); got[0] != first {
		t.Fatalf("TASK_CANCEL for %v, want %d", got, first)
	}

	// Job 2 waits: the canceled attempt still runs on the slot.
	job2 := make(chan error, 1)
	go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil}, nil); job2 <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.sched.mu.Lock()
		queued := len(d.sched.pending.queued())
		d.sched.mu.Unlock()
		if queued == 1 {
			break
		}
		if got := stream.sent(wire.Kind_KIND_TASK); len(got) > 1 {
			t.Fatalf("TASK frames while the canceled attempt runs: %v, want only %d", got, first)
		}
		if time.Now().After(deadline) {
			t.Fatalf("job 2's attempt: never queued; TASK frames sent: %v", stream.sent(wire.Kind_KIND_TASK))
		}
		time.Sleep(time.Millisecond)
	}
	if got := stream.sent(wire.Kind_KIND_TASK); len(got) != 1 {
		t.Fatalf("TASK frames while the canceled attempt runs: %v, want only %d", got, first)
	}

	// The canceled attempt ends: job 2 gets the slot, and completes.
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: first, Code: uint32(plugin.CodeCanceled), Error: "canceled"})
	second := pollSent(t, stream, wire.Kind_KIND_TASK, 2)[1]
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: second, Payload: []byte("ok")})
	if err := <-job2; err != nil {
		t.Fatalf("job 2: %v", err)
	}
}

// The pending queue keeps its length to what is queued, even when jobs
// keep it from ever emptying: it used to grow by one entry per attempt
// ever queued, for as long as that lasted.
func TestPendingQueueStaysSmall(t *testing.T) {
	d, stream, es := schedDriver(t, 1)
	const jobs = 300
	errs := make(chan error, jobs)
	start := func() {
		go func() {
			_, err := d.RunJob(context.Background(), "t", [][]byte{nil}, nil)
			errs <- err
		}()
	}
	queued := func() (n, length int) {
		d.sched.mu.Lock()
		defer d.sched.mu.Unlock()
		return len(d.sched.pending.queued()), len(d.sched.pending.items)
	}
	start()
	start()
	longest := 0
	for i := 1; i <= jobs; i++ {
		run := pollSent(t, stream, wire.Kind_KIND_TASK, i)[i-1]
		if i+2 <= jobs {
			start() // the next job is queued before this one ends
			deadline := time.Now().Add(10 * time.Second)
			for n, length := queued(); n < 2; n, length = queued() {
				longest = max(longest, length)
				if time.Now().After(deadline) {
					t.Fatalf("job %d: %d attempts queued, want 2", i+2, n)
				}
				runtime.Gosched()
			}
		}
		_, length := queued()
		longest = max(longest, length)
		d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
	}
	for range jobs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if longest > 8 {
		t.Errorf("pending queue: reached %d entries with at most 2 attempts queued, want at most 8", longest)
	}
}

// Only LEAVING says an executor is stopping on its own, which the driver
// logs as its leaving rather than its loss. Results cut short by a stop
// (executor_stopping) also come from executors the driver told to stop
// (STOP, at Close), whose loss then is one during shutdown: they used to
// mark the executor leaving too.
func TestOnlyLeavingMarksAnExecutorLeaving(t *testing.T) {
	d, stream, es := schedDriver(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	job := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", [][]byte{nil}, nil); job <- err }()
	defer func() { cancel(); <-job }()
	run := pollSent(t, stream, wire.Kind_KIND_TASK, 1)[0]
	waitQueued(t, d)
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, ExecutorStopping: true,
		Code: uint32(plugin.CodeUnavailable), Error: "executor 1 is shutting down"})
	leaving := func() bool {
		d.sched.mu.Lock()
		defer d.sched.mu.Unlock()
		return es.leaving
	}
	if leaving() {
		t.Error("after a result cut short by a stop: leaving, want not (no LEAVING came)")
	}
	d.sched.leave(es)
	if !leaving() {
		t.Error("after LEAVING: not leaving, want leaving")
	}
}

// A job that ends while its TASK frames are still on their way to the
// connection (RunJob queues them after releasing the scheduler's lock)
// cancels its attempts after their TASKs, never before: a TASK_CANCEL that
// overtook its TASK found nothing to cancel at the executor, and the
// attempt ran on. Run many times, since the window is narrow.
func TestTaskCancelNeverOvertakesItsTask(t *testing.T) {
	for i := range 500 {
		d, stream, _ := schedDriver(t, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = d.RunJob(context.Background(), "t", [][]byte{nil}, nil)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			d.sched.mu.Lock()
			n := len(d.sched.runs)
			d.sched.mu.Unlock()
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the attempt was never assigned")
			}
			runtime.Gosched()
		}
		d.sched.send(d.sched.close(plugin.Errorf(plugin.CodeUnavailable, "closing")))
		<-done
		pollSent(t, stream, wire.Kind_KIND_TASK_CANCEL, 1)
		stream.mu.Lock()
		first := stream.frames[0].Kind
		stream.mu.Unlock()
		if first != wire.Kind_KIND_TASK {
			t.Fatalf("iteration %d: the first frame written is %v, want the TASK before its TASK_CANCEL", i, first)
		}
	}
}

// A job of a task the driver did not have when it started fails at once:
// executors have the tasks registered when they started (the handshake
// compared them). Its attempts used to fail on executor processes, which
// never registered it, until the job gave up.
func TestRunJobOfAnUnknownTask(t *testing.T) {
	d, _, _ := schedDriver(t, 1)
	_, err := d.RunJob(context.Background(), "registered later", [][]byte{nil}, nil)
	if plugin.CodeOf(err) != plugin.CodeNotFound || !strings.Contains(err.Error(), `task "registered later" was not registered when Run started`) {
		t.Errorf("RunJob of an unknown task: got %v, want NotFound saying so", err)
	}
}

// How an attempt's end on one executor counts toward its task's failures,
// with ember.task.maxFailures at 1: an attempt lost with its executor
// counts (Spark does the same: the task may be what killed the process,
// and one that does would otherwise kill executor after executor), while
// one whose executor was released, or refused or cut it short because it
// was stopping on its own, runs again elsewhere. Before, lost attempts
// never counted, and a stopping executor's refusals did.
func TestAttemptEndsAndFailureCounts(t *testing.T) {
	tests := []struct {
		name    string
		end     func(d *Driver, es *execState, run uint64)
		counted bool
	}{
		{"executor lost", func(d *Driver, es *execState, _ uint64) {
			d.sched.removeExecutor(es, plugin.Errorf(plugin.CodeUnavailable, "peer silent for 10s"))
		}, true},
		{"task failed", func(d *Driver, es *execState, run uint64) {
			d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Code: uint32(plugin.CodeInternal), Error: "boom"})
		}, true},
		{"executor released", func(d *Driver, es *execState, _ uint64) {
			d.sched.removeExecutor(es, nil)
		}, false},
		{"executor stopping: refused or cut short", func(d *Driver, es *execState, run uint64) {
			d.sched.leave(es) // its LEAVING comes first
			d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, ExecutorStopping: true,
				Code: uint32(plugin.CodeUnavailable), Error: "executor 1 is shutting down"})
		}, false},
		// Only LEAVING makes an executor's results "stopping": one that
		// never said so and refused every attempt that way had them
		// rerun without end, on itself when it had the only free slot.
		{"executor stopping without LEAVING", func(d *Driver, es *execState, run uint64) {
			d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, ExecutorStopping: true,
				Code: uint32(plugin.CodeUnavailable), Error: "executor 1 is shutting down"})
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, MaxTaskFailures: 1})
			if err != nil {
				t.Fatal(err)
			}
			stream1, es1 := schedExecutor(t, d, "1", 2)
			job := make(chan error, 1)
			go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil}, nil); job <- err }()
			run := pollSent(t, stream1, wire.Kind_KIND_TASK, 1)[0]
			waitQueued(t, d)
			tt.end(d, es1, run)
			if tt.counted {
				err := waitJob(t, job)
				var tf *TaskFailure
				if !errors.As(err, &tf) || tf.Attempts != 1 || tf.ExecutorID != "1" {
					t.Fatalf("job: got %v, want a TaskFailure after 1 attempt on executor 1", err)
				}
				return
			}
			// Not counted: the attempt runs again, on the next executor to
			// have a slot, and not on executor 1 though it may have two.
			stream2, es2 := schedExecutor(t, d, "2", 1)
			run = pollSent(t, stream2, wire.Kind_KIND_TASK, 1)[0]
			d.sched.result(es2, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
			if err := waitJob(t, job); err != nil {
				t.Fatalf("job: got %v, want success on executor 2", err)
			}
			go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil, nil}, nil); job <- err }()
			run = pollSent(t, stream2, wire.Kind_KIND_TASK, 2)[1]
			if got := stream1.sent(wire.Kind_KIND_TASK); len(got) != 1 {
				t.Errorf("TASKs to executor 1 after it left or said it was stopping: got %v, want only the first", got)
			}
			d.sched.result(es2, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
			run = pollSent(t, stream2, wire.Kind_KIND_TASK, 3)[2]
			d.sched.result(es2, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
			if err := waitJob(t, job); err != nil {
				t.Fatalf("second job: %v", err)
			}
			if got := stream1.sent(wire.Kind_KIND_TASK); len(got) != 1 {
				t.Errorf("TASKs to executor 1 after it left or said it was stopping: got %v, want only the first", got)
			}
		})
	}
}

// An executor lost while running a task fails the job once the task has
// been lost maxFailures times, with an error that says the executor was
// lost and why.
func TestLostAttemptsFailTheJob(t *testing.T) {
	var logs logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Tasks: []string{"t"}, MaxTaskFailures: 2})
	if err != nil {
		t.Fatal(err)
	}
	job := make(chan error, 1)
	stream, es := schedExecutor(t, d, "1", 1)
	go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil}, nil); job <- err }()
	pollSent(t, stream, wire.Kind_KIND_TASK, 1)
	waitQueued(t, d)
	d.sched.removeExecutor(es, errors.New("EOF"))
	stream, es = schedExecutor(t, d, "2", 1)
	pollSent(t, stream, wire.Kind_KIND_TASK, 1)
	waitQueued(t, d)
	d.sched.removeExecutor(es, errors.New("peer silent for 10s"))
	err = waitJob(t, job)
	var tf *TaskFailure
	if !errors.As(err, &tf) || tf.Attempts != 2 || tf.ExecutorID != "2" || plugin.CodeOf(err) != plugin.CodeUnavailable ||
		!strings.Contains(err.Error(), "executor 2 was lost while running it: peer silent for 10s") {
		t.Errorf("job: got %v, want an Unavailable TaskFailure after 2 attempts, saying executor 2 was lost and why", err)
	}
	// Each lost attempt is logged, as a failed one is.
	for _, want := range []string{
		`msg="task attempts lost with their executor" executor=1 attempts="task \"t\" on inputs[0]" err=EOF`,
		`msg="task attempts lost with their executor" executor=2`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("driver log: want a line containing %s; got\n%s", want, logs.String())
		}
	}
}

// An attempt whose job had ended (its ctx canceled, or failed by the
// driver's shutdown) is not logged as lost with its executor: nobody waits
// for it, and the line read as work lost (a multi-host trial's shutdown).
func TestLostAttemptsOfEndedJobsAreNotLogged(t *testing.T) {
	var logs logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Tasks: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	job := make(chan error, 1)
	stream, es := schedExecutor(t, d, "1", 1)
	go func() { _, err := d.RunJob(ctx, "t", [][]byte{nil}, nil); job <- err }()
	pollSent(t, stream, wire.Kind_KIND_TASK, 1)
	cancel()
	if err := waitJob(t, job); !errors.Is(err, context.Canceled) {
		t.Fatalf("job: got %v, want context.Canceled", err)
	}
	d.sched.removeExecutor(es, errors.New("EOF"))
	if strings.Contains(logs.String(), "task attempts lost") {
		t.Errorf("driver log: got a line for the lost attempt of a job that had ended:\n%s", logs.String())
	}
}

// waitJob returns the error of the RunJob reporting to job, failing the
// test if it has not returned within 10 seconds.
func waitJob(t *testing.T, job <-chan error) error {
	t.Helper()
	select {
	case err := <-job:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("RunJob has not returned after 10s")
		return nil
	}
}

// An attempt whose TASK could not be queued (its executor's connection had
// closed, and the executor was not removed yet) never ran: when the
// executor is removed, it runs again without counting a failure, though
// maxFailures is 1.
func TestUndeliveredAttemptDoesNotCount(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, MaxTaskFailures: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, es1 := schedExecutor(t, d, "1", 1)
	es1.conn.Close(plugin.Errorf(plugin.CodeUnavailable, "gone"))
	job := make(chan error, 1)
	go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil}, nil); job <- err }()
	waitQueued(t, d)
	d.sched.removeExecutor(es1, plugin.Errorf(plugin.CodeUnavailable, "gone"))
	stream2, es2 := schedExecutor(t, d, "2", 1)
	run := pollSent(t, stream2, wire.Kind_KIND_TASK, 1)[0]
	d.sched.result(es2, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
	if err := waitJob(t, job); err != nil {
		t.Errorf("job: got %v, want it run again on executor 2, its undelivered attempt not counted", err)
	}
}

// The other order of TestUndeliveredAttemptDoesNotCount's race: the
// executor's connection closes and HandleClose removes the executor after
// RunJob assigned an attempt to it (scheduleLocked) but before send has
// marked the attempt (its SendControl fails, as the connection is
// closed). The TASK was never queued, yet the attempt counts as lost with
// the executor and, with maxFailures 1, fails the job.
func TestAttemptRemovedBeforeItsTaskIsQueuedDoesNotCount(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, MaxTaskFailures: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, es1 := schedExecutor(t, d, "1", 1)
	s := &d.sched
	// RunJob's first half.
	s.mu.Lock()
	j := &job{id: "1", task: "t", inputs: [][]byte{nil}, results: make([][]byte, 1), failures: make([]int, 1), left: 1,
		progress: NewProgress(1), running: s.builtin.TasksRunning.WithLabelValues("t"), done: make(chan struct{})}
	s.pending.push(&attempt{job: j, index: 0})
	out := s.scheduleLocked()
	s.mu.Unlock()
	// The connection closes; HandleClose removes the executor.
	gone := plugin.Errorf(plugin.CodeUnavailable, "gone")
	es1.conn.Close(gone)
	s.removeExecutor(es1, gone)
	// RunJob's second half: the TASK cannot be queued.
	s.send(out)
	stream2, es2 := schedExecutor(t, d, "2", 1)
	select {
	case <-j.done:
		t.Fatalf("job failed: %v; want its attempt, never queued, run again without counting", j.err)
	default:
	}
	run := pollSent(t, stream2, wire.Kind_KIND_TASK, 1)[0]
	s.result(es2, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
	<-j.done
	if j.err != nil {
		t.Errorf("job: %v", j.err)
	}
}

// waitQueued waits until an attempt has been assigned and every one
// assigned so far has its TASK queued, or failed to queue (attempt.sent):
// the stream may show a TASK before RunJob's goroutine has marked it so,
// and an attempt not yet marked does not count when its executor is lost.
func waitQueued(t *testing.T, d *Driver) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.sched.mu.Lock()
		queued := len(d.sched.runs) > 0
		for _, a := range d.sched.runs {
			queued = queued && a.sent
		}
		d.sched.mu.Unlock()
		if queued {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("attempts assigned but never marked queued")
		}
		runtime.Gosched()
	}
}

// A job that fails at once for want of executors on a local master, whose
// lost executors are never replaced, leaves nothing queued: its attempts
// used to stay in the pending queue for the driver's life (nothing
// schedules again without executors), inputs and all, so a driver
// function retrying its Map kept every attempt of every try.
func TestJobWithoutExecutorsQueuesNothing(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, NoReplacements: true})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		_, err := d.RunJob(context.Background(), "t", make([][]byte, 10), nil)
		// Saying why none will come.
		if plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), "lost executors are not replaced") {
			t.Fatalf("RunJob without executors: got %v, want CodeUnavailable saying executors are not replaced", err)
		}
	}
	d.sched.mu.Lock()
	queued := len(d.sched.pending.queued())
	d.sched.mu.Unlock()
	if queued != 0 {
		t.Errorf("attempts queued after 100 jobs failed for want of executors: got %d, want 0", queued)
	}
}

// An executor's slots are used up to MaxSlots: a running attempt may have
// a TASK and a TASK_CANCEL queued on its connection, control frames that do
// not wait for room, and with 200000 slots one Map's TASKs overflowed the
// queue, which closed the connection: a healthy executor lost, every
// attempt on it counted as failed.
func TestExecutorSlotsCapped(t *testing.T) {
	for _, tt := range []struct{ slots, want int }{
		{0, 1},
		{8, 8},
		{16384, 16384},  // MaxSlots
		{200000, 16384}, // MaxSlots
	} {
		_, _, es := schedDriver(t, tt.slots)
		if es.slots != tt.want {
			t.Errorf("an executor reporting %d slots: got %d, want %d", tt.slots, es.slots, tt.want)
		}
	}
}

// jobOnOneExecutor connects executor "1" with one slot to d and starts a
// job of task "t" with one input, which it is running once this returns;
// job reports how RunJob returned.
func jobOnOneExecutor(t *testing.T, d *Driver) (es *execState, job <-chan error) {
	t.Helper()
	stream, es := schedExecutor(t, d, "1", 1)
	ended := make(chan error, 1)
	go func() { _, err := d.RunJob(context.Background(), "t", [][]byte{nil}, nil); ended <- err }()
	pollSent(t, stream, wire.Kind_KIND_TASK, 1)
	waitQueued(t, d)
	return es, ended
}

// When the last executor of a local master goes, a job waiting for it
// fails saying how it went: lost (with the cause), or left on its own. It
// said "was lost" either way.
func TestNoExecutorsLeftSaysHowTheLastWent(t *testing.T) {
	tests := []struct {
		name  string
		cause error
		want  string
	}{
		{"lost", plugin.Errorf(plugin.CodeUnavailable, "peer silent for 10s"), "(the last one, 1, was lost while running task \"t\" on inputs[0]: unavailable: peer silent for 10s)"},
		{"left", nil, "(the last one, 1, left while running task \"t\" on inputs[0])"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, NoReplacements: true})
			if err != nil {
				t.Fatal(err)
			}
			es, job := jobOnOneExecutor(t, d)
			d.sched.removeExecutor(es, tt.cause)
			if err := waitJob(t, job); plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("job: got %v, want Unavailable saying %s", err, tt.want)
			}
		})
	}
}

// A job that no executor can run yet (standalone, none connected) says so
// in the log every NoExecutorsWarning until one joins; it used to wait in
// silence.
func TestJobWithoutExecutorsWarns(t *testing.T) {
	var buf logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Tasks: []string{"t"}, NoExecutorsWarning: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	job := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", [][]byte{nil}, nil); job <- err }()
	const warning = "job waiting for executors: none is connected"
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(buf.String(), warning) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two warnings after 10s; the log:\n%s", buf.String())
		}
		time.Sleep(time.Millisecond)
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, warning) && !(strings.Contains(line, "level=WARN") && strings.Contains(line, "job=1") && strings.Contains(line, "task=t")) {
			t.Errorf("warning %q: want level WARN, job 1 and task t", line)
		}
	}
	stream, _ := schedExecutor(t, d, "1", 1)
	pollSent(t, stream, wire.Kind_KIND_TASK, 1) // the job runs once one joins
	cancel()
	if err := waitJob(t, job); plugin.CodeOf(err) != plugin.CodeCanceled {
		t.Errorf("RunJob after cancel: got %v, want Canceled", err)
	}
}

// On a local master that replaces lost executors, a job whose last
// executor is lost waits for the replacement, saying so in the log; when
// replacements end (EndReplacements), it fails at once, saying why, and so
// does a job started after.
func TestJobWaitsForAReplacementUntilReplacementsEnd(t *testing.T) {
	var buf logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Tasks: []string{"t"}, Local: true, NoExecutorsWarning: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	es, job := jobOnOneExecutor(t, d)
	d.sched.removeExecutor(es, plugin.Errorf(plugin.CodeUnavailable, "signal: killed"))
	const warning = "job waiting for executors: none is ready (replacements of the lost ones are starting"
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(buf.String(), warning); {
		if time.Now().After(deadline) {
			t.Fatalf("no warning after 10s; the log:\n%s", buf.String())
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-job:
		t.Fatalf("the job ended while a replacement could come: %v", err)
	default:
	}
	d.EndReplacements("the last 10 replacements ended before they were ready")
	if err := waitJob(t, job); plugin.CodeOf(err) != plugin.CodeUnavailable ||
		!strings.Contains(err.Error(), "lost executors are no longer replaced: the last 10 replacements ended before they were ready") {
		t.Errorf("job after replacements ended: got %v, want Unavailable saying why", err)
	}
	_, err = d.RunJob(context.Background(), "t", [][]byte{nil}, nil)
	if plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), "lost executors are no longer replaced: the last 10") {
		t.Errorf("job started after: got %v, want Unavailable saying why", err)
	}
}

// A job's warning that it waits for executors counts from when the last
// one left, not from the job's start: a job that had run for minutes
// before its executors were lost said it had waited minutes.
func TestWaitedForExecutors(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	tests := []struct {
		name             string
		start, noneSince time.Time
		now              time.Time
		want             time.Duration
	}{
		{"none ever joined", t0, time.Time{}, t0.Add(15 * time.Second), 15 * time.Second},
		{"the last left before the job started", t0, t0.Add(-time.Minute), t0.Add(15 * time.Second), 15 * time.Second},
		{"the last left while the job ran", t0, t0.Add(5 * time.Minute), t0.Add(5*time.Minute + 2*time.Second), 2 * time.Second},
	}
	for _, tt := range tests {
		if got := waitedForExecutors(tt.start, tt.noneSince, tt.now); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	// The scheduler notes when its last executor leaves.
	d, err := New(Config{Logger: slog.New(slog.DiscardHandler), Tasks: []string{"t"}, Local: true})
	if err != nil {
		t.Fatal(err)
	}
	es, job := jobOnOneExecutor(t, d)
	before := time.Now()
	d.sched.removeExecutor(es, plugin.Errorf(plugin.CodeUnavailable, "signal: killed"))
	d.sched.mu.Lock()
	noneSince := d.sched.noneSince
	d.sched.mu.Unlock()
	if noneSince.Before(before) {
		t.Errorf("noneSince after the last executor left: got %v, want %v or later", noneSince, before)
	}
	d.EndReplacements("test over")
	if err := waitJob(t, job); err == nil {
		t.Error("RunJob with no executors left: got nil, want an error")
	}
}

// A job lets go of each input once its outcome is final: Map held every
// encoded input until the job ended, so a job of 200 inputs of 4 MiB
// kept 800 MiB alive on the driver next to the outputs coming in, though
// no attempt of a finished input runs again.
func TestFinishedInputsLetGo(t *testing.T) {
	t.Run("RunJob", func(t *testing.T) {
		d, stream, es := schedDriver(t, 1)
		inputs := [][]byte{[]byte("a"), []byte("b")}
		job := make(chan error, 1)
		go func() { _, err := d.RunJob(context.Background(), "t", inputs, nil); job <- err }()
		run := pollSent(t, stream, wire.Kind_KIND_TASK, 1)[0]
		d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
		// result ran here, under the scheduler's lock, and the job's
		// goroutine reads inputs no more: no race reading them.
		if inputs[0] != nil || string(inputs[1]) != "b" {
			t.Errorf("inputs while the job runs, its first done: got %q, want [nil b]", inputs)
		}
		run = pollSent(t, stream, wire.Kind_KIND_TASK, 2)[1]
		d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
		if err := waitJob(t, job); err != nil {
			t.Fatal(err)
		}
		if inputs[1] != nil {
			t.Errorf("inputs[1] after the job: got %q, want nil", inputs[1])
		}
	})
	t.Run("RunJobEach, failed for good", func(t *testing.T) {
		d, stream, es := schedDriver(t, 1)
		inputs := [][]byte{[]byte("a"), []byte("b")}
		job := make(chan error, 1)
		go func() { _, _, err := d.RunJobEach(context.Background(), "t", inputs, nil); job <- err }()
		run := pollSent(t, stream, wire.Kind_KIND_TASK, 1)[0]
		d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Code: uint32(plugin.CodeInvalidArgument), Error: "bad", Permanent: true})
		if inputs[0] != nil || string(inputs[1]) != "b" {
			t.Errorf("inputs while the job runs, its first failed for good: got %q, want [nil b]", inputs)
		}
		run = pollSent(t, stream, wire.Kind_KIND_TASK, 2)[1]
		d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, Payload: []byte("ok")})
		if err := waitJob(t, job); err != nil {
			t.Fatal(err)
		}
	})
}
