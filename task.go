package ember

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"sync"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/driver"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/hook"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/plugin"
)

// ConfMaxTaskFailures is how many times one task may fail before its job
// fails (Spark: spark.task.maxFailures), or in MapEach its input. Default
// 4.
const ConfMaxTaskFailures = "ember.task.maxFailures"

// ConfExecutorSlots is how many tasks each executor runs at once, at most
// 16384 (Run refuses more), except an executor whose process sets
// EnvExecutorSlots. Default: the executor's GOMAXPROCS, the CPUs its
// process may use (a container's CPU limit included). Driver.Executors
// says what each runs.
const ConfExecutorSlots = "ember.executor.slots"

// ConfTaskPrefetch is the most tasks beyond its slots the driver sends each
// executor ahead, to wait there for a slot, for a job of which an attempt
// has succeeded in under 5ms and none has taken longer, succeeding or
// not: the executor then starts its next task as soon as a slot frees,
// instead of a round trip to the driver later, which for trivial tasks
// more than doubles how many run per second. Within that bound it sends
// as many as make about 5ms of work per slot, at most 4 per slot, and
// none with an input over 64 KiB.
// A job stops sending any once one of its attempts has taken 5ms or more,
// so that its tasks do not queue behind long ones while another executor
// has a free slot (those already sent may wait behind that one). Default:
// 4 per slot; 0: never. Tasks sent ahead count as running (the progress
// bar, ember_tasks_running) once a slot frees for them, and are canceled
// with their job like running ones.
const ConfTaskPrefetch = "ember.task.prefetch"

// TaskContext describes the attempt a task function is running.
type TaskContext struct {
	JobID      string // the job (one Map or MapEach call)
	Index      int    // the input's index in the job
	Attempt    int    // 0 for the first attempt
	ExecutorID string // the executor running the attempt
	// Logger carries the attempt's attributes: executor, task, job, index
	// and attempt. It is nil in a TaskContext that a unit test makes
	// itself: set one there.
	Logger *slog.Logger

	plugins executor.Plugins // an interface, not a func: TaskContext stays comparable
}

// Plugin returns the executor plugin called name on the executor running
// the task (the value its ExecutorPlugin method returned, whose Init has
// run), and whether there is one: a task reaches its plugin's state, or
// the plugin.ExecutorContext the plugin kept from Init (to Send progress
// to its driver side, say), without a package-level variable keyed by
// executor. It reports false for a plugin that is not enabled or has no
// executor side, and in a TaskContext not made by the executor (a unit
// test's). A task that outlives its executor's shutdown (one ignoring its
// ctx, abandoned) may find the plugin shut down.
func (tc TaskContext) Plugin(name string) (plugin.ExecutorPlugin, bool) {
	if tc.plugins == nil {
		return nil, false
	}
	p := tc.plugins.Plugin(name)
	return p, p != nil
}

// Task is a Go function registered to run on executors. Declare tasks as
// package-level variables with NewTask so that every process registers the
// same tasks in the same order; the executor handshake compares them.
type Task[In, Out any] struct {
	name string
}

// Name returns the task's registered name.
func (t *Task[In, Out]) Name() string { return t.name }

type taskEntry struct {
	name string
	run  func(ctx context.Context, tc TaskContext, in []byte) ([]byte, error)
	site string // where NewTask was called: "file:line in function"
}

// taskRegistry holds the registered tasks. Once sealed, it refuses new
// ones: an executor process (a local-cluster's, the program or test binary
// re-executed, or a standalone one) registers only what its own start-up
// registers before its Run, so a task added later in another process's
// life would be missing there, and the handshake of every later Run would
// fail.
type taskRegistry struct {
	mu     sync.RWMutex // protects the following fields
	byName map[string]*taskEntry
	names  []string
	sealed string // why the registry takes no more tasks ("": it does)
}

var tasks = new(taskRegistry) // a pointer: a test swaps in a registry of its own

// add registers e, or returns the text NewTask panics with: the name is
// taken, or the registry is sealed.
func (r *taskRegistry) add(e *taskEntry) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sealed != "" {
		return fmt.Sprintf("ember.NewTask %q: called %s; register tasks at package level instead, "+
			"var t = ember.NewTask(%q, ...), so that every process, executors included, has them before Run", e.name, r.sealed, e.name)
	}
	if _, dup := r.byName[e.name]; dup {
		return fmt.Sprintf("ember.NewTask: task %q registered twice", e.name)
	}
	if r.byName == nil {
		r.byName = map[string]*taskEntry{}
	}
	r.byName[e.name] = e
	r.names = append(r.names, e.name)
	return ""
}

// seal makes NewTask panic from now on, saying it was called when, unless
// an earlier seal has said so already.
func (r *taskRegistry) seal(when string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sealed == "" {
		r.sealed = when
	}
}

func (r *taskRegistry) lookup(name string) *taskEntry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byName[name]
}

// sites maps each task's name to where it was registered.
func (r *taskRegistry) sites() map[string]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := make(map[string]string, len(r.byName))
	for name, e := range r.byName {
		m[name] = e.site
	}
	return m
}

func (r *taskRegistry) list() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]string(nil), r.names...)
}

// Said by NewTask and RegisterMessage once their registries are sealed:
// by Run, and by embertest.Main before the tests start.
const (
	sealedByRun   = "after ember.Run was called in this process"
	sealedByTests = "from a test, after embertest.Main started the tests " +
		"(a local-cluster executor runs only its own test: what one test registers is missing from every other test's executors)"
)

// sealRegistries makes NewTask and RegisterMessage (of a new type) panic
// from now on, saying they were called when.
func sealRegistries(when string) {
	tasks.seal(when)
	codec.Seal(when)
}

func init() {
	hook.SealRegistries = func() { sealRegistries(sealedByTests) }
}

// MaxTaskNameBytes bounds a task's name (NewTask panics for a longer one).
const MaxTaskNameBytes = 1 << 10

// NewTask registers fn under name and returns the task to pass to Map.
// Call it at package level (var square = ember.NewTask("square", ...)),
// or in an init function, so that every process registers the same tasks
// before it calls Run: an executor process is the same program started
// again, and has only the tasks registered on its way to Run. NewTask
// panics once Run has been called in the process, and, in a test package
// whose TestMain calls embertest.Main, once the tests have started (a
// task made inside a test function would be missing from other tests'
// local-cluster executors, and fail their handshake). It panics too if
// name is empty, taken or longer than MaxTaskNameBytes (every TASK frame
// carries it, next to an input of up to Config.MaxMessageBytes), or fn is
// nil. fn runs concurrently with the other tasks of its executor (up to
// ConfExecutorSlots at once), so what it shares must be safe for
// concurrent use. In and Out travel like messages (CBOR for plain values,
// protobuf for proto.Message pointers) but need no RegisterMessage; like
// RegisterMessage, NewTask panics if either is a struct whose fields are
// all unexported.
func NewTask[In, Out any](name string, fn func(ctx context.Context, tc TaskContext, in In) (Out, error)) *Task[In, Out] {
	if name == "" || fn == nil {
		panic("ember.NewTask: empty name or nil function")
	}
	if len(name) > MaxTaskNameBytes {
		// Every TASK frame carries the name beside its input, in the
		// 64 KiB of headroom a peer accepts over MaxMessageBytes: an
		// input at the limit with a 70 KiB name made a frame that ended
		// the executor's connection, attempt after attempt, executor
		// after executor, where Map should run it.
		panic(fmt.Sprintf("ember.NewTask: a name of %d bytes, over the %d-byte limit", len(name), MaxTaskNameBytes))
	}
	for _, t := range []reflect.Type{reflect.TypeFor[In](), reflect.TypeFor[Out]()} {
		if err := codec.CheckFields(t); err != nil {
			panic(fmt.Sprintf("ember.NewTask %q: %v", name, err))
		}
	}
	e := &taskEntry{name: name, run: func(ctx context.Context, tc TaskContext, data []byte) ([]byte, error) {
		var in In
		if err := codec.Unmarshal(data, &in); err != nil {
			// Every attempt decodes the same bytes with the same types.
			return nil, Permanent(plugin.Errorf(plugin.CodeInvalidArgument, "task %q: decode input: %v", name, err))
		}
		out, err := fn(ctx, tc, in)
		if err != nil {
			return nil, err
		}
		b, err := codec.Marshal(out)
		if err != nil {
			return nil, plugin.Errorf(plugin.CodeInvalidArgument, "task %q: encode output: %v", name, err)
		}
		return b, nil
	}}
	e.site = callerSite(1)
	if msg := tasks.add(e); msg != "" {
		panic(msg)
	}
	return &Task[In, Out]{name: name}
}

// callerSite says where the caller of the function calling it is:
// "file:line in function", the function as the runtime names it (a
// package-level var's initialiser runs in "pkg.init", a test in
// "pkg.TestName"); "" if the runtime cannot say.
func callerSite(skip int) string {
	pc, file, line, ok := runtime.Caller(skip + 1)
	if !ok {
		return ""
	}
	site := fmt.Sprintf("%s:%d", file, line)
	if fn := runtime.FuncForPC(pc); fn != nil {
		site += " in " + fn.Name()
	}
	return site
}

// Tasks returns the names of the registered tasks, in registration order:
// the list the executor handshake compares. It no longer changes once Run
// has been called.
func Tasks() []string { return taskNames() }

func taskNames() []string { return tasks.list() }

// runTask runs a registered task on an executor.
func runTask(log *slog.Logger) func(ctx context.Context, t plugin.TaskInfo, in []byte, plugins executor.Plugins) ([]byte, error) {
	return func(ctx context.Context, t plugin.TaskInfo, in []byte, plugins executor.Plugins) ([]byte, error) {
		e := tasks.lookup(t.TaskName)
		if e == nil {
			return nil, plugin.Errorf(plugin.CodeNotFound, "no task %q on this executor", t.TaskName)
		}
		tc := TaskContext{
			JobID:      t.JobID,
			Index:      t.Index,
			Attempt:    t.Attempt,
			ExecutorID: t.ExecutorID,
			Logger:     log.With("executor", t.ExecutorID, "task", t.TaskName, "job", t.JobID, "index", t.Index, "attempt", t.Attempt),
			plugins:    plugins,
		}
		return e.run(ctx, tc, in)
	}
}

// Map runs t on every input across the executors and returns the outputs
// in input order (an empty slice for no inputs). Before any task runs, Map
// fails with CodeNotFound for a Task not made by NewTask (a zero Task),
// and with CodeResourceExhausted, wrapping
// plugin.ErrMessageTooLarge, for an input whose encoding exceeds
// Config.MaxMessageBytes.
//
// A failed attempt (an error, a panic, or the task's goroutine ended by
// runtime.Goexit) is retried, ahead of the inputs not yet started (this
// Map's and any other's), on another executor when one has a free slot
// then, until one input has failed ConfMaxTaskFailures times, or has
// failed with an error marked Permanent. Map then fails with an error
// naming the task, index, attempts, executor and cause, which wraps a
// *TaskError (get it with errors.As), and cancels the other running
// tasks (MapEach fails that input alone, and runs the others on). The error carries the last
// attempt's code (plugin.CodeOf), so a task that failed with its own
// deadline matches context.DeadlineExceeded as Map's ended ctx does: tell
// them apart with ctx.Err() or errors.As. Tasks of an executor that dies
// are rescheduled.
//
// Ending ctx cancels the running tasks' contexts and Map returns an error
// matching ctx's (errors.Is), and its cause (context.Cause) if it was given
// one; a ctx that has already ended when Map is called runs no task. A
// task's ctx canceled because its job ended (ctx's end, another task's
// failure, the driver's shutdown) has a cause that says so, with the
// job's error, its text cut to 1 KiB and sent to the executors running
// the job's tasks: "the driver canceled this attempt: its job has ended:
// ...". When the driver shuts down (the driver function returned), a
// running Map fails with CodeUnavailable, wrapping plugin.ErrClosed, and
// a later one fails so at once. Map may be called concurrently.
func Map[In, Out any](ctx context.Context, d *Driver, t *Task[In, Out], inputs []In) ([]Out, error) {
	payloads, err := encodeInputs(d, t, inputs, "ember.Map")
	if err != nil {
		return nil, err
	}
	progress := driver.NewProgress(len(payloads))
	stop := d.trackJob(t.name, progress)
	results, err := d.d.RunJob(ctx, t.name, payloads, progress)
	stop()
	if err != nil {
		return nil, fmt.Errorf("ember.Map: %w", taskError(err))
	}
	outs := make([]Out, len(results))
	for i, r := range results {
		// Each encoded output is let go once decoded: a job's outputs
		// were held twice, encoded and decoded, until Map returned.
		results[i] = nil
		if err := codec.Unmarshal(r, &outs[i]); err != nil {
			return nil, fmt.Errorf("ember.Map %q: decode output %d: %w", t.name, i, err)
		}
	}
	return outs, nil
}

// Result is one input's outcome in MapEach: its task's output, or the
// error it failed with (a *TaskError) and the zero Out.
type Result[Out any] struct {
	Out Out
	Err error
}

// MapEach is Map for inputs that stand alone, such as a test farm's
// shards: a task that fails for good (ConfMaxTaskFailures attempts, or an
// error marked Permanent, or an executor lost under it that many times)
// fails its own input, and the others run on, where Map would cancel
// them and fail. It returns one Result per input, in input order; an
// input's Err wraps a *TaskError (errors.As), as Map's error would, or
// says that its output could not be decoded.
//
// The error is the job's, as Map's, for what ends every input: ctx
// ending (with its cause), the driver shutting down, no executors left,
// and, before any task runs, an unregistered task or an input that cannot
// be encoded or is too large. For the first three the results are still
// there, one per input: the inputs that had finished keep their
// outcomes, and the others' Err wraps that error (a job ended at its
// deadline keeps what it had done; one whose ctx had ended before the
// call has every Err set). They are nil for an unregistered task, an
// input that cannot be encoded or is too large, and a driver that had
// already shut down. A progress line counts failed inputs as done.
func MapEach[In, Out any](ctx context.Context, d *Driver, t *Task[In, Out], inputs []In) ([]Result[Out], error) {
	payloads, err := encodeInputs(d, t, inputs, "ember.MapEach")
	if err != nil {
		return nil, err
	}
	progress := driver.NewProgress(len(payloads))
	stop := d.trackJob(t.name, progress)
	results, errs, err := d.d.RunJobEach(ctx, t.name, payloads, progress)
	stop()
	if err != nil {
		err = fmt.Errorf("ember.MapEach: %w", err)
		if results == nil {
			return nil, err
		}
	}
	outs := make([]Result[Out], len(results))
	for i, r := range results {
		results[i] = nil // let go once decoded, as in Map
		if errs[i] != nil {
			outs[i].Err = fmt.Errorf("ember.MapEach: %w", taskError(errs[i]))
		} else if err := codec.Unmarshal(r, &outs[i].Out); err != nil {
			outs[i].Err = fmt.Errorf("ember.MapEach %q: decode output %d: %w", t.name, i, err)
		}
	}
	return outs, err
}

// encodeInputs encodes the inputs of a job of t, failing for one that
// cannot be encoded or is over Config.MaxMessageBytes.
func encodeInputs[In, Out any](d *Driver, t *Task[In, Out], inputs []In, caller string) ([][]byte, error) {
	limit := d.cfg.MaxMessageBytes
	if limit <= 0 {
		limit = rpc.DefaultMaxMessageBytes
	}
	payloads := make([][]byte, len(inputs))
	for i, in := range inputs {
		b, err := codec.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %q: encode inputs[%d]: %w", caller, t.name, i, err)
		}
		if len(b) > limit {
			return nil, fmt.Errorf("%s %q: inputs[%d]: %w", caller, t.name, i,
				plugin.Errorf(plugin.CodeResourceExhausted, "%d bytes, over the %d-byte limit: %w", len(b), limit, plugin.ErrMessageTooLarge))
		}
		payloads[i] = b
	}
	return payloads, nil
}

// taskError is err from the scheduler with its *driver.TaskFailure, if
// any, made a *TaskError.
func taskError(err error) error {
	var tf *driver.TaskFailure
	if errors.As(err, &tf) {
		return &TaskError{Task: tf.Task, Index: tf.Index, Attempts: tf.Attempts, ExecutorID: tf.ExecutorID, Cause: tf.Cause, Permanent: tf.Permanent}
	}
	return err
}

// TaskError is the error of a Map whose task failed too many times, or
// failed permanently, and of such an input in MapEach.
type TaskError struct {
	Task       string
	Index      int    // the failing input's index
	Attempts   int    // how many attempts failed (attempts cut short by a stopping executor do not count)
	ExecutorID string // where the last attempt ran
	Cause      error  // the last attempt's error, a *plugin.Error
	// Permanent reports that the last attempt's error was marked with
	// Permanent (or its input could not be decoded, or its output was
	// over Config.MaxMessageBytes): the task was not retried after it.
	// Earlier attempts that failed without the mark were, and count in
	// Attempts.
	Permanent bool
}

// Error says which task and input failed, how many times, where it last
// ran and why, and whether it failed permanently.
func (e *TaskError) Error() string {
	return driver.FailureText(e.Task, e.Index, e.Attempts, e.ExecutorID, e.Cause, e.Permanent)
}

// Permanent marks err, returned by a task function, as a failure that
// another attempt would repeat (a compile error in a build farm, an input
// the task refuses): Map fails after this attempt (MapEach fails that
// input), without the retries ConfMaxTaskFailures allows, and its
// *TaskError has Permanent set. The
// mark holds when the marked error is wrapped further (fmt.Errorf with
// %w), and errors.Is and errors.As see through it on the executor (in a
// plugin.TaskListener's OnTaskFailed, say). As with any task error, only
// its text and code reach the driver: classify failures there by code
// (plugin.Errorf), and ask IsPermanent. A task whose input cannot be
// decoded, or whose output is over Config.MaxMessageBytes, fails
// permanently too; a panic, even with a marked error, is an ordinary
// failure. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &executor.PermanentError{Err: err}
}

// IsPermanent reports whether err is marked with Permanent (a task's
// error, as a plugin.TaskListener's OnTaskFailed receives it), or is the
// error of a Map whose task failed permanently, or of such an input in
// MapEach (it wraps a *TaskError with Permanent set), however deeply
// either is wrapped.
func IsPermanent(err error) bool {
	if te := (*TaskError)(nil); errors.As(err, &te) && te.Permanent {
		return true
	}
	return errors.As(err, new(*executor.PermanentError))
}

// Unwrap returns the last attempt's error.
func (e *TaskError) Unwrap() error { return e.Cause }
