// Package plugin is the API for writing Ember plugins: code that runs on
// the driver and on every executor of an application and talks across
// them (Spark: org.apache.spark.api.plugin).
//
// A plugin implements [Plugin], returning a [DriverPlugin], an
// [ExecutorPlugin], or both. Embed [BaseDriverPlugin] and
// [BaseExecutorPlugin] to implement only what you need. Optional
// capabilities are separate interfaces found by type assertion:
// [ExecutorReceiver] (the driver can push to executors), [ExecutorListener]
// (the driver plugin sees executors come and go), [ConcurrentReceiver]
// (Receive may run concurrently), [SendWindowed] (a send window of the
// plugin's own), [DroppedReplyListener] (told of replies that came after
// their ask gave up) and [TaskListener].
//
// Executor plugins talk to their driver plugin through [ExecutorContext]:
//
//	r, err := plugin.Ask[ConfigReply](ctx, pc, ConfigRequest{}) // request/reply
//	err = pc.Send(ctx, Progress{Done: 10})                      // fire and forget
//	pc.Go(ctx, ConfigRequest{}, done)                           // request; the reply later, on done
//
// and driver plugins to executors through [DriverContext] (AskExecutor,
// GoExecutor, SendExecutor, Broadcast). Go and GoExecutor keep many asks
// in flight from one goroutine; see [Call]. Message types must be registered in every
// process with [RegisterMessage], in an init function.
//
// Errors crossing the wire are [*Error] values with a [Code]; use
// [CodeOf], [errors.Is] and [errors.As] to inspect them, and [IsRemote] to
// tell a peer's answer from a local failure.
package plugin
