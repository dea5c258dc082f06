// Package executor is the executor side of the runtime: it connects to the
// driver, performs the handshake, initialises the executor plugins, serves
// messages pushed by the driver, and shuts down when released.
package executor

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emberhq/ember/internal/auth"
	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/metrics"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Config configures an executor. Zero durations take the defaults.
type Config struct {
	DriverAddr string
	Plugins    []plugin.Plugin
	Logger     *slog.Logger
	Registry   *prometheus.Registry
	BuildID    string
	// MaxMessageBytes bounds one payload. It must equal the driver's: the
	// driver refuses an executor whose limit differs.
	MaxMessageBytes int
	// SendQueue bounds the frames waiting to be written (backpressure).
	SendQueue int
	// LaneQueue is the queue length at which a plugin's lane stops giving
	// the driver's window back (default rpc.DefaultLaneLimit).
	LaneQueue int
	// HeartbeatTimeout is how long the driver may stay silent before the
	// executor declares it lost (default ten of the heartbeat intervals
	// the driver announces; one no longer than an interval is taken as
	// the default, with a warning).
	HeartbeatTimeout time.Duration
	// ConnectTimeout bounds reaching the driver and the handshake.
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds the wait for each of the driver's answers
	// in the handshake, once a stream to it is open (its CHALLENGE, and
	// its WELCOME after HELLO), while no byte comes from it (default
	// 10s). A driver that does not answer (the network dropping packets,
	// a partition) ends Run with an error, as the driver drops an
	// executor that does not answer it: the executor used to wait,
	// silent, for ConnectTimeout.
	HandshakeTimeout time.Duration
	// SlowConnect is how long a connection attempt may go unanswered
	// before the executor warns that it cannot connect yet (default 5s):
	// an attempt to a host that drops the packets lasts 20s.
	SlowConnect time.Duration
	// ShutdownTimeout is what the driver waits for this executor to stop;
	// the whole stop fits in it (see Executor.shutdown).
	ShutdownTimeout time.Duration
	// Creds secure the connection to the driver (TLS); nil: plaintext.
	Creds credentials.TransportCredentials
	// DialOptions are added to the gRPC client's (tests use them).
	DialOptions []grpc.DialOption
	// OnWelcome, if set, is called with the executor ID once the driver has
	// accepted the handshake.
	OnWelcome func(id string)
	// Construct, if set, is held around each plugin's ExecutorPlugin call.
	// The executors of one local[N] share one, so that they call it one
	// at a time, as plugin.Plugin promises: a plugin that keeps the sides
	// it makes (a test's, say) need not lock. One per launch, not per
	// process, so that clusters do not wait on each other.
	Construct *sync.Mutex
	// Crash, when closed, makes the executor fail as if its process died
	// (fault injection): the stream drops at once, with no word to the
	// driver; then, since the process does not die, its tasks end and its
	// plugins shut down, their sends failing.
	Crash <-chan struct{}
	// Tasks are the registered task names in registration order, and
	// RunTask runs one by name; plugins returns this executor's instance
	// of a plugin by name (nil: none, or no executor side). Slots is how
	// many run at once: OwnSlots if set, else the driver's ConfSlots if
	// set, else Slots (default: GOMAXPROCS, the CPUs the process may use,
	// a container's CPU limit included). OwnSlots is this executor's own
	// setting (its process's EMBER_EXECUTOR_SLOTS), which the driver's
	// conf does not override.
	Tasks    []string
	RunTask  func(ctx context.Context, t plugin.TaskInfo, input []byte, plugins Plugins) ([]byte, error)
	Slots    int
	OwnSlots int
	// Secret is the application secret; empty: this executor cannot
	// authenticate, and only a driver without authentication accepts it.
	// When set, the driver must prove it too.
	Secret string
	// Announce logs, at Info, that the executor joined (with the ID the
	// driver gave it) and that it was released: for one started by hand,
	// whose own log is otherwise silent on success and cannot be matched
	// with the driver's. A driver's own executors are announced by the
	// driver.
	Announce bool
}

// connectParams are how the executor retries a driver it cannot reach
// yet: at most a second apart, so that one started before its driver
// joins within about a second of the driver coming up. gRPC's default
// backoff grows to two minutes: an executor started half a minute before
// its driver joined it about fifteen seconds after the driver was up, and
// one started a minute before gave up at ConnectTimeout without trying
// again, the driver up for a quarter of a minute. The connect timeout is
// gRPC's default.
var connectParams = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   time.Second,
	},
	MinConnectTimeout: 20 * time.Second,
}

// ErrDriverLost is wrapped by Run's error when the driver went away
// without releasing the executor.
var ErrDriverLost = errors.New("lost the driver")

// ErrMisconfigured is wrapped by Run's error when the executor and its
// driver are set up so that they cannot work together, which starting the
// executor again does not mend: the driver refused its proof of the
// secret, or its build or plugins (a handshake mismatch); the driver did
// not prove the secret; their TLS set-ups do not agree.
var ErrMisconfigured = errors.New("misconfigured")

// misconfigured is err, matching ErrMisconfigured too, with err's text.
type misconfigured struct{ error }

func (m misconfigured) Unwrap() []error { return []error{m.error, ErrMisconfigured} }

// Executor is one running executor. Its methods are safe for concurrent use.
type Executor struct {
	cfg       Config
	log       *slog.Logger
	id        string
	appID     string
	conf      plugin.Conf
	hostname  string
	resources map[string]plugin.Resource
	endpoints []*endpoint
	conn      *rpc.Conn
	ctx       context.Context // handler context
	stop      chan struct{}   // closed when STOP arrives
	stopOnce  sync.Once
	listeners []*endpoint // plugins implementing TaskListener, in order
	limitHits metrics.Vec[prometheus.Counter]
	// gatherErr is the last metrics gather error, as text ("<nil>" for
	// none); only gatherMetrics uses it, from one goroutine at a time.
	gatherErr string
	// shipped: the last metrics shipped held some families, which the
	// driver serves until the executor ships others; only gatherMetrics
	// uses it, as gatherErr.
	shipped bool
	// own gathers the built-in vectors alone (limitHits, dropped and
	// laneStalled): what is shipped when the whole registry is over the
	// message size.
	own     *prometheus.Registry
	dropped metrics.Vec[prometheus.Counter] // plugin, reason: sends from the driver not delivered
	// laneStalled has a series, at 1, for each plugin whose lane is
	// stalled, and none for the others (watchStalls).
	laneStalled metrics.Vec[prometheus.Gauge]
	// stopWatching stops the lanes' stall watch and waits for it (once
	// the executor is ready; it may be called more than once).
	stopWatching func()
	// lanesClosed: closeLanes has run (only Run's goroutine reads it).
	lanesClosed bool
	// crashed: Config.Crash fired, and shutdown stands in for the end
	// of the process (only Run's goroutine reads it).
	crashed bool

	mu sync.Mutex // protects tasks, queue, stopping and panics
	// tasks holds the cancel of each attempt holding a slot (at most
	// cfg.Slots), by run ID.
	tasks map[uint64]context.CancelCauseFunc
	// queue holds the TASKs that came with every slot taken until a slot
	// frees for them; shutdown empties it.
	queue    waitQueue
	stopping bool           // shutdown has begun: TASKs are refused
	running  sync.WaitGroup // task goroutines
	// panics counts the task panics logged, by job ID (see logTaskPanic);
	// emptied when it holds maxPanicJobs jobs.
	panics map[string]int
}

// Run connects to the driver and serves until the driver releases the
// executor (nil), the connection is lost (an error wrapping ErrDriverLost),
// a plugin fails to initialise, or ctx ends.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	x := &Executor{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), tasks: map[uint64]context.CancelCauseFunc{}}
	x.hostname, _ = os.Hostname()

	creds := cfg.Creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	handshakes := &handshakeErrors{TransportCredentials: creds, handshakeState: new(handshakeState)}
	cc, err := grpc.NewClient(cfg.DriverAddr, dialOptions(cfg, handshakes)...)
	if err != nil {
		return fmt.Errorf("driver address %q: %w", cfg.DriverAddr, err)
	}
	defer cc.Close()

	// The stream ends with ctx only until the executor is ready. After
	// that, ctx ending is a stop of the executor's own (below), which
	// still reports to the driver, so the stream outlives it. Before,
	// once the connection is up (its plugins' Init running), the driver
	// is told first (LEAVING, flushed with the stream's half-close): a
	// stop as the executor starts (a SIGTERM as a pod comes up) is then
	// one at the driver too, not an executor lost.
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var connected atomic.Bool // x.conn is set and started
	// leave sends LEAVING once: both the func below and Run's goroutine
	// (Init returning of ctx's end) tell the driver, whichever is first;
	// the other waits for that send before it closes the stream.
	var leaveOnce sync.Once
	leave := func() {
		leaveOnce.Do(func() { _ = x.conn.SendControl(leavingFrame(x.id)) })
	}
	untie := context.AfterFunc(ctx, func() {
		if connected.Load() {
			leave()
			x.drain(cfg.ShutdownTimeout / 10)
		}
		cancel()
	})
	defer untie()
	types := codec.Names() // what the handshake announces, and the frames' type table
	unreachable := x.warnUnreachable(streamCtx, cc, handshakes.err)
	welcome, stream, err := x.handshake(streamCtx, cancel, wire.NewEmberClient(cc), cc.GetState, types, handshakes)
	warned := unreachable()
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			// Stopped by its ctx while connecting: a stop, not a failure
			// (gRPC's Canceled status does not match ctx.Err()).
			return fmt.Errorf("executor: stopped while connecting to driver %s: %w (%v)", cfg.DriverAddr, ctx.Err(), err)
		}
		return err
	}
	x.id = welcome.ExecutorId
	x.appID = welcome.AppId
	x.conf = plugin.NewConf(welcome.Conf)
	x.log = cfg.Logger.With("executor", x.id)
	if warned {
		// The warning was the last word: say that it no longer holds.
		x.log.Info("connected to the driver", "driver", cfg.DriverAddr)
	}
	slots, err := x.conf.Int(ConfSlots, 0)
	if err != nil {
		return fmt.Errorf("executor %s: %w", x.id, err)
	}
	switch {
	case x.cfg.OwnSlots > 0:
		x.cfg.Slots = x.cfg.OwnSlots
	case slots > 0:
		x.cfg.Slots = slots
	}
	if cfg.OnWelcome != nil {
		cfg.OnWelcome(x.id)
	}
	// Handlers and tasks run under x.ctx, which ends when the executor
	// shuts down, or when Run returns; its cause says why (endHandlers).
	hctx, cancelHandlers := context.WithCancelCause(context.Background())
	endHandlers := func(why string) context.CancelFunc {
		return func() { cancelHandlers(fmt.Errorf("executor %s %s: %w", x.id, why, context.Canceled)) }
	}
	defer endHandlers("has stopped")()
	x.ctx = hctx

	setupErr := x.setupPlugins(welcome)
	heartbeat := time.Duration(welcome.HeartbeatIntervalMs) * time.Millisecond
	heartbeatTimeout := cfg.HeartbeatTimeout
	if heartbeatTimeout > 0 && heartbeatTimeout <= heartbeat {
		// The driver refuses such a timeout of its own (an idle peer is
		// heard from about once an interval); this one would lose it.
		x.log.Warn("Config.HeartbeatTimeout is no longer than the driver's heartbeat interval: using ten intervals", "timeout", heartbeatTimeout, "interval", heartbeat)
		heartbeatTimeout = 0 // rpc.New: ten intervals
	}
	x.conn = rpc.New(stream, cancel, x, rpc.Options{
		MaxMessageBytes:   cfg.MaxMessageBytes,
		QueueFrames:       cfg.SendQueue,
		HeartbeatInterval: heartbeat,
		HeartbeatTimeout:  heartbeatTimeout,
		Received:          func() (uint64, bool) { return handshakes.received.Load(), true },
		OnLimit:           func(limit string) { x.limitHits.WithLabelValues(limit).Inc() },
		Plugins:           pluginNames(cfg.Plugins),
		SendWindow:        sendWindow(welcome.SendWindow),
		PluginSendWindows: pluginSendWindows(welcome.PluginSendWindows),
	})
	x.conn.SetTypes(types)
	for _, i := range welcome.NoDriverSide {
		if uint(i) < uint(len(x.endpoints)) { // unsigned: int(i) can be negative on 32-bit
			x.endpoints[i].noDriverSide = true
		}
	}
	x.conn.Start()
	connected.Store(true)
	defer func() {
		endHandlers("has stopped")() // handlers still running see their ctx end
		x.conn.Close(nil)
		x.conn.Wait()
		x.closeLanes(time.Now().Add(x.cfg.ShutdownTimeout))
	}()

	// A plugin that could not be built fails the executor as an Init
	// error would, before any plugin's Init runs.
	err = setupErr
	if err == nil {
		// Init's ctx also ends when the driver goes or tells the
		// executor to stop: an Init waiting on it must not keep alive an
		// executor nobody waits for.
		ictx, icancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-x.conn.Done():
			case <-x.stop:
			case <-ictx.Done():
			}
			icancel()
		}()
		err = x.init(ictx)
		icancel()
	}
	// Released by the driver (STOP) while its plugins' Init ran, which
	// ended Init's ctx: a release, not an Init failure (the driver
	// function returned as this executor joined). The plugins initialised
	// have shut down (init); the executor answers STOP below, with
	// STOPPED, as a released one does, and Run returns nil once the
	// driver ends the stream. A failed READY instead made the driver log
	// an executor that failed to initialise, and Run fail with Init's
	// ctx error: its process exited 1, for a supervisor to restart.
	released := false
	if err != nil && ctx.Err() == nil {
		select {
		case <-x.stop:
			x.log.Info("released by the driver during its plugins' Init", "err", err)
			err, released = nil, true
		default:
		}
	}
	if err != nil {
		return x.initFailed(ctx, err, leave)
	}
	// Untie the stream from ctx before READY, not after: once the
	// driver may know the executor ready (a WaitExecutors returning,
	// then a SIGTERM), ctx ending must be the stop of its own below,
	// whose final sends reach the driver. Untied after READY, a ctx
	// ending in between canceled the stream, and they were lost.
	untie()
	if !released {
		_ = x.conn.SendControl(&wire.Frame{Kind: wire.Kind_KIND_READY, Ready: x.ready()})
		if x.cfg.Announce {
			x.log.Info("executor ready: joined the driver", "driver", cfg.DriverAddr, "app", x.appID, "slots", x.cfg.Slots)
		}
	}
	interval, err := x.conf.Duration(ConfMetricsInterval, time.Duration(welcome.HeartbeatIntervalMs)*time.Millisecond)
	if err != nil || interval <= 0 { // the driver refuses such a value at start; this guards a zero heartbeat interval
		interval = time.Second
	}
	stopShipping := x.startShipping(interval)
	defer stopShipping()
	x.stopWatching = x.watchStalls()
	defer x.stopWatching()

	select {
	case <-x.stop:
	case <-cfg.Crash:
		x.conn.Close(plugin.NewError(plugin.CodeUnavailable, "executor crashed (fault injection)"))
		// A crash ends the process, and every goroutine in it. This
		// executor's process goes on (a test's), so its plugins and
		// tasks are stopped here, off the stream (what they send
		// fails), lest their goroutines outlive it.
		x.crashed = true
		_ = x.shutdown(time.Now().Add(x.cfg.ShutdownTimeout), false, endHandlers("crashed (fault injection)")) // logged
		return fmt.Errorf("executor %s: crashed (fault injection)", x.id)
	case <-x.conn.Done():
		return x.lostDriver(ctx, endHandlers)
	case <-ctx.Done():
		return x.stopOwn(ctx, endHandlers, stopShipping)
	}
	return x.stopReleased(endHandlers, stopShipping)
}

// setDefaults fills in cfg's zero fields.
func (cfg *Config) setDefaults() {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.SlowConnect <= 0 {
		cfg.SlowConnect = 5 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = rpc.DefaultMaxMessageBytes
	}
	if cfg.Slots <= 0 {
		cfg.Slots = runtime.GOMAXPROCS(0)
	}
}

// dialOptions are the options of the executor's connection to its
// driver, over handshakes (cfg.Creds, watched), then cfg.DialOptions.
func dialOptions(cfg Config, handshakes *handshakeErrors) []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithTransportCredentials(handshakes),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes+rpc.BatchOverhead),
			// Protobuf, with received frames taken from a pool.
			grpc.ForceCodecV2(wire.Codec{}),
		),
		grpc.WithInitialWindowSize(rpc.StreamWindow),
		grpc.WithInitialConnWindowSize(rpc.ConnWindow),
		// The driver sends no metadata; an impostor's, before it has
		// proved anything, is bounded (see rpc.MaxHeaderListSize).
		grpc.WithMaxHeaderListSize(rpc.MaxHeaderListSize),
		grpc.WithConnectParams(connectParams),
	}, cfg.DialOptions...)
}

// initFailed ends Run after its plugins' Init failed with err (or a
// plugin could not be built): it tells the driver (a failed READY, or a
// stop when ctx ended: leave), flushes the stream, and returns Run's
// error.
func (x *Executor) initFailed(ctx context.Context, err error, leave func()) error {
	select {
	case <-x.conn.Done():
		if ctx.Err() == nil {
			// The driver went away during Init, which ended Init's
			// ctx: a lost driver, as once ready, not an Init failure.
			return fmt.Errorf("executor %s: %w during its plugins' Init: %w (%v)", x.id, ErrDriverLost, x.conn.Err(), err)
		}
	default:
	}
	if ctx.Err() != nil {
		// Stopped by its ctx during Init (which failed of that,
		// most likely): told to the driver as a stop, as the func
		// untie stops tells it too (once), not as an Init failure.
		leave()
	} else {
		code, msg := rpc.ErrorParts(err)
		_ = x.conn.SendControl(&wire.Frame{Kind: wire.Kind_KIND_READY, Code: uint32(code), Error: msg})
	}
	x.drain(x.cfg.ShutdownTimeout)
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		// Stopped by its ctx during Init, which failed of that
		// (its stream, still tied to ctx, was cut under an Ask):
		// a stop, not a failure.
		return fmt.Errorf("executor %s: stopped during its plugins' Init: %w (%v)", x.id, ctx.Err(), err)
	}
	// The READY above carries err as it is: the driver names the
	// executor itself.
	return fmt.Errorf("executor %s: %w", x.id, err)
}

// startShipping ships the executor's metrics every interval
// (shipMetrics) until the func it returns is called, which returns once
// the shipping has stopped; later calls do nothing.
func (x *Executor) startShipping(interval time.Duration) (stop func()) {
	shipDone := make(chan struct{})
	stopShip := make(chan struct{})
	go func() {
		defer close(shipDone)
		x.shipMetrics(interval, stopShip)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stopShip)
			<-shipDone
		})
	}
}

// lostDriver ends a ready executor's Run whose connection ended: the
// driver lost, or ctx ended as the executor became ready, before its
// stream was untied from it (the driver never saw READY): a stop, not a
// lost driver. endHandlers ends the handlers' ctx, giving why.
func (x *Executor) lostDriver(ctx context.Context, endHandlers func(why string) context.CancelFunc) error {
	stopped := ctx.Err()
	why := "lost its driver"
	if stopped != nil {
		why = "is stopping"
	} else {
		// Said now: the shutdown may take up to ShutdownTimeout
		// (a Receive or task slow to return), and the executor
		// was silent meanwhile.
		x.log.Warn("lost the driver: stopping the plugins and tasks", "err", x.conn.Err(), "within", x.cfg.ShutdownTimeout)
	}
	_ = x.shutdown(time.Now().Add(x.cfg.ShutdownTimeout), false, endHandlers(why)) // logged
	if stopped != nil {
		return fmt.Errorf("executor %s: stopped as it became ready: %w", x.id, stopped)
	}
	return fmt.Errorf("executor %s: %w: %w", x.id, ErrDriverLost, x.conn.Err())
}

// stopOwn ends a ready executor's Run whose ctx ended: it stops on its
// own (its process was told to, say), and returns ctx's error. The
// results of the tasks it cuts short (ExecutorStopping: the driver runs
// them elsewhere) and what the plugins send as they shut down are
// flushed to the driver before the stream closes; closing at once lost
// them, and the driver counted the attempts as lost with their executor.
// The driver is told first (LEAVING), so that TASKs already on their way,
// which may arrive once the stream is closing and go unanswered, do not
// count either.
func (x *Executor) stopOwn(ctx context.Context, endHandlers func(why string) context.CancelFunc, stopShipping func()) error {
	_ = x.conn.SendControl(leavingFrame(x.id))
	_ = x.shutdown(time.Now().Add(x.cfg.ShutdownTimeout-x.cfg.ShutdownTimeout/10), false, endHandlers("is stopping")) // logged
	// Its final metrics, after its plugins' Shutdown, as a released
	// executor's go with STOPPED; no periodic heartbeat follows to
	// replace them.
	stopShipping()
	if m := x.gatherMetrics(); m != nil {
		_ = x.conn.SendControl(&wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: m})
	}
	x.drain(x.cfg.ShutdownTimeout / 10)
	return ctx.Err()
}

// stopReleased ends the Run of an executor the driver released (STOP):
// it delivers what the driver sent, then shuts its plugins down, then
// sends everything they sent, then STOPPED, and waits for the driver to
// end the stream. The driver waits ShutdownTimeout for STOPPED: the stop
// takes nine tenths of it at most, leaving the rest for STOPPED to
// travel.
func (x *Executor) stopReleased(endHandlers func(why string) context.CancelFunc, stopShipping func()) error {
	err := x.shutdown(time.Now().Add(x.cfg.ShutdownTimeout-x.cfg.ShutdownTimeout/10), true, endHandlers("is shutting down"))
	// STOPPED carries the final metrics and the plugins' shutdown
	// errors, for Run's. No heartbeat follows it: one gathered earlier
	// but queued after would replace the final values at the driver.
	stopShipping()
	stopped := &wire.Frame{Kind: wire.Kind_KIND_STOPPED, Metrics: x.gatherMetrics()}
	if err != nil {
		code, msg := rpc.ErrorParts(err)
		stopped.Code, stopped.Error = uint32(code), msg
	}
	// SendLast: a Send or Ask that checked before STOPPED was queued (one
	// waiting for its plugin's window, say, or for room in the queue)
	// fails rather than follow it, since the driver takes nothing after
	// STOPPED. Task results and replies still go.
	_ = x.conn.SendLast(stopped, plugin.Errorf(plugin.CodeUnavailable, "executor %s has stopped: its plugins have shut down: %w", x.id, plugin.ErrClosed))
	// The driver closes the stream once it has everything: after every
	// executor's STOPPED (or its wait for them, ShutdownTimeout) and after
	// its lanes have run what they sent (ShutdownTimeout more). Waiting
	// less, an executor that stopped early gave up on a driver that was
	// only busy with the others.
	release := 2 * x.cfg.ShutdownTimeout
	t := time.NewTimer(release)
	defer t.Stop()
	select {
	case <-x.conn.Done():
	case <-t.C:
		return fmt.Errorf("executor %s: driver did not release the stream within %v", x.id, release)
	}
	if x.cfg.Announce {
		x.log.Info("executor released by the driver")
	}
	return nil
}

// ConfSlots is how many tasks each executor runs at once, unless the
// executor has its own (Config.OwnSlots); default: its GOMAXPROCS.
const ConfSlots = "ember.executor.slots"

// ConfMetricsInterval is how often executors ship their metrics to the
// driver (ember.ConfMetricsInterval). Default: the heartbeat interval.
const ConfMetricsInterval = "ember.metrics.interval"

// shipMetrics sends the executor's metrics to the driver every interval
// until stop closes or the connection ends. A set the same, byte for byte,
// as the last one shipped is not sent again: the driver serves the last
// set it has until another replaces it, so an idle executor costs the
// driver no decoding (nor the link any bytes) until its series change.
func (x *Executor) shipMetrics(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last [][]byte // the families last shipped, encoded
	for {
		select {
		case <-stop:
			return
		case <-x.conn.Done():
			return
		case <-t.C:
			m := x.gatherMetrics()
			if m == nil || last != nil && slices.EqualFunc(m.Families, last, bytes.Equal) {
				continue
			}
			last = m.Families
			_ = x.conn.SendControl(&wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: m})
		}
	}
}

func (x *Executor) gatherMetrics() *wire.Metrics {
	m, err := metrics.Encode(x.cfg.Registry)
	// Logged when it changes, not at every interval. (A partial gather's
	// error, a plugin's collector reporting a series twice, say, used to
	// be dropped: the series were just missing at the driver.)
	msg := fmt.Sprint(err)
	if err != nil && msg != x.gatherErr {
		x.log.Warn("cannot gather executor metrics; shipping the rest", "err", err)
	}
	x.gatherErr = msg
	if size := proto.Size(m); size > x.cfg.MaxMessageBytes {
		x.log.Warn("executor metrics not shipped: over the message size limit", "bytes", size, "limit", x.cfg.MaxMessageBytes)
		x.limitHits.WithLabelValues("message_size").Inc()
		// The executor's own counters go alone, this hit among them: the
		// driver replaces the executor's series with them. Shipping
		// nothing, the driver served the last set that fit, frozen, and
		// the hit, counted in the set not shipped, never reached it.
		m, _ = metrics.Encode(x.own)
	}
	if m == nil && x.shipped {
		// Every series is gone (a plugin unregistered its collectors, or
		// deleted its vectors' last children): an empty set replaces the
		// last one at the driver, which served it for the executor's life.
		m = &wire.Metrics{}
	}
	x.shipped = len(m.GetFamilies()) > 0
	return m
}

// shutdown stops the executor's work, then its plugins, all by deadline.
// TASKs are refused from now on. With flush, the lanes first run what the
// driver sent, for up to half the time. Then the ctx of handlers and
// tasks ends, and they have until three quarters of the time to return;
// one that does not (code ignoring its ctx) is abandoned, still running,
// and logged. Last, the plugins' Shutdown run in reverse order, sharing
// what is left. It returns their errors, joined.
func (x *Executor) shutdown(deadline time.Time, flush bool, hcancel context.CancelFunc) error {
	start := time.Now()
	budget := deadline.Sub(start)
	x.mu.Lock()
	x.stopping = true
	refused := x.queue.takeAll()
	x.mu.Unlock()
	for _, f := range refused {
		// Never started: run elsewhere, not counted as the task's failure.
		_ = x.conn.SendControl(x.refusedResult(f.Call))
	}
	if flush {
		x.flushLanes(start.Add(budget / 2))
	}
	hcancel() // handlers and tasks still running see their ctx end
	if x.stopWatching != nil {
		// Before the final metrics (STOPPED) are gathered: a lane's
		// stall ends with the executor.
		x.stopWatching()
	}
	// Three quarters, written so that it cannot overflow.
	end := start.Add(budget - budget/4)
	if x.crashed {
		// A crash would have ended handlers and tasks with the process:
		// those that return as their ctx ends get a moment to (a task's
		// hooks run before the plugins shut down); one ignoring its ctx
		// is not waited for, or the test's Close would wait for it too.
		if g := start.Add(rpc.AbandonGrace(x.cfg.ShutdownTimeout)); g.Before(end) {
			end = g
		}
	}
	x.closeLanes(end)
	x.waitTasks(end)
	return x.shutdownPlugins(len(x.endpoints)-1, deadline)
}

// flushLanes waits until deadline at most for the lanes to run what the
// driver sent (on a lane of several workers, to start it).
func (x *Executor) flushLanes(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, e := range x.endpoints {
		// Started, on a lane of several workers: a Receive there may
		// run until its ctx ends (a job, until canceled), which ends
		// only after this.
		if e.lane != nil && e.lane.FlushStarted(ctx) != nil {
			e.log.Warn("messages from the driver not handled in time at shutdown; their handlers' ctx ends", "queued", e.lane.Len())
		}
	}
}

// closeLanes closes the plugins' lanes, once: what is queued runs first
// and later messages are refused, so that no Receive runs once plugins
// start shutting down. It waits until deadline at most: a Receive that has
// not returned by then (one ignoring its ctx, which ends first) is
// abandoned, still running, and logged, so that shutdown goes on.
func (x *Executor) closeLanes(deadline time.Time) {
	if x.lanesClosed {
		return
	}
	x.lanesClosed = true
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, e := range x.endpoints {
		if e.lane != nil && e.lane.CloseWithin(ctx) != nil {
			e.log.Error("executor plugin's Receive did not return at shutdown, though its ctx ended; abandoned")
		}
	}
}

// waitTasks waits until deadline at most for the running tasks, whose
// ctx has ended, to return and report: their hooks then run before the
// plugins shut down, and their results reach the driver before STOPPED.
// A wait past taskWaitNotice is logged, once: shutdown would otherwise
// seem to hang. Tasks still running at deadline (ignoring their ctx) are
// abandoned and logged.
func (x *Executor) waitTasks(deadline time.Time) {
	done := make(chan struct{})
	go func() {
		x.running.Wait()
		close(done)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	notice := time.NewTimer(taskWaitNotice)
	defer notice.Stop()
	running := func() int {
		x.mu.Lock()
		defer x.mu.Unlock()
		return len(x.tasks)
	}
	for {
		select {
		case <-done:
			return
		case <-notice.C:
			if n := running(); n > 0 && time.Until(deadline) > 0 {
				x.log.Warn("waiting for tasks to return at shutdown: their ctx has ended, and they are abandoned (still running) at the deadline",
					"tasks", n, "deadline", time.Until(deadline).Round(100*time.Millisecond))
			}
		case <-t.C:
			// The deadline may have passed already (a Receive took the
			// time): the tasks may all have returned meanwhile.
			if n := running(); n > 0 {
				x.log.Error("tasks did not return at shutdown, though their ctx ended; abandoned", "tasks", n)
			}
			return
		}
	}
}

// taskWaitNotice is how long waitTasks waits before saying so.
const taskWaitNotice = time.Second

// drain flushes queued frames and closes the stream, waiting for up to
// timeout.
func (x *Executor) drain(timeout time.Duration) {
	x.conn.CloseGracefully()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-x.conn.Done():
	case <-t.C:
	}
}

// warnUnreachable logs once, at Warn, if the connection to the driver
// fails before it is first up, or an attempt goes unanswered for
// SlowConnect: gRPC retries until ConnectTimeout (a minute by default),
// so a wrong address, a driver not started or a host that drops the
// packets would otherwise be a silent wait. It names the failed TLS
// handshake, if that is what failed (handshakeErr). The returned func
// stops the watch, waits for it to end, and reports whether it warned.
func (x *Executor) warnUnreachable(ctx context.Context, cc *grpc.ClientConn, handshakeErr func() error) (stop func() (warned bool)) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var warned bool // written before done is closed
	go func() {
		defer close(done)
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			switch s {
			case connectivity.TransientFailure:
				warned = x.warnFailed(ctx, cc, handshakeErr())
				return
			case connectivity.Connecting:
				// An attempt nobody answers (a host down, packets
				// dropped on the way) fails only at gRPC's connect
				// timeout, 20s.
				wait, stop := context.WithTimeout(ctx, x.cfg.SlowConnect)
				changed := cc.WaitForStateChange(wait, s)
				stop()
				if changed {
					continue
				}
				if ctx.Err() == nil {
					warned = true
					x.log.Warn("cannot connect to the driver yet: no answer from its address within "+x.cfg.SlowConnect.String()+
						" (is the host up, and reachable from this one, or does a firewall drop the packets?); retrying", "driver", x.cfg.DriverAddr, "until", x.cfg.ConnectTimeout)
				}
				return
			}
			if !cc.WaitForStateChange(ctx, s) {
				return
			}
		}
	}()
	return func() bool {
		cancel()
		<-done
		return warned
	}
}

// warnFailed logs, at Warn, that the connection to the driver failed
// (cc in TransientFailure), with the latest failed transport handshake,
// herr, or gRPC's error of the attempt. It reports whether it did: a TLS
// failure that retrying cannot mend fails the handshake at once instead.
func (x *Executor) warnFailed(ctx context.Context, cc *grpc.ClientConn, herr error) bool {
	switch {
	case tlsMisconfigured(herr):
		return false
	case errors.Is(herr, ErrNotGRPC), errors.Is(herr, errClosedAfterTLS):
		// Not a failed TLS handshake: it succeeded.
		x.log.Warn("cannot connect to the driver yet: "+herr.Error()+"; retrying", "driver", x.cfg.DriverAddr, "until", x.cfg.ConnectTimeout)
	case herr != nil:
		x.log.Warn("cannot connect to the driver yet: the TLS handshake failed (is TLS set up alike on both sides, with a certificate this executor trusts for that address?); retrying", "driver", x.cfg.DriverAddr, "err", herr, "until", x.cfg.ConnectTimeout)
	default:
		if cause := connectError(ctx, cc); cause != nil {
			// It says what happened: a hint would guess.
			x.log.Warn("cannot connect to the driver yet; retrying", "driver", x.cfg.DriverAddr, "err", cause, "until", x.cfg.ConnectTimeout)
			break
		}
		x.log.Warn("cannot connect to the driver yet (not started yet, something else at that address, or TLS not set up alike on both sides); retrying", "driver", x.cfg.DriverAddr, "until", x.cfg.ConnectTimeout)
	}
	return true
}

// answerWait waits for an answer from the driver: it calls giveUp once
// no byte has come from it for timeout (received has not changed): a
// large WELCOME on a slow link is an answer coming. It measures that as
// the connection's heartbeat does (rpc.Silence, looking ten times a
// timeout): a stall of this process's own, starved of CPU say, is not
// the driver's silence. (Looking once a timeout, it ran on a whole
// timeout more for bytes that came just after it began, gRPC's own
// frames read as the stream opened: twice HandshakeTimeout after the
// last byte, a multi-host trial found.)
type answerWait struct {
	timeout  time.Duration
	received func() uint64
	giveUp   func()

	mu      sync.Mutex // protects the following fields
	t       *time.Timer
	last    uint64 // received at the last look
	silence rpc.Silence
	ended   bool // stopped, or given up
}

func newAnswerWait(timeout time.Duration, received func() uint64, giveUp func()) *answerWait {
	w := &answerWait{timeout: timeout, received: received, giveUp: giveUp, last: received(),
		silence: rpc.NewSilence(max(timeout/10, time.Millisecond), time.Now())}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t = time.AfterFunc(w.silence.Interval(), w.expired)
	return w
}

func (w *answerWait) expired() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	if next := w.lookLocked(time.Now()); next > 0 {
		w.t.Reset(next)
		return
	}
	w.ended = true
	w.giveUp()
}

// lookLocked notes whether bytes came since the last look, and returns
// when to look next, or 0 once the driver has been silent for timeout.
// w.mu is held.
func (w *answerWait) lookLocked(now time.Time) time.Duration {
	n := w.received()
	silent := w.silence.Tick(now, n != w.last)
	w.last = n
	if silent >= w.timeout {
		return 0
	}
	return min(w.timeout-silent, w.silence.Interval())
}

// Stop ends the wait. It reports whether it did so before the wait gave
// up.
func (w *answerWait) Stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return false
	}
	w.ended = true
	w.t.Stop()
	return true
}

// probeMethod is a method no driver serves, called by connectError.
var probeMethod = "/" + wire.Ember_ServiceDesc.ServiceName + "/NoSuchMethod"

// connectError returns gRPC's error of its latest failed attempt to
// connect cc (a connection refused, a name that does not resolve, a dial
// that timed out), or nil if it cannot tell within a second. The
// connectivity state does not carry it, and a dialer of Ember's own would
// turn off gRPC's proxy support (HTTPS_PROXY). While the connection is
// failing, a call that does not wait for it to be ready fails at once
// with that error, without leaving this process; the call names a method
// no driver serves, so that one reached should the connection come up
// meanwhile answers Unimplemented, running nothing of Ember's.
func connectError(ctx context.Context, cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err := cc.Invoke(ctx, probeMethod, &wire.Batch{}, new(wire.Batch))
	if status.Code(err) != codes.Unavailable {
		return nil
	}
	return errors.New(status.Convert(err).Message())
}

// handshake runs the executor's side of the handshake over a new stream,
// within ConnectTimeout, each of the driver's answers within
// HandshakeTimeout of its last byte, and returns the driver's WELCOME and
// the stream.
// The latest failed transport handshake (handshakes) names the cause when
// no stream opens: one that retrying cannot mend (a TLS certificate this
// executor does not trust) at once, others (a server that does not speak
// gRPC, say) when ConnectTimeout has passed.
func (x *Executor) handshake(ctx context.Context, cancel context.CancelFunc, client wire.EmberClient, state func() connectivity.State, types []string, handshakes *handshakeErrors) (*wire.Welcome, wire.Ember_ConnectClient, error) {
	deadline := time.AfterFunc(x.cfg.ConnectTimeout, cancel)
	defer deadline.Stop()
	// Once a stream is open, each of the driver's answers comes within
	// HandshakeTimeout, or the handshake ends: a driver that the network
	// stopped reaching (a partition, packets dropped) would otherwise
	// hold the executor, silent, until ConnectTimeout.
	var unanswered atomic.Pointer[string] // the answer that did not come in time
	recvAnswer := func(stream wire.Ember_ConnectClient, m any, answer string) error {
		wait := newAnswerWait(x.cfg.HandshakeTimeout, handshakes.received.Load, func() {
			unanswered.Store(&answer)
			cancel()
		})
		err := stream.RecvMsg(m)
		if !wait.Stop() && err == nil {
			err = errors.New("the answer came as the wait for it ended") // and cancel ended the stream
		}
		return err
	}
	// A TLS failure that retrying cannot mend ends the wait; one on
	// another connection attempt, seen as this one succeeds, must not
	// end the stream after the handshake.
	var (
		giveUpMu sync.Mutex
		finished bool
	)
	giveUp := context.CancelFunc(func() {
		giveUpMu.Lock()
		defer giveUpMu.Unlock()
		if !finished {
			cancel()
		}
	})
	handshakes.giveUp.Store(&giveUp)
	defer func() {
		giveUpMu.Lock()
		finished = true
		giveUpMu.Unlock()
		handshakes.giveUp.Store(nil)
	}()
	fail := func(err error) (*wire.Welcome, wire.Ember_ConnectClient, error) {
		timedOut := !deadline.Stop()
		return nil, nil, x.handshakeError(err, handshakes.err(), unanswered.Load(), timedOut, state)
	}
	stream, err := client.Connect(ctx, grpc.WaitForReady(true))
	if err != nil {
		return fail(err)
	}
	// CHALLENGE and WELCOME arrive before the driver has proved anything:
	// read as FirstBatches, they cost about what the peer sends.
	first := new(wire.FirstBatch)
	if err := recvAnswer(stream, first, "CHALLENGE"); err != nil {
		return fail(err)
	}
	if f := first.Frame; f == nil || f.Kind != wire.Kind_KIND_CHALLENGE || f.Challenge == nil {
		return fail(errors.New("the driver did not open the handshake with CHALLENGE (is this an Ember driver of the same version?)"))
	}
	challenge := first.Frame.Challenge
	if n := len(challenge.GetNonce()); n != auth.NonceSize {
		// The proof covers the driver's nonce: one of any other size is
		// a peer choosing what this executor signs, never a driver's.
		return fail(fmt.Errorf("the driver's CHALLENGE carries a nonce of %d bytes, not %d (is this an Ember driver of the same version?)", n, auth.NonceSize))
	}
	nonce := auth.Nonce()
	hello := &wire.Hello{
		ProtocolVersion: wire.ProtocolVersion,
		BuildId:         x.cfg.BuildID,
		Plugins:         pluginNames(x.cfg.Plugins),
		Hostname:        x.hostname,
		Pid:             int64(os.Getpid()),
		MessageTypes:    types,
		Tasks:           x.cfg.Tasks,
		AuthNonce:       nonce,
		MaxMessageBytes: int64(x.cfg.MaxMessageBytes),
	}
	if x.cfg.Secret != "" {
		hello.Auth = auth.Prove(x.cfg.Secret, auth.Executor, challenge.GetNonce(), nonce, nil)
	}
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: hello}}}); err != nil {
		return fail(err)
	}
	b := new(wire.FirstBatch)
	if err := recvAnswer(stream, b, "WELCOME"); err != nil {
		return fail(err)
	}
	if f := b.Frame; f == nil || f.Kind != wire.Kind_KIND_WELCOME || f.Welcome == nil {
		return fail(errors.New("the driver did not answer the handshake with WELCOME"))
	}
	w := b.Frame.Welcome
	if w.Code != 0 {
		hint := ""
		if challenge.AuthRequired && x.cfg.Secret == "" {
			hint = " (the driver requires authentication and this executor has no secret: set EMBER_SECRET or EMBER_SECRET_FILE)"
		}
		err := fmt.Errorf("executor: the driver refused this executor%s: %w", hint, rpc.WireError(w.Code, w.Error))
		switch plugin.Code(w.Code) {
		case plugin.CodeUnauthenticated, plugin.CodeInvalidArgument: // the secret; a handshake mismatch
			err = misconfigured{err}
		}
		return nil, nil, err
	}
	if x.cfg.Secret != "" && !x.verifyWelcome(w, nonce, challenge.GetNonce()) {
		// End this side of the stream, rather than only dropping it, so
		// that the driver reads its end (io.EOF) and can tell an executor
		// that refused it from one lost. The driver ends the stream once
		// it has read that: waiting for it (a second at most) keeps the
		// stream's cancel, as Run returns, from overtaking the end, which
		// the driver, reading late on a busy machine, would take for a
		// loss.
		if stream.CloseSend() == nil {
			ended := make(chan struct{})
			go func() {
				defer close(ended)
				var b wire.Batch
				for stream.RecvMsg(&b) == nil {
				}
			}()
			t := time.NewTimer(time.Second)
			select {
			case <-ended:
			case <-t.C:
			}
			t.Stop()
		}
		return nil, nil, misconfigured{fmt.Errorf("executor: the driver at %s did not prove it knows the application secret: %w",
			x.cfg.DriverAddr, plugin.NewError(plugin.CodeUnauthenticated, "driver authentication failed"))}
	}
	if !deadline.Stop() { // it fired just now: the stream's ctx is cancelled
		return nil, nil, fmt.Errorf("executor: no handshake with driver %s within %v", x.cfg.DriverAddr, x.cfg.ConnectTimeout)
	}
	return w, stream, nil
}

// handshakeError says why the handshake failed with err: herr is the
// latest failed transport handshake, unanswered names the driver's answer
// that did not come within HandshakeTimeout (nil: none), timedOut says
// that ConnectTimeout had passed, and state gives the connection's.
func (x *Executor) handshakeError(err, herr error, unanswered *string, timedOut bool, state func() connectivity.State) error {
	switch {
	case tlsMisconfigured(herr):
		hint := "is TLS set up alike on both sides, with a certificate this executor trusts for that address?"
		if certificateRefused(herr) {
			hint = "the driver requires a client certificate for client authentication, issued by its CAFile: set Config.TLS's ExecutorCertFile and ExecutorKeyFile, or EMBER_TLS_CERT_FILE and EMBER_TLS_KEY_FILE"
		}
		return misconfigured{fmt.Errorf("executor: the TLS handshake with driver %s failed (%s): %w", x.cfg.DriverAddr, hint, herr)}
	case unanswered != nil:
		// err is the wait's own cancel: no news.
		return fmt.Errorf("executor: driver %s did not answer the handshake: no %s, and no byte from it for %v (HandshakeTimeout; is the network between them dropping packets?)",
			x.cfg.DriverAddr, *unanswered, x.cfg.HandshakeTimeout)
	case !timedOut:
		return fmt.Errorf("executor: handshake with driver %s: %w", x.cfg.DriverAddr, err)
	// Never reached, or never answered, within ConnectTimeout: not a
	// driver lost.
	case herr != nil:
		return fmt.Errorf("executor: no handshake with driver %s within %v: %w: %v", x.cfg.DriverAddr, x.cfg.ConnectTimeout, herr, err)
	case state() == connectivity.Connecting:
		// gRPC's error says only that the wait was canceled.
		return fmt.Errorf("executor: no handshake with driver %s within %v: no answer from that address (is the host up, and reachable from this one, or does a firewall drop the packets?): %v", x.cfg.DriverAddr, x.cfg.ConnectTimeout, err)
	}
	return fmt.Errorf("executor: no handshake with driver %s within %v (is it running, at that address, and reachable from this host?): %v", x.cfg.DriverAddr, x.cfg.ConnectTimeout, err)
}

// verifyWelcome reports whether w carries the driver's proof that it knows
// the secret, bound to this handshake's nonces and to w itself.
func (x *Executor) verifyWelcome(w *wire.Welcome, nonce, challenge []byte) bool {
	digest, err := wire.WelcomeDigestInput(w)
	return err == nil && auth.Verify(w.Auth, x.cfg.Secret, auth.Driver, nonce, challenge, digest)
}

// ready returns the READY that reports this executor's slots and
// resources.
func (x *Executor) ready() *wire.Ready {
	r := &wire.Ready{Slots: int32(x.cfg.Slots)}
	for _, res := range x.resources {
		r.Resources = append(r.Resources, &wire.Resource{Name: res.Name, Addresses: res.Addresses})
	}
	for _, e := range x.endpoints {
		if e.recv == nil {
			r.NoReceiver = append(r.NoReceiver, e.idx)
		}
	}
	return r
}

// setupPlugins makes the executor's built-in metrics and one endpoint per
// plugin, with the extra conf welcome gives it, its plugin side and, for a
// side that takes messages, its lane. It returns the first plugin side
// that could not be made (ExecutorPlugin or MaxConcurrentReceives
// panicked, or a nil pointer): that plugin gets no side, and the error
// fails the executor as an Init error would. x.ctx must be set: the
// lanes' ctx derive from it.
func (x *Executor) setupPlugins(welcome *wire.Welcome) (setupErr error) {
	cfg := x.cfg
	// The built-in vectors join the registry with their first series:
	// until then, gathering an executor whose plugins register no metrics
	// costs nothing (metrics.Deferred). x.own holds them from the start.
	builtin := metrics.NewDeferred(cfg.Registry, func(err error) {
		x.log.Error("cannot register the executor's built-in metrics: they are not shipped", "err", err)
	})
	own := prometheus.Labels{"executor": x.id}
	limitHits, dropped, laneStalled := metrics.NewLimitHits(own), metrics.NewDropped(own), metrics.NewLaneStalled(own)
	x.limitHits = metrics.Defer(builtin, limitHits)
	x.dropped = metrics.Defer(builtin, dropped)
	x.laneStalled = metrics.Defer(builtin, laneStalled)
	x.own = prometheus.NewRegistry()
	x.own.MustRegister(limitHits, dropped, laneStalled)
	for i, p := range cfg.Plugins {
		e := &endpoint{
			x:       x,
			idx:     uint32(i),
			name:    p.Name(),
			log:     x.log.With("plugin", p.Name()),
			metrics: metrics.PluginRegisterer(cfg.Registry, p.Name(), x.id),
		}
		if i < len(welcome.ExtraConf) && welcome.ExtraConf[i] != nil {
			e.extraConf = welcome.ExtraConf[i].Values
		}
		if e.extraConf == nil {
			e.extraConf = map[string]string{}
		}
		ep, err := rpc.Call(x.log, e.name, "ExecutorPlugin", func() (plugin.ExecutorPlugin, error) {
			if cfg.Construct != nil {
				cfg.Construct.Lock()
				defer cfg.Construct.Unlock()
			}
			ep := p.ExecutorPlugin()
			return ep, rpc.NilSide("ExecutorPlugin", ep)
		})
		if err != nil {
			ep = nil // refused (a nil pointer) or panicked: no side at all
			if setupErr == nil {
				setupErr = fmt.Errorf("plugin %q: %w", e.name, err)
			}
		}
		e.ep = ep
		for _, why := range rpc.MissedOptional(ep, rpc.ExecutorOptional) {
			x.log.Warn("executor plugin: a method meant for an optional interface is never called", "plugin", e.name, "why", why)
		}
		e.recv, _ = e.ep.(plugin.ExecutorReceiver)
		e.dropped, _ = e.ep.(plugin.DroppedReplyListener)
		if e.recv != nil || e.dropped != nil {
			workers := 1
			if cr, ok := e.ep.(plugin.ConcurrentReceiver); ok {
				err := rpc.CallFunc(x.log, e.name, "MaxConcurrentReceives", func() { workers = cr.MaxConcurrentReceives() })
				if err != nil && setupErr == nil {
					setupErr = fmt.Errorf("plugin %q: %w", e.name, err)
				}
			}
			e.lane = rpc.NewLane(workers, cfg.LaneQueue, e.run)
			e.ctx = rpc.WithLane(x.ctx, e.lane)
		}
		if tl, ok := e.ep.(plugin.TaskListener); ok {
			e.taskListener = tl
			x.listeners = append(x.listeners, e)
		}
		x.endpoints = append(x.endpoints, e)
	}
	return setupErr
}

// initGrace is how long an executor plugin's Init may take to return
// once its ctx has ended before it is abandoned, as a driver plugin's is.
const initGrace = time.Second

func (x *Executor) init(ctx context.Context) error {
	res, err := discoverResources(ctx, x.conf)
	if err != nil {
		return err
	}
	x.resources = res
	// The resources come from discovery commands: a READY too large for
	// the driver would end the connection with a transport error.
	if size := x.ready().SizeVT(); size > x.cfg.MaxMessageBytes {
		return plugin.Errorf(plugin.CodeResourceExhausted, "the resources discovered take %d bytes, over the %d-byte message limit",
			size, x.cfg.MaxMessageBytes)
	}
	for i, e := range x.endpoints {
		if e.ep == nil {
			continue
		}
		ictx, cancel := context.WithCancel(ctx) // this Init's own: it ends as Init returns
		// An Init that ignores its ctx is abandoned, still running, a
		// grace after it ends (the driver gone, a release, Run's ctx):
		// waited for, it kept alive an executor nobody waited for, its
		// driver dead, for ever.
		err := rpc.CallWithin(ictx, initGrace, x.log, e.name, "Init", func(ctx context.Context) error {
			return e.ep.Init(ctx, e, e.extraConf)
		})
		cancel()
		if err != nil {
			x.shutdownPlugins(i-1, time.Now().Add(x.cfg.ShutdownTimeout))
			return fmt.Errorf("plugin %q: init: %w", e.name, err)
		}
		e.inited = true
	}
	return nil
}

// shutdownPlugins shuts down initialised plugins from index last down to
// 0, by deadline: they share the time left, and one whose ctx has ended
// when its turn comes is still called.
func (x *Executor) shutdownPlugins(last int, deadline time.Time) error {
	var errs []error
	g := rpc.AbandonGrace(x.cfg.ShutdownTimeout)
	// lateEnd ends the grace that plugins called after deadline share
	// (below): one grace past deadline, and past it by as much as the
	// machine's timers were late to abandon a plugin before them.
	lateEnd := deadline.Add(g)
	for i := last; i >= 0; i-- {
		e := x.endpoints[i]
		if !e.inited {
			continue
		}
		e.inited = false
		// The plugin's ctx ends a little before deadline: the rest is
		// its grace to return (a final Send made as its ctx ends goes
		// before STOPPED) before it is abandoned.
		// Never more than one grace past deadline: each one abandoned
		// would otherwise push STOPPED a grace later. Those whose turn
		// comes after deadline share that one grace, so that one that
		// returns at once is not abandoned before it could run.
		grace := min(g, max(time.Until(lateEnd), 0))
		end := deadline.Add(-grace)
		// When it is abandoned: a grace after its ctx ends, or after
		// its call, if that ended already.
		due := end
		if now := time.Now(); now.After(due) {
			due = now
		}
		due = due.Add(grace)
		ctx, cancel := context.WithDeadline(context.Background(), end)
		err := rpc.CallWithin(ctx, grace, x.log, e.name, "Shutdown", e.ep.Shutdown)
		cancel()
		if late := time.Since(due); late > 0 && errors.Is(err, rpc.ErrAbandoned) {
			// Abandoned later than its time (timers late on a loaded
			// machine): that time is not the next plugins' to lose, or
			// a prompt one after it would be abandoned before its
			// goroutine had run.
			lateEnd = lateEnd.Add(late)
		}
		// Returned, or abandoned after its grace (it had the grace to
		// send its final values): what it sends from now on would follow
		// STOPPED, so it fails.
		e.shut.Store(true)
		if err != nil {
			e.log.Error("executor plugin shutdown failed", "err", err)
			errs = append(errs, fmt.Errorf("executor %s: plugin %q: shutdown: %w", x.id, e.name, err))
		}
	}
	return errors.Join(errs...)
}

// HandleFrame implements rpc.Handler.
func (x *Executor) HandleFrame(c *rpc.Conn, f *wire.Frame) {
	switch f.Kind {
	case wire.Kind_KIND_ASK, wire.Kind_KIND_SEND:
		var e *endpoint
		if uint(f.Plugin) < uint(len(x.endpoints)) { // unsigned: int(f.Plugin) can be negative on 32-bit
			e = x.endpoints[f.Plugin]
		}
		var code plugin.Code
		var problem, name, reason string
		switch {
		case e == nil:
			code, problem, reason = plugin.CodeNotFound, fmt.Sprintf("no plugin with index %d", f.Plugin), "no_such_plugin"
		case e.recv == nil:
			code, problem = rpc.NoReceiver(e.name)
			name, reason = e.name, "no_receiver"
		}
		var refused bool
		if problem == "" {
			if rpc.Deliver(e.ctx, e.lane, c, f, func() { x.limitHits.WithLabelValues("lane_queue").Inc() }) {
				return
			}
			// The driver's ask fails with ErrClosed, as one to an
			// executor that has gone does.
			problem, name, reason = fmt.Sprintf("executor plugin %q has shut down", e.name), e.name, "shut_down"
			refused = rpc.RefuseClosed(c, f, problem)
		} else {
			refused = rpc.Refuse(c, f, code, problem)
		}
		if !refused {
			x.log.Warn("dropped message from the driver", "reason", problem, "type", f.Type)
			x.dropped.WithLabelValues(name, reason).Inc()
		}
	case wire.Kind_KIND_REPLY:
		// A reply that came after its ask gave up (rpc.Handler): for the
		// plugin that asked, if it listens and still runs.
		if uint(f.Plugin) < uint(len(x.endpoints)) {
			e := x.endpoints[f.Plugin]
			if e.dropped != nil && rpc.Deliver(e.ctx, e.lane, c, f, func() { x.limitHits.WithLabelValues("lane_queue").Inc() }) {
				return
			}
			x.dropped.WithLabelValues(e.name, "late_reply").Inc()
		}
		wire.ReleaseFrame(f)
	case wire.Kind_KIND_TASK:
		x.startTask(c, f)
	case wire.Kind_KIND_TASK_CANCEL:
		x.cancelTask(c, f)
	case wire.Kind_KIND_STOP:
		x.stopOnce.Do(func() { close(x.stop) })
	default:
		x.log.Warn("dropped unexpected frame", "kind", f.Kind)
	}
}

// HandleClose implements rpc.Handler.
func (x *Executor) HandleClose(*rpc.Conn, error) {}

// sendWindow is the send window the driver announced, as rpc.Options
// takes it (0, from a driver that announced none, is the default).
func sendWindow(announced uint64) int {
	return int(min(announced, rpc.MaxSendWindow))
}

// pluginSendWindows is the plugins' own send windows the driver
// announced, as rpc.Options takes them.
func pluginSendWindows(announced []uint64) []int {
	if len(announced) == 0 {
		return nil
	}
	windows := make([]int, len(announced))
	for i, w := range announced {
		windows[i] = sendWindow(w)
	}
	return windows
}

// pluginNames returns the names of ps, in order.
func pluginNames(ps []plugin.Plugin) []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name()
	}
	return names
}

// handshakeErrors are transport credentials that keep the latest error of
// their client handshake: gRPC retries a failed one without a word until
// ConnectTimeout, and warnUnreachable names it meanwhile. A TLS failure
// that retrying cannot mend (tlsMisconfigured) ends the wait at once.
type handshakeErrors struct {
	credentials.TransportCredentials
	*handshakeState // shared with clones
}

type handshakeState struct {
	last atomic.Pointer[error]
	// giveUp, set while the executor waits for its handshake, ends that
	// wait.
	giveUp atomic.Pointer[context.CancelFunc]
	// received counts the bytes read from the driver (after TLS), for
	// the connection's heartbeat: bytes arriving are a sign of life
	// (rpc.Options.Received).
	received atomic.Uint64
}

func (h *handshakeErrors) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := h.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		h.failed(err)
		return conn, info, err
	}
	plaintext := h.Info().SecurityProtocol == "insecure"
	return &sniffConn{Conn: conn, s: h.handshakeState, plaintext: plaintext}, info, nil
}

// failed records err as the latest handshake error, and ends the wait for
// the handshake if retrying cannot mend it.
func (s *handshakeState) failed(err error) {
	s.last.Store(&err)
	if stop := s.giveUp.Load(); stop != nil && tlsMisconfigured(err) {
		(*stop)()
	}
}

// tlsMisconfigured reports whether err, from a TLS handshake, is one that
// retrying cannot mend, since the executor reads its TLS files once: the
// driver's certificate does not verify against this executor's roots, or
// not for the driver's address; the driver does not speak TLS at all; or
// the driver refused this executor's client certificate, or its lack of
// one (certificateRefused). A driver certificate not valid yet is not
// one: waiting mends it, when this host's clock is a little behind the
// issuer's.
func tlsMisconfigured(err error) bool {
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) {
		var invalid x509.CertificateInvalidError
		notYet := errors.As(err, &invalid) && invalid.Reason == x509.Expired &&
			invalid.Cert != nil && time.Now().Before(invalid.Cert.NotBefore)
		return !notYet
	}
	var record tls.RecordHeaderError
	return errors.As(err, &record) || certificateRefused(err)
}

// certificateRefused reports whether err is the driver's TLS alert
// refusing this executor's client certificate (MutualTLS). With TLS 1.3
// it comes after the client's handshake has succeeded, on the first read.
// crypto/tls gives a peer's alert as a net.OpError of Op "remote error",
// whose alert type it does not export.
func certificateRefused(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return false
	}
	switch op.Err.Error() {
	case "tls: bad certificate", "tls: certificate required", "tls: unknown certificate authority",
		"tls: unsupported certificate", "tls: certificate expired", "tls: certificate revoked":
		return true
	}
	return false
}

// ErrNotGRPC is in the latest handshake error of an executor whose
// EMBER_DRIVER names a server that does not speak HTTP/2 (the driver's
// /metrics address, another web service, any other protocol): gRPC then
// retries until ConnectTimeout, and says at the end only "frame too
// large" or "error reading server preface".
var ErrNotGRPC = errors.New("the server at that address does not speak gRPC")

// errClosedAtOnce is ErrNotGRPC for a plaintext executor whose server
// closes the connection before sending a byte, as a TLS server does: gRPC
// says only "error reading server preface: EOF".
var errClosedAtOnce = fmt.Errorf("%w: it closed the connection before sending anything (a driver with TLS, and this executor without? Set Config.TLS alike in every process, or EMBER_TLS_CA_FILE here)", ErrNotGRPC)

// errClosedAfterTLS is the latest handshake error of an executor whose
// driver closed the connection after a TLS handshake that succeeded, and
// before it sent anything. A driver under MutualTLS does so when it
// refuses the executor's client certificate: it says so in an alert
// (certificateRefused), which the executor may not read before the write
// that meets the closed connection ends it.
var errClosedAfterTLS = errors.New("the driver closed the connection after the TLS handshake (is it stopping, or does it require a client certificate, with MutualTLS, which this executor lacks or the driver does not accept?)")

// sniffConn looks at the first bytes the server sends: an HTTP/2 server
// opens with a SETTINGS frame (type 4, the fourth byte); anything else,
// no byte at all over plaintext, or a TLS alert refusing this executor's
// certificate, is named in a handshake error.
type sniffConn struct {
	net.Conn
	s         *handshakeState
	plaintext bool
	seen      atomic.Bool
	mu        sync.Mutex // held by closed
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.s.received.Add(uint64(n))
	}
	if n == 0 && err != nil {
		c.closed(err)
	}
	if n > 0 && !c.seen.Load() {
		c.seen.Store(true)
		// Judged on a first read of at least a frame header's first
		// four bytes (nearly always): a shorter one is let pass.
		switch {
		case n < 4:
		case p[3] != 4:
			e := fmt.Errorf("%w: it answered %q (is EMBER_DRIVER the driver's /metrics address, or another service's? Point it at the address the driver logs as listening for executors)",
				ErrNotGRPC, bytes.ToValidUTF8(p[:min(n, 40)], nil))
			c.s.last.Store(&e)
		default:
			// It speaks HTTP/2: what an earlier connection met no longer
			// holds, and must not be blamed for a later failure.
			c.s.last.Store(nil)
		}
	}
	return n, err
}

// Write writes p, noting a connection the server closed at once, as Read
// does: the client's preface can meet it first.
func (c *sniffConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.closed(err)
	}
	return n, err
}

// closed notes what err says of a connection on which the server sent
// nothing yet: that it refused this executor's client certificate (a
// handshake failure that ends the wait: see handshakeState.failed), or
// that it closed the connection (an orderly close or a reset):
// errClosedAtOnce over plaintext, errClosedAfterTLS over TLS.
func (c *sniffConn) closed(err error) {
	// Read and Write may both fail, on different goroutines: the alert,
	// which says more, must not be overwritten.
	c.mu.Lock()
	defer c.mu.Unlock()
	if certificateRefused(err) {
		c.seen.Store(true)
		c.s.failed(err)
		return
	}
	if c.seen.Load() || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		return
	}
	c.seen.Store(true)
	e := errClosedAtOnce
	if !c.plaintext {
		e = errClosedAfterTLS
	}
	c.s.last.Store(&e)
}

func (h *handshakeErrors) Clone() credentials.TransportCredentials {
	return &handshakeErrors{TransportCredentials: h.TransportCredentials.Clone(), handshakeState: h.handshakeState}
}

// err returns the latest handshake error, or nil.
func (h *handshakeErrors) err() error {
	if p := h.last.Load(); p != nil {
		return *p
	}
	return nil
}

// leavingFrame tells the driver that executor id is stopping on its own.
func leavingFrame(id string) *wire.Frame {
	return &wire.Frame{Kind: wire.Kind_KIND_LEAVING, Code: uint32(plugin.CodeUnavailable),
		Error: fmt.Sprintf("executor %s is shutting down", id)}
}

// watchStalls starts watching the plugins' lanes for stalls
// (rpc.WatchStalls, rpc.ConfStallWarning) and returns the function that
// stops it and waits for it, which may be called more than once.
func (x *Executor) watchStalls() (stop func()) {
	var lanes []rpc.Watched
	for _, e := range x.endpoints {
		if e.lane != nil {
			// A series only while stalled: every executor ships its
			// metrics each interval, and a series per plugin per executor
			// doubled the scale scenario's ask p99 (1,000 executors: 2.0
			// to 3.2 ms without it, 5.0 to 6.9 ms with it).
			name := e.name
			stalled := func(on bool) {
				if on {
					x.laneStalled.WithLabelValues(name).Set(1)
				} else {
					x.laneStalled.DeleteLabelValues(name)
				}
			}
			lanes = append(lanes, rpc.Watched{Lane: e.lane, Log: e.log, Stalled: stalled})
		}
	}
	after := rpc.StallWarning(x.conf)
	ctx, cancel := context.WithCancel(x.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rpc.WatchStalls(ctx, after, lanes)
	}()
	return func() {
		cancel()
		<-done
	}
}
