// Package driver is the driver side of the runtime: it accepts executor
// streams, checks their handshake, keeps the executor registry, and runs
// each driver plugin behind its own dispatch lane.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/emberhq/ember/internal/auth"
	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/metrics"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Config configures a Driver. Zero durations take the defaults.
type Config struct {
	AppID, AppName string
	Conf           map[string]string
	Plugins        []plugin.Plugin
	Logger         *slog.Logger
	Registry       *prometheus.Registry
	BuildID        string
	Conn           rpc.Options
	// HandshakeTimeout bounds the time from connect to HELLO.
	HandshakeTimeout time.Duration
	// ShutdownTimeout bounds each shutdown phase.
	ShutdownTimeout time.Duration
	// Tasks are the registered task names, in registration order; the
	// handshake compares them.
	Tasks []string
	// TaskSites says where each task was registered ("file:line in
	// function"), for a handshake mismatch to name a task the executor
	// lacks by the code that made it. Optional.
	TaskSites map[string]string
	// MaxTaskFailures is how many times one task may fail before its job
	// fails (default 4).
	MaxTaskFailures int
	// TaskPrefetch is the most attempts beyond its slots an executor may
	// hold, waiting there for a slot, for a job whose attempts have all
	// run shorter than ShortTask (see ShortTask for how many are sent):
	// a slot that frees then starts the next attempt without waiting for
	// the driver to hear of it. 0: 4 per slot; less than 0: none. At most
	// MaxSlots in all per executor.
	TaskPrefetch int
	// Secret is the application secret executors must prove they know;
	// empty: no authentication.
	Secret string
	// MaxExecutors bounds the executors connected at once (0: no bound).
	MaxExecutors int
	// MaxOutstandingAsks bounds the asks one executor may have sent and
	// the driver not yet answered, counting asks their askers gave up on
	// whose handlers have not returned; more are answered
	// CodeResourceExhausted.
	MaxOutstandingAsks int
	// Local says the executors are the driver's own binary, started by a
	// local master: a handshake mismatch is then a failure of start-up,
	// not a refusal to log and count, and the driver keeps what it learns
	// of each executor process by PID (Ended), for the launcher's reports
	// of their ends.
	Local bool
	// NoReplacements says executors that leave are not replaced (local[N],
	// or a local-cluster that does not replace them): jobs then fail when
	// no executor is left, instead of waiting for one to join.
	// EndReplacements says so later.
	NoReplacements bool
	// OnLost, if set, is called with the PID an executor reported when the
	// driver loses it outside shutdown (not released, not stopping on its
	// own), on a local master, while that process's end has not been
	// reported (Ended): a local-cluster kills that process, if it is one
	// of its own, so that one still running (frozen, say) is replaced.
	OnLost func(pid int)
	// Exiting, if set, reports whether the executor process pid, on a
	// local master, has begun to exit: the driver then waits, up to
	// exitWait, for the launcher to report how it ended (Ended), to say so
	// in the reason of its executor's loss (see withExit).
	Exiting func(pid int) bool
	// NoExecutorsWarning is how often a job left with no executor
	// (standalone, or a local-cluster replacing its executors) says so in
	// the log (default 15s).
	NoExecutorsWarning time.Duration
	// LaneLimit is the number of messages queued or running at which a
	// driver plugin's lane stops giving its senders' window back, until
	// half as many are (backpressure to those senders alone). Default
	// rpc.DefaultLaneLimit.
	LaneLimit int
	// TLS is the server's TLS credentials; nil: plaintext. Connections
	// whose TLS handshake fails are counted (ember_auth_failures_total,
	// reason "tls") and logged.
	TLS credentials.TransportCredentials
}

// DefaultMaxOutstandingAsks is the default Config.MaxOutstandingAsks.
const DefaultMaxOutstandingAsks = 4096

// Driver serves executors. Its methods are safe for concurrent use.
type Driver struct {
	wire.UnimplementedEmberServer

	cfg       Config
	log       *slog.Logger
	sched     scheduler
	builtin   *metrics.Builtin
	execStats metrics.Store // executors' metrics, from their heartbeats
	endpoints []*endpoint
	names     []string
	hostname  string
	ctx       context.Context // handler context; canceled by Close
	cancel    context.CancelFunc
	srv       *grpc.Server
	// watch starts the lanes' stall watch (rpc.WatchStalls) in Serve;
	// watching is it, until ctx ends.
	watch    sync.Once
	watching sync.WaitGroup

	mu      sync.Mutex // protects the following fields
	execs   map[string]*execState
	nextID  int
	changed chan struct{} // closed and replaced when membership changes
	// failures are the latest executors refused or failed to initialise
	// (at most maxFailuresKept), failuresSeen how many there were.
	failures     []error
	failuresSeen int
	// refusals counts the executors refused at the handshake that do not
	// fail start-up (a wrong secret, too many executors, a mismatch on a
	// standalone driver), and lastRefusal says why the latest was, for
	// WaitExecutors' timeout error.
	refusals    int
	lastRefusal error
	stopping    bool
	// departed are the timers that delete the final series of executors
	// that left on their own (departedSeriesKept), by executor ID; Close
	// stops them.
	departed map[string]*time.Timer
	// released holds the PIDs of the executors that stopped when Close
	// told them to (their STOPPED arrived); made by Close.
	released map[int]bool
	// procs holds what the driver learns of a local master's executor
	// processes, by PID, until their end is reported (see Ended).
	procs   map[int]*Process
	readies int // executors that became ready (see Readies)
	streams int // executor streams opened (see Streams)
	lis     net.Listener
	conns   *conns // lis, keeping its connections (see hangUp)

	// preAuthWarnings bounds the lines logged about peers that failed
	// the handshake before proving the secret (see warnPreAuth).
	preAuthWarnings rpc.LogBudget
	// mismatchErrors and initFailures bound the lines logged about
	// executors refused for a handshake mismatch, and about those whose
	// plugins failed to initialise: a fleet of hosts left on another
	// build, or with a broken deployment, whose supervisor restarts
	// each executor as it exits, repeats them as often as it restarts.
	mismatchErrors, initFailures rpc.LogBudget
}

// markHandlers sets es.handlers from es.ctx and es.askCtx.
func (d *Driver) markHandlers(es *execState) {
	es.handlers = make([]handlerCtxs, len(d.endpoints))
	for i, e := range d.endpoints {
		if e.lane != nil {
			es.handlers[i] = handlerCtxs{send: rpc.WithLane(es.ctx, e.lane), ask: rpc.WithLane(es.askCtx, e.lane)}
		}
	}
}

// handlerCtxs are the ctxs a plugin's handlers run under for one
// executor's messages: for sends and for asks (see execState).
type handlerCtxs struct{ send, ask context.Context }

type execState struct {
	ctx    context.Context // handler context for sends: the driver's, with the sender's ID
	askCtx context.Context // for asks: the connection's (ends with it, or STOPPED), with the sender's ID
	// endAsks ends askCtx when STOPPED arrives: the executor's plugins
	// have shut down, and nobody waits for a reply any more. A Receive
	// long-polling on its ctx would otherwise hold the driver's shutdown.
	endAsks context.CancelCauseFunc
	// handlers holds, by plugin index, ctx and askCtx marked as the
	// plugin's lane's (rpc.WithLane): what its handlers run under. Set
	// with askCtx.
	handlers []handlerCtxs
	log      *slog.Logger // the driver's, with the executor's ID
	// senderLog is the driver's, naming the executor as the sender of
	// the message a driver plugin's Receive handles: its lines are about
	// the driver's plugin (a panic in its Receive), not the executor.
	senderLog *slog.Logger
	info      plugin.ExecutorInfo
	peer      string    // the transport's address of the executor, where Host is what it claims
	conn      *rpc.Conn // set under Driver.mu once WELCOME is written; nil while in the handshake
	ready     bool
	// initFailed: its READY reported its plugins' Init failing (logged
	// then); set under Driver.mu.
	initFailed bool
	// noReceiver[i]: plugin i's executor side takes no messages here
	// (READY said so). Set under Driver.mu with ready.
	noReceiver []bool
	// stoppingOwn: it said it is stopping on its own (LEAVING), and its
	// plugins take nothing more: calls to it fail, and Broadcast skips
	// it. Set under Driver.mu.
	stoppingOwn bool
	// notStopped: Close's wait for its STOPPED ended without it (the
	// "did not stop within" error Close returns). Set under Driver.mu.
	notStopped error
	stopped    chan struct{} // closed when STOPPED arrives
	// stopErr is the executor plugins' shutdown errors STOPPED carried;
	// written before stopped is closed, read after.
	stopErr error
	lost    error // why it left without STOPPED; set under Driver.mu once it has left
	// proc is what a local master's driver learns of its process (see
	// Process), made as it is listed; nil on a standalone driver. Written
	// under Driver.mu. Frames update this record, never one looked up by
	// PID: once the launcher has reported the process's end (Ended), a
	// frame handled late must not make a new one, which would be kept for
	// ever, and handed to the next process given the PID.
	proc *Process
	// exitChecked: its HandleClose has taken how its process ended into
	// its reason, or decided not to (see withExit). Under d.mu.
	exitChecked bool

	asks atomic.Int64 // asks received and not yet answered

	// frameWarnings bounds the lines logged about frames it should not
	// have sent (see warnFrame).
	frameWarnings rpc.LogBudget

	// Guarded by scheduler.mu.
	slots int
	// ahead is the most attempts beyond slots it may hold, for jobs of
	// short tasks (see TaskPrefetch): they wait there for a slot.
	ahead   int
	running map[uint64]*attempt // sent to it: running, or waiting there for a slot
	// jobs counts the attempts in running by job: it takes attempts ahead
	// of its slots only while every one of them is of a job of short
	// tasks still running (see pickLocked).
	jobs map[*job]int
	// waiting holds, in run order, the attempts in running sent beyond
	// its slots: waiting there for one, as the driver reckons it (the
	// executor starts them in the order they come as its slots free).
	// They count as running in their job's Progress and the gauge once an
	// attempt ahead of them ends (see countEndLocked).
	waiting []*attempt
	leaving bool // said it is stopping on its own (LEAVING): given no more attempts
}

// New validates cfg and builds the driver's plugin endpoints. It does no
// I/O, and the only plugin code it calls is Plugin.DriverPlugin and the
// optional methods that size a plugin's lane and send window; a panic in
// any of them is an error naming the plugin.
func New(cfg Config) (*Driver, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.MaxTaskFailures <= 0 {
		cfg.MaxTaskFailures = 4
	}
	if cfg.NoExecutorsWarning <= 0 {
		cfg.NoExecutorsWarning = 15 * time.Second
	}
	if cfg.MaxOutstandingAsks <= 0 {
		cfg.MaxOutstandingAsks = DefaultMaxOutstandingAsks
	}
	// The window this driver's connections use, as announced in Welcome.
	cfg.Conn.SendWindow = rpc.EffectiveSendWindow(cfg.Conn.SendWindow)
	host, _ := os.Hostname()
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{
		cfg:      cfg,
		log:      cfg.Logger,
		hostname: host,
		ctx:      ctx,
		cancel:   cancel,
		execs:    make(map[string]*execState),
		changed:  make(chan struct{}),
	}
	d.builtin = metrics.NewBuiltin(cfg.Registry)
	cfg.Registry.MustRegister(executorInfo{d})
	onLimit := cfg.Conn.OnLimit
	d.cfg.Conn.OnLimit = func(limit string) {
		d.builtin.LimitHits.WithLabelValues("driver", limit).Inc()
		if onLimit != nil {
			onLimit(limit)
		}
	}
	d.sched.maxFailures = cfg.MaxTaskFailures
	d.sched.prefetch = cfg.TaskPrefetch
	d.sched.noReplacements = cfg.NoReplacements
	d.sched.runs = make(map[uint64]*attempt)
	d.sched.builtin = d.builtin
	d.sched.log = d.log
	// Every plugin is asked first, so that one that panics leaves no lane
	// of another running.
	setups := make([]pluginSetup, len(cfg.Plugins))
	var windows []int // the plugins' own send windows, if any has one
	for i, p := range cfg.Plugins {
		s, err := setUp(cfg.Logger, p)
		if err != nil {
			return nil, err
		}
		setups[i] = s
		if s.window > 0 {
			if windows == nil {
				windows = make([]int, len(cfg.Plugins))
			}
			windows[i] = rpc.EffectiveSendWindow(s.window)
		}
	}
	for i, p := range cfg.Plugins {
		e := &endpoint{
			d:       d,
			idx:     uint32(i),
			name:    p.Name(),
			log:     cfg.Logger.With("plugin", p.Name()),
			metrics: metrics.PluginRegisterer(cfg.Registry, p.Name(), "driver"),
			conf:    plugin.NewConf(cfg.Conf),
			dp:      setups[i].dp,
		}
		if e.dp != nil {
			e.listener, _ = e.dp.(plugin.ExecutorListener)
			e.dropped, _ = e.dp.(plugin.DroppedReplyListener)
			e.lane = rpc.NewLane(setups[i].workers, cfg.LaneLimit, e.run)
			lane := e.lane
			cfg.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name:        "ember_lane_queue_depth",
				Help:        "Messages queued or running in a driver plugin's dispatch lane.",
				ConstLabels: prometheus.Labels{"plugin": e.name},
			}, func() float64 { return float64(lane.Len()) }))
			d.builtin.LaneStalled.WithLabelValues("driver", e.name) // served at 0 from the start
			// Only a driver side has a Receive to time: a plugin with
			// none has no handler series, as it has no lane's.
			e.handlerSeconds = d.builtin.HandlerSeconds.WithLabelValues(e.name)
		}
		d.endpoints = append(d.endpoints, e)
		d.names = append(d.names, e.name)
	}
	d.cfg.Conn.Plugins = d.names           // SENDs to every plugin are flow-controlled
	d.cfg.Conn.PluginSendWindows = windows // as announced in Welcome
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsg(cfg.Conn) + rpc.BatchOverhead),
		// Protobuf, with received frames taken from a pool.
		grpc.ForceServerCodecV2(wire.Codec{}),
		grpc.InitialWindowSize(rpc.StreamWindow),
		grpc.InitialConnWindowSize(rpc.ConnWindow),
		// A peer that opens a connection and never completes the HTTP/2
		// and TLS handshakes is dropped after the handshake timeout; one
		// that completes them but opens no stream is dropped when idle.
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 2 * cfg.HandshakeTimeout}),
		// An executor needs one stream.
		grpc.MaxConcurrentStreams(4),
		// Executors send no metadata. gRPC's default (16 MiB of header
		// fields per stream, HPACK-indexed at a byte each on the wire)
		// let a peer without the secret make the driver hold hundreds of
		// MiB per connection from a couple of MiB sent.
		grpc.MaxHeaderListSize(rpc.MaxHeaderListSize),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(watchedCreds{TransportCredentials: cfg.TLS, failed: d.tlsRefused(new(rpc.LogBudget))}))
	}
	d.srv = grpc.NewServer(opts...)
	wire.RegisterEmberServer(d.srv, d)
	return d, nil
}

// pluginSetup is what New asks a plugin for.
type pluginSetup struct {
	dp      plugin.DriverPlugin
	workers int // plugin.ConcurrentReceiver's, or 1
	window  int // plugin.SendWindowed's, or 0
}

// setUp asks p for its driver plugin and that plugin's lane and window
// sizes, turning a panic into an error naming the plugin and method.
func setUp(log *slog.Logger, p plugin.Plugin) (pluginSetup, error) {
	name := p.Name()
	call := func(method string, fn func()) error {
		if err := rpc.CallFunc(log, name, method, fn); err != nil {
			return fmt.Errorf("driver plugin %q: %w", name, err)
		}
		return nil
	}
	s := pluginSetup{workers: 1}
	if err := call("DriverPlugin", func() { s.dp = p.DriverPlugin() }); err != nil {
		return s, err
	}
	if err := rpc.NilSide("DriverPlugin", s.dp); err != nil {
		return s, fmt.Errorf("driver plugin %q: %w", name, err)
	}
	for _, why := range rpc.MissedOptional(s.dp, rpc.DriverOptional) {
		log.Warn("driver plugin: a method meant for an optional interface is never called", "plugin", name, "why", why)
	}
	if cr, ok := s.dp.(plugin.ConcurrentReceiver); ok {
		if err := call("MaxConcurrentReceives", func() { s.workers = cr.MaxConcurrentReceives() }); err != nil {
			return s, err
		}
	}
	if sw, ok := s.dp.(plugin.SendWindowed); ok {
		if err := call("SendWindow", func() { s.window = sw.SendWindow() }); err != nil {
			return s, err
		}
	}
	return s, nil
}

func maxMsg(o rpc.Options) int {
	if o.MaxMessageBytes > 0 {
		return o.MaxMessageBytes
	}
	return rpc.DefaultMaxMessageBytes
}

// initGrace is how long a driver plugin's Init may take to return once its
// ctx has ended before it is abandoned: one that watches its ctx is not
// (it might have succeeded, and would then never be shut down).
const initGrace = time.Second

// Init runs the driver plugins' Init in list order. On the first error it
// shuts down the plugins already initialised, in reverse order, and returns
// an error naming the plugin. An Init still running when ctx ends is
// abandoned, still running, and fails with CodeDeadlineExceeded: one
// ignoring its ctx cannot hold start-up for ever.
func (d *Driver) Init(ctx context.Context) error {
	for i, e := range d.endpoints {
		if e.dp == nil {
			continue
		}
		var extra map[string]string             // read only once Init has returned
		ictx, cancel := context.WithCancel(ctx) // this Init's own: it ends as Init returns
		err := rpc.CallWithin(ictx, initGrace, d.log, e.name, "Init", func(ctx context.Context) error {
			var err error
			extra, err = e.dp.Init(ctx, e)
			return err
		})
		cancel()
		if err != nil {
			d.shutdownPlugins(i - 1)
			return fmt.Errorf("driver plugin %q: init: %w", e.name, err)
		}
		// A copy: the plugin may keep the map (its live settings, say)
		// and change it later, which must neither change what later
		// executors receive nor race with encoding their WELCOME.
		e.extraConf = maps.Clone(extra)
		e.inited = true
	}
	return d.checkWelcome()
}

// checkWelcome fails start-up when the configuration handed to every
// executor could not be: better than every executor failing at connect.
// Its strings must be valid UTF-8 (the driver's proof binds their
// deterministic protobuf encoding, which refuses anything else), and it
// must fit in one message; the error names the key, or the biggest
// contributor. The plugins are shut down first.
func (d *Driver) checkWelcome() error {
	err := d.welcomeProblem()
	if err != nil {
		d.shutdownPlugins(len(d.endpoints) - 1)
	}
	return err
}

func (d *Driver) welcomeProblem() error {
	if !utf8.ValidString(d.cfg.AppName) {
		return plugin.Errorf(plugin.CodeInvalidArgument, "AppName %q is not valid UTF-8", d.cfg.AppName)
	}
	if k, ok := invalidUTF8(d.cfg.Conf); ok {
		return plugin.Errorf(plugin.CodeInvalidArgument, "Conf key %q: the key or its value is not valid UTF-8", k)
	}
	w := &wire.Welcome{Conf: d.cfg.Conf}
	biggest, biggestSize := "", 0
	for _, e := range d.endpoints {
		if k, ok := invalidUTF8(e.extraConf); ok {
			return plugin.Errorf(plugin.CodeInvalidArgument, "driver plugin %q: extraConf key %q: the key or its value is not valid UTF-8", e.name, k)
		}
		x := &wire.ExtraConf{Values: e.extraConf}
		w.ExtraConf = append(w.ExtraConf, x)
		if n := proto.Size(x); n > biggestSize {
			biggest, biggestSize = e.name, n
		}
	}
	if size, limit := proto.Size(w), maxMsg(d.cfg.Conn); size > limit {
		return plugin.Errorf(plugin.CodeResourceExhausted,
			"the configuration sent to executors (Conf and every plugin's extraConf) is %d bytes, over the %d-byte message limit (largest extraConf: plugin %q, %d bytes)",
			size, limit, biggest, biggestSize)
	}
	return nil
}

// invalidUTF8 returns the smallest key of m whose key or value is not
// valid UTF-8, and whether there is one.
func invalidUTF8(m map[string]string) (string, bool) {
	bad, found := "", false
	for k, v := range m {
		if (!utf8.ValidString(k) || !utf8.ValidString(v)) && (!found || k < bad) {
			bad, found = k, true
		}
	}
	return bad, found
}

// Serve accepts executors on lis until Close. It returns at once. A
// connection whose executor has not joined within preAuthLimit of its
// accept is closed.
func (d *Driver) Serve(lis net.Listener) {
	c := newConns(lis, preAuthLimit(d.cfg.HandshakeTimeout))
	d.mu.Lock()
	d.lis, d.conns = lis, c
	d.mu.Unlock()
	go func() { _ = d.srv.Serve(c) }()
	d.watch.Do(d.watchStalls)
}

// watchStalls starts watching the driver plugins' lanes for stalls
// (rpc.WatchStalls, rpc.ConfStallWarning) until d.ctx ends; Close waits
// for it (watching).
func (d *Driver) watchStalls() {
	var lanes []rpc.Watched
	for _, e := range d.endpoints {
		if e.lane != nil {
			stalled := metrics.Flag(d.builtin.LaneStalled.WithLabelValues("driver", e.name))
			lanes = append(lanes, rpc.Watched{Lane: e.lane, Log: e.log, Stalled: stalled})
		}
	}
	after := rpc.StallWarning(plugin.NewConf(d.cfg.Conf))
	d.watching.Go(func() { rpc.WatchStalls(d.ctx, after, lanes) })
}

// hangUp ends the connection of a peer that failed its handshake: once
// the peer has read the refusal and ended its stream, or after the
// handshake timeout, the driver closes it, so that a peer that proves
// nothing cannot keep a connection by opening stream after stream.
func (d *Driver) hangUp(stream wire.Ember_ConnectServer, peerAddr string) {
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		// Counted, not decoded (see wire.FirstBatch): the peer has
		// proved nothing.
		for stream.RecvMsg(new(wire.FirstBatch)) == nil {
		}
	}()
	t := time.NewTimer(d.cfg.HandshakeTimeout)
	select {
	case <-ended:
	case <-t.C:
	}
	t.Stop()
	d.drop(peerAddr)
}

// preAuthLimit is how long a connection may stay open without its executor
// joining, for a handshake timeout of ht: the transport's handshake and
// the HELLO each have ht, and a third is slack.
func preAuthLimit(ht time.Duration) time.Duration { return 3 * ht }

// drop closes the connection from peerAddr, if Serve accepted it.
func (d *Driver) drop(peerAddr string) {
	d.mu.Lock()
	c := d.conns
	d.mu.Unlock()
	c.drop(peerAddr)
}

// Process is what a local master's driver learnt of one executor
// process, for the launcher's report of its end.
type Process struct {
	// ID is the executor ID it was given, if it got that far.
	ID string
	// Refused says why it was refused at the handshake for a mismatch.
	// It is known as soon as the refusal is sent: a refused executor may
	// exit, and its exit be reported, before the driver fails start-up
	// with the reason (WaitStart), and the reason must win over "exit
	// status 1".
	Refused error
	// InitFailure says why its plugins failed to initialise: more than
	// its exit status says.
	InitFailure error
	// ReadyAt is when its plugins initialised; zero if they did not (see
	// Ready).
	ReadyAt time.Time
	// Leaving: it said it was stopping on its own (LEAVING), so its clean
	// exit was a stop, where a clean exit without it is a crash (a task
	// that called os.Exit(0)). An executor sends LEAVING before it ends its
	// stream, and the driver handles it before it ends its side, so it is
	// known by the time the process has exited.
	Leaving bool
	// Left: after LEAVING it ended its stream itself, its stop done, and
	// its process exits on its own.
	Left bool
	// ExitTold: the driver says how its process ended, in its report of
	// its executor's loss (the reason OnExecutorRemoved gets, and the
	// "executor lost" line), or, should the executor's stream end cleanly
	// after all (it left, or was released), in an "executor ended" line
	// of its own: the launcher need not say it again.
	ExitTold bool

	// ended is closed by Ended, which sets exit to how the process
	// ended; awaited is set while the executor's HandleClose waits for
	// that (see withExit). Under d.mu.
	ended   chan struct{}
	exit    error
	awaited bool
}

// Ready reports whether its plugins initialised. A replacement that
// ended before that failed.
func (p Process) Ready() bool { return !p.ReadyAt.IsZero() }

// Ended takes the launcher's report that process pid, of an executor on
// a local master (Config.Local), has ended, with the error it ended with
// (nil for a clean exit), and returns what the driver learnt of it, which
// it then forgets: the launcher reports each process's end once, a later
// process may get the PID, and a local-cluster that replaces executors
// for days must not keep an entry for each.
func (d *Driver) Ended(pid int, err error) Process {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.procs[pid]
	delete(d.procs, pid)
	if p == nil {
		return Process{}
	}
	p.exit = err
	// A ready executor whose HandleClose is yet to take its process's
	// end into its reason, or is waiting for it, will (withExit).
	es := d.execs[p.ID]
	p.ExitTold = p.awaited || es != nil && es.proc == p && es.ready && !es.exitChecked
	close(p.ended)
	return *p
}

// processLocked returns the record of the executor of process pid, made
// on first use, on a local master; nil otherwise (a standalone driver
// would keep an entry per stranger). d.mu is held.
func (d *Driver) processLocked(pid int) *Process {
	if !d.cfg.Local {
		return nil
	}
	if d.procs == nil {
		d.procs = map[int]*Process{}
	}
	p := d.procs[pid]
	if p == nil {
		p = &Process{ended: make(chan struct{})}
		d.procs[pid] = p
	}
	return p
}

// listProcessLocked makes the record of es's process, as es is listed,
// on a local master. d.mu is held.
func (d *Driver) listProcessLocked(es *execState) {
	if p := d.processLocked(es.info.PID); p != nil {
		p.ID = es.info.ID
		es.proc = p
	}
}

// Released reports whether an executor of process pid stopped cleanly
// when Close told it to: its exit, if not clean, is then its own failure,
// not the end of a lost executor. Meaningful once Close has returned.
func (d *Driver) Released(pid int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.released[pid]
}

// Left reports whether the executor of process pid, on a local master,
// stopped on its own and ended its stream cleanly: its process exits by
// itself, and need not be killed. Meaningful until its end is reported
// (Ended).
func (d *Driver) Left(pid int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.procs[pid]
	return p != nil && p.Left
}

// Readies returns how many executors have become ready (their plugins
// initialised) since the driver started: a launcher that replaces lost
// executors resets its count of failures in a row when one does.
func (d *Driver) Readies() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.readies
}

// Streams returns how many executor streams have been opened to the
// driver since it started, whatever became of them: none, on a local
// master, means that no executor process got as far as connecting.
func (d *Driver) Streams() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.streams
}

// Addr is the address executors connect to, once Serve has been called.
func (d *Driver) Addr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lis == nil {
		return ""
	}
	return d.lis.Addr().String()
}

// AppID returns the application ID.
func (d *Driver) AppID() string { return d.cfg.AppID }

// Executors lists the ready executors ordered by ID.
func (d *Driver) Executors() []plugin.ExecutorInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []plugin.ExecutorInfo
	for _, es := range d.execs {
		if es.ready {
			info := cloneInfo(es.info)
			info.Stopping = es.stoppingOwn || d.stopping
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b plugin.ExecutorInfo) int { return metrics.CompareIDs(a.ID, b.ID) })
	return out
}

// cloneInfo returns a copy of info that shares nothing with it: each
// caller of Executors, and each listener, may change its own.
func cloneInfo(info plugin.ExecutorInfo) plugin.ExecutorInfo {
	res := make(map[string]plugin.Resource, len(info.Resources))
	for name, r := range info.Resources {
		res[name] = plugin.Resource{Name: r.Name, Addresses: slices.Clone(r.Addresses)}
	}
	info.Resources = res
	return info
}

// WaitExecutors waits until n executors are ready. It fails as soon as an
// executor fails start-up (fails to initialise, or is refused for a
// mismatch on a local master) after the call began, once the driver is
// shutting down (plugin.ErrClosed), and when ctx ends; that error counts
// the other refusals since the call began.
func (d *Driver) WaitExecutors(ctx context.Context, n int) error {
	d.mu.Lock()
	since, refusedBefore := d.failuresSeen, d.refusals
	d.mu.Unlock()
	return d.waitExecutors(ctx, n, since, refusedBefore)
}

// WaitStart is WaitExecutors for start-up: it also counts the failures
// and refusals before the call.
func (d *Driver) WaitStart(ctx context.Context, n int) error {
	return d.waitExecutors(ctx, n, 0, 0)
}

func (d *Driver) waitExecutors(ctx context.Context, n, since, refusedBefore int) error {
	for {
		d.mu.Lock()
		ready, _ := d.readyLocked(false)
		failures := d.failuresSinceLocked(since)
		changed, stopping := d.changed, d.stopping
		d.mu.Unlock()
		if failures != nil {
			return failures
		}
		if stopping {
			return fmt.Errorf("waiting for executors (%d wanted, %d ready): %w", n, ready, errShuttingDown)
		}
		if ready >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			d.mu.Lock()
			ready, starting := d.readyLocked(true)
			refused, latest := d.refusals-refusedBefore, d.lastRefusal
			d.mu.Unlock()
			state := fmt.Sprintf("%d wanted, %d ready", n, ready)
			if len(starting) > 0 {
				state += "; connected, still initialising their plugins: " + describeStarting(starting)
			}
			if refused > 0 {
				state += fmt.Sprintf("; %d refused at the handshake meanwhile, see the driver's log; the latest: %v", refused, latest)
			}
			return fmt.Errorf("waiting for executors (%s): %w", state, ctx.Err())
		}
	}
}

// readyLocked counts the ready executors and, if listStarting, returns
// those connected but not ready (in the handshake, or their plugins' Init
// running), in no order. d.mu must be held.
func (d *Driver) readyLocked(listStarting bool) (ready int, starting []plugin.ExecutorInfo) {
	for _, es := range d.execs {
		if es.ready {
			ready++
		} else if listStarting {
			starting = append(starting, es.info)
		}
	}
	return ready, starting
}

// maxStartingListed bounds the executors describeStarting names.
const maxStartingListed = 10

// describeStarting names the first maxStartingListed of the executors in
// starting, in ID order (numbers by value, as Executors lists them), and
// says how many more there are, for a start-up timeout's error: it listed
// every one, sorted as text ("1, 10, 100, ..., 9"), however many there
// were. It sorts starting in place.
func describeStarting(starting []plugin.ExecutorInfo) string {
	slices.SortFunc(starting, func(a, b plugin.ExecutorInfo) int { return metrics.CompareIDs(a.ID, b.ID) })
	var b strings.Builder
	for i, info := range starting[:min(len(starting), maxStartingListed)] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (host %s, pid %d)", info.ID, info.Host, info.PID)
	}
	if more := len(starting) - maxStartingListed; more > 0 {
		fmt.Fprintf(&b, ", and %d more", more)
	}
	return b.String()
}

// executorMetrics stores the metrics an executor shipped.
func (d *Driver) executorMetrics(es *execState, m *wire.Metrics) {
	if m == nil {
		return
	}
	fams, err := metrics.Decode(m)
	if err != nil { // the families that were valid are kept
		d.warnFrame(es, "dropped invalid executor metrics", "err", err)
	}
	// An executor speaks for itself only: its series carry its own ID.
	metrics.SetLabel(fams, "executor", es.info.ID)
	// Under the lock HandleClose drops a lost executor's series with, so
	// that a heartbeat handled as it closes cannot bring them back.
	d.mu.Lock()
	if d.execs[es.info.ID] == es {
		d.execStats.Set(es.info.ID, fams)
	}
	d.mu.Unlock()
}

// Gatherer returns the driver's metrics and the latest of every
// executor's, for a /metrics endpoint.
func (d *Driver) Gatherer() prometheus.Gatherer {
	return metrics.Unambiguous(prometheus.Gatherers{d.cfg.Registry, &d.execStats})
}

// fail records an executor that could not join, for WaitExecutors.
func (d *Driver) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.failures) == maxFailuresKept { // a standalone driver runs for long
		d.failures = append(d.failures[:0], d.failures[1:]...)
	}
	d.failures = append(d.failures, err)
	d.failuresSeen++
	d.notifyLocked()
}

// refusedLocked counts an executor refused at the handshake without
// failing start-up, why being the reason. d.mu is held.
func (d *Driver) refusedLocked(why error) {
	d.refusals++
	d.lastRefusal = why
}

// maxFailuresKept bounds the executor failures a driver keeps for
// WaitExecutors.
const maxFailuresKept = 64

// failuresSinceLocked joins the failures recorded since the first
// failuresSeen, saying how many of them are no longer kept. d.mu is held.
func (d *Driver) failuresSinceLocked(since int) error {
	if d.failuresSeen <= since {
		return nil
	}
	first := d.failuresSeen - len(d.failures) // failures[0]'s number
	kept := d.failures[max(since-first, 0):]
	if gone := first - since; gone > 0 {
		return errors.Join(append([]error{fmt.Errorf("%d more executors failed before these (not kept)", gone)}, kept...)...)
	}
	return errors.Join(kept...)
}

// notifyLocked wakes WaitExecutors. d.mu must be held.
func (d *Driver) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// Connect serves one executor's stream (the gRPC method).
func (d *Driver) Connect(stream wire.Ember_ConnectServer) error {
	peerAddr := "unknown"
	if p, ok := peer.FromContext(stream.Context()); ok {
		peerAddr = p.Addr.String()
	}
	refuse := func(code plugin.Code, reason, msg string) error {
		_ = stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{
			Code: uint32(code), Error: msg,
		}}}})
		return status.Error(codes.Code(code), reason)
	}
	d.mu.Lock()
	conns := d.conns
	d.streams++
	d.mu.Unlock()
	endHandshake, ok := conns.beginHandshake(peerAddr)
	if !ok {
		// Neither logged nor answered: a peer that proves nothing would
		// have a line for each stream it opens.
		d.builtin.LimitHits.WithLabelValues("driver", "concurrent_handshakes").Inc()
		return status.Error(codes.ResourceExhausted, "another stream on this connection is in its handshake")
	}
	defer endHandshake()
	challenge := auth.Nonce()
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_CHALLENGE, Challenge: &wire.Challenge{
		Nonce: challenge, AuthRequired: d.cfg.Secret != "",
	}}}}); err != nil {
		return err
	}
	hello, err := d.recvHello(stream)
	if err != nil {
		if d.isStopping() {
			// The shutdown ended it (the stream's ctx): no peer's fault,
			// and nothing to do. A failed start logged one per executor
			// still connecting.
			d.log.Debug("executor handshake ended: the driver is shutting down", "peer", peerAddr, "err", err)
		} else {
			d.warnPreAuth("executor handshake failed", "peer", peerAddr, "err", err)
		}
		if status.Code(err) == codes.DeadlineExceeded { // after the line, as for authentication
			d.builtin.LimitHits.WithLabelValues("driver", "handshake_timeout").Inc()
		}
		d.drop(peerAddr) // it sent no HELLO: nothing to tell it
		return err
	}
	if d.cfg.Secret != "" && !auth.Verify(hello.Auth, d.cfg.Secret, auth.Executor, challenge, hello.AuthNonce, nil) {
		reason := "wrong proof"
		if len(hello.Auth) == 0 {
			reason = "no proof"
		}
		d.warnPreAuth("refused executor: authentication failed", "peer", peerAddr, "host", hello.Hostname, "pid", hello.Pid, "reason", reason)
		d.builtin.AuthFailures.WithLabelValues(reason).Inc() // after the line, as for TLS
		d.mu.Lock()
		d.refusedLocked(fmt.Errorf("executor at %s (host %s, pid %d) refused: authentication failed (%s)", peerAddr, hello.Hostname, hello.Pid, reason))
		d.mu.Unlock()
		err := refuse(plugin.CodeUnauthenticated, "authentication failed",
			"authentication failed: the executor does not know the application secret (check EMBER_SECRET or EMBER_SECRET_FILE)")
		d.hangUp(stream, peerAddr)
		return err
	}
	types := codec.Names()
	want := &wire.Hello{
		ProtocolVersion: wire.ProtocolVersion,
		BuildId:         d.cfg.BuildID,
		Plugins:         d.names,
		MessageTypes:    types,
		Tasks:           d.cfg.Tasks,
		MaxMessageBytes: int64(d.maxMsg()),
	}
	if msg := checkHello(hello, want, d.cfg.TaskSites); msg != "" {
		msg = rpc.CutErrorText(msg) // it quotes the peer's claims
		d.mismatchErrors.Log(d.log, slog.LevelError, "errors of executors refused for a handshake mismatch", "refused executor: handshake mismatch",
			func() []any {
				return []any{"peer", peerAddr, "host", hello.Hostname, "pid", hello.Pid, "mismatch", msg}
			})
		d.builtin.Mismatches.Inc() // after the line, as for authentication
		failure := fmt.Errorf("executor at %s (host %s, pid %d) refused: handshake mismatch: %s", peerAddr, hello.Hostname, hello.Pid, msg)
		d.mu.Lock()
		if p := d.processLocked(int(hello.Pid)); p != nil {
			p.Refused = failure
		}
		d.mu.Unlock()
		if !d.cfg.Local {
			// A standalone driver's executors are started by others, some
			// perhaps still from the previous build: one of them must not
			// stop the application (nor a peer without the secret, under
			// InsecureNoAuth). It is refused, logged and counted.
			d.mu.Lock()
			d.refusedLocked(failure)
			d.mu.Unlock()
		}
		err := refuse(plugin.CodeInvalidArgument, "handshake mismatch", "handshake mismatch: "+msg)
		// Failing start-up stops the server, which drops what it has not
		// sent yet: the executor would see its stream cut instead of the
		// reason. So it is failed once the executor has read the refusal.
		d.hangUp(stream, peerAddr)
		if d.cfg.Local {
			// A local master's executors are its own binary: a mismatch
			// is a bug of the application, to fail start-up with.
			d.fail(failure)
		}
		return err
	}

	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return refuse(plugin.CodeUnavailable, "shutting down", "the driver is shutting down")
	}
	if n := len(d.execs); d.cfg.MaxExecutors > 0 && n >= d.cfg.MaxExecutors {
		d.refusedLocked(fmt.Errorf("executor at %s (host %s, pid %d) refused: the driver already has %d executors (MaxExecutors)", peerAddr, hello.Hostname, hello.Pid, n))
		d.mu.Unlock()
		d.log.Warn("refused executor: too many executors", "peer", peerAddr, "max", d.cfg.MaxExecutors)
		d.builtin.LimitHits.WithLabelValues("driver", "max_executors").Inc() // after the line
		return refuse(plugin.CodeResourceExhausted, "too many executors",
			fmt.Sprintf("the driver already has %d executors (the maximum)", n))
	}
	d.nextID++
	id := strconv.Itoa(d.nextID)
	es := &execState{
		ctx:       senderContext(d.ctx, id),
		log:       d.log.With("executor", id),
		senderLog: d.log.With("sender", id),
		info:      plugin.ExecutorInfo{ID: id, Host: hello.Hostname, PID: int(hello.Pid)},
		peer:      peerAddr,
		stopped:   make(chan struct{}),
	}
	d.execs[id] = es
	d.listProcessLocked(es)
	d.mu.Unlock()
	if hook := testHookConnect.Load(); hook != nil {
		(*hook)("listed", es)
	}

	welcome := &wire.Welcome{
		AppId:               d.cfg.AppID,
		AppName:             d.cfg.AppName,
		ExecutorId:          id,
		Conf:                d.cfg.Conf,
		HeartbeatIntervalMs: d.cfg.Conn.HeartbeatInterval.Milliseconds(),
		SendWindow:          uint64(d.cfg.Conn.SendWindow),
	}
	for _, w := range d.cfg.Conn.PluginSendWindows {
		welcome.PluginSendWindows = append(welcome.PluginSendWindows, uint64(w))
	}
	for _, e := range d.endpoints {
		welcome.ExtraConf = append(welcome.ExtraConf, &wire.ExtraConf{Values: e.extraConf})
		if e.lane == nil {
			welcome.NoDriverSide = append(welcome.NoDriverSide, e.idx)
		}
	}
	if d.cfg.Secret != "" {
		digest, err := wire.WelcomeDigestInput(welcome)
		if err != nil { // checkWelcome rules this out
			d.mu.Lock()
			delete(d.execs, id)
			d.mu.Unlock()
			d.log.Error("refused executor: the configuration cannot be encoded", "executor", id, "err", err)
			return refuse(plugin.CodeInternal, "configuration cannot be encoded", err.Error())
		}
		welcome.Auth = auth.Prove(d.cfg.Secret, auth.Driver, hello.AuthNonce, challenge, digest)
	}
	// The connection is published under the lock Close lists executors
	// with: Close stops every executor it lists, skips those still short
	// of this point, and those are refused here.
	d.mu.Lock()
	if d.stopping {
		delete(d.execs, id)
		d.mu.Unlock()
		return refuse(plugin.CodeUnavailable, "shutting down", "the driver is shutting down")
	}
	opts := d.cfg.Conn
	if conns != nil && opts.Received == nil {
		// Bytes arriving on the executor's TCP connection are a sign of
		// life (a large message on a slow link), where the kernel counts
		// them.
		opts.Received = func() (uint64, bool) { return conns.received(peerAddr) }
	}
	c := rpc.New(stream, nil, d, opts)
	c.SetTypes(types) // equal to the executor's, as checkHello verified
	c.Peer = es
	askCtx, endAsks := context.WithCancelCause(c.Context())
	es.askCtx, es.endAsks = senderContext(askCtx, id), endAsks
	d.markHandlers(es)
	es.conn = c
	d.mu.Unlock()
	conns.authenticated(peerAddr) // exempt from preAuthLimit
	endHandshake()                // its handshake is over
	d.log.Debug("executor connected", "executor", id, "peer", peerAddr, "host", hello.Hostname, "pid", hello.Pid)
	if hook := testHookConnect.Load(); hook != nil {
		(*hook)("published", es)
	}
	// WELCOME is written here, before the connection's writer starts, so
	// that it travels alone and first: the executor's handshake reads the
	// WELCOME's batch and nothing else in it, and a STOP that Close has
	// queued meanwhile must come after. A failed write is the reader's to
	// find.
	_ = stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_WELCOME, Welcome: welcome}}})
	c.Start()
	<-c.Done()
	c.Wait()
	if err := c.Err(); rpc.EndedHere(err) {
		// Ends the executor's stream with the reason rather than as if
		// the driver had closed it: one that was frozen (SIGSTOP), and
		// reads this once it runs again, said "peer closed the stream"
		// where the driver had dropped it for its silence.
		why := err.Error()
		if e := (*plugin.Error)(nil); errors.As(err, &e) {
			why = e.Message() // the code is the status's
		}
		return status.Error(codes.Unavailable, "the driver dropped this executor: "+why)
	}
	return nil
}

// warnPreAuth logs msg, about a peer that failed the handshake before it
// proved the secret, within the driver's budget, as failed TLS handshakes
// are: such a peer can open connection after connection, and each made a
// line (ember_auth_failures_total and the handshake_timeout limit count
// every one).
func (d *Driver) warnPreAuth(msg string, args ...any) {
	d.preAuthWarnings.Log(d.log, slog.LevelWarn, "warnings of failed handshakes", msg, func() []any { return args })
}

// testHookConnect, when set by a test, is called as a connecting executor
// is listed in Driver.execs and as its connection is published.
var testHookConnect atomic.Pointer[func(stage string, es *execState)]

// maxHostname bounds the host name an executor claims (DNS names have at
// most 253 bytes).
const maxHostname = 255

func (d *Driver) recvHello(stream wire.Ember_ConnectServer) (*wire.Hello, error) {
	type result struct {
		b   *wire.FirstBatch
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Decoded as a FirstBatch: at most one frame, since the peer has
		// not proved anything yet.
		b := new(wire.FirstBatch)
		err := stream.RecvMsg(b)
		ch <- result{b, err}
	}()
	t := time.NewTimer(d.cfg.HandshakeTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if f := r.b.Frame; f == nil || f.Kind != wire.Kind_KIND_HELLO || f.Hello == nil {
			return nil, status.Error(codes.InvalidArgument, "first frame must be HELLO")
		}
		h := r.b.Frame.Hello
		// An unverified claim, logged before the proof is checked and
		// kept in ExecutorInfo: no longer than a host name can be.
		if len(h.Hostname) > maxHostname {
			h.Hostname = strings.ToValidUTF8(h.Hostname[:maxHostname], "") + "…"
		}
		return h, nil
	case <-t.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no HELLO within %v", d.cfg.HandshakeTimeout)
	}
}

// HandleFrame implements rpc.Handler.
func (d *Driver) HandleFrame(c *rpc.Conn, f *wire.Frame) {
	es := c.Peer.(*execState)
	switch f.Kind {
	case wire.Kind_KIND_ASK, wire.Kind_KIND_SEND:
		d.route(c, es, f)
	case wire.Kind_KIND_REPLY:
		// A reply that came after its ask gave up (rpc.Handler): for the
		// plugin that asked, if it listens, on its lane among the
		// executor's messages (OnExecutorRemoved follows).
		if uint(f.Plugin) < uint(len(d.endpoints)) {
			e := d.endpoints[f.Plugin]
			if e.dropped != nil && rpc.Deliver(es.handlers[f.Plugin].send, e.lane, c, f, func() {
				d.builtin.LimitHits.WithLabelValues("driver", "lane_queue").Inc()
			}) {
				return
			}
			d.builtin.Dropped.WithLabelValues("driver", e.name, "late_reply").Inc()
		}
		wire.ReleaseFrame(f)
	case wire.Kind_KIND_READY:
		d.ready(es, f)
	case wire.Kind_KIND_TASK_RESULT:
		d.sched.result(es, f)
	case wire.Kind_KIND_LEAVING:
		d.sched.leave(es)
		d.mu.Lock()
		es.stoppingOwn = true
		if p := es.proc; p != nil {
			p.Leaving = true
		}
		d.mu.Unlock()
		d.log.Debug("executor leaving: it is stopping on its own", "executor", es.info.ID, "err", rpc.WireError(f.Code, f.Error))
	case wire.Kind_KIND_HEARTBEAT:
		d.executorMetrics(es, f.Metrics)
	case wire.Kind_KIND_STOPPED:
		d.mu.Lock()
		stopping := d.stopping
		d.mu.Unlock()
		if !stopping {
			// The answer to STOP, which Close sends once stopping is
			// set. Taken before, it would make the executor's loss a
			// release: its attempts not counted, its process deemed
			// to have exited as told.
			d.warnFrame(es, "dropped a STOPPED before any STOP")
			return
		}
		d.executorMetrics(es, f.Metrics)
		select {
		case <-es.stopped: // a second STOPPED (only this goroutine closes it)
			d.warnFrame(es, "dropped a repeated STOPPED")
		default:
			if f.Code != 0 {
				es.stopErr = rpc.WireError(f.Code, f.Error)
			}
			close(es.stopped)
			if es.endAsks != nil {
				es.endAsks(fmt.Errorf("executor %s has stopped; nobody waits for the reply: %w", es.info.ID, context.Canceled))
			}
		}
	default:
		d.warnFrame(es, "dropped unexpected frame", "kind", f.Kind)
	}
}

// warnFrame logs msg, about a frame es should not have sent, within es's
// budget: an executor repeats such a frame as often as it likes, up to
// 65,536 in one batch, and each made a line (an authenticated executor's
// batch of 30,000 unexpected frames, 120 KB, logged 3 MB).
func (d *Driver) warnFrame(es *execState, msg string, args ...any) {
	es.frameWarnings.Log(d.log, slog.LevelWarn, "warnings about this executor's frames", msg,
		func() []any { return append([]any{"executor", es.info.ID}, args...) })
}

func (d *Driver) route(c *rpc.Conn, es *execState, f *wire.Frame) {
	var e *endpoint
	if uint(f.Plugin) < uint(len(d.endpoints)) { // unsigned: int(f.Plugin) can be negative on 32-bit
		e = d.endpoints[f.Plugin]
	}
	var code plugin.Code
	var problem string
	switch {
	case e == nil:
		code, problem = plugin.CodeNotFound, fmt.Sprintf("no plugin with index %d", f.Plugin)
	case e.lane == nil:
		code, problem = rpc.NoDriverSide(e.name)
	}
	if problem != "" {
		if !rpc.Refuse(c, f, code, problem) {
			d.warnFrame(es, "dropped message", "reason", problem, "type", f.Type)
			d.builtin.Dropped.WithLabelValues("driver", "", "no_such_plugin").Inc()
		}
		return
	}
	if f.Kind == wire.Kind_KIND_ASK {
		if n := es.asks.Add(1); n > int64(d.cfg.MaxOutstandingAsks) {
			es.asks.Add(-1)
			d.builtin.LimitHits.WithLabelValues("driver", "outstanding_asks").Inc()
			rpc.Refuse(c, f, plugin.CodeResourceExhausted,
				fmt.Sprintf("executor %s has %d asks sent and not yet answered by the driver, the maximum (Config.MaxOutstandingAsks; an ask its asker gave up on counts until its handler returns); retry later",
					es.info.ID, d.cfg.MaxOutstandingAsks))
			return
		}
	}
	// The lane never makes the reader wait: a SEND is bounded by its
	// sender's window, an ASK by MaxOutstandingAsks. A message that finds
	// the lane closed arrived after the plugin's last delivery (shutdown):
	// an asker is told, a send is counted as dropped.
	if rpc.Deliver(es.handlers[f.Plugin].ask, e.lane, c, f, func() {
		d.builtin.LimitHits.WithLabelValues("driver", "lane_queue").Inc()
	}) {
		return
	}
	if f.Kind == wire.Kind_KIND_ASK {
		es.asks.Add(-1)
	}
	if c.Ended() {
		// The executor is gone, and OnExecutorRemoved queued or about to
		// be: nothing of it may follow that, and nobody waits for a reply.
		if f.Kind == wire.Kind_KIND_SEND {
			d.builtin.Dropped.WithLabelValues("driver", e.name, "executor_lost").Inc()
		}
		wire.ReleaseFrame(f)
		return
	}
	if !rpc.RefuseClosed(c, f, fmt.Sprintf("driver plugin %q has shut down", e.name)) {
		d.builtin.Dropped.WithLabelValues("driver", e.name, "shut_down").Inc()
	}
}

func (d *Driver) ready(es *execState, f *wire.Frame) {
	d.mu.Lock()
	// READY is sent once, failed or not: a second must not count the
	// executor twice, nor a failed one be recorded again (the failures
	// are kept for the driver's life) or become ready after all.
	again := es.ready || es.initFailed
	if !again && f.Code != 0 {
		es.initFailed = true
	}
	d.mu.Unlock()
	if again {
		d.warnFrame(es, "dropped a repeated READY")
		return
	}
	if f.Code != 0 {
		// Kept for the driver's life. The code is kept, and named unless
		// it says nothing (a plain error's): the text no longer repeats
		// it.
		var cause error = errors.New(rpc.PeerErrorText(f.Error))
		if plugin.Code(f.Code) != plugin.CodeUnknown {
			cause = rpc.WireError(f.Code, f.Error)
		}
		err := fmt.Errorf("executor %s (host %s, pid %d): %w", es.info.ID, es.info.Host, es.info.PID, cause)
		d.initFailures.Log(d.log, slog.LevelError, "errors of executors whose plugins failed to initialise", "executor failed to initialise",
			func() []any {
				return []any{"executor", es.info.ID, "host", es.info.Host, "pid", es.info.PID, "err", cause}
			})
		d.mu.Lock()
		if p := es.proc; p != nil {
			p.InitFailure = err
		}
		d.mu.Unlock()
		d.fail(err)
		return
	}
	res := map[string]plugin.Resource{}
	if f.Ready != nil {
		for _, r := range f.Ready.Resources {
			res[r.Name] = plugin.Resource{Name: r.Name, Addresses: r.Addresses}
		}
	}
	// The scheduler has the executor before anyone can see it ready: a
	// Map started as soon as WaitExecutors returns (the driver function
	// runs then) must find it, not fail for want of executors.
	d.sched.addExecutor(es, int(f.GetReady().GetSlots()))
	d.mu.Lock()
	if d.execs[es.info.ID] != es {
		// The connection closed meanwhile, and HandleClose, seeing the
		// executor not ready, left the scheduler to us.
		reason := es.lost
		d.mu.Unlock()
		d.sched.removeExecutor(es, reason)
		return
	}
	if p := es.proc; p != nil && isDone(p.ended) {
		// Its process was reported ended (Ended) before its READY was
		// handled: it died just after sending it. It does not become
		// ready: Ended, seeing it not ready, left the launcher to say
		// how it ended (not ExitTold), and the reason of a ready
		// executor's loss would say it again (withExit). Its stream's
		// end, still to be handled, makes it a loss before READY.
		reason := plugin.Errorf(plugin.CodeUnavailable, "executor %s (host %s, pid %d): %w: its process ended as it became ready: %w",
			es.info.ID, es.info.Host, es.info.PID, plugin.ErrClosed, processExit(p, es.info.PID))
		d.mu.Unlock()
		d.sched.removeExecutor(es, reason)
		return
	}
	es.info.Resources = res
	es.info.Slots = UsableSlots(int(f.GetReady().GetSlots()))
	es.info.Added = time.Now()
	es.noReceiver = make([]bool, len(d.endpoints))
	for _, i := range f.GetReady().GetNoReceiver() {
		if uint(i) < uint(len(es.noReceiver)) { // unsigned: int(i) can be negative on 32-bit
			es.noReceiver[i] = true
		}
	}
	es.ready = true
	d.execStats.Join(es.info.ID) // its limit series, at 0 until it ships them
	d.readies++
	if p := es.proc; p != nil {
		p.ReadyAt = es.info.Added
	}
	info := cloneInfo(es.info)
	d.notifyLocked()
	// Counted and announced under the lock HandleClose reads ready with,
	// so that its OnExecutorRemoved always comes after.
	d.builtin.ExecutorsAlive.Inc()
	d.notifyListeners(es, "OnExecutorAdded", func(ctx context.Context, l plugin.ExecutorListener) {
		l.OnExecutorAdded(ctx, info)
	})
	d.mu.Unlock()
	// At Info, as its loss and its leaving are: an operator reads who
	// joined, from where, and can match it with the executor's own log.
	d.log.Info("executor ready", "executor", info.ID, "peer", es.peer, "host", info.Host, "pid", info.PID, "slots", info.Slots)
}

// notifyListeners queues a membership event on the lane of every plugin
// that implements ExecutorListener, ordered with that plugin's messages;
// a panic in the listener is recovered and logged.
func (d *Driver) notifyListeners(es *execState, method string, call func(context.Context, plugin.ExecutorListener)) {
	for i, e := range d.endpoints {
		if e.listener == nil {
			continue
		}
		// OnExecutorAdded need not wait for the executor's earlier
		// messages to return: asks from goroutines its plugins' Init
		// started, long polls say, may wait for what only its later
		// messages (results) bring.
		added := method == "OnExecutorAdded"
		e.lane.Push(rpc.Item{Member: es.conn, AfterStart: added, Event: func() {
			_ = rpc.CallFunc(d.log, e.name, method, func() { call(es.handlers[i].send, e.listener) })
		}})
	}
}

// departedSeriesKept is how long the driver serves the final metrics of an
// executor that stopped on its own, after it has gone.
var departedSeriesKept = 5 * time.Minute

// exitWait bounds how long the driver waits, once a ready executor's
// stream has broken as its process exits, for the launcher to report how
// it ended (see withExit). A process closes its connection as it exits,
// just before its end can be reported: the wait is short but for a
// process slow to die, or a launcher held up.
var exitWait = 5 * time.Second

// withExit returns the reason the connection of es ended with, a loss,
// joined with how its process ended when es is a ready local-cluster
// executor whose process the launcher has reported ended (Ended): "signal:
// killed" says more than "peer disconnected" (Spark's executor-removed
// reason carries the exit code too). A process that dies closes its
// connection as it exits, just before its end can be reported: for a
// connection lost while its process exits (Config.Exiting), however it
// ended (the reader's "peer disconnected", or a writer's "transport is
// closing"), unless the driver is shutting down, withExit waits up to
// exitWait for the report. A process that runs on (lost to a heartbeat
// timeout, after which the driver kills it) is not waited for, and the
// reason is returned as it is.
func (d *Driver) withExit(es *execState, reason error) error {
	d.mu.Lock()
	p := es.proc
	if p == nil || !es.ready {
		es.exitChecked = true // Ended leaves the exit to the launcher from now on
		d.mu.Unlock()
		return reason
	}
	mayWait := !isDone(p.ended) && !d.stopping && d.cfg.Exiting != nil
	p.awaited = mayWait
	d.mu.Unlock()
	// Not under d.mu: the launcher takes its own lock, and holds it while
	// it asks the driver which executors it released.
	if mayWait && d.cfg.Exiting(es.info.PID) {
		t := time.NewTimer(exitWait)
		select {
		case <-p.ended:
		case <-t.C:
		}
		t.Stop()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p.awaited = false
	es.exitChecked = true
	if !isDone(p.ended) {
		return reason
	}
	return fmt.Errorf("%w; %w", reason, processExit(p, es.info.PID)) // its code, CodeOf(reason)'s
}

// processExit is how process pid, whose end p records, ended, once
// reported (Ended). d.mu is held.
func processExit(p *Process, pid int) error {
	if p.exit == nil { // a clean exit, without LEAVING: a task's os.Exit(0), say
		return fmt.Errorf("executor process (pid %d): exit status 0", pid)
	}
	return p.exit
}

// isDone reports whether c is closed.
func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// HandleClose implements rpc.Handler: the executor has left.
func (d *Driver) HandleClose(c *rpc.Conn, err error) {
	es := c.Peer.(*execState)
	var reason error
	select {
	case <-es.stopped:
	default:
		reason = err
	}
	// One that said it was stopping on its own (LEAVING), then ended its
	// stream itself after its last frame, left cleanly: listeners get a
	// nil reason, as for one released. Its stream breaking instead (its
	// stop cut short, or the process killed) is a loss.
	leaving := d.stoppingOwn(es)
	left := reason != nil && leaving && errors.Is(reason, rpc.ErrPeerClosed)
	if left {
		reason = nil
	}
	d.mu.Lock()
	notStopped := es.notStopped
	d.mu.Unlock()
	if reason != nil && notStopped != nil && !rpc.EndedHere(reason) {
		// Close gave up waiting for its STOPPED (on a slow link, behind
		// a large send, say) and closed the stream, or the executor
		// ended it after that: "connection closed" alone read as a
		// crash of the executor's.
		reason = notStoppedReason(notStopped)
	}
	if reason != nil {
		reason = d.withExit(es, reason)
	}
	d.mu.Lock()
	delete(d.execs, es.info.ID)
	es.lost = reason
	if left && es.proc != nil {
		es.proc.Left = true
	}
	end := closing{
		reason:  reason,
		left:    left,
		leaving: leaving,
		// Its process has not been reported ended (Ended forgets it),
		// so its PID is not yet another's: a replacement given the
		// same PID has a record of its own.
		procRunning: es.proc != nil && d.procs[es.info.PID] == es.proc,
		initFailed:  es.initFailed,
		// One that ended its stream itself before READY, without
		// LEAVING, refused this driver at the handshake (the proof in
		// WELCOME, which an executor with a secret checks): it never
		// joined, and its log says why. Neither lost nor counted as
		// such.
		refusedDriver: reason != nil && !es.ready && !es.initFailed && !leaving && errors.Is(reason, rpc.ErrPeerClosed),
		stopping:      d.stopping,
		notStopped:    notStopped != nil,
	}
	// Ended, called first, told the launcher that the loss's reason would
	// say how the process ended (ExitTold), but the stream ended cleanly
	// after all (the executor left, or was released): no reason carries
	// it, so it is logged below, as the launcher would have.
	if reason == nil && es.proc != nil && es.proc.ExitTold {
		end.untold = es.proc.exit
	}
	wasReady := es.ready
	d.notifyLocked()
	d.closeSeriesLocked(es.info.ID, end)
	if wasReady {
		// After ready's OnExecutorAdded, which was queued under this lock.
		d.builtin.ExecutorsAlive.Dec()
		info := cloneInfo(es.info)
		d.notifyListeners(es, "OnExecutorRemoved", func(ctx context.Context, l plugin.ExecutorListener) {
			l.OnExecutorRemoved(ctx, info, reason)
		})
	}
	d.mu.Unlock()
	d.logClose(es.info, end)
	if wasReady {
		d.sched.removeExecutor(es, reason)
	}
}

// closing is what HandleClose learnt of how an executor's stream ended.
type closing struct {
	reason        error // nil: released, or left cleanly
	left          bool  // stopped on its own (LEAVING), then ended its stream
	leaving       bool  // said it was stopping on its own
	procRunning   bool  // its process has not been reported ended
	initFailed    bool  // its plugins failed to initialise
	refusedDriver bool  // it refused this driver at the handshake
	stopping      bool  // the driver's Close had begun
	notStopped    bool  // Close's wait for its STOPPED ended without it
	untold        error // how its process ended, if no reason says it
}

// closeSeriesLocked counts executor id's loss, and drops its metrics
// series: a lost one's at once, a departed one's after
// departedSeriesKept. d.mu is held.
func (d *Driver) closeSeriesLocked(id string, end closing) {
	switch {
	case end.reason != nil:
		// A lost executor's series go; a released one's final values
		// (shipped with STOPPED) stay readable until the driver ends.
		d.execStats.Delete(id)
		if !end.initFailed && !end.refusedDriver { // those failed to join, and are logged as such
			d.builtin.ExecutorsLost.Inc()
		}
	case end.left && !end.stopping:
		// One that left shipped its final values as it stopped: they
		// stay long enough for any scrape to read them, then go, or a
		// long-running driver with executors coming and going would
		// keep them all. (Once Close has begun they stay until the
		// driver ends, as a released one's do: Close stops the timers,
		// which would otherwise keep the closed driver reachable.)
		if d.departed == nil {
			d.departed = map[string]*time.Timer{}
		}
		d.departed[id] = time.AfterFunc(departedSeriesKept, func() {
			d.mu.Lock()
			delete(d.departed, id)
			d.mu.Unlock()
			d.execStats.Delete(id)
		})
	}
}

// logClose logs how the executor info names ended, and has its process
// killed if the driver lost it while it still runs (OnLost).
func (d *Driver) logClose(info plugin.ExecutorInfo, end closing) {
	reason := end.reason
	switch {
	case end.left:
		d.log.Info("executor left: it stopped on its own", "executor", info.ID, "host", info.Host, "pid", info.PID)
	case reason == nil:
		d.log.Debug("executor released", "executor", info.ID)
	case end.refusedDriver:
		hint := "its log says why"
		if d.cfg.Secret == "" {
			hint = "this driver runs without authentication (Config.InsecureNoAuth), which an executor given a secret refuses: give the driver the executors' secret, or the executor none"
		}
		d.log.Warn("executor refused this driver at the handshake and left", "executor", info.ID, "host", info.Host, "pid", info.PID, "hint", hint)
	case end.initFailed: // already logged as such: its leaving is no news
		d.log.Debug("executor gone after failing to initialise", "executor", info.ID, "err", reason)
	case end.leaving:
		d.log.Warn("executor lost as it stopped on its own", "executor", info.ID, "host", info.Host, "pid", info.PID, "err", reason)
	case end.stopping && end.notStopped:
		d.log.Error("executor did not stop within the shutdown timeout, and was closed during shutdown: what its plugins send as they shut down may be missing", "executor", info.ID, "host", info.Host, "pid", info.PID, "err", reason)
	case end.stopping:
		// Its plugins' final sends and metrics, which shutdown exists to
		// deliver, may be missing: not a warning. (Run does not fail for
		// it: an executor that died just before Close is lost the same
		// way, and the driver cannot tell which it was.)
		d.log.Error("executor lost during shutdown: what its plugins send as they shut down may be missing", "executor", info.ID, "host", info.Host, "pid", info.PID, "err", reason)
	default:
		d.log.Error("executor lost", "executor", info.ID, "host", info.Host, "pid", info.PID, "err", reason)
		if d.cfg.OnLost != nil && end.procRunning {
			d.cfg.OnLost(info.PID)
		}
	}
	if end.untold != nil {
		d.log.Warn("executor ended", "executor", info.ID, "err", end.untold)
	}
}

// unreleasedReason is what Close closes the connection of executor es
// with when its release did not end within ShutdownTimeout: that it did
// not stop in time, if so (its STOPPED and the rest stuck behind large
// sends on a slow link, say), which is the cause.
func (d *Driver) unreleasedReason(es *execState) error {
	d.mu.Lock()
	notStopped := es.notStopped
	d.mu.Unlock()
	if notStopped != nil {
		return notStoppedReason(notStopped)
	}
	return plugin.Errorf(plugin.CodeUnavailable, "executor %s not released within %v", es.info.ID, d.cfg.ShutdownTimeout)
}

// notStoppedReason is the reason an executor that did not stop within
// ShutdownTimeout (notStopped, Close's error for it) was removed with.
func notStoppedReason(notStopped error) error {
	return plugin.Errorf(plugin.CodeUnavailable, "%v (ShutdownTimeout), and its connection was closed: %w", notStopped, plugin.ErrClosed)
}

// errShuttingDown is what a driver plugin's calls to executors return once
// Close has begun: the executors are stopping, or gone.
var errShuttingDown = plugin.Errorf(plugin.CodeUnavailable, "%w: %w", plugin.ErrShuttingDown, plugin.ErrClosed)

// stoppingOwn reports whether es has said it is stopping on its own
// (LEAVING).
func (d *Driver) stoppingOwn(es *execState) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return es.stoppingOwn
}

// errStoppingOwn is what a driver plugin's calls to an executor give once
// it has said it is stopping on its own (LEAVING), and an ask to it still
// waiting then: ask another.
var errStoppingOwn = plugin.Errorf(plugin.CodeUnavailable, "it is stopping on its own: %w", plugin.ErrClosed)

// conn returns the connection of ready executor id, for a message to
// the executor side of plugin idx, named name. It fails when that side
// takes no messages, as the executor would answer an ASK.
func (d *Driver) conn(id string, idx uint32, name string) (*rpc.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return nil, errShuttingDown
	}
	es, ok := d.execs[id]
	switch {
	case ok && es.initFailed:
		return nil, plugin.Errorf(plugin.CodeNotFound, "executor %q failed to initialise: %w", id, plugin.ErrNoSuchExecutor)
	case ok && !es.ready:
		// It exists, and may well be the one asking: its plugins' Init
		// has not returned yet. "No such executor" sent users looking
		// for a wrong ID.
		return nil, plugin.Errorf(plugin.CodeNotFound, "executor %q is not ready yet (its plugins' Init has not returned; push to it from OnExecutorAdded or later): %w", id, plugin.ErrNoSuchExecutor)
	case !ok:
		return nil, plugin.Errorf(plugin.CodeNotFound, "executor %q: %w", id, plugin.ErrNoSuchExecutor)
	case es.stoppingOwn:
		// Its plugins are shutting down, and would drop a send (an ask
		// they refuse). It is listed until it has gone.
		return nil, errStoppingOwn
	}
	if es.takesNone(idx) {
		return nil, errNoReceiver(name)
	}
	return es.conn, nil
}

// takesNone reports whether plugin idx's executor side takes no
// messages on es (READY said so). Driver.mu is held.
func (es *execState) takesNone(idx uint32) bool {
	return uint(idx) < uint(len(es.noReceiver)) && es.noReceiver[idx]
}

func errNoReceiver(name string) error {
	return plugin.NewError(rpc.NoReceiver(name))
}

// readyConns returns the connections of the ready executors whose side of
// plugin idx takes messages, and how many ready executors were left out
// for having none.
func (d *Driver) readyConns(idx uint32) (conns []*rpc.Conn, skipped int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return nil, 0, errShuttingDown
	}
	conns = make([]*rpc.Conn, 0, len(d.execs))
	for _, es := range d.execs {
		switch {
		case !es.ready, es.stoppingOwn:
		case es.takesNone(idx):
			skipped++
		default:
			conns = append(conns, es.conn)
		}
	}
	return conns, skipped, nil
}

// Close shuts the application down, in order:
//  0. jobs still running fail with CodeUnavailable, their attempts
//     cancelled, and later ones fail at once;
//  1. every executor is told to stop; it shuts its plugins down (reverse
//     order), flushes its sends and answers STOPPED;
//  2. the driver lanes deliver everything received;
//  3. executors are released and their streams closed;
//  4. driver plugins shut down in reverse order;
//  5. the gRPC server stops.
//
// Each phase is bounded by ShutdownTimeout. Close returns the executors'
// and plugins' shutdown errors, joined.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return nil
	}
	d.stopping = true
	d.notifyLocked() // a WaitExecutors in progress fails (errShuttingDown)
	d.released = make(map[int]bool)
	for _, t := range d.departed {
		t.Stop()
	}
	d.departed = nil
	var all []*execState
	for _, es := range d.execs {
		if es.conn != nil { // not one still in its handshake (see Connect)
			all = append(all, es)
		}
	}
	d.mu.Unlock()

	var errs []error
	phase := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	}

	// 0. Jobs still running fail, and their attempts are cancelled; the
	// TASK_CANCELs go before the STOPs.
	d.sched.send(d.sched.close(errShuttingDown))

	// 1. Stop executors.
	for _, es := range all {
		// Plugin messages that passed the stopping check above before
		// it was set, and reach the queue only now, would follow STOP:
		// the executor would drop them after SendExecutor or Broadcast
		// returned nil. SendLast fails them instead.
		_ = es.conn.SendLast(&wire.Frame{Kind: wire.Kind_KIND_STOP}, errShuttingDown)
	}
	ctx, cancel := phase()
	for _, es := range all {
		select {
		case <-es.stopped:
		case <-es.conn.Done():
		case <-ctx.Done():
		}
		// Checked again, not taken from the select: once the phase is
		// over, its end is ready for every executor left, and the select
		// would pick it at random over a STOPPED that did arrive.
		select {
		case <-es.stopped:
			if es.stopErr != nil {
				// Logged here too, as a driver plugin's is: the
				// executor's own line is in its log, on its host.
				d.log.Error("executor stopped with its plugins' shutdown errors", "executor", es.info.ID, "host", es.info.Host, "pid", es.info.PID, "err", es.stopErr)
				errs = append(errs, es.stopErr)
			}
			d.mu.Lock()
			d.released[es.info.PID] = true
			d.mu.Unlock()
		default:
			if ctx.Err() != nil && es.conn.Err() == nil {
				err := fmt.Errorf("executor %s did not stop within %v", es.info.ID, d.cfg.ShutdownTimeout)
				errs = append(errs, err)
				d.mu.Lock()
				es.notStopped = err
				d.mu.Unlock()
			}
		}
	}
	cancel()

	// 2, 3. Deliver what they sent, then release them.
	stuck := d.flushLanes(&errs, nil)
	for _, es := range all {
		es.conn.CloseGracefully()
	}
	ctx, cancel = phase()
	for _, es := range all {
		select {
		case <-es.conn.Done():
		case <-ctx.Done():
			es.conn.Close(d.unreleasedReason(es))
		}
	}
	cancel()
	// OnExecutorRemoved events. A lane still stuck from phase 2 is not
	// waited for again (nor reported twice): its Receive has had a whole
	// timeout, and phase 4 abandons it.
	d.flushLanes(&errs, stuck)

	// 4. Driver plugins.
	errs = append(errs, d.shutdownPlugins(len(d.endpoints)-1)...)
	d.cancel() // handlers still running see their ctx end
	d.watching.Wait()
	ctx, cancel = phase()
	for _, e := range d.endpoints {
		if e.lane != nil && e.lane.CloseWithin(ctx) != nil {
			errs = append(errs, fmt.Errorf("driver plugin %q: Receive did not return within %v of shutdown; abandoned", e.name, d.cfg.ShutdownTimeout))
		}
	}
	cancel()
	// 5. Server.
	d.srv.Stop()
	return errors.Join(errs...)
}

// flushLanes waits for the lanes of the driver plugins not in skip to run
// what they hold, appending an error for each that does not within a
// shutdown timeout, and returns those.
func (d *Driver) flushLanes(errs *[]error, skip map[*endpoint]bool) map[*endpoint]bool {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout)
	defer cancel()
	var stuck map[*endpoint]bool
	for _, e := range d.endpoints {
		if e.lane == nil || skip[e] {
			continue
		}
		if err := e.lane.Flush(ctx); err != nil {
			*errs = append(*errs, fmt.Errorf("driver plugin %q: %d messages still queued or being handled %v into shutdown (a Receive slow to return, or waiting on its ctx)", e.name, e.lane.Len(), d.cfg.ShutdownTimeout))
			if stuck == nil {
				stuck = map[*endpoint]bool{}
			}
			stuck[e] = true
		}
	}
	return stuck
}

// shutdownPlugins shuts down initialised driver plugins from index last
// down to 0.
func (d *Driver) shutdownPlugins(last int) []error {
	var errs []error
	for i := last; i >= 0; i-- {
		e := d.endpoints[i]
		if !e.inited {
			continue
		}
		e.inited = false
		grace := rpc.AbandonGrace(d.cfg.ShutdownTimeout) // to return once its ctx ends (see CallWithin)
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ShutdownTimeout-grace)
		err := rpc.CallWithin(ctx, grace, d.log, e.name, "Shutdown", e.dp.Shutdown)
		cancel()
		if err != nil {
			d.log.Error("driver plugin shutdown failed", "plugin", e.name, "err", err)
			errs = append(errs, fmt.Errorf("driver plugin %q: shutdown: %w", e.name, err))
		}
	}
	return errs
}
