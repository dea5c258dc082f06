package ember

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/emberhq/ember/internal/driver"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/fault"
	"github.com/emberhq/ember/internal/hook"
	"github.com/emberhq/ember/internal/launch"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Environment variables read by Run.
const (
	// EnvDriver, when set to the driver's host:port, makes Run serve as an
	// executor of that driver instead of running the driver.
	EnvDriver = "EMBER_DRIVER"
	// EnvSecret is the application secret of a standalone driver and its
	// executors when Config.Secret is empty (surrounding whitespace
	// trimmed); EMBER_SECRET_FILE is read when it is unset.
	EnvSecret = "EMBER_SECRET"
	// EnvExecutorSlots, in an executor process, is how many tasks that
	// executor runs at once (1 to 16384), whatever the driver's
	// ConfExecutorSlots says: a machine of a farm that should take fewer
	// (or more) than its CPUs. A local-cluster's executors inherit it from
	// the driver's environment; local[N] ignores it.
	EnvExecutorSlots = "EMBER_EXECUTOR_SLOTS"
)

// Driver is the running application as the driver function sees it. Its
// methods are safe for concurrent use.
type Driver struct {
	d          *driver.Driver
	cfg        Config
	metricsURL string
	progress   *progressBar // the console progress bar of its jobs; nil: none
	jobs       jobList      // its running jobs, for Jobs
}

// MetricsURL returns the URL of the driver's /metrics endpoint, as this
// host reaches it (over loopback when it listens on every address), or ""
// when Config.MetricsAddr is "off".
func (d *Driver) MetricsURL() string { return d.metricsURL }

// Gatherer returns what the driver's /metrics serves: Ember's own series,
// the driver plugins', and the latest each executor shipped. A service
// with a /metrics of its own serves them there by listing it beside its
// registry (prometheus.Gatherers{reg, d.Gatherer()}), and may set
// Config.MetricsAddr to "off". It is safe for concurrent use, and may be
// gathered after Run has returned (the last values, executors' included).
func (d *Driver) Gatherer() prometheus.Gatherer { return d.d.Gatherer() }

// AppID returns the application ID.
func (d *Driver) AppID() string { return d.d.AppID() }

// Addr returns the address the driver listens on, as its listener reports
// it. With a wildcard Config.ListenAddr (":7077") its host is a wildcard
// too ("[::]:7077"), which executors on other hosts cannot dial: give them
// an address of this host that they can reach.
func (d *Driver) Addr() string { return d.d.Addr() }

// Executors lists the ready executors ordered by ID (nil when there is
// none), as plugin.DriverContext's Executors does: one stopping is listed,
// with Stopping set, until it has gone. Each call returns a new slice,
// Resources maps included, that the caller owns and may change.
func (d *Driver) Executors() []plugin.ExecutorInfo { return d.d.Executors() }

// WaitExecutors waits until n executors are ready. It fails with
// CodeUnavailable, wrapping plugin.ErrClosed, once the driver is shutting
// down (its function has returned), and early if an executor fails to
// initialise its plugins while it waits, or, with a
// local master, is refused for a handshake mismatch (build, plugins,
// message types or tasks: a bug, since its executors run the driver's own
// binary), and when ctx ends, saying how many executors were refused
// meanwhile and why the latest was. Executors refused for authentication,
// Config.MaxExecutors or, on a standalone driver, a mismatch are logged
// and counted, not failed on: anyone can connect, and a host still
// running the previous build must not be able to fail the application.
func (d *Driver) WaitExecutors(ctx context.Context, n int) error {
	return d.d.WaitExecutors(ctx, n)
}

// Run is called first in main, with the same cfg in every process.
//
// In the driver process it resolves the plugin list, starts listening,
// runs the driver plugins' Init in order, starts the executors of
// cfg.Master and waits until they are ready, then calls fn. When fn
// returns (or ctx ends and fn returns), it shuts down: executors shut their
// plugins down and flush their sends, then the driver plugins shut down,
// in reverse order. Run returns a start-up failure, or fn's error joined
// with every shutdown failure. A ctx that ends during start-up is such a
// failure, returned once what had started has shut down, and matches
// ctx's error (errors.Is); fn is not called. A cfg it cannot use (the
// master, a plugin name, a Conf value Ember reads) fails before anything
// starts, with plugin.CodeInvalidArgument.
//
// In an executor process (EMBER_DRIVER is set) Run never returns and never
// calls fn: it serves as an executor until the driver releases it, the
// driver goes away or ctx ends, then exits the process (status 0 when
// released or stopped by ctx, 1 on failure, 2 when EMBER_DRIVER is set but
// not to an address, ExitMisconfigured (78) when it and its driver cannot
// work together as they are set up). This
// is the one place Ember ends a process, because returning would run the
// driver's code on an executor. An executor process serves one
// application, its first Run's: another Run there (in a program that runs
// two at once) says so at Info and waits for the process to exit. So a
// program that runs several local-cluster applications at once gives them
// the same cfg, or an executor of one may be built with another's cfg,
// and refused at the handshake.
//
// In either process, the tasks and message types registered when Run is
// called are the application's: from then on NewTask, and RegisterMessage
// of a new type, panic (see NewTask and plugin.RegisterMessage).
func Run(ctx context.Context, cfg Config, fn func(ctx context.Context, d *Driver) error) error {
	// The tasks and message types are now those every process has on its
	// way here: one registered later would be missing from the executors.
	sealRegistries(sealedByRun)
	if addr, ok := os.LookupEnv(EnvDriver); ok || executorProcess.Load() {
		if !executorProcess.CompareAndSwap(false, true) {
			// Another Run serves as this process's executor (and has
			// unset EMBER_DRIVER): running a driver here would run fn in
			// an executor process, and returning would run the caller's
			// driver code. The executor's Run ends the process.
			log := cfg.Logger
			if log == nil {
				log = slog.Default()
			}
			log.Info("ember.Run called again in an executor process, which serves the application of its first Run only: this call waits for the process to exit", "app", cfg.AppName)
			select {}
		}
		os.Exit(runExecutorProcess(ctx, cfg, addr))
	}
	return runDriver(ctx, cfg, fn)
}

// executorProcess is set by the Run that serves as this process's executor.
var executorProcess atomic.Bool

func runDriver(ctx context.Context, cfg Config, fn func(context.Context, *Driver) error) (err error) {
	s, err := checkDriverConfig(&cfg)
	if err != nil {
		return err
	}
	var bar *progressBar
	if progressShown(cfg.Conf) {
		// What the driver logs starts a line of its own, not the
		// bar's.
		bar = new(progressBar)
		cfg.Logger = slog.New(barHandler{h: cfg.Logger.Handler(), bar: bar})
	}
	log, master := cfg.Logger, s.master
	var procs *launch.Processes // local-cluster's executor processes
	var lost func(pid int)
	var exiting func(pid int) bool
	if master.Kind == "local-cluster" {
		procs = &launch.Processes{Args: cfg.ExecutorArgs, Stdout: os.Stdout, Stderr: os.Stderr, Secret: s.secret}
		if cfg.ExecutorArgs == nil {
			procs.Args = os.Args[1:]
		}
		// An executor the driver lost (silent past the heartbeat
		// timeout: a frozen process) is killed, so that it is replaced;
		// it held its place until it exited, which a frozen process
		// never does.
		lost = procs.Kill
		exiting = procs.Exiting
	}
	appID := newAppID()
	d, err := driver.New(driver.Config{
		AppID:              appID,
		AppName:            cfg.AppName,
		Conf:               cfg.Conf,
		Plugins:            s.plugins,
		Logger:             log,
		Registry:           prometheus.NewRegistry(),
		BuildID:            cfg.BuildID,
		Conn:               connOptions(cfg),
		ShutdownTimeout:    cfg.ShutdownTimeout,
		Tasks:              taskNames(),
		TaskSites:          tasks.sites(),
		MaxTaskFailures:    s.maxFailures,
		TaskPrefetch:       s.prefetch,
		Secret:             s.secret,
		MaxExecutors:       cfg.MaxExecutors,
		MaxOutstandingAsks: cfg.MaxOutstandingAsks,
		HandshakeTimeout:   cfg.HandshakeTimeout,
		TLS:                s.tls,
		LaneLimit:          cfg.LaneQueue,
		Local:              master.Kind != "standalone",
		NoReplacements:     master.Kind != "standalone" && !s.replaces,
		OnLost:             lost,
		Exiting:            exiting,
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		d.Close() // its plugins' lanes are running
		return fmt.Errorf("driver: listen on %s: %w", cfg.ListenAddr, err)
	}
	// Before the driver plugins' Init, so that a metrics address in use
	// fails start-up before any plugin has done anything.
	metricsURL, stopMetrics, err := serveMetrics(cfg.MetricsAddr, d.Gatherer(), log)
	if err != nil {
		lis.Close()
		d.Close()
		return err
	}
	defer stopMetrics()
	// The driver plugins' Init counts towards start-up's time.
	initCtx, cancelInit := context.WithTimeout(ctx, cfg.StartTimeout)
	err = d.Init(initCtx)
	cancelInit()
	if err != nil {
		lis.Close()
		d.Close()
		return err
	}
	d.Serve(lis)
	addr := lis.Addr().String()
	log.Debug("driver started", "app", cfg.AppName, "app_id", appID, "master", master.String(), "addr", addr)

	var l launch.Launcher
	switch master.Kind {
	case "local":
		local, err := localExecutors(ctx, cfg, s.plugins, addr, s.secret)
		if err != nil {
			return errors.Join(err, shutdown(d, nil, nil, cfg, nil))
		}
		l = local
	case "local-cluster":
		l = procs
	case "standalone":
		logListening(log, cfg, addr, s.secret, metricsURL)
	}

	timedOut := fmt.Errorf("executors not ready within %v (Config.StartTimeout)", cfg.StartTimeout)
	startCtx, cancelStart := context.WithTimeoutCause(ctx, cfg.StartTimeout, timedOut)
	defer cancelStart()
	startCtx, abort := context.WithCancelCause(startCtx)
	defer abort(nil)
	want := cfg.MinExecutors
	var exits exitErrors
	var started atomic.Bool // start-up succeeded
	var rep *replacer       // replaces lost executors (local-cluster)
	if l != nil {
		want = master.N
		exited := func(pid int, err error) {
			exits.add(err)
			p := d.Ended(pid, err) // asked whatever follows: the driver forgets pid
			why := err
			if p.InitFailure != nil && err != nil {
				why = p.InitFailure // says more than "exit status 1"
			}
			rep.lost(loss{pid: pid, id: p.ID, err: why, ready: p.Ready(), up: time.Since(p.ReadyAt), left: p.Leaving})
			switch {
			case started.Load() && !p.ExitTold:
				logEnded(log, p.ID, err, p.InitFailure != nil)
			case started.Load(): // the driver's "executor lost" line said it
			case p.Refused != nil:
				abort(p.Refused) // why it exited, which its status does not say
			case err == nil:
				abort(errors.New("an executor ended during start-up: exited" + beforeHandshake(p)))
			default:
				abort(fmt.Errorf("an executor ended during start-up: %w%s", err, beforeHandshake(p)))
			}
		}
		if s.replaces {
			rep = &replacer{
				start:   func() error { return l.Start(ctx, 1, addr, exited) },
				readies: d.Readies,
				giveUp:  d.EndReplacements,
				max:     s.maxRetries,
				log:     log,
				kept:    master.N,
				after:   func(wait time.Duration, f func()) { time.AfterFunc(wait, f) },
			}
		}
		if err := l.Start(ctx, master.N, addr, exited); err != nil {
			return errors.Join(err, shutdown(d, l, rep, cfg, &exits))
		}
	}
	if err := d.WaitStart(startCtx, want); err != nil {
		err = startupError(err, startCtx, timedOut, master.Kind == "local-cluster" && d.Streams() == 0)
		return errors.Join(err, shutdown(d, l, rep, cfg, &exits))
	}
	started.Store(true)
	cancelStart()
	rep.run()

	var fnErr error
	if fn != nil {
		fnErr = fn(ctx, &Driver{d: d, cfg: cfg, metricsURL: metricsURL, progress: bar})
	}
	switch {
	case ctx.Err() != nil:
		log.Info("driver shutting down: its ctx ended", "cause", context.Cause(ctx))
	case fn != nil:
		log.Info("driver shutting down: the driver function returned", "err", fnErr)
	}
	return errors.Join(fnErr, shutdown(d, l, rep, cfg, &exits))
}

// driverSettings are what runDriver takes from a checked Config.
type driverSettings struct {
	master      launch.Master
	plugins     []plugin.Plugin // Config.Plugins and those the conf enables
	maxFailures int             // ConfMaxTaskFailures
	prefetch    int             // ConfTaskPrefetch, as driver.Config.TaskPrefetch takes it
	maxRetries  int             // ConfExecutorMaxRetries
	replaces    bool            // a local-cluster that replaces lost executors
	secret      string          // the application secret; empty: no authentication
	tls         credentials.TransportCredentials
}

// checkDriverConfig checks cfg and sets its defaults, before anything
// starts: a value Run cannot use fails it, naming the field or key. What
// is ignored (a plugin dropped, an unknown key in Ember's namespace) is
// logged at Warn on cfg.Logger.
func checkDriverConfig(cfg *Config) (driverSettings, error) {
	var s driverSettings
	master, err := launch.ParseMaster(cfg.Master)
	if err != nil {
		return s, plugin.Errorf(plugin.CodeInvalidArgument, "%w", err)
	}
	if err := checkLimits(*cfg); err != nil {
		return s, err
	}
	cfg.setDefaults()
	if err := checkMasterSize(master, cfg.MaxExecutors); err != nil {
		return s, err
	}
	plugins, dropped, err := resolvePlugins(*cfg)
	if err != nil {
		return s, err
	}
	for _, p := range dropped {
		cfg.Logger.Warn("plugin dropped: a registered plugin the conf enables has its name (plugin names must be unique; a registered plugin merges only with its registered value)", "plugin", p.Name(), "type", fmt.Sprintf("%T", p))
	}
	if err := checkConf(cfg.Conf); err != nil {
		return s, err
	}
	if err := checkHeartbeat(*cfg); err != nil {
		return s, err
	}
	if master.Kind == "local-cluster" {
		// Its executors inherit it, and each would end saying so in its
		// own log alone.
		if _, err := ownSlots(); err != nil {
			return s, fmt.Errorf("ember.Run: %w (local-cluster executors take it from this process's environment)", err)
		}
	}
	if keys := unknownConf(cfg.Conf); len(keys) > 0 {
		cfg.Logger.Warn("configuration keys in Ember's namespace that Ember does not know are ignored (a typo?)", "keys", keys, "known", knownConf)
	}
	conf := plugin.NewConf(cfg.Conf)
	s.maxFailures, _ = conf.Int(ConfMaxTaskFailures, 4) // checked
	s.prefetch, _ = conf.Int(ConfTaskPrefetch, -1)      // checked
	switch s.prefetch {
	case -1:
		s.prefetch = 0 // the driver's default: 4 per slot
	case 0:
		s.prefetch = -1 // none
	}
	s.maxRetries, _ = conf.Int(ConfExecutorMaxRetries, defaultMaxRetries)
	s.replaces = master.Kind == "local-cluster" && s.maxRetries != 0
	if s.secret, err = driverSecret(*cfg, master.Kind == "standalone"); err != nil {
		return s, err
	}
	if s.tls, err = serverTLS(cfg.TLS); err != nil {
		return s, err
	}
	s.master, s.plugins = master, plugins
	return s, nil
}

// localExecutors is the launcher of a local[N] master: executors in this
// process, over loopback gRPC, each with its own metrics registry as a
// process would have, and the fault hooks of embertest when ctx carries
// them.
func localExecutors(ctx context.Context, cfg Config, plugins []plugin.Plugin, addr, secret string) (*launch.Local, error) {
	hooks := hook.LocalHooksFrom(ctx)
	base, err := executorConfig(cfg, plugins, addr, secret) // TLS files read once
	if err != nil {
		return nil, err
	}
	base.Construct = new(sync.Mutex) // ExecutorPlugin, one call at a time
	return &launch.Local{Grace: cfg.ShutdownTimeout, Run: func(ctx context.Context, id int, addr string, welcomed func()) error {
		ecfg := base
		ecfg.OnWelcome = func(string) { welcomed() }
		// Each executor has its own metrics, as a process would: in
		// a shared registry, their series collided at the driver.
		ecfg.Registry = prometheus.NewRegistry()
		if hooks != nil && hooks.Started != nil {
			crash := make(chan struct{})
			var once sync.Once
			ecfg.Crash = crash
			link := new(fault.Link)
			ecfg.DialOptions = append(slices.Clip(ecfg.DialOptions), grpc.WithStreamInterceptor(link.Interceptor()))
			ecfg.OnWelcome = func(id string) {
				welcomed()
				hooks.Started(id, func() { once.Do(func() { close(crash) }) }, link)
			}
		}
		return executor.Run(ctx, ecfg)
	}}, nil
}

// logListening logs a standalone driver's start-up line: where it
// listens, and how to start an executor: this program, with the
// arguments it was given (the executor must build the same Config),
// which are not logged (one may be a secret), and the application
// secret, TLS set-up and metrics address.
func logListening(log *slog.Logger, cfg Config, addr, secret, metricsURL string) {
	secretHint := "the same EMBER_SECRET or EMBER_SECRET_FILE"
	if secret == "" {
		// An executor with a secret refuses a driver that cannot
		// prove one.
		secretHint = "none: authentication is off, and an executor given a secret refuses this driver"
	}
	attrs := []any{"addr", addr,
		"start", EnvDriver + "=" + dialable(addr) + " " + shellQuote(os.Args[0]) + " <this driver's arguments>",
		"secret", secretHint}
	if cfg.TLS != nil {
		// An executor built with another Config (or none of its
		// files on its host) fails its TLS handshake, and retries.
		tlsHint := "on: executors verify this driver's certificate against Config.TLS.CAFile or " + EnvTLSCAFile
		if cfg.TLS.MutualTLS {
			tlsHint += ", and present a client certificate issued by it (Config.TLS.ExecutorCertFile and ExecutorKeyFile, or " + EnvTLSCertFile + " and " + EnvTLSKeyFile + ")"
		}
		attrs = append(attrs, "tls", tlsHint)
	}
	if metricsURL != "" {
		attrs = append(attrs, "metrics", metricsURL)
	}
	log.Info("driver listening for executors", attrs...)
}

// logEnded logs how the process of a launched executor ended once
// start-up has succeeded. The driver has said which executor it lost
// (with its pid); this says how its process ended (a signal: the OOM
// killer, say), and which executor that was, if it said who it was (id).
// Not during start-up, whose error says how an executor ended, nor once
// it has failed: the driver itself then kills the executors still
// starting. Nor for one that exited cleanly, or that the driver killed
// itself as it shut down, not having released it (a replacement still
// starting): nothing was lost there. One whose plugins failed to
// initialise (initFailed), and which exited 1 as such an executor does, is
// logged at Debug: the driver's "executor failed to initialise" Error has
// said so, and a crash loop's every replacement logged a Warn besides.
func logEnded(log *slog.Logger, id string, err error, initFailed bool) {
	xe, ok := errors.AsType[*launch.ExitError](err)
	if err == nil || ok && xe.Unreleased {
		return
	}
	attrs := []any{"err", err}
	if id != "" {
		attrs = append([]any{"executor", id}, attrs...)
	}
	level := slog.LevelWarn
	if ee, isExit := errors.AsType[*exec.ExitError](err); initFailed && isExit && ee.ExitCode() == 1 {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, "executor ended", attrs...)
}

// beforeHandshake is what the start-up error adds for a local-cluster
// executor process that ended during start-up, p being what the driver
// learnt of it: a hint when it ended before its handshake passed, which
// most often means that it never reached ember.Run. Each executor runs
// the program's main up to Run, and a main that takes something there a
// second copy of the program cannot (the service's fixed port, a lock),
// or that does not reach Run with the executor's arguments (another
// subcommand), ends the executor with its own status, and nothing in the
// driver's error said where to look.
func beforeHandshake(p driver.Process) string {
	if p.ID != "" || p.InitFailure != nil || p.Refused != nil {
		return ""
	}
	return "; it ended before its handshake with the driver: an executor runs this program's main up to ember.Run " +
		"(Config.ExecutorArgs, default this process's arguments), so did main fail or return before ember.Run " +
		"(a fixed port to listen on or a lock that a second copy cannot take, arguments that do not lead to ember.Run)? " +
		"The executor's own output, on this process's stderr, says why"
}

// startupError is the error of a start-up whose wait for its executors
// (startCtx, whose cause is timedOut when it timed out) failed with err:
// the cause, if err does not say it, and a hint when no local-cluster
// executor process connected (noneConnected).
func startupError(err error, startCtx context.Context, timedOut error, noneConnected bool) error {
	cause := context.Cause(startCtx)
	if cause != nil && !errors.Is(err, cause) && startCtx.Err() != nil {
		err = fmt.Errorf("%w; %v", cause, err) // the cause, and what the wait saw
	}
	if noneConnected && cause == timedOut {
		// Its processes run main up to Run: a main that blocks
		// before it (reading stdin, the driver's pipe, or serving)
		// never gets there, and nothing else says so.
		err = fmt.Errorf("%w; no executor process connected: each runs this program's main up to ember.Run, so does main block before ember.Run (reading stdin, which carries the secret, or serving)?", err)
	}
	return fmt.Errorf("start-up: %w", err)
}

// shutdown releases the executors, shuts the driver down and waits for
// executor processes to end. An executor process that stopped cleanly
// when told to and then exited other than cleanly (a panic on its way
// out, the race detector's status 66) is reported; exits is where the
// launcher's reports went.
func shutdown(d *driver.Driver, l launch.Launcher, rep *replacer, cfg Config, exits *exitErrors) error {
	rep.close() // before the executors are released: their exits are not losses
	exits.releasing()
	err := d.Close()
	if k, ok := l.(unreleasedKiller); ok {
		// One that stopped on its own is exiting as it should: killed,
		// it was logged as an executor that ended by a signal.
		k.KillUnreleased(func(pid int) bool { return d.Released(pid) || d.Left(pid) })
	}
	if l != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if werr := l.Wait(ctx); werr != nil {
			err = errors.Join(err, fmt.Errorf("executors did not exit within %v: %w", cfg.ShutdownTimeout, werr))
		} else if exits != nil {
			err = errors.Join(err, exits.afterRelease(d))
		}
	}
	return err
}

// unreleasedKiller is a launch.Launcher whose executors can be killed
// once the driver has closed, if it did not release them (never
// connected, lost, or not stopped in time): Run need not wait for them.
type unreleasedKiller interface {
	KillUnreleased(released func(pid int) bool)
}

// exitErrors gathers a launcher's reports of executors that ended once
// shutdown is about to release them (releasing): only those can be of
// released executors (afterRelease). Earlier ones are not kept: a
// local-cluster that replaces executors for long would keep them all, and
// a released replacement could get the PID of one. Safe for concurrent
// use; a nil e keeps nothing.
type exitErrors struct {
	mu   sync.Mutex
	keep bool // set by releasing
	errs []error
}

func (e *exitErrors) add(err error) {
	if e == nil || err == nil {
		return
	}
	e.mu.Lock()
	if e.keep {
		e.errs = append(e.errs, err)
	}
	e.mu.Unlock()
}

// releasing says the executors are about to be released: exits are kept
// from now on.
func (e *exitErrors) releasing() {
	if e == nil {
		return
	}
	e.mu.Lock()
	e.keep = true
	e.mu.Unlock()
}

// afterRelease returns the failures of executor processes that d had
// released cleanly. Others ended before that, lost, as the driver has
// already said.
func (e *exitErrors) afterRelease(d *driver.Driver) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for _, err := range e.errs {
		if xe, ok := errors.AsType[*launch.ExitError](err); ok && d.Released(xe.PID) {
			errs = append(errs, fmt.Errorf("%w, after it had stopped cleanly", err))
		}
	}
	return errors.Join(errs...)
}

// metricsLimits bound what a client of /metrics holds: reading a request
// (which has no body), writing a response (gathering takes at most half
// of it), a kept-alive connection left idle (longer than scrapes are
// apart), and scrapes at once. A connection that had scraped once used to
// stay open for ever, so any local process could pile them up.
var metricsLimits = struct {
	read, write, idle time.Duration
	inFlight          int
}{10 * time.Second, time.Minute, 2 * time.Minute, 8}

// gatherWarnEvery is how often a gather error that comes again is logged
// at Warn (see repeatLimiter).
const gatherWarnEvery = 10 * time.Minute

// repeatLimiter takes promhttp's ErrorLog lines. It logs a message at Warn
// the first time, then again at most once every every, saying how many
// times it came meanwhile; in between, at Debug. A family that cannot be
// served (two executors disagreeing on its help) fails every scrape: a
// scraper every 15 s made that 240 warnings an hour. It remembers at most
// repeatsKept messages. Safe for concurrent use.
type repeatLimiter struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]*repeats
}

// repeats is what a repeatLimiter remembers of one message.
type repeats struct {
	warned time.Time // when it was last logged at Warn
	since  int       // times it came since
}

// repeatsKept bounds the messages a repeatLimiter remembers: past it, it
// forgets them all (and warns of each again).
const repeatsKept = 64

// Write logs p, one ErrorLog line, as the type says. It never fails.
func (r *repeatLimiter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	now := r.now()
	r.mu.Lock()
	if r.seen == nil || len(r.seen) >= repeatsKept && r.seen[msg] == nil {
		r.seen = map[string]*repeats{}
	}
	rp := r.seen[msg]
	if rp == nil {
		rp = &repeats{}
		r.seen[msg] = rp
	}
	warn, since := rp.warned.IsZero() || now.Sub(rp.warned) >= r.every, rp.since
	if warn {
		rp.warned, rp.since = now, 0
	} else {
		rp.since++
	}
	r.mu.Unlock()
	switch {
	case !warn:
		r.log.Debug(msg)
	case since > 0:
		r.log.Warn(msg, "repeated", since) // since the last warning
	default:
		r.log.Warn(msg)
	}
	return len(p), nil
}

// serveMetrics serves g at http://addr/metrics until stop is called.
func serveMetrics(addr string, g prometheus.Gatherer, log *slog.Logger) (url string, stop func(), err error) {
	if addr == "off" {
		return "", func() {}, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: stdlog.New(&repeatLimiter{log: log, every: gatherWarnEvery, now: time.Now}, "", 0),
		// One inconsistent family (an executor disagreeing with the
		// driver on a metric's type) must not hide all the others.
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes at once beyond these get 503: each gathers every
		// executor's families.
		MaxRequestsInFlight: metricsLimits.inFlight,
		Timeout:             metricsLimits.write / 2,
	})
	// GET /metrics and nothing else: no HEAD, and no redirects of other
	// paths to it, as a ServeMux would make.
	only := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/metrics":
			http.NotFound(w, r)
		case r.Method != http.MethodGet:
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		default:
			metrics.ServeHTTP(w, r)
		}
	})
	srv := &http.Server{Handler: only, ReadHeaderTimeout: metricsLimits.read, ReadTimeout: metricsLimits.read,
		WriteTimeout: metricsLimits.write, IdleTimeout: metricsLimits.idle}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	url = "http://" + local(lis.Addr().String()) + "/metrics"
	log.Debug("serving metrics", "url", url)
	if !loopback(lis.Addr().String()) {
		log.Warn("/metrics is served beyond this host, without authentication or TLS (docs/security.md: keep it on loopback, or behind an authenticating proxy)", "addr", lis.Addr().String())
	}
	return url, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

func connOptions(cfg Config) rpc.Options {
	return rpc.Options{
		MaxMessageBytes:   cfg.MaxMessageBytes,
		QueueFrames:       cfg.SendQueue,
		HeartbeatInterval: cfg.HeartbeatInterval,
		HeartbeatTimeout:  cfg.HeartbeatTimeout,
		SendWindow:        cfg.SendWindow,
	}
}

func executorConfig(cfg Config, plugins []plugin.Plugin, addr, secret string) (executor.Config, error) {
	creds, err := clientTLS(cfg.TLS, addr)
	if err != nil {
		return executor.Config{}, err
	}
	return executor.Config{
		Secret:           secret,
		Creds:            creds,
		DriverAddr:       addr,
		Plugins:          plugins,
		Logger:           cfg.Logger,
		Registry:         prometheus.NewRegistry(),
		BuildID:          cfg.BuildID,
		MaxMessageBytes:  cfg.MaxMessageBytes,
		SendQueue:        cfg.SendQueue,
		LaneQueue:        cfg.LaneQueue,
		HeartbeatTimeout: cfg.HeartbeatTimeout,
		ConnectTimeout:   cfg.StartTimeout,
		HandshakeTimeout: cfg.HandshakeTimeout,
		ShutdownTimeout:  cfg.ShutdownTimeout,
		Tasks:            taskNames(),
		RunTask:          runTask(cfg.Logger),
	}, nil
}

func newAppID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "app-" + time.Now().UTC().Format("20060102150405") + "-" + hex.EncodeToString(b)
}

// ownSlots returns the task slots EMBER_EXECUTOR_SLOTS gives this
// executor, 0 when it is unset.
func ownSlots() (int, error) {
	v, ok := os.LookupEnv(EnvExecutorSlots)
	if !ok {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > driver.MaxSlots {
		return 0, fmt.Errorf("%s=%q: want a whole number from 1 to %d", EnvExecutorSlots, v, driver.MaxSlots)
	}
	return n, nil
}

// ExitMisconfigured is the exit status of an executor process whose
// configuration, or its driver's refusal of it, starting it again does not
// mend: a bad Config or EMBER_EXECUTOR_SLOTS, an empty secret file, a
// refused proof of the secret, a build or plugins that differ from the
// driver's, a driver that does not prove the secret, TLS set-ups that
// disagree (a secret or TLS file that cannot be read exits 1: it may not
// be there yet). It is sysexits.h's EX_CONFIG, so that a service manager
// that restarts executors whenever they exit can be told not to for it
// (systemd's RestartPreventExitStatus=78).
const ExitMisconfigured = 78

// exitStatus is the exit status of an executor process that could not
// start for err, a problem with its own configuration: ExitMisconfigured,
// but 1 when a file could not be read (a secret or TLS file not there yet
// at boot, a secrets volume not mounted yet), which starting again may
// mend.
func exitStatus(err error) int {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return 1
	}
	return ExitMisconfigured
}

// runExecutorProcess serves as an executor and returns the exit status.
func runExecutorProcess(ctx context.Context, cfg Config, addr string) int {
	cookie, managed := os.LookupEnv(launch.EnvCookie)
	envSecret, envSecretErr := secretFromEnv()
	blank := blankSecret() // read before the variables are unset below
	secretFile := secretFileUsed()
	shadowed, shadowFile := secretFileShadowed(), os.Getenv(EnvSecretFile)
	// Children of this executor must not inherit executor mode or the
	// secret.
	for _, k := range []string{launch.EnvDriver, launch.EnvSecret, launch.EnvCookie, EnvSecretFile} {
		os.Unsetenv(k)
	}
	if problem := driverAddrProblem(addr); problem != "" || (managed && cookie != launch.CookieValue) {
		// A bad address is the likely mistake of one started by hand;
		// a bad cookie, of an environment copied from a driver's child.
		why := "it does not look like one started by a driver"
		if problem != "" {
			why = fmt.Sprintf("that is not a driver's address (want %s=host:port: %s)", EnvDriver, problem)
		}
		fmt.Fprintf(os.Stderr, "ember: %s=%q is set, so this process would start as an Ember executor,\n"+
			"but %s.\n"+
			"To run the driver, unset %s. To start an executor by hand, point %s at the driver's address.\n",
			EnvDriver, addr, why, EnvDriver, EnvDriver)
		return 2
	}
	// Left at zero, the heartbeat timeout is ten of the intervals the
	// driver announces (executor.Config.HeartbeatTimeout), not ten of this
	// Config's, which executors do not use: a standalone executor built
	// with a shorter interval than the driver's lost its idle driver.
	heartbeatTimeout := cfg.HeartbeatTimeout
	invalid := checkLimits(cfg)
	cfg.setDefaults()
	log := cfg.Logger
	// badConfig logs err, a problem with this executor's own
	// configuration, and returns the status to exit with.
	badConfig := func(what string, err error) int {
		log.Error("executor: "+what, "err", err)
		return exitStatus(err)
	}
	if invalid != nil {
		return badConfig("invalid configuration", invalid)
	}
	var secret string
	if managed {
		// The driver writes the secret on our stdin, then keeps the pipe
		// open for as long as it lives. When it dies, this executor ends,
		// and takes the processes it started with it.
		s, err := launch.ReadSecretAndWatchParent(os.Stdin, func() {
			launch.KillOwnGroup()
			os.Exit(1)
		})
		if err != nil {
			log.Error("executor: reading the secret from the driver", "err", err)
			return 1
		}
		secret = s
	} else {
		secret = cfg.Secret
		if secret == "" {
			secret = envSecret
			warnLooseSecretFile(log, secretFile)
			if shadowed {
				warnSecretFileShadowed(log, shadowFile)
			}
		}
		if secret == "" && envSecretErr != nil {
			return badConfig("bad secret", envSecretErr)
		}
		if secret == "" && blank != "" {
			log.Warn("executor: no application secret" + blank + "; only a driver without authentication takes this executor")
		}
	}
	plugins, _, err := resolvePlugins(cfg) // the driver logs what is dropped
	if err != nil {
		return badConfig("bad configuration", err)
	}
	ecfg, err := executorConfig(cfg, plugins, addr, secret)
	if err != nil {
		return badConfig("bad configuration", err)
	}
	ecfg.HeartbeatTimeout = heartbeatTimeout
	ecfg.Announce = !managed
	if ecfg.OwnSlots, err = ownSlots(); err != nil {
		return badConfig("bad configuration", err)
	}
	// The ID the driver gave this executor, if it got one: its last line
	// names it, as its "executor ready" line did, so that the lines of
	// a fleet's executors can be told apart and matched to the driver's.
	var id atomic.Pointer[string]
	ecfg.OnWelcome = func(s string) { id.Store(&s) }
	err = executor.Run(ctx, ecfg)
	if s := id.Load(); s != nil {
		log = log.With("executor", *s)
	}
	switch {
	case err == nil:
		return 0
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		// Stopped as asked (a SIGTERM the program turned into the end of
		// ctx, say): not a failure for a supervisor to see.
		log.Info("executor stopped: its ctx ended", "cause", context.Cause(ctx))
		return 0
	case errors.Is(err, executor.ErrMisconfigured):
		log.Error("executor stopped: it and its driver are set up so that they cannot work together; starting it again will not help", "err", err)
		return ExitMisconfigured
	default:
		log.Error("executor stopped", "err", err)
		return 1
	}
}

// driverAddrProblem says what makes addr, the value of EMBER_DRIVER,
// unusable as the driver's host:port, or "" if it can be dialed. A port
// that no dial can use (none, 0, out of range, an unknown service name)
// or a blank (a stray space or newline from a script or an env file)
// would otherwise pass net.SplitHostPort and leave the executor retrying
// for StartTimeout, a minute by default, behind a warning that blames the
// driver ("not started yet, something else at that address").
func driverAddrProblem(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		return err.Error()
	case strings.ContainsFunc(addr, unicode.IsSpace):
		return "it contains blanks"
	case port == "":
		return "no port"
	}
	n, err := net.LookupPort("tcp", port)
	switch {
	case err != nil:
		return fmt.Sprintf("port %q: not a port number", port)
	case n == 0:
		return "port 0"
	}
	return ""
}

// shellQuote quotes s for a POSIX shell, if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// dialable is addr, a listening address, as an executor elsewhere would
// dial it: a wildcard host is none to dial, so it becomes this host's
// name, or, when the name resolves to loopback alone (an /etc/hosts line
// such as "127.0.1.1 vm", which other hosts' own files may copy), the
// first address of this host's interfaces that is not: an executor given
// the name would have dialed its own host, and retried for StartTimeout.
func dialable(addr string) string {
	port, _, ok := wildcard(addr)
	if !ok {
		return addr
	}
	name, err := os.Hostname()
	if err != nil || name == "" {
		return net.JoinHostPort("<this host>", port)
	}
	if ips, err := lookupHost(name); err == nil && allLoopback(ips) {
		if ip := firstNonLoopback(); ip != "" {
			return net.JoinHostPort(ip, port)
		}
	}
	return net.JoinHostPort(name, port)
}

// lookupHost and interfaceAddrs are the resolver and the interface list
// dialable uses (tests replace them).
var (
	lookupHost     = net.LookupHost
	interfaceAddrs = net.InterfaceAddrs
)

// allLoopback reports whether ips, at least one, are all loopback.
func allLoopback(ips []string) bool {
	for _, s := range ips {
		if ip := net.ParseIP(s); ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return len(ips) > 0
}

// firstNonLoopback returns the first global unicast address of this
// host's interfaces, IPv4 first, or "".
func firstNonLoopback() string {
	addrs, err := interfaceAddrs()
	if err != nil {
		return ""
	}
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String()
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	return v6
}

// local is addr, a listening address, as this host dials it: a wildcard
// host becomes loopback.
func local(addr string) string {
	port, v4, ok := wildcard(addr)
	switch {
	case !ok:
		return addr
	case v4:
		return net.JoinHostPort("127.0.0.1", port)
	}
	return net.JoinHostPort("::1", port)
}

// wildcard reports whether listening address addr has a wildcard host
// (":7077", "0.0.0.0:7077", "[::]:7077"), with its port, and whether the
// host is IPv4's (or none).
func wildcard(addr string) (port string, v4, ok bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, false
	}
	if host == "" {
		return port, true, true
	}
	ip := net.ParseIP(host)
	return port, ip.To4() != nil, ip != nil && ip.IsUnspecified()
}

// loopback reports whether addr, a listening address, takes connections
// from this host only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return err == nil && (host == "localhost" || (ip != nil && ip.IsLoopback()))
}
