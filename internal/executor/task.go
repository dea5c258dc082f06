package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// startTask runs a TASK frame's attempt on its own goroutine, or, with
// every slot taken, queues it until one frees: the driver may send TASKs
// ahead of free slots (for jobs of short tasks), so that a slot that frees
// starts the next attempt without a round trip to the driver. Once
// shutdown has begun, the attempt fails at once with CodeUnavailable. An
// attempt that fails while the executor stops (refused, or cut short by
// its ctx ending) is reported with ExecutorStopping, so that a driver that
// did not ask for the stop runs it elsewhere without counting it as the
// task's failure.
//
// A TASK whose run ID is that of an attempt holding a slot or waiting for
// one is dropped, with a warning: the driver numbers its attempts one
// after the other, and answering it would give that attempt a second
// result. Taken, it replaced the first attempt's cancel (TASK_CANCEL no
// longer reached it) or queued entry (that TASK never got a result), and
// the second of the two attempts to end found no cancel to call, and the
// executor's process died of a nil func call.
func (x *Executor) startTask(c *rpc.Conn, f *wire.Frame) {
	x.mu.Lock()
	if _, running := x.tasks[f.Call]; running || x.queue.has(f.Call) {
		x.mu.Unlock()
		x.log.Warn("dropped a TASK whose run ID is that of an attempt already here (a driver reusing run IDs?)", "run", f.Call)
		wire.ReleaseFrame(f)
		return
	}
	if x.stopping {
		x.mu.Unlock()
		_ = c.SendControl(x.refusedResult(f.Call))
		return
	}
	if len(x.tasks) >= x.cfg.Slots {
		x.queue.push(f)
		x.mu.Unlock()
		return
	}
	ctx := x.claimSlotLocked(f.Call)
	x.mu.Unlock()
	go x.runAttempt(ctx, c, f)
}

// refusedResult is the TASK_RESULT of attempt run, refused (or dropped
// from the queue of those waiting for a slot) as the executor stops.
func (x *Executor) refusedResult(run uint64) *wire.Frame {
	return &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, ExecutorStopping: true,
		Code: uint32(plugin.CodeUnavailable), Error: fmt.Sprintf("executor %s is shutting down", x.id)}
}

// claimSlotLocked gives attempt run a slot: a ctx that its TASK_CANCEL
// and the executor's shutdown end, and a place in x.tasks and x.running.
// x.mu is held.
func (x *Executor) claimSlotLocked(run uint64) context.Context {
	ctx, cancel := context.WithCancelCause(x.ctx)
	x.tasks[run] = cancel
	x.running.Add(1)
	return ctx
}

// nextLocked takes the first TASK waiting for a slot, unless shutdown has
// begun or every slot is taken, and claims the slot for it; nil if there
// is none. x.mu is held.
func (x *Executor) nextLocked() (*wire.Frame, context.Context) {
	if x.stopping || len(x.tasks) >= x.cfg.Slots {
		return nil, nil
	}
	f := x.queue.pop()
	if f == nil {
		return nil, nil
	}
	return f, x.claimSlotLocked(f.Call)
}

// runAttempt runs f's attempt, whose slot is claimed, under ctx (from
// claimSlotLocked), and reports it on c with how long it held the slot.
// It then starts the next attempt waiting for the slot, if any.
func (x *Executor) runAttempt(ctx context.Context, c *rpc.Conn, f *wire.Frame) {
	t := f.GetTask()
	info := plugin.TaskInfo{
		JobID:      t.GetJobId(),
		TaskName:   t.GetName(),
		Index:      int(t.GetIndex()),
		Attempt:    int(t.GetAttempt()),
		ExecutorID: x.id,
	}
	start := time.Now()
	// Reported deferred: a task (or hook) calling runtime.Goexit (t.Fatal
	// in a test's task) neither returns nor panics, and without a result
	// its Map waited for ever, its slot taken for the driver's life.
	var res taskOutcome
	defer func() {
		x.mu.Lock()
		cancel := x.tasks[f.Call]
		delete(x.tasks, f.Call)
		stopping := x.stopping
		next, nextCtx := x.nextLocked()
		x.mu.Unlock()
		cancel(nil)
		r := &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: f.Call, SlotMicros: uint64(time.Since(start).Microseconds())}
		if res.err != nil {
			code, msg := rpc.ErrorParts(res.err)
			r.Code, r.Error, r.ExecutorStopping = uint32(code), msg, stopping
			r.Permanent = errors.As(res.err, new(*PermanentError))
		} else {
			r.Payload = res.out
		}
		_ = c.SendControl(r)
		if next != nil {
			go x.runAttempt(nextCtx, c, next)
		}
		x.running.Done() // once the result is queued: it precedes STOPPED
	}()
	x.runTask(ctx, info, f.Payload, &res)
}

// cancelTask handles a TASK_CANCEL: a running attempt's ctx ends with the
// job's error as its cause; one still waiting for a slot never starts, and
// is reported canceled at once, with no hooks (none saw it start).
func (x *Executor) cancelTask(c *rpc.Conn, f *wire.Frame) {
	x.mu.Lock()
	cancel := x.tasks[f.Call]
	waiting := x.queue.remove(f.Call)
	x.mu.Unlock()
	switch {
	case cancel != nil:
		cancel(taskCanceled(f))
	case waiting:
		code, msg := rpc.ErrorParts(taskCanceled(f))
		_ = c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: f.Call, Code: uint32(code), Error: msg})
	}
}

// taskCanceled is the cause a TASK_CANCEL gives its attempt's ctx: the
// driver ended the attempt because its job ended, with the job's error
// (a driver that sent none: Canceled alone).
func taskCanceled(f *wire.Frame) error {
	if f.Code == 0 && f.Error == "" {
		return plugin.Errorf(plugin.CodeCanceled, "the driver canceled this attempt: its job has ended")
	}
	// Canceled, whatever ended the job: a task that returns its ctx's
	// cause, and the listeners that OnTaskFailed tells of it, can tell a
	// cancel (Spark's TaskKilled) from a failure of its own. With the
	// job's code, a kill counted as that failure.
	return plugin.Errorf(plugin.CodeCanceled, "the driver canceled this attempt: its job has ended: %w", rpc.WireError(f.Code, f.Error))
}

// PermanentError marks a task's error as one that another attempt would
// repeat: its TASK_RESULT says so (Frame.permanent), and the driver fails
// the job (or, in ember.MapEach, the input) without retrying the task.
// ember.Permanent makes one.
type PermanentError struct{ Err error }

// Error returns the marked error's text, unchanged.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the marked error.
func (e *PermanentError) Unwrap() error { return e.Err }

// taskOutcome is what an attempt reports: its output, or its error.
type taskOutcome struct {
	out []byte
	err error
	set bool // false: the task's goroutine is ending without a return
}

// errGoexit is the error of an attempt whose task ended its goroutine with
// runtime.Goexit: a failure, like a panic.
//
// hookPlugin names the plugin whose OnTaskStart hook called it, if one
// did: the task then never ran, and the error must not blame it.
func errGoexit(info plugin.TaskInfo, hookPlugin string) error {
	if hookPlugin != "" {
		return plugin.NewError(plugin.CodeInternal, fmt.Sprintf("plugin %q's OnTaskStart hook exited the goroutine of task %q (runtime.Goexit: t.Fatal or t.FailNow in a hook?) before the task ran", hookPlugin, info.TaskName))
	}
	return plugin.NewError(plugin.CodeInternal, fmt.Sprintf("task %q exited its goroutine (runtime.Goexit: t.Fatal or t.FailNow in a task?) without returning", info.TaskName))
}

// runTask runs the task between the plugins' hooks (DESIGN semantics 10):
// OnTaskStart in plugin order, the task, then OnTaskSucceeded or
// OnTaskFailed, all on this goroutine. An output over MaxMessageBytes is a
// failure. A panicking hook is logged and does not affect the task; a
// panicking task fails with CodeInternal.
//
// res holds the outcome, set before the closing hooks run, which are
// deferred: a task or OnTaskStart hook calling runtime.Goexit fails the
// attempt with errGoexit, and the closing hooks see that.
//
// Only the listeners whose OnTaskStart was called get a closing hook: one
// that ends the goroutine leaves those after it with neither (they used to
// get OnTaskFailed for an attempt they had not seen start).
func (x *Executor) runTask(ctx context.Context, info plugin.TaskInfo, in []byte, res *taskOutcome) {
	inHook := "" // the plugin whose OnTaskStart hook runs, for errGoexit
	started := 0 // the listeners whose OnTaskStart has been called
	info.Started = time.Now()
	defer func() {
		if !res.set {
			res.err, res.set = errGoexit(info, inHook), true
		}
		err := res.err
		for _, e := range x.listeners[:started] {
			if err == nil {
				e.hook("OnTaskSucceeded", func() { e.taskListener.OnTaskSucceeded(ctx, info) })
			} else {
				e.hook("OnTaskFailed", func() { e.taskListener.OnTaskFailed(ctx, info, err) })
			}
		}
	}()
	for i, e := range x.listeners {
		inHook, started = e.name, i+1
		e.hook("OnTaskStart", func() { e.taskListener.OnTaskStart(ctx, info) })
	}
	inHook = ""
	out, err := x.callTask(ctx, info, in)
	// An output too large to send fails the attempt, before the hooks
	// (they used to run OnTaskSucceeded for it), and for good: another
	// attempt of the same input makes the same output (one was made
	// maxFailures times over, then the job failed anyway).
	if err == nil && len(out) > x.cfg.MaxMessageBytes {
		x.limitHits.WithLabelValues("message_size").Inc()
		out, err = nil, &PermanentError{plugin.Errorf(plugin.CodeResourceExhausted,
			"task %q output is %d bytes encoded, over the %d-byte limit (ember.Config.MaxMessageBytes; return less, or raise it): %w",
			info.TaskName, len(out), x.cfg.MaxMessageBytes, plugin.ErrMessageTooLarge)}
	}
	res.out, res.err, res.set = out, err, true
}

func (x *Executor) callTask(ctx context.Context, info plugin.TaskInfo, in []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			// Logged cut, as the error's text is on the wire: a panic
			// with a value of 8 MiB wrote log lines of 8 MiB, one per
			// attempt. The error is left whole for the wire to cut
			// once: cut here too, it was cut again there (CutText's
			// note takes it past the limit), and said some fifty bytes
			// were left out where megabytes were.
			text := fmt.Sprint(r)
			x.logTaskPanic(info, rpc.CutErrorText(text))
			err = plugin.NewError(plugin.CodeInternal, fmt.Sprintf("task %q panicked: %s", info.TaskName, text))
		}
	}()
	if x.cfg.RunTask == nil {
		return nil, plugin.NewError(plugin.CodeUnimplemented, "this executor runs no tasks")
	}
	return x.cfg.RunTask(ctx, info, in, x)
}

// logTaskPanic logs a task's panic r (its value's text, cut to
// rpc.MaxErrorBytes), with its stack, for the first
// maxPanicsLogged of its job on this executor: a job whose every task
// panics would otherwise log maxFailures stacks per input. The driver's
// ember_tasks_total{state="failed"} counts them all, and it logs the
// cause of a job's first ten failed attempts. Call it from the deferred
// recover.
func (x *Executor) logTaskPanic(info plugin.TaskInfo, r string) {
	x.mu.Lock()
	if x.panics == nil || len(x.panics) >= maxPanicJobs {
		x.panics = map[string]int{} // bounded: old jobs are forgotten
	}
	x.panics[info.JobID]++
	n := x.panics[info.JobID]
	x.mu.Unlock()
	if n > maxPanicsLogged {
		return
	}
	x.log.Error("task panicked", "job", info.JobID, "task", info.TaskName, "index", info.Index, "attempt", info.Attempt, "panic", r, "stack", string(debug.Stack()))
	if n == maxPanicsLogged {
		x.log.Error("further panics of this job's tasks are not logged on this executor; the driver's ember_tasks_total{state=\"failed\"} counts them", "job", info.JobID, "task", info.TaskName)
	}
}

// maxPanicsLogged bounds the task panics of one job logged by an executor;
// maxPanicJobs bounds the jobs it counts them for.
const (
	maxPanicsLogged = 10
	maxPanicJobs    = 64
)

// Plugins finds an executor's plugins by name, for its tasks. An
// interface, not a func, so that ember.TaskContext, which keeps it, stays
// comparable.
type Plugins interface {
	Plugin(name string) plugin.ExecutorPlugin
}

// Plugin returns this executor's instance of the plugin called name, for
// its tasks (ember.TaskContext.Plugin); nil if there is none, or it has no
// executor side. Tasks run once the plugins' Init have returned.
func (x *Executor) Plugin(name string) plugin.ExecutorPlugin {
	for _, e := range x.endpoints {
		if e.name == name {
			return e.ep
		}
	}
	return nil
}

// hook runs one task hook, logging a panic instead of propagating it:
// with its stack, within the plugin's budget (rpc.LogBudget), since a hook
// that panics does so for every task.
func (e *endpoint) hook(name string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			e.hookPanics.Log(e.log, slog.LevelError, "panics of this plugin's task hooks", "task hook panicked; the task is not affected",
				func() []any { return []any{"hook", name, "panic", r, "stack", string(debug.Stack())} })
		}
	}()
	fn()
}
