package plugin

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/emberhq/ember/internal/hook"
	"github.com/prometheus/client_golang/prometheus"
)

// Context is what both sides of a plugin get from the runtime (Spark:
// PluginContext). Its methods are safe for concurrent use.
type Context interface {
	// AppID identifies the application run.
	AppID() string
	// Conf is a read-only view of the application configuration; executors
	// see the driver's.
	Conf() Conf
	// Metrics is a registerer scoped to this plugin: metrics registered
	// here carry "plugin" and "executor" labels (executor="driver" on the
	// driver), so the plugin's own labels must be named otherwise.
	//
	// An executor's series reach the driver's /metrics with its heartbeats
	// (every ember.metrics.interval) and leave it with the executor: at
	// once when it is lost (a crash, a kill, silence), five minutes after
	// it stopped on its own; a released one's stay until the driver ends.
	// So a sum over executors of a counter goes down when an executor is
	// lost, and what it counted since its last shipment never arrives.
	// For a total that only grows, count on the driver: have the executor
	// side Send its increments to the driver side, which adds them to a
	// counter registered here.
	Metrics() prometheus.Registerer
	// Logger carries "plugin" and (on executors) "executor" attributes.
	Logger() *slog.Logger
	// Hostname is the name of the host this process runs on.
	Hostname() string
}

// ExecutorContext is the executor side's view of the runtime. Only the
// runtime implements it, and it may gain methods: a fake for a unit test
// embeds the interface and overrides what it needs.
//
// Ask, Go and Send may be called from any goroutine, including from Init
// and Shutdown. Messages from one executor plugin reach its driver plugin
// in the order Send, Ask and Go were called (from one goroutine).
type ExecutorContext interface {
	Context
	// ExecutorID identifies this executor ("1", "2", ...).
	ExecutorID() string
	// Resources are the resources discovered for this executor when it
	// started, by name: one for each discovery command in the application's
	// Conf (ember.ConfResourceDiscoveryScript). Each call returns a new
	// map, never nil, that the caller owns and may change.
	Resources() map[string]Resource
	// Ask sends msg to the driver plugin of the same name and waits for its
	// reply. The deadline comes from ctx and bounds the driver's handler
	// too; when ctx ends first, Ask returns at once with an error matching
	// ctx.Err() (context.DeadlineExceeded or context.Canceled), and a
	// cancel is passed on: the handler's ctx ends too (an ask still
	// queued behind others on this side is not sent at all). A reply
	// that arrives after that is dropped, and, if it carries a message,
	// reported to the plugin if it implements [DroppedReplyListener]; one
	// that arrives as ctx ends is returned, with no error. A Receive
	// error arrives with its code and message; a lost driver gives
	// CodeUnavailable wrapping ErrClosed, and so does an ask that reaches
	// the driver after its plugin has shut down. Ask is safe to call from
	// many goroutines at once, which is one way to keep several asks in
	// flight (Go, from one goroutine, is the other): concurrent asks share
	// batches on the wire, while a lone ask is written at once.
	// Once the plugin's Shutdown has returned (or, ignoring its ctx, been
	// abandoned), Ask and Send fail with CodeUnavailable wrapping
	// ErrClosed: nothing sent then would reach the driver. So does an ask
	// still waiting then, whether its connection closes first or the
	// driver cancels its handler as the executor stops. For a plugin with
	// no driver side, both fail at once with CodeNotFound.
	Ask(ctx context.Context, msg any) (any, error)
	// Send queues msg for the driver plugin of the same name and returns.
	// It reports only local failures: an unregistered or oversized message
	// (at once), a closed connection, or ctx ending while Send waits
	// (backpressure: the driver plugin is behind on this executor's
	// messages, a send window of them sent and not yet run, see the ember
	// package's Config.SendWindow and [SendWindowed]; or the connection's
	// queue is full). A ctx that has already ended does not fail a Send
	// that need not wait, unlike Ask: a TaskListener reporting a cancelled
	// task can still send with the task's ctx. Sending from Receive to
	// the side that sends to it is safe under Receive's ctx (or one made
	// from it): while such a Send waits, the plugin's lane on this side
	// lends the other side window that only its handlers (under their
	// ctx) may spend, so two Receives that send to each other do not wait
	// on each other for ever, provided each sends at most about sixteen
	// messages for each it takes in (the loan is capped: see
	// docs/internals.md, "Loans").
	// What Receive does with msg is not reported.
	Send(ctx context.Context, msg any) error
	// Go starts an ask and returns without waiting for its reply: Ask,
	// with the outcome delivered as a [Call] on done, exactly once. It is
	// how one goroutine keeps many asks in flight, as a load generator
	// does, without a goroutine waiting on each (see [Call]). Everything
	// Ask promises holds (ctx, cancel, errors, order), and any failure,
	// local or remote, arrives on done as the Call's Err: Go itself never
	// fails. Go waits only while the connection's queue is full, as Send
	// does (and then fails the Call if ctx ends first). The driver takes
	// at most the ember package's Config.MaxOutstandingAsks asks (default
	// 4096) from one executor at a time, all plugins together, counting
	// each until the driver has answered it (one given up on, until its
	// handler returns): an ask past that fails at once with
	// CodeResourceExhausted, so keep fewer in flight.
	Go(ctx context.Context, msg any, done chan *Call) *Call
}

// DriverContext is the driver side's view of the runtime. Its methods may
// be called from any goroutine. Like ExecutorContext, only the runtime
// implements it, and it may gain methods.
type DriverContext interface {
	Context
	// Executors lists the ready executors, ordered by ID (nil when there
	// is none). Each call returns a new slice, Resources maps included,
	// that the caller owns and may change. An executor stopping on its
	// own (its process told to) is listed until it has gone, with
	// Stopping set, though calls to it fail from when it says so (see
	// AskExecutor).
	Executors() []ExecutorInfo
	// AskExecutor sends msg to this plugin on one executor, whose plugin
	// must implement ExecutorReceiver (else CodeUnimplemented), and waits
	// for the reply. Errors are as for ExecutorContext.Ask, and so is a
	// reply that comes after ctx has ended ([DroppedReplyListener]); an
	// unknown executor gives CodeNotFound ([ErrNoSuchExecutor]). Once the driver
	// is shutting down, AskExecutor, GoExecutor, SendExecutor and
	// Broadcast give CodeUnavailable ([ErrShuttingDown], which matches
	// [ErrClosed] too), and so does an ask still waiting then. An ask
	// still waiting when its executor is lost, or stops on its own, gives
	// CodeUnavailable ([ErrClosed] alone: ask another executor), though
	// its handler returns the end of its ctx: CodeCanceled is the asker's
	// own cancel, or an error with that code that the executor's Receive
	// returned. So does an ask sent as the executor said it was stopping,
	// which reached it after its plugin had shut down (refused there).
	// AskExecutor, GoExecutor and SendExecutor give the same
	// once the executor has said it is stopping on its own: its plugins
	// are shutting down, and would drop what is sent (a send on its way
	// as it says so is lost).
	// A CodeUnavailable error names the executor ("executor 2: ...").
	AskExecutor(ctx context.Context, executorID string, msg any) (any, error)
	// GoExecutor is AskExecutor without the wait: the outcome arrives as
	// a [Call] on done, as for ExecutorContext.Go. To fan a request out,
	// call it for each of Executors() with one done channel: each Call
	// that comes back says which executor it asked (Call.Executor).
	GoExecutor(ctx context.Context, executorID string, msg any, done chan *Call) *Call
	// SendExecutor queues msg for this plugin on one executor; see
	// ExecutorContext.Send for what it reports. Like AskExecutor, it fails
	// at once with CodeUnimplemented when the plugin's executor side does
	// not implement ExecutorReceiver.
	SendExecutor(ctx context.Context, executorID string, msg any) error
	// Broadcast queues msg for this plugin on every ready executor. The
	// message is encoded once. Executors that can take it at once get it
	// first; then Broadcast waits for those that cannot yet (their plugin
	// is behind on its messages), so one slow executor delays nobody
	// else's copy. An executor that leaves or is lost meanwhile is skipped
	// (its OnExecutorRemoved follows), and so is one that has said it is
	// stopping on its own. It returns the first local failure (its ctx
	// ending while it waits for an executor, the driver shutting down)
	// after trying every executor, naming the executor it failed for
	// ("executor 2: ..."; not for the driver's shutdown, [ErrShuttingDown],
	// no executor's doing); ErrClosed at once once the driver is
	// shutting down; CodeUnimplemented when no ready executor's side of
	// the plugin implements ExecutorReceiver (those that do not are
	// skipped). With no ready executor (in the driver plugin's Init,
	// before any has joined) it sends nothing and returns nil: to reach
	// every executor from its start, send from
	// ExecutorListener.OnExecutorAdded too.
	// OnExecutorAdded runs on the plugin's lane, concurrently with other
	// goroutines (the function given to ember.Run may start before it has
	// returned for the executors it lists), so its send may land after a
	// Broadcast made later: read the state and send it under the lock
	// that guards its updates and their Broadcast, or version the state
	// so that executors keep the newest, as examples/dynamicconfig does.
	// The executor is ready, and may be running tasks, before that send
	// arrives. To start an executor with the newest state, have its
	// plugin's Init ask for it: Init returns before the executor is
	// ready, so before any task or message; OnExecutorAdded's send then
	// matters only for what changed while it joined (examples/dynamicconfig
	// sends every change again there, and its executors keep the newest).
	Broadcast(ctx context.Context, msg any) error
}

// Call is an ask started with ExecutorContext.Go or DriverContext.GoExecutor
// and not waited for, as net/rpc's Call is. Go returns the Call and sends
// that same Call on Done exactly once, whatever happens: when the reply
// arrives, when the ask fails (locally, at once, or on the peer), or when
// its ctx ends (the cancel is passed on, as for Ask). Reply and Err are
// written before the Call is sent, so reading them after receiving it is
// safe. Msg is the msg given to Go, as it was given, and Executor the ID
// given to GoExecutor, so a Call can be matched to its request.
//
// Done is the channel given to Go (a new one with room for one Call when
// that was nil). Many Calls may share one: give it room for the Calls
// kept in flight, and one goroutine can start them and take their
// outcomes as they come, in no particular order, counting them, as
// nothing closes Done:
//
//	done := make(chan *plugin.Call, 64)
//	for range 64 {
//		pc.Go(ctx, Ping{}, done)
//	}
//	for range 64 {
//		c := <-done
//		pong, err := plugin.Reply[Pong](c)
//		// ... use pong (or err); to keep going, start the next ask here
//	}
//
// The connection never waits for whoever reads Done: a Call that finds it
// full is sent by a goroutine of its own, which waits for room. So nothing
// is lost, but a Done that is never read holds those goroutines.
//
// For a deadline per ask, give each its own ctx (context.WithTimeout) and
// keep its cancel func by Call, to call when the Call comes back. Asks
// that share one ctx, made with Go or Ask, are watched by one goroutine
// per connection (at most sixteen), which lives until that ctx ends: a
// test that counts goroutines sees it.
type Call struct {
	Executor string     // the executor asked by GoExecutor; "" for Go, which asks the driver
	Msg      any        // the message asked
	Reply    any        // the reply's message, once done (nil if Err is set)
	Err      error      // the ask's error, once done, as Ask would return it
	Done     chan *Call // receives the Call once it is done
}

// Reply is the typed form of a done Call's outcome, as Ask is of
// Asker.Ask: c.Err, or c.Reply as an R (see Ask for the conversions: a
// nil reply gives R's zero value and no error).
func Reply[R any](c *Call) (R, error) { return replyAs[R](c.Reply, c.Err) }

// Asker is anything with an untyped Ask, such as an ExecutorContext.
type Asker interface {
	Ask(ctx context.Context, msg any) (any, error)
}

// Ask is the typed form of Asker.Ask:
//
//	r, err := plugin.Ask[InitialConfigResponse](ctx, pc, InitialConfigRequest{})
//
// A reply of another type gives a CodeInvalidArgument error; a nil reply
// gives R's zero value. R may be a registered type T or *T: a reply sent
// as a pointer arrives as the value, which Ask[*T] returns a pointer to.
func Ask[R any](ctx context.Context, a Asker, msg any) (R, error) {
	v, err := a.Ask(ctx, msg)
	return replyAs[R](v, err)
}

// AskExecutor is the typed form of DriverContext.AskExecutor.
func AskExecutor[R any](ctx context.Context, dc DriverContext, executorID string, msg any) (R, error) {
	v, err := dc.AskExecutor(ctx, executorID, msg)
	return replyAs[R](v, err)
}

func replyAs[R any](v any, err error) (R, error) {
	var zero R
	if err != nil || v == nil {
		return zero, err
	}
	if r, ok := v.(R); ok {
		return r, nil
	}
	// A pointer to a registered type is sent as the value it points to,
	// and arrives as that value: R = *T takes it.
	if rt := reflect.TypeFor[R](); rt.Kind() == reflect.Pointer && reflect.TypeOf(v) == rt.Elem() {
		p := reflect.New(rt.Elem())
		p.Elem().Set(reflect.ValueOf(v))
		return p.Interface().(R), nil
	}
	// The wanted type from reflect, not %T of zero: for an interface R
	// (Ask[fmt.Stringer]) that printed "<nil>".
	return zero, Errorf(CodeInvalidArgument, "reply is %T, want %v", v, reflect.TypeFor[R]())
}

// Resource is a named executor resource and its addresses, as printed by a
// discovery command (Spark: ResourceInformation).
type Resource struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
}

// ExecutorInfo describes an executor as the driver sees it.
type ExecutorInfo struct {
	// ID is the executor's ID, given by the driver at the handshake ("1",
	// "2", ...; never reused while the driver runs).
	ID string
	// Host and PID are what the executor says of itself, not verified:
	// its host name (cut if longer than 255 bytes) and process ID. A
	// local[N] executor runs inside the driver's process, so its PID is
	// the driver's own: a signal sent to it (syscall.Kill(e.PID,
	// syscall.SIGKILL) to kill one executor, say) reaches the driver and
	// every executor (embertest's Cluster.Kill kills one alone).
	Host string
	PID  int
	// Resources are what its discovery commands found, by name
	// (ExecutorContext.Resources on the executor).
	Resources map[string]Resource
	// Slots is how many tasks it runs at once: its EMBER_EXECUTOR_SLOTS,
	// else the driver's ember.executor.slots, else its GOMAXPROCS.
	Slots int
	// Added is when the executor became ready.
	Added time.Time
	// Stopping, in DriverContext.Executors, reports an executor that is
	// stopping on its own (its process told to) or a driver shutting
	// down: calls to it fail with ErrClosed, and it is listed until it
	// has gone. A coordinator that pushes work skips it. It is false in
	// the listener's calls.
	Stopping bool
}

// TaskInfo describes a task to TaskListener hooks.
type TaskInfo struct {
	JobID      string // the job (one Map call) the task belongs to
	TaskName   string // the task's registered name (ember.NewTask)
	Index      int    // the input's index in the job
	Attempt    int    // 0 for the first attempt
	ExecutorID string // the executor running it
	// Started is when the attempt started on the executor, just before
	// the OnTaskStart hooks: time.Since(t.Started) in OnTaskSucceeded or
	// OnTaskFailed is its duration, hooks included.
	Started time.Time
}

// Conf is a read-only view of string configuration. The zero value is
// empty. A Conf is safe for concurrent use.
type Conf struct {
	// v holds the values behind a pointer, so that fmt, printing a Conf
	// held in another struct's unexported field (where it cannot call
	// String), prints an address instead of the values, secrets included.
	v *confValues
}

type confValues struct{ m map[string]string }

// NewConf returns a Conf holding a copy of m.
func NewConf(m map[string]string) Conf { return Conf{v: &confValues{m: maps.Clone(m)}} }

// values returns c's map (nil for the zero Conf); it must not be changed.
func (c Conf) values() map[string]string {
	if c.v == nil {
		return nil
	}
	return c.v.m
}

// Get returns the value of key, or "" when it is not set.
func (c Conf) Get(key string) string { return c.values()[key] }

// Lookup returns the value of key and whether it is set.
func (c Conf) Lookup(key string) (string, bool) {
	v, ok := c.values()[key]
	return v, ok
}

// Int returns key as an int, def when it is not set, or a
// CodeInvalidArgument error naming the key when it is not an integer.
// With an error the value is 0, not def: Int, Duration and Bool never
// hide a value they cannot read behind the default.
func (c Conf) Int(key string, def int) (int, error) {
	return confValue(c, key, def, "an integer", strconv.Atoi)
}

// Duration returns key parsed by time.ParseDuration, def when it is not
// set, or 0 and a CodeInvalidArgument error naming the key.
func (c Conf) Duration(key string, def time.Duration) (time.Duration, error) {
	return confValue(c, key, def, `a duration (with its unit: "1s", "500ms")`, time.ParseDuration)
}

// Bool returns key parsed by strconv.ParseBool ("true", "false", "1",
// "0", "t", "f" and their capitalised forms), def when it is not set, or
// false and a CodeInvalidArgument error naming the key.
func (c Conf) Bool(key string, def bool) (bool, error) {
	return confValue(c, key, def, "a boolean", strconv.ParseBool)
}

// confValue returns key parsed by parse, def when it is not set, or an
// error saying the value is not what (a secret's value redacted).
func confValue[T any](c Conf, key string, def T, what string, parse func(string) (T, error)) (T, error) {
	v, ok := c.values()[key]
	if !ok {
		return def, nil
	}
	x, err := parse(v)
	if err != nil {
		var zero T
		return zero, NewError(CodeInvalidArgument, fmt.Sprintf("conf %s=%q: not %s", key, printable(key, v), what))
	}
	return x, nil
}

// All yields the entries in key order.
func (c Conf) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		m := c.values()
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}

// printable returns v, or Redacted when key names a secret.
func printable(key, v string) string {
	if IsSecretKey(key) {
		return Redacted
	}
	return v
}

// Map returns a copy of the entries, never nil, that the caller owns: it
// may add to it, as to a copy of the application's Conf to derive a
// plugin's own.
func (c Conf) Map() map[string]string {
	m := make(map[string]string, len(c.values()))
	maps.Copy(m, c.values())
	return m
}

type senderKey struct{}

// SenderID returns the ID of the executor whose message is being handled,
// from the ctx the runtime passes to a driver plugin's Receive (and to
// ExecutorListener calls). It reports false for any other ctx.
func SenderID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(senderKey{}).(string)
	return id, ok
}

// NewSenderContext returns a copy of ctx that carries executorID as its
// sender, as the ctx the runtime passes to a driver plugin's Receive
// does: for calling a Receive (or an ExecutorListener method) directly
// in a unit test, where SenderID must find an executor.
func NewSenderContext(ctx context.Context, executorID string) context.Context {
	return context.WithValue(ctx, senderKey{}, executorID)
}

func init() {
	hook.WithSender = NewSenderContext
}
