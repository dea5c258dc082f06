package plugin

import "context"

// Plugin pairs a driver component and an executor component under one name
// (Spark: SparkPlugin). Both sides of an application must list the same
// plugins in the same order; the executor handshake checks it.
//
// The methods are called while the runtime starts: DriverPlugin once on
// the driver, ExecutorPlugin once per executor (so N times in the one
// process of local[N], one call at a time, though from the executors'
// goroutines), Name any number of times, from any goroutine. They
// should construct values and do nothing else. A panic in
// any of them (or in a plugin's MaxConcurrentReceives, or the driver
// plugin's SendWindow) fails that process's start-up with an error naming
// the plugin and method.
type Plugin interface {
	// Name identifies the plugin on both sides: lowercase, unique in the
	// application, e.g. "rpc-demo" or "metrics.jvm".
	Name() string
	// DriverPlugin returns the driver component, or nil for none. A nil
	// pointer in the interface is not none: Run fails, naming its type.
	DriverPlugin() DriverPlugin
	// ExecutorPlugin returns the executor component, or nil for none (a
	// nil pointer in the interface fails the executor, as DriverPlugin's
	// fails Run).
	ExecutorPlugin() ExecutorPlugin
}

// DriverPlugin is the driver side of a plugin (Spark: DriverPlugin).
//
// Lifecycle, in order:
//  1. Init, once, in plugin-list order, before any executor starts.
//  2. Receive, for each message from an executor plugin of the same name.
//     Calls come from the plugin's own dispatch lane: one at a time, in the
//     order each executor sent them (see [ConcurrentReceiver] to opt out).
//  3. Shutdown, once, after every executor has shut down and every message
//     it sent has been received.
//
// Optional capabilities: [ExecutorListener], [ConcurrentReceiver],
// [SendWindowed], [DroppedReplyListener].
type DriverPlugin interface {
	// Init prepares the driver side. The returned map is handed to every
	// executor's ExecutorPlugin.Init for the plugin of the same name; its
	// keys and values must be valid UTF-8. An error (or an extraConf that
	// is not UTF-8) fails ember.Run; plugins already initialised are shut
	// down.
	// pc stays valid until Shutdown returns and may be kept. ctx ends
	// when ember.Run's ctx does or Config.StartTimeout passes (an Init
	// that has not returned a second later is abandoned, still running,
	// and fails Run), and once Init returns: it is for Init's own work,
	// not for goroutines that outlive it (stop those in Shutdown).
	Init(ctx context.Context, pc DriverContext) (extraConf map[string]string, err error)
	// Receive handles a message from an executor plugin of the same name.
	// For an Ask, the returned reply (or error) is the answer; for a Send,
	// the return values are dropped: an error is logged and counted in
	// ember_message_errors_total (kind "send"), a non-nil reply logged
	// once per message type, so one Receive may serve a type both ways.
	// A panic is recovered and becomes a CodeInternal error, and so does
	// a runtime.Goexit (t.Fatal in a test's plugin); either way the
	// plugin goes on receiving. ctx carries the sender's ID ([SenderID]).
	// For an Ask it ends at the asker's deadline, when the asker cancels
	// its ctx (context.Canceled, with the cause [ErrAskCanceled]), and
	// when the asking executor is lost or has stopped (context.Canceled,
	// with a cause saying why, for context.Cause): a handler that
	// waits (a long poll for work, say) should wait on ctx, and take
	// nothing for an asker that has gone. A reply made after the asker
	// gave up is dropped, and so is one still on its way when it gives
	// up: the handler is not told, but the asking executor plugin is, if
	// it implements [DroppedReplyListener]. Its ctx ends a moment after
	// the asker's (the deadline counts from the ask's arrival; a cancel
	// takes the way back), so a job taken meanwhile goes with the
	// dropped reply. A queue that must lose nothing keeps what it handed
	// out, by SenderID, until the result comes, and hands it out again
	// when the worker reports the reply dropped (a message of its own,
	// sent from OnReplyDropped), when the executor has gone
	// ([ExecutorListener]), or after a timeout.
	//
	// ctx is for Receive's own work: for an Ask it may end as Receive
	// returns (it does when the asker's ctx could end or had a deadline,
	// not when it was context.Background()), so a goroutine that
	// outlives Receive should use context.WithoutCancel(ctx), which keeps
	// SenderID, or a ctx of its own.
	Receive(ctx context.Context, msg any) (reply any, err error)
	// Shutdown releases the plugin's resources. Its ctx carries the
	// shutdown deadline.
	Shutdown(ctx context.Context) error
}

// ExecutorPlugin is the executor side of a plugin (Spark: ExecutorPlugin).
//
// Lifecycle, in order:
//  1. Init, once, in plugin-list order, before the executor takes work.
//  2. Receive (if it implements [ExecutorReceiver]), for each message the
//     driver plugin sends it, one at a time, in order (unless it
//     implements [ConcurrentReceiver]).
//  3. Shutdown, once, in reverse plugin-list order, when the driver
//     releases the executor, after the running tasks have ended (their
//     hooks included) or, ignoring their ctx, been abandoned. Sends made
//     during Shutdown reach the driver. The plugins share one deadline
//     (see ember.Config.ShutdownTimeout): a Shutdown still running at it
//     is abandoned, and those after it are called with their ctx ended.
//
// Optional capabilities: [ExecutorReceiver], [ConcurrentReceiver],
// [DroppedReplyListener], [TaskListener].
type ExecutorPlugin interface {
	// Init prepares the executor side; extraConf is what the driver
	// plugin's Init returned (never nil). An error (or a panic) ends this
	// executor, after the plugins already initialised on it shut down,
	// and the driver reports it. While Run starts up, waiting for a local
	// master's executors or a standalone driver's MinExecutors (or in
	// WaitExecutors), that fails the start-up, and Run returns the error:
	// unlike Spark, whose cluster managers start another executor, a
	// plugin whose Init fails is taken for a broken build. An executor
	// that joins later (one started by hand, a local-cluster replacement)
	// is only dropped, and the application goes on; a local-cluster
	// replaces it, up to ember.ConfExecutorMaxRetries times in a row.
	// pc stays valid until Shutdown returns. ctx
	// ends when the executor's Run ctx does, when the driver goes away or
	// tells the executor to stop during Init (return when it ends: an
	// Init that has not returned a second later is abandoned, still
	// running, and fails, so that the executor can go), and
	// once Init returns: it is for Init's own work, not for goroutines that
	// outlive it (stop those in Shutdown).
	Init(ctx context.Context, pc ExecutorContext, extraConf map[string]string) error
	// Shutdown releases the plugin's resources. Its ctx carries the
	// executor's stop deadline, which the plugins shut down after it share
	// too (see ember.Config.ShutdownTimeout): return when it ends. An
	// error is logged on the executor and joined into the driver's Run
	// error.
	Shutdown(ctx context.Context) error
}

// ExecutorReceiver is implemented by executor plugins that handle messages
// pushed by their driver plugin with AskExecutor, SendExecutor or Broadcast.
// Calls are one at a time, in the order the driver sent them (see
// [ConcurrentReceiver] to opt out). Without it,
// an AskExecutor fails with CodeUnimplemented. Receive's ctx is as for
// DriverPlugin.Receive: for an AskExecutor it ends at the asker's
// deadline and when the asker cancels its ctx. For any message it ends
// when the executor stops: context.Canceled, with a cause (for
// context.Cause) saying why: it is shutting down, is stopping on its own,
// or lost its driver. For a SendExecutor or Broadcast, an error Receive
// returns is logged on the executor (at most ten lines a minute), and the
// driver is not told: report what it must know with a Send.
type ExecutorReceiver interface {
	Receive(ctx context.Context, msg any) (reply any, err error)
}

// ExecutorListener is implemented by driver plugins that watch membership.
// Calls come from the plugin's dispatch lane, ordered with its messages:
// OnExecutorAdded precedes every message that executor sends once its
// plugins are initialised (messages sent from an executor plugin's Init,
// which may wait on an Ask's reply, come before it), and
// OnExecutorRemoved follows its last message. An executor that never
// becomes ready (its plugins' Init fails, or it is lost or stops first)
// gets neither, though its plugins may have sent messages from Init:
// what a driver plugin keeps for such messages, by SenderID (a job handed
// out to an Ask from Init, say), needs an expiry of its own, such as a
// lease.
type ExecutorListener interface {
	// OnExecutorAdded is called when an executor has initialised its
	// plugins and is ready.
	OnExecutorAdded(ctx context.Context, e ExecutorInfo)
	// OnExecutorRemoved is called when a ready executor leaves. reason is
	// nil for a clean shutdown: the driver released it, or it stopped on
	// its own (its process told to, say) and ended its connection after
	// sending everything. It is the error for an executor lost: killed,
	// crashed, cut off, or whose own stop was cut short. For a
	// local-cluster executor whose process ended, it ends with how
	// ("...; executor process (pid 4242): signal: killed", or "exit
	// status 2" for a panic), when the driver sees the process end (on
	// Linux it waits for that, a process that dies having closed its
	// connection just before).
	OnExecutorRemoved(ctx context.Context, e ExecutorInfo, reason error)
}

// ConcurrentReceiver is implemented by driver plugins whose Receive is safe
// for concurrent use, and by executor plugins whose ExecutorReceiver's is
// (an agent running a pushed job in Receive, which must still take the
// job's cancel). MaxConcurrentReceives returns how many calls may run at
// once (values below 2 keep the default of one, and more than 65536 count
// as 65536); messages are then no longer delivered strictly in order. The
// goroutines start as messages need them, not all at once: a message that
// comes while every one started is busy starts another, up to that many,
// and each, once started, lasts as long as the side. It is called once, as the side
// starts. An executor stopping waits for what the driver sent it to have
// started, not returned, before its handlers' ctx ends: a job run in
// Receive until canceled does not hold the stop. The rest of this comment
// is about driver plugins. ExecutorListener's events keep their
// place among their executor's messages: OnExecutorAdded starts once the
// messages that executor sent before it was ready (from its plugins'
// Init, or goroutines Init started) have started, and may run alongside
// them (a long poll waiting for that executor's own results, say), and
// returns before any later one starts; OnExecutorRemoved starts once all
// have returned. Other executors' messages run meanwhile.
//
// Messages beyond that many wait on the lane, in the order they came, for
// a call to return, and so do ExecutorListener's events, which take a
// call of their own. A Receive that long-polls holds its goroutine while
// it waits: with as many asks waiting at once as MaxConcurrentReceives,
// or more (every worker of every executor, in a work queue), the sends
// behind them, results included, wait until a poll ends, which may be
// never; so does OnExecutorRemoved, even for an executor none of whose
// messages are waiting, and a queue that puts a lost executor's jobs back
// there never wakes the polls that wait for them. Size it above the asks
// that may wait at once, or give the messages that must not wait a plugin
// of their own (each plugin has its own lane). A side whose lane holds
// messages while none of its calls returns for ember.lane.stallWarning
// (15s by default) logs a warning.
type ConcurrentReceiver interface {
	MaxConcurrentReceives() int
}

// DroppedReplyListener is implemented by plugins, on either side, that must
// know of every reply that reached them too late: a reply that came for an
// ask of theirs (ExecutorContext's Ask or Go, DriverContext's AskExecutor
// or GoExecutor) after that ask had given up, its ctx ended first, so that
// nobody took it. The answering side cannot know, and a work queue whose
// replies are jobs would otherwise lose the job until its lease runs out.
//
// OnReplyDropped is called with each such reply's message, not with an
// error reply nor a nil one. On an executor it runs on the plugin's
// dispatch lane, one call at a time with its Receive calls
// ([ExecutorReceiver]; alongside them for a [ConcurrentReceiver]), under a
// ctx that ends when the executor stops; on
// the driver, on the plugin's lane as a message from that executor would
// (one call at a time with Receive, or alongside it for a
// [ConcurrentReceiver]), before that executor's OnExecutorRemoved, under a
// ctx that carries the executor's ID ([SenderID]). It runs on the lane's
// goroutine, not the asker's, maybe while the ask that gave up is still
// returning its error: what both touch needs a lock. A panic is recovered and logged. Replies nobody takes (the plugin does not listen, or its
// lane has closed for shutdown) are counted in
// ember_messages_dropped_total, reason late_reply.
//
// Together with [ExecutorListener] on the driver, it accounts for every
// message a Receive returned that its asker did not take: a reply still
// on its way when its connection ends is lost with it, and the driver
// then calls OnExecutorRemoved; so is one that comes once the executor
// has begun to stop (its plugins' lanes closed, before their Shutdown),
// and the driver's OnExecutorRemoved follows too. An ask whose reply arrives as its ctx
// ends returns the reply (no error), so it is never both returned and
// reported here.
type DroppedReplyListener interface {
	OnReplyDropped(ctx context.Context, reply any)
}

// SendWindowed is implemented by driver plugins whose messages need a send
// window other than the application's (ember.Config.SendWindow): typically
// a plugin whose messages are large, which with the default window of
// 1 MiB goes one message of 1 MiB at a time. The window is the bytes of
// Send, SendExecutor and Broadcast messages that one executor and the
// driver may have in flight to each other for this plugin, each way, not
// yet run by the receiving side; it bounds the memory the receiver may
// hold for the plugin, per executor. SendWindow is called once, when the
// driver starts; the driver's answer holds on every connection. Zero or
// less keeps the application's window; more than 1 GiB counts as 1 GiB.
type SendWindowed interface {
	SendWindow() int
}

// TaskListener is implemented by executor plugins that watch tasks (Spark
// 3.1 onTaskStart, onTaskSucceeded, onTaskFailed). The hooks run on the
// task's goroutine, with the task's ctx, around each attempt:
//  1. OnTaskStart, for each listening plugin in plugin-list order;
//  2. the task function;
//  3. OnTaskSucceeded, or OnTaskFailed with the attempt's error, for each
//     listening plugin in plugin-list order whose OnTaskStart was called,
//     even when it panicked: each listener sees an attempt start and end,
//     or neither.
//
// The attempt's result goes to the driver once the closing hooks have
// returned, so a slow hook delays its task's Map: keep hooks quick (a
// Send to the driver only queues; an Ask waits for the reply).
// An executor runs up to ember.ConfExecutorSlots tasks at once, so the
// hooks are called concurrently and must be safe for concurrent use. A
// panic in a hook is logged and never fails the task. A hook that ends the
// goroutine instead (runtime.Goexit: t.Fatal in a test's plugin) ends the
// task's with it: in OnTaskStart, the task does not run and the attempt
// fails with CodeInternal, naming the plugin and hook. An attempt the
// driver canceled (its job ended) comes to OnTaskFailed with what the
// task returned: its ctx's error or cause match context.Canceled (code
// CodeCanceled, whatever ended the job), which tells a kill, Spark's
// TaskKilled, from a failure; ctx.Err() says so too.
type TaskListener interface {
	OnTaskStart(ctx context.Context, t TaskInfo)
	OnTaskSucceeded(ctx context.Context, t TaskInfo)
	OnTaskFailed(ctx context.Context, t TaskInfo, reason error)
}

// BaseDriverPlugin is a no-op DriverPlugin to embed by value, so that a
// plugin implements only the methods it needs and keeps compiling when
// methods are added. Its Receive answers CodeUnimplemented.
type BaseDriverPlugin struct{}

// Init returns no extraConf.
func (BaseDriverPlugin) Init(context.Context, DriverContext) (map[string]string, error) {
	return nil, nil
}

// Receive answers every message with a CodeUnimplemented error naming
// the message's type.
func (BaseDriverPlugin) Receive(_ context.Context, msg any) (any, error) {
	return nil, Errorf(CodeUnimplemented, "driver plugin does not implement Receive (got a %T)", msg)
}

// Shutdown does nothing.
func (BaseDriverPlugin) Shutdown(context.Context) error { return nil }

// BaseExecutorPlugin is a no-op ExecutorPlugin to embed by value.
type BaseExecutorPlugin struct{}

// Init does nothing.
func (BaseExecutorPlugin) Init(context.Context, ExecutorContext, map[string]string) error {
	return nil
}

// Shutdown does nothing.
func (BaseExecutorPlugin) Shutdown(context.Context) error { return nil }

var (
	_ DriverPlugin   = BaseDriverPlugin{}
	_ ExecutorPlugin = BaseExecutorPlugin{}
)
