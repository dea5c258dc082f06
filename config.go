package ember

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emberhq/ember/internal/driver"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/launch"
	"github.com/emberhq/ember/internal/pluginname"
	"github.com/emberhq/ember/plugin"
)

// Config describes an application. The same Config must be built in every
// process of the application (driver and executors run the same program),
// so build it from constants, flags and environment, not from state. A
// zero duration or limit means its default; a negative one fails Run with
// CodeInvalidArgument.
type Config struct {
	// AppName names the application in logs.
	AppName string
	// Master says where executors come from:
	//   - "local[N]": N executors inside the driver process, talking to it
	//     over the real transport (loopback gRPC); "local" is "local[1]";
	//   - "local-cluster[N]": N child processes of this program's binary
	//     (the default, as "local-cluster[2]"); one that fails unreleased
	//     is replaced by a new process (see [ConfExecutorMaxRetries]);
	//   - "standalone": the driver listens on ListenAddr and executors are
	//     started by anyone as EMBER_DRIVER=host:port ./app.
	Master string
	// Plugins are enabled plugins, after those named in Conf; see
	// [PluginNames] for how the final list is formed. Two plugins here
	// with one name fail Run with CodeInvalidArgument (one value listed
	// twice is one plugin, loaded once).
	Plugins []plugin.Plugin
	// Conf is free-form configuration, shipped to every executor and
	// visible to plugins as Context.Conf. "ember.plugins.defaults" and
	// "ember.plugins" enable registered plugins by name (comma-separated);
	// the other keys Ember reads are the Conf constants of this package
	// and ConfResourceDiscoveryScript, and Run fails at start-up, naming
	// the key, when one has a value it cannot use. Keys and values must be
	// valid UTF-8, as AppName must: Run fails the same way when one is not.
	Conf map[string]string
	// ListenAddr is the driver's address. Default "127.0.0.1:0" (loopback,
	// a free port); standalone executors on other hosts need the address
	// of an interface they can reach, such as "10.0.0.5:7077" (":7077"
	// listens on every interface, and the start-up line then names this
	// host by its os.Hostname, which other hosts may not resolve, or by
	// its first interface address when the name resolves to loopback).
	ListenAddr string
	// MetricsAddr is where the driver serves /metrics in the Prometheus
	// exposition format: its own metrics, the built-in ones, and every
	// executor's plugin metrics (shipped with their heartbeats). Default
	// "127.0.0.1:0" (loopback, a free port; see Driver.MetricsURL); "off"
	// serves none.
	MetricsAddr string
	// MinExecutors is how many executors Run waits for before calling fn
	// in standalone mode (default 0: call fn at once; less than 0 fails
	// Run). Local masters always wait for all N.
	MinExecutors int
	// Logger receives the runtime's logs; default slog.Default(). Plugins
	// get it with "plugin" (and "executor") attributes.
	Logger *slog.Logger
	// MaxMessageBytes bounds one encoded message; default 4 MiB, at most
	// MaxMessageLimit (1 GiB: more fails Run). Larger messages fail at the
	// call with CodeResourceExhausted. Every process
	// of an application must set the same: the driver refuses an executor
	// whose limit differs (a handshake mismatch naming both), since a
	// message between the two limits would end their connection.
	MaxMessageBytes int
	// SendQueue bounds the messages waiting to be written per connection;
	// Send waits (backpressure) while it is full. Default 65536.
	SendQueue int
	// LaneQueue is how many messages may wait for one plugin's Receive (on
	// the driver, and on each executor for pushed messages) before its
	// senders are held back. Every plugin has a send window per connection
	// (SendWindow); once its lane holds LaneQueue messages, the lane stops
	// giving windows back until it has drained to half of that, so Send to
	// that plugin waits: backpressure end to end, never a drop, and
	// nothing else on the senders' connections waits with it. The lane can
	// hold up to LaneQueue plus one window per sending connection, and
	// while its Receive waits to send to a connection, what that
	// connection's Receives send back meanwhile, at most four windows and
	// one MaxMessageBytes more (see docs/internals.md, "Loans"). Default
	// 65536.
	LaneQueue int
	// SendWindow is how many bytes of Send messages one plugin may have in
	// flight on one connection, each way: sent, and not yet run by the
	// receiving plugin (each message counts its encoded size plus 64
	// bytes). A Send that finds its plugin's window spent waits until the
	// receiver has run enough of them; a message larger than the window
	// still goes, alone. Default 1 MiB: about ten thousand small messages,
	// but only one of 1 MiB, so plugins that send large messages should
	// raise it, at the cost of up to that much memory per plugin and
	// connection on the receiving side; a driver plugin that implements
	// plugin.SendWindowed sets a window of its own instead, leaving the
	// other plugins with this one. At most 1 GiB (larger values count as
	// 1 GiB). The driver's values hold for the whole application:
	// executors take them from the driver when they connect.
	SendWindow int
	// HeartbeatInterval is how often an idle connection proves it is alive
	// (default 1s, at least 1ms); a peer silent for HeartbeatTimeout
	// (default ten intervals) is declared lost. An idle peer is heard from
	// about once an interval, so HeartbeatTimeout must be longer than
	// HeartbeatInterval, and should be several intervals: setting only
	// HeartbeatTimeout below the default interval of 1s is refused. Run
	// fails with CodeInvalidArgument for values outside those bounds.
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	// StartTimeout bounds each step of start-up: the driver plugins'
	// Init (its ctx ends then; one that has not returned a second later
	// is abandoned, still running, and fails Run), then local executors
	// connecting and initialising, or standalone's MinExecutors arriving.
	// Default 60s.
	StartTimeout time.Duration
	// ShutdownTimeout bounds each phase of shutdown. Default 30s.
	//
	// The driver waits this long for each executor to stop, and an
	// executor's whole stop fits in nine tenths of it: its handlers run
	// what the driver sent for up to half; then the ctx of handlers and
	// tasks still running ends, and they have until three quarters to
	// return (then they are abandoned, still running, and logged); then
	// the executor plugins' Shutdown run in reverse order, sharing the
	// rest. On the driver, each phase (delivering what executors sent,
	// each driver plugin's Shutdown, handlers' return) has all of it.
	ShutdownTimeout time.Duration
	// ExecutorArgs are the arguments local-cluster executors are started
	// with; nil means this process's own (os.Args[1:]). embertest.Start
	// sets embertest.ExecutorArgs, so that the child runs only the
	// calling test.
	ExecutorArgs []string
	// Secret is the application secret. Executors prove they know it by
	// challenge-response when they connect (it never crosses the wire),
	// and the driver proves it back. Local masters generate a fresh secret
	// when this is empty and hand it to their executors privately (never on
	// a command line or in the environment). In standalone mode the driver
	// and executors read it from here, else from EMBER_SECRET, else from
	// the file named by EMBER_SECRET_FILE; a standalone driver without one
	// refuses to start unless InsecureNoAuth is set.
	Secret string
	// InsecureNoAuth lets a standalone driver run without a secret: any
	// process that can reach ListenAddr can then join and talk to the
	// plugins. It is logged loudly at start.
	InsecureNoAuth bool
	// TLS encrypts driver-executor traffic; see TLSConfig. Default: none
	// (fine on loopback; use it across machines).
	TLS *TLSConfig
	// MaxExecutors bounds the executors connected at once; more are
	// refused with CodeResourceExhausted. Default 10000. A local master
	// that starts more (local[N] or local-cluster[N] with N over it)
	// fails Run at once with CodeInvalidArgument.
	MaxExecutors int
	// MaxOutstandingAsks bounds the asks one executor may have sent and
	// the driver not yet answered: queued for a driver plugin's Receive or
	// running in it. An ask its asker gave up on (its ctx ended) still
	// counts until the handler running it returns, so handlers that ignore
	// their ctx can fill it with asks nobody waits for. More fail at once
	// with CodeResourceExhausted. Default 4096.
	MaxOutstandingAsks int
	// HandshakeTimeout bounds a new connection's TLS and Ember handshakes;
	// a peer that takes longer is dropped. On an executor it bounds each
	// of the driver's answers in the handshake once a stream to it is
	// open: a driver from which no byte comes for that long (the network
	// dropping packets) ends Run with an error, rather than a silent wait
	// until StartTimeout. Default 10s.
	HandshakeTimeout time.Duration
	// BuildID identifies the program; driver and executors must agree.
	// Empty: derived from the executable, so only the same binary passes.
	// Set it (e.g. to a release version) to let rebuilt binaries mix.
	BuildID string
}

// Configuration keys with a meaning to Ember.
const (
	// ConfPluginsDefaults lists plugins enabled for every application of a
	// deployment (Spark: spark.plugins.defaultList).
	ConfPluginsDefaults = "ember.plugins.defaults"
	// ConfPlugins lists the application's plugins (Spark: spark.plugins).
	ConfPlugins = "ember.plugins"
	// ConfMetricsInterval is how often executors gather their metrics and
	// ship them to the driver if they have changed, as a Go duration
	// ("500ms", "10s"), at least 10ms. Default: Config.HeartbeatInterval.
	ConfMetricsInterval = "ember.metrics.interval"
	// ConfStallWarning is how long a plugin's dispatch lane, on the driver
	// or an executor, may hold messages while none of its calls returns
	// before that side logs a warning (once per stall, and a line when it
	// moves again): a Go duration, "0" for never. A Receive that blocks (a
	// long poll, a lock, a call ignoring its ctx) holds the messages behind
	// it, or with plugin.ConcurrentReceiver, once every call it may run is
	// blocked, all of them. ember_lane_stalled is 1 meanwhile. At least
	// 10ms; default 15s.
	ConfStallWarning = "ember.lane.stallWarning"
)

// minMetricsInterval bounds ConfMetricsInterval: each shipment gathers
// and encodes every metric of the executor, and at 1ns an executor spun
// on it (131% CPU).
const minMetricsInterval = 10 * time.Millisecond

// minStallWarning bounds ConfStallWarning: each side looks at every
// plugin's lane, under its lock, every third of it.
const minStallWarning = 10 * time.Millisecond

// ConfResourceDiscoveryScript returns the configuration key,
// "ember.executor.resource.<name>.discoveryScript", that names the
// command discovering the executor resource name (Spark:
// spark.executor.resource.{resourceName}.discoveryScript). Every executor
// runs it when it starts, before its plugins' Init: a path and
// space-separated arguments, run without a shell, that must print
// {"name":"<name>","addresses":["0","1"]} and exit 0 within 30 seconds,
// or the executor fails naming the resource. Plugins read the result from
// plugin.ExecutorContext.Resources, and the driver from
// plugin.ExecutorInfo.Resources.
func ConfResourceDiscoveryScript(name string) string { return executor.ResourceKey(name) }

// knownConf are the configuration keys with a meaning to Ember, for
// unknownConf.
var knownConf = []string{ConfPluginsDefaults, ConfPlugins, ConfMetricsInterval, ConfStallWarning, ConfMaxTaskFailures, ConfTaskPrefetch,
	ConfExecutorSlots, ConfExecutorMaxRetries, ConfShowProgress, ConfResourceDiscoveryScript("<name>")}

// unknownConf returns, sorted, the keys of m in Ember's namespace
// ("ember.", in any case: keys are case-sensitive, so "Ember.Executor.Slots"
// is not ember.executor.slots) that mean nothing to Ember: a misspelt key
// is otherwise ignored without a word.
func unknownConf(m map[string]string) []string {
	var unknown []string
	for k := range m {
		if _, resource := executor.ResourceName(k); strings.HasPrefix(strings.ToLower(k), "ember.") && !resource && !slices.Contains(knownConf, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	return unknown
}

// checkConf refuses values of the keys above that do not parse or are out
// of range, naming each such key in one CodeInvalidArgument error, so that
// a typo fails Run at once instead of an executor falling back to a
// default or failing later.
func checkConf(m map[string]string) error {
	c := plugin.NewConf(m)
	var errs []error
	atLeast := func(key string, least int) {
		if _, set := c.Lookup(key); !set {
			return
		}
		if n, err := c.Int(key, 0); err != nil {
			errs = append(errs, err)
		} else if n < least {
			errs = append(errs, fmt.Errorf("conf %s=%d: want at least %d", key, n, least))
		}
	}
	atLeast(ConfMaxTaskFailures, 1)
	atLeast(ConfExecutorSlots, 1)
	atLeast(ConfTaskPrefetch, 0)
	atLeast(ConfExecutorMaxRetries, -1)
	if n, err := c.Int(ConfExecutorSlots, 0); err == nil && n > driver.MaxSlots {
		errs = append(errs, fmt.Errorf("conf %s=%d: want at most %d", ConfExecutorSlots, n, driver.MaxSlots))
	}
	if d, err := c.Duration(ConfMetricsInterval, time.Second); err != nil {
		errs = append(errs, err)
	} else if d < minMetricsInterval {
		errs = append(errs, fmt.Errorf("conf %s=%v: want at least %v", ConfMetricsInterval, d, minMetricsInterval))
	}
	if d, err := c.Duration(ConfStallWarning, 0); err != nil {
		errs = append(errs, err)
	} else if d < 0 || d > 0 && d < minStallWarning {
		errs = append(errs, fmt.Errorf("conf %s=%v: want 0 (never) or at least %v", ConfStallWarning, d, minStallWarning))
	}
	if v, set := c.Lookup(ConfShowProgress); set {
		if _, err := strconv.ParseBool(v); err != nil {
			errs = append(errs, fmt.Errorf("conf %s=%q: want true or false", ConfShowProgress, v))
		}
	}
	for k, v := range c.All() {
		name, ok := executor.ResourceName(k)
		switch {
		case !ok:
		case name == "":
			errs = append(errs, fmt.Errorf("conf %s: no resource name", k))
		case len(strings.Fields(v)) == 0:
			errs = append(errs, fmt.Errorf("conf %s: no discovery command", k))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		// Conf's own errors are *plugin.Errors: their text without the
		// code, which the joined error names once, in front.
		var e *plugin.Error
		if errors.As(err, &e) && err == error(e) {
			msgs[i] = e.Message()
		} else {
			msgs[i] = err.Error()
		}
	}
	return plugin.NewError(plugin.CodeInvalidArgument, strings.Join(msgs, "; "))
}

// PluginNames returns the plugins cfg enables, in order: the registered
// plugins named in ConfPluginsDefaults, then those named in ConfPlugins,
// then cfg.Plugins. Names listed in Conf are trimmed and empty ones
// dropped; a name seen before is dropped, keeping the first (the driver
// logs a plugin of cfg.Plugins dropped so, at Warn, unless it is the very
// value registered under that name: enabling a registered plugin both ways
// loads it once). Two plugins of cfg.Plugins with one name are an error
// with CodeInvalidArgument naming the name and both types, not a drop:
// one of them would never run. The same value listed twice there is one
// plugin, loaded once without a word; values of a type that cannot be
// compared (a struct with a func field, say) are always two. An unknown
// registered name or an invalid plugin name (a Plugin.Name with spaces,
// say) is an error with CodeInvalidArgument, as Run's is (a Name that
// panics gives CodeInternal).
func PluginNames(cfg Config) ([]string, error) {
	ps, _, err := resolvePlugins(cfg)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name()
	}
	return names, nil
}

// nameOf returns p.Name(), or an error naming p's type if it panics:
// resolvePlugins is the first to call it, so a panicking Name fails Run
// here, before anything starts.
func nameOf(p plugin.Plugin) (name string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = plugin.Errorf(plugin.CodeInternal, "plugin of type %T: panic in Name: %v", p, r)
		}
	}()
	return p.Name(), nil
}

// resolvePlugins returns the plugins cfg enables (see PluginNames), and
// those of cfg.Plugins dropped for the name of a registered plugin the
// configuration enables, for the driver to log: two libraries that chose
// one name would otherwise lose one plugin without a word. (A name listed
// twice in the configuration is dropped quietly, and so is a registered
// plugin the configuration enables that Config.Plugins lists too, as the
// same value: the lists merge. Another value of the registered plugin's
// type is dropped with a warning: it may hold state, a driver side the
// program keeps to reach it from its function, say, that would never be
// initialised.) Two plugins of cfg.Plugins itself with one name are
// refused, not dropped: no lists merge there, and the program would lose
// one of its own plugins; one value listed twice is kept once, quietly.
func resolvePlugins(cfg Config) (plugins, dropped []plugin.Plugin, err error) {
	defer func() {
		if err != nil && plugin.CodeOf(err) == plugin.CodeUnknown { // a name refused, not a panicking Name
			err = plugin.Errorf(plugin.CodeInvalidArgument, "%w", err)
		}
	}()
	seen := map[string]bool{}
	registered := map[string]plugin.Plugin{} // the plugins enabled by name
	listed := map[string]plugin.Plugin{}     // the first of cfg.Plugins with each name
	add := func(p plugin.Plugin, explicit bool) error {
		name, err := nameOf(p)
		if err != nil {
			return err
		}
		if !pluginname.Valid(name) {
			return fmt.Errorf("plugin name %q: want %s", name, pluginname.Rule)
		}
		if first, ok := listed[name]; explicit && ok {
			if !identical(first, p) {
				return fmt.Errorf("Config.Plugins holds two plugins named %q, of types %T and %T: plugin names must be unique (rename one, or list it once)", name, first, p)
			}
			return nil // listed twice: loaded once
		}
		if explicit {
			listed[name] = p
		}
		if seen[name] {
			if r, ok := registered[name]; explicit && (!ok || !samePlugin(r, p)) {
				dropped = append(dropped, p)
			}
			return nil
		}
		seen[name] = true
		if !explicit {
			registered[name] = p
		}
		plugins = append(plugins, p)
		return nil
	}
	for _, key := range []string{ConfPluginsDefaults, ConfPlugins} {
		for name := range strings.SplitSeq(cfg.Conf[key], ",") {
			name = strings.TrimSpace(name)
			if name == "" || seen[name] {
				continue
			}
			p, err := plugin.Lookup(name)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", key, err)
			}
			if err := add(p, false); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, p := range cfg.Plugins {
		if p == nil {
			return nil, nil, fmt.Errorf("Config.Plugins holds a nil plugin")
		}
		if err := add(p, true); err != nil {
			return nil, nil, err
		}
	}
	return plugins, dropped, nil
}

// samePlugin reports whether Config.Plugins' p is the registered plugin r:
// the same value, or, for a type whose values cannot be compared (a struct
// with a func field, say), a value of the same type.
func samePlugin(r, p plugin.Plugin) bool {
	if reflect.TypeOf(r) != reflect.TypeOf(p) {
		return false
	}
	if !reflect.ValueOf(r).Comparable() || !reflect.ValueOf(p).Comparable() {
		return true
	}
	return r == p
}

// identical reports whether a and b are one value: of one comparable
// type, and equal. Values of a type that cannot be compared are copies at
// best, each with state of its own.
func identical(a, b plugin.Plugin) bool {
	if reflect.TypeOf(a) != reflect.TypeOf(b) || !reflect.ValueOf(a).Comparable() || !reflect.ValueOf(b).Comparable() {
		return false
	}
	return a == b
}

func (cfg *Config) setDefaults() {
	// A copy: the caller may go on using its map, and Ember reads this
	// one on other goroutines for as long as the application runs.
	cfg.Conf = maps.Clone(cfg.Conf)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.MetricsAddr == "" {
		cfg.MetricsAddr = "127.0.0.1:0"
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 10 * cfg.HeartbeatInterval
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = time.Minute
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.BuildID == "" {
		cfg.BuildID = executableID()
	}
	if cfg.MaxExecutors <= 0 {
		cfg.MaxExecutors = 10000
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
}

// checkNegative refuses, before setDefaults, a negative duration or limit,
// which setDefaults would otherwise take for unset and replace by its
// default without a word: a computed timeout gone below zero, say, would
// run with a minute's. Every field of Config that is a number is one
// (time.Duration or int), and none takes a negative value.
func checkNegative(cfg Config) error {
	v := reflect.ValueOf(cfg)
	for i := range v.NumField() {
		f := v.Field(i)
		if (f.Kind() == reflect.Int || f.Kind() == reflect.Int64) && f.Int() < 0 {
			return plugin.Errorf(plugin.CodeInvalidArgument, "Config.%s=%v: want 0 (the default) or more", v.Type().Field(i).Name, f.Interface())
		}
	}
	return nil
}

// MaxMessageLimit is the largest Config.MaxMessageBytes. gRPC frames a
// message with a 32-bit length, and every message and task output is held
// whole in memory, encoded and decoded, on both sides: past this, a
// message fails in the transport, or in memory, not at the call.
const MaxMessageLimit = 1 << 30

// checkLimits refuses, before setDefaults, a negative number
// (checkNegative) or a Config.MaxMessageBytes over MaxMessageLimit.
func checkLimits(cfg Config) error {
	if err := checkNegative(cfg); err != nil {
		return err
	}
	if cfg.MaxMessageBytes > MaxMessageLimit {
		return plugin.Errorf(plugin.CodeInvalidArgument, "Config.MaxMessageBytes=%d: want at most %d (1 GiB)", cfg.MaxMessageBytes, MaxMessageLimit)
	}
	return nil
}

// checkMasterSize refuses, after setDefaults, a local master that starts
// more executors than maxExecutors lets connect: the driver would refuse
// the extra ones, and start-up fail only after starting them all
// (local[100000] with a 5s ctx took about two minutes to return).
func checkMasterSize(m launch.Master, maxExecutors int) error {
	if m.Kind == "standalone" || m.N <= maxExecutors {
		return nil
	}
	return plugin.Errorf(plugin.CodeInvalidArgument, "Config.Master %q starts %d executors, more than Config.MaxExecutors (%d) lets connect: raise MaxExecutors or start fewer",
		m.String(), m.N, maxExecutors)
}

// checkHeartbeat refuses heartbeat settings, after setDefaults, that
// lose every executor: an interval under a millisecond travels to
// executors as 0 (WELCOME carries whole milliseconds), so they send no
// heartbeats and the driver declares each lost within ten intervals; and
// a timeout no longer than the interval declares an idle peer lost, since
// an idle peer is heard from about once an interval. Both come of a
// duration built without its unit (time.Duration(1000) is 1µs) or of
// setting the timeout alone.
func checkHeartbeat(cfg Config) error {
	if cfg.HeartbeatInterval < time.Millisecond {
		return plugin.Errorf(plugin.CodeInvalidArgument, "Config.HeartbeatInterval=%v: want at least 1ms (a duration without its unit?)", cfg.HeartbeatInterval)
	}
	if cfg.HeartbeatTimeout <= cfg.HeartbeatInterval {
		return plugin.Errorf(plugin.CodeInvalidArgument, "Config.HeartbeatTimeout=%v: want more than Config.HeartbeatInterval (%v), several intervals, or 0 for ten",
			cfg.HeartbeatTimeout, cfg.HeartbeatInterval)
	}
	return nil
}

// String describes cfg with its secret and secret conf values redacted, so
// that printing a Config (or a pointer to one) never leaks them. fmt
// cannot call String on a Config held in an unexported field of another
// struct, and prints such a one field by field, Secret included: keep a
// *Config there.
func (cfg Config) String() string {
	return fmt.Sprintf("ember.Config{AppName:%q Master:%q Plugins:%d Conf:%v ListenAddr:%q Secret:%s TLS:%v}",
		cfg.AppName, cfg.Master, len(cfg.Plugins), plugin.NewConf(cfg.Conf), cfg.ListenAddr, redactedIfSet(cfg.Secret), cfg.TLS != nil)
}

// GoString makes %#v print a Config as String does.
func (cfg Config) GoString() string { return cfg.String() }

// LogValue makes slog print a Config as String does.
func (cfg Config) LogValue() slog.Value { return slog.StringValue(cfg.String()) }

func redactedIfSet(s string) string {
	if s == "" {
		return `""`
	}
	return plugin.Redacted
}
