// Package ember runs driver/executor programs with a plugin framework
// modelled on Apache Spark 3's (SparkPlugin, DriverPlugin, ExecutorPlugin,
// PluginContext), rebuilt for Go.
//
// # Model
//
// One program is both the driver and its executors. Run normally, [Run]
// starts the driver; started with EMBER_DRIVER=host:port in its
// environment, the same binary serves as an executor of that driver and
// never runs the driver's code. Config.Master says where executors come
// from:
//
//   - local[N]: N executors inside the driver's process. They still talk to
//     it over loopback gRPC, so messages are always encoded.
//   - local-cluster[N]: N child processes of the program's own binary. They
//     exit when the driver dies, however it dies; one that crashes first is
//     replaced by a new process (ConfExecutorMaxRetries).
//   - standalone: the driver listens on Config.ListenAddr; executors are
//     started by anyone, on any host, as EMBER_DRIVER=host:port ./app.
//
// Each executor holds one gRPC stream to the driver. On connect it sends a
// handshake (protocol version, build ID, plugin names, message types,
// task names, message limit); a mismatch refuses the executor with a
// message naming the differences.
//
// # Plugins
//
// A [plugin.Plugin] pairs a driver side and an executor side under one
// name. Plugins are listed in Config.Plugins, or registered with
// [plugin.Register] and enabled by name in Config.Conf ("ember.plugins").
// The lifecycle is:
//
//  1. Driver plugins' Init, in list order, before any executor starts. Each
//     returns an extraConf map for its executor side.
//  2. Executors start; on each, executor plugins' Init runs in list order
//     with that extraConf. The driver function runs once all are ready.
//  3. Messages flow: an executor plugin Asks its driver plugin (request and
//     reply) or Sends to it (fire and forget); the driver plugin can
//     AskExecutor, SendExecutor or Broadcast to executor plugins that
//     implement [plugin.ExecutorReceiver]. Every call takes a context.
//  4. Shutdown, when the driver function returns: executor plugins shut down
//     in reverse order and their last sends are delivered, then driver
//     plugins shut down in reverse order.
//
// Each driver plugin receives on its own lane: calls to its Receive are
// one at a time, in the order each executor sent them (unless it
// implements [plugin.ConcurrentReceiver]), and a slow plugin delays no
// other. So does each executor plugin that receives, on every executor.
//
// # Messages and errors
//
// Messages are Go values of types registered with
// [plugin.RegisterMessage] in every process; plain structs travel as CBOR
// (fields by name, like JSON but compact and faster), proto.Message values
// as protobuf. Errors that cross the wire are
// [*plugin.Error] values with a [plugin.Code]; a deadline that expires on
// either side matches [context.DeadlineExceeded].
//
// # Tasks and metrics
//
// [NewTask] registers a Go function to run on executors and [Map] runs it
// over inputs, with retries (but for an error marked [Permanent]),
// rescheduling when an executor dies, and task hooks for executor plugins
// ([plugin.TaskListener]). Plugins register
// Prometheus metrics with Context.Metrics; executors ship theirs to the
// driver, which serves all of them at /metrics ([Driver.MetricsURL]).
//
// See examples/rpc for the smallest complete program, and docs/internals.md
// for the protocol.
package ember
