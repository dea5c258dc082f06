package ember_test

// Ports of the scenarios of Spark's PluginContainerSuite that apply to
// Ember, plus the semantics of DESIGN.md section 3 that need a cluster.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
	"go.uber.org/goleak"
)

var quiet = slog.New(slog.DiscardHandler)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), embertest.DefaultTimeout)
	t.Cleanup(cancel)
	return ctx
}

// Spark: "plugin initialization and communication".
func TestPluginInitAndCommunication(t *testing.T) {
	var (
		driverInits, driverShutdowns, execShutdowns atomic.Int32
		gotExtra                                    = make(chan map[string]string, 1)
		pcs                                         contexts
		oneway                                      = make(chan any, 1)
	)
	extra := map[string]string{"foo": "bar", "bar": "baz"}
	p := fakePlugin{
		name: "test",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{
				InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
					driverInits.Add(1)
					return extra, nil
				},
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					switch msg {
					case text("oneway"):
						oneway <- msg
						return nil, nil
					case text("ask"):
						return text("reply"), nil
					}
					return nil, fmt.Errorf("unknown message %v", msg)
				},
				ShutdownF: func(context.Context) error { driverShutdowns.Add(1); return nil },
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{
				InitF: func(_ context.Context, pc plugin.ExecutorContext, e map[string]string) error {
					pcs.put(pc)
					gotExtra <- e
					return nil
				},
				ShutdownF: func(context.Context) error { execShutdowns.Add(1); return nil },
			}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	ctx := testCtx(t)

	if got := driverInits.Load(); got != 1 {
		t.Errorf("driver inits: got %d, want 1", got)
	}
	if got := <-gotExtra; !maps.Equal(got, extra) {
		t.Errorf("executor extraConf: got %v, want %v", got, extra)
	}
	pc := pcs.get("1")
	if pc == nil {
		t.Fatal("no executor context for executor 1")
	}
	if got := pc.Resources(); len(got) != 0 {
		t.Errorf("resources: got %v, want none", got)
	}
	if err := pc.Send(ctx, text("oneway")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	select {
	case got := <-oneway:
		if got != text("oneway") {
			t.Errorf("received %v, want oneway", got)
		}
	case <-ctx.Done():
		t.Fatal("oneway message never arrived")
	}
	got, err := plugin.Ask[text](ctx, pc, text("ask"))
	if err != nil || got != "reply" {
		t.Errorf("Ask(ask): got %q, %v; want reply, nil", got, err)
	}
	_, err = pc.Ask(ctx, text("unknown message"))
	if err == nil || !strings.Contains(err.Error(), "unknown message") {
		t.Errorf("Ask(unknown message): got %v, want an error mentioning the message", err)
	}
	if !plugin.IsRemote(err) {
		t.Errorf("IsRemote(%v) = false, want true", err)
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := driverShutdowns.Load(); got != 1 {
		t.Errorf("driver shutdowns: got %d, want 1", got)
	}
	if got := execShutdowns.Load(); got != 1 {
		t.Errorf("executor shutdowns: got %d, want 1", got)
	}
}

// Spark: "do nothing if plugins are not configured".
func TestNoPlugins(t *testing.T) {
	ran := false
	err := ember.Run(testCtx(t), ember.Config{Master: "local[2]", Logger: quiet}, func(ctx context.Context, d *ember.Driver) error {
		ran = true
		if got := len(d.Executors()); got != 2 {
			t.Errorf("executors: got %d, want 2", got)
		}
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("Run: err %v, fn ran %v; want nil, true", err, ran)
	}
}

// What every plugin context says of the application, on both sides: the
// same app ID as the Driver, this machine's hostname (on executors too,
// which Spark's PluginContext does not promise), and a logger carrying the
// plugin's name and, on an executor, its ID.
func TestContextAccessors(t *testing.T) {
	type seen struct{ side, appID, host string }
	got := make(chan seen, 2)
	p := fakePlugin{
		name: "accessors",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) {
				pc.Logger().Info("driver side here")
				got <- seen{"driver", pc.AppID(), pc.Hostname()}
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
				pc.Logger().Info("executor side here")
				got <- seen{"executor " + pc.ExecutorID(), pc.AppID(), pc.Hostname()}
				return nil
			}}
		},
	}
	var logs logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if id := c.Driver.AppID(); !strings.HasPrefix(id, "app-") {
		t.Errorf("Driver.AppID: got %q, want an ID starting app-", id)
	}
	for range 2 {
		s := <-got
		if s.appID != c.Driver.AppID() || s.host != host {
			t.Errorf("%s side: got app ID %q and hostname %q, want %q and %q", s.side, s.appID, s.host, c.Driver.AppID(), host)
		}
	}
	for _, want := range []string{`msg="driver side here" plugin=accessors`, `msg="executor side here" executor=1 plugin=accessors`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs do not have %q:\n%s", want, logs.String())
		}
	}
}

// What a plugin does wrong is logged with its name once: the executor's
// logs used to carry plugin=NAME twice, from the plugin's own logger and
// from the call that logged. The driver's line names the executor whose
// message its plugin handled as the sender: executor=1 read as if the
// executor had panicked.
func TestPluginLogsNameThePluginOnce(t *testing.T) {
	panicked := make(chan struct{}, 2)
	p, dc, ec := receivingPlugin("clumsy", func(context.Context, any) (any, error) {
		panicked <- struct{}{}
		panic("clumsy")
	})
	var logs logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := testCtx(t)
	if err := (*dc).SendExecutor(ctx, "1", text("x")); err != nil {
		t.Fatal(err)
	}
	if err := (*ec).Send(ctx, text("x")); err != nil {
		t.Fatal(err)
	}
	<-panicked
	<-panicked
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	lines, driverLines := 0, 0
	for line := range strings.Lines(logs.String()) {
		if !strings.Contains(line, "plugin panicked") {
			continue
		}
		lines++
		if n := strings.Count(line, " plugin=clumsy"); n != 1 {
			t.Errorf("plugin=clumsy %d times in %q", n, line)
		}
		if strings.Contains(line, " sender=1") {
			driverLines++
			if strings.Contains(line, " executor=") {
				t.Errorf("the driver's line names an executor, as if it had panicked: %q", line)
			}
		}
	}
	if lines != 2 || driverLines != 1 {
		t.Errorf("logged panics: got %d, %d of them naming sender=1; want 2 (driver and executor), the driver's naming the sender:\n%s", lines, driverLines, logs.String())
	}
}

// The driver says at Info why it shuts down: an operator's SIGTERM (the
// ctx's end, with its cause) or the driver function returning.
func TestDriverSaysWhyItShutsDown(t *testing.T) {
	stop := errors.New("SIGTERM")
	tests := []struct {
		name string
		end  bool // the ctx ends, with cause stop
		want string
	}{
		{"ctx ended", true, `msg="driver shutting down: its ctx ended" cause=SIGTERM`},
		{"function returned", false, `msg="driver shutting down: the driver function returned" err=<nil>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			ctx, cancel := context.WithCancelCause(testCtx(t))
			defer cancel(nil)
			err := ember.Run(ctx, ember.Config{Master: "local[1]", Logger: slog.New(slog.NewTextHandler(&logs, nil))},
				func(ctx context.Context, _ *ember.Driver) error {
					if tt.end {
						cancel(stop)
						<-ctx.Done()
					}
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), tt.want) {
				t.Errorf("logs do not say %q:\n%s", tt.want, logs.String())
			}
		})
	}
}

// An executor whose MaxMessageBytes is not the driver's is refused at the
// handshake, naming both limits: a message between the two would end
// their connection (a task input over the executor's limit ended every
// executor in turn, and the job waited for ever).
func TestMessageLimitsMustAgree(t *testing.T) {
	const secret = "limit secret"
	tests := []struct {
		name             string
		driver, executor int
		want             string
	}{
		{"executor's smaller", 8 << 20, 0, "message limit: driver 8388608 bytes, executor 4194304"},
		{"executor's larger", 0, 8 << 20, "message limit: driver 4194304 bytes, executor 8388608"},
		{"alike", 1 << 20, 1 << 20, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := standalone(t, ember.Config{Secret: secret, BuildID: "test", MaxMessageBytes: tt.driver})
			ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
			defer cancel()
			joined := make(chan struct{})
			errc := make(chan error, 1)
			go func() {
				errc <- executor.Run(ctx, executor.Config{DriverAddr: d.Addr(), Secret: secret, Logger: quiet, BuildID: "test",
					Tasks: ember.Tasks(), MaxMessageBytes: tt.executor, OnWelcome: func(string) { close(joined) }})
			}()
			var err error
			select {
			case err = <-errc:
			case <-joined:
				cancel() // it got in; leave
				<-errc
			}
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("executor with the driver's limit: got %v, want it welcomed", err)
			case tt.want != "" && (plugin.CodeOf(err) != plugin.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("executor with another limit: got %v, want refused with InvalidArgument naming %q", err, tt.want)
			}
		})
	}
}

// Driver.WaitExecutors returns once n executors are ready, and otherwise
// when ctx ends, with its error. An executor of a standalone driver
// refused for a handshake mismatch (a host still running the previous
// build) fails neither the wait nor start-up: the driver goes on waiting
// for others, and a wait that ends names the refusal. (A local master's
// mismatch fails start-up: TestHandshakeMismatchNamesThePlugins.)
func TestWaitExecutors(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet})
		if err := c.Driver.WaitExecutors(testCtx(t), 2); err != nil {
			t.Errorf("WaitExecutors(2) with 2 ready: got %v, want nil", err)
		}
		ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
		defer cancel()
		if err := c.Driver.WaitExecutors(ctx, 3); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitExecutors(3) with 2 ready: got %v, want the ctx's deadline", err)
		}
	})
	const secret = "wait secret"
	mismatched := func(t *testing.T, addr string) {
		t.Helper()
		if err := joinErr(t, addr, secret); plugin.CodeOf(err) != plugin.CodeInvalidArgument || !strings.Contains(err.Error(), `missing on the executor: ["wanted"]`) {
			t.Fatalf("executor without the plugin: got %v, want refused with InvalidArgument naming the plugin", err)
		}
	}
	t.Run("refused executor", func(t *testing.T) {
		d := standalone(t, ember.Config{Secret: secret, BuildID: "test", Plugins: []plugin.Plugin{named("wanted")}})
		// A wait counts the refusals after it began, which the goroutine
		// may not have by the time the executor is refused: it is tried
		// again until it has.
		embertest.WaitFor(t, "a wait ended by its ctx naming the refusal", func() bool {
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			waited := make(chan error, 1)
			go func() { waited <- d.WaitExecutors(ctx, 1) }()
			mismatched(t, d.Addr()) // counted before the executor reads the refusal
			cancel()
			err := <-waited
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("WaitExecutors with a refused executor: got %v, want it to wait until its ctx ends", err)
			}
			return strings.Contains(err.Error(), "1 refused at the handshake meanwhile") &&
				strings.Contains(err.Error(), `handshake mismatch: plugins differ: missing on the executor: ["wanted"]`)
		})
	})
	t.Run("refused during start-up", func(t *testing.T) {
		addr := freeAddr(t)
		ran := make(chan struct{})
		runErr := make(chan error, 1)
		go func() {
			runErr <- ember.Run(testCtx(t), ember.Config{Master: "standalone", ListenAddr: addr, MinExecutors: 1,
				Secret: secret, BuildID: "test", Plugins: []plugin.Plugin{named("wanted")}, Logger: quiet},
				func(context.Context, *ember.Driver) error {
					close(ran)
					return nil
				})
		}()
		// The executor's dial waits for the driver to listen.
		mismatched(t, addr)
		select {
		case err := <-runErr:
			t.Fatalf("Run ended after a refused executor: %v", err)
		default:
		}
		// One with the plugin is welcome, and the application starts.
		ctx, cancel := context.WithCancel(testCtx(t))
		defer cancel()
		execErr := make(chan error, 1)
		go func() {
			execErr <- executor.Run(ctx, executor.Config{DriverAddr: addr, Secret: secret, Logger: quiet, BuildID: "test",
				Tasks: ember.Tasks(), Plugins: []plugin.Plugin{named("wanted")}})
		}()
		select {
		case <-ran:
		case err := <-runErr:
			t.Fatalf("Run ended before its function ran: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := <-execErr; err != nil {
			t.Errorf("the executor released by the driver: got %v, want nil", err)
		}
	})
}

// A WaitExecutors that the driver's shutdown finds waiting, or that
// begins after it, fails with ErrClosed, as a Map does: it used to wait
// for its ctx, which a driver function's goroutine may never end.
func TestWaitExecutorsEndsAtShutdown(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet})
	waited := make(chan error, 1)
	go func() { waited <- c.Driver.WaitExecutors(testCtx(t), 2) }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i, err := range []error{<-waited, c.Driver.WaitExecutors(testCtx(t), 1)} {
		if !errors.Is(err, plugin.ErrClosed) || plugin.CodeOf(err) != plugin.CodeUnavailable {
			t.Errorf("WaitExecutors %d, at shutdown: got %v, want Unavailable wrapping ErrClosed", i, err)
		}
	}
}

// A plugin made of the embeddable bases alone: its executor side starts,
// and its driver side answers an ask with CodeUnimplemented.
func TestBasePlugins(t *testing.T) {
	var pcs contexts
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{basePlugin{&pcs}}, Logger: quiet})
	_, err := pcs.get("1").Ask(testCtx(t), text("anyone?"))
	if plugin.CodeOf(err) != plugin.CodeUnimplemented || !strings.Contains(err.Error(), "does not implement Receive (got a ember_test.text)") {
		t.Errorf("Ask to a BaseDriverPlugin: got %v, want CodeUnimplemented saying Receive is not implemented, naming the message's type", err)
	}
}

// basePlugin's sides are plugin.BaseDriverPlugin and
// plugin.BaseExecutorPlugin, with an executor Init that keeps its context
// for the test and then calls the base's.
type basePlugin struct{ pcs *contexts }

func (basePlugin) Name() string                            { return "bases" }
func (basePlugin) DriverPlugin() plugin.DriverPlugin       { return struct{ plugin.BaseDriverPlugin }{} }
func (p basePlugin) ExecutorPlugin() plugin.ExecutorPlugin { return baseExecutor{pcs: p.pcs} }

type baseExecutor struct {
	plugin.BaseExecutorPlugin
	pcs *contexts
}

func (e baseExecutor) Init(ctx context.Context, pc plugin.ExecutorContext, extra map[string]string) error {
	e.pcs.put(pc)
	return e.BaseExecutorPlugin.Init(ctx, pc, extra)
}

func named(name string) plugin.Plugin { return fakePlugin{name: name} }

var registered = func() bool {
	for _, n := range []string{"reg-a", "reg-b", "reg-c"} {
		plugin.Register(named(n))
	}
	return true
}()

// Spark: "merging of config options", and semantics 1.
func TestPluginNames(t *testing.T) {
	_ = registered
	tests := []struct {
		name     string
		defaults string
		plugins  string
		explicit []plugin.Plugin
		want     []string
		wantErr  string
	}{
		{name: "none", want: nil},
		{name: "defaults then conf then explicit", defaults: "reg-a", plugins: "reg-b", explicit: []plugin.Plugin{named("x")}, want: []string{"reg-a", "reg-b", "x"}},
		{name: "trimmed, empties dropped", plugins: " reg-b , ,reg-a,", want: []string{"reg-b", "reg-a"}},
		{name: "same plugin in both lists loaded once", defaults: "reg-a", plugins: "reg-a", want: []string{"reg-a"}},
		{name: "duplicates keep the first", defaults: "reg-c,reg-a", plugins: "reg-a,reg-b,reg-c", explicit: []plugin.Plugin{named("reg-b"), named("y")}, want: []string{"reg-c", "reg-a", "reg-b", "y"}},
		{name: "unknown name", plugins: "reg-a,nope", wantErr: `unknown plugin "nope" (forgotten import?`},
		{name: "invalid name", explicit: []plugin.Plugin{named("Bad Name")}, wantErr: `plugin name "Bad Name"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ember.PluginNames(ember.Config{
				Conf:    map[string]string{ember.ConfPluginsDefaults: tt.defaults, ember.ConfPlugins: tt.plugins},
				Plugins: tt.explicit,
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				// Run's code for the same cfg; PluginNames' was CodeUnknown.
				if got := plugin.CodeOf(err); got != plugin.CodeInvalidArgument {
					t.Errorf("got code %v, want %v", got, plugin.CodeInvalidArgument)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("got %q, %v; want %q, nil", got, err, tt.want)
			}
		})
	}
}

// twinPlugin is a plugin named "twin" of a comparable type (a pointer),
// so that listing one value twice can be told from listing two. It is
// not zero-sized: pointers to two zero-sized values may be equal.
type twinPlugin struct {
	plugin.BaseExecutorPlugin
	state int
}

func (*twinPlugin) Name() string                            { return "twin" }
func (*twinPlugin) DriverPlugin() plugin.DriverPlugin       { return nil }
func (p *twinPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return p }

// Two plugins of Config.Plugins with one name fail Run, naming the name
// and both types: the second used to be dropped with a warning, and Run
// went on without it. One value listed twice is one plugin, loaded once
// without a word (it used to be logged dropped).
func TestTwoPluginsWithOneNameAreRefused(t *testing.T) {
	one := &twinPlugin{state: 1}
	tests := []struct {
		name    string
		plugins []plugin.Plugin
		wantErr string // "": Run succeeds
	}{
		{"two types", []plugin.Plugin{named("twin"), &twinPlugin{}},
			`Config.Plugins holds two plugins named "twin", of types ember_test.fakePlugin and *ember_test.twinPlugin`},
		{"two values of one type", []plugin.Plugin{&twinPlugin{state: 1}, &twinPlugin{state: 2}},
			`Config.Plugins holds two plugins named "twin", of types *ember_test.twinPlugin and *ember_test.twinPlugin`},
		{"values that cannot be compared", []plugin.Plugin{named("twin"), named("twin")},
			`Config.Plugins holds two plugins named "twin", of types ember_test.fakePlugin and ember_test.fakePlugin`},
		{"one value twice", []plugin.Plugin{one, named("other"), one}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs logtest.Buffer
			cfg := ember.Config{Master: "local[1]", Plugins: tt.plugins, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			ran := false
			err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { ran = true; return nil })
			if tt.wantErr == "" {
				if err != nil || !ran {
					t.Fatalf("Run: got %v (function ran: %v), want nil, the function run", err, ran)
				}
				if got := logs.String(); strings.Contains(got, "plugin dropped") {
					t.Errorf("driver logs: got %q, want no plugin dropped", got)
				}
				if names, err := ember.PluginNames(cfg); err != nil || !slices.Equal(names, []string{"twin", "other"}) {
					t.Errorf("PluginNames: got %q, %v; want [twin other], nil", names, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tt.wantErr)
			}
			if got := plugin.CodeOf(err); got != plugin.CodeInvalidArgument {
				t.Errorf("Run: got code %v, want %v", got, plugin.CodeInvalidArgument)
			}
			if ran {
				t.Error("Run called the function, want a refusal before anything starts")
			}
			if _, perr := ember.PluginNames(cfg); perr == nil || perr.Error() != err.Error() {
				t.Errorf("PluginNames: got %v, want Run's error %v", perr, err)
			}
		})
	}
}

// mergedInits counts the inits of the "merged-once" plugin, registered
// once for the whole test binary (the registry is global; tests may run
// with -count).
var mergedInits struct{ driver, executor atomic.Int32 }

var mergedOnce = func() plugin.Plugin {
	p := fakePlugin{
		name: "merged-once",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
				mergedInits.driver.Add(1)
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(context.Context, plugin.ExecutorContext, map[string]string) error {
				mergedInits.executor.Add(1)
				return nil
			}}
		},
	}
	plugin.Register(p)
	return p
}()

// Spark: "merging of config options" end to end: a plugin listed in both
// lists is initialised once on each side.
func TestMergedListsInitOnce(t *testing.T) {
	mergedInits.driver.Store(0)
	mergedInits.executor.Store(0)
	embertest.Start(t, ember.Config{
		Master:  "local[1]",
		Conf:    map[string]string{ember.ConfPluginsDefaults: "merged-once", ember.ConfPlugins: "merged-once"},
		Plugins: []plugin.Plugin{mergedOnce},
		Logger:  quiet,
	})
	if d, e := mergedInits.driver.Load(), mergedInits.executor.Load(); d != 1 || e != 1 {
		t.Errorf("inits: driver %d, executor %d; want 1, 1", d, e)
	}
}

// Semantics 3: driver inits in order; an error fails Run naming the
// plugin, shuts down the initialised ones in reverse, and starts no
// executor.
func TestDriverInitFailure(t *testing.T) {
	var rec recorder
	mk := func(name string, fail bool) plugin.Plugin {
		return fakePlugin{
			name: name,
			newDriver: func() plugin.DriverPlugin {
				return &fakeDriver{
					InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
						rec.add("init " + name)
						if fail {
							return nil, errors.New("boom")
						}
						return nil, nil
					},
					ShutdownF: func(context.Context) error { rec.add("shutdown " + name); return nil },
				}
			},
			newExecutor: func() plugin.ExecutorPlugin {
				return &fakeExecutor{InitF: func(context.Context, plugin.ExecutorContext, map[string]string) error {
					rec.add("executor init " + name)
					return nil
				}}
			},
		}
	}
	called := false
	err := ember.Run(testCtx(t), ember.Config{
		Master:  "local[1]",
		Plugins: []plugin.Plugin{mk("a", false), mk("b", false), mk("c", true), mk("d", false)},
		Logger:  quiet,
	}, func(context.Context, *ember.Driver) error { called = true; return nil })
	if err == nil || !strings.Contains(err.Error(), `"c"`) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Run: got %v, want an error naming plugin \"c\" and its cause", err)
	}
	if called {
		t.Error("driver function ran after a failed driver init")
	}
	want := []string{"init a", "init b", "init c", "shutdown b", "shutdown a"}
	if got := rec.get(); !slices.Equal(got, want) {
		t.Errorf("events: got %q, want %q", got, want)
	}
}

// Semantics 4 and 5: each executor gets exactly its plugin's extraConf
// (empty, not nil, when there is none), inits run in list order, and
// shutdowns in reverse on both sides, executors first.
func TestLifecycleOrderAndExtraConf(t *testing.T) {
	var rec recorder
	mk := func(name string, extra map[string]string) plugin.Plugin {
		return fakePlugin{
			name: name,
			newDriver: func() plugin.DriverPlugin {
				return &fakeDriver{
					InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
						rec.add("driver init " + name)
						return extra, nil
					},
					ReceiveF: func(_ context.Context, msg any) (any, error) {
						rec.add(fmt.Sprintf("driver %s received %v", name, msg))
						return nil, nil
					},
					ShutdownF: func(context.Context) error { rec.add("driver shutdown " + name); return nil },
				}
			},
			newExecutor: func() plugin.ExecutorPlugin {
				var pc plugin.ExecutorContext
				return &fakeExecutor{
					InitF: func(_ context.Context, c plugin.ExecutorContext, e map[string]string) error {
						pc = c
						if e == nil {
							rec.add("executor init " + name + " nil extraConf")
						}
						rec.add(fmt.Sprintf("executor init %s %v", name, e))
						return nil
					},
					ShutdownF: func(ctx context.Context) error {
						rec.add("executor shutdown " + name)
						return pc.Send(ctx, text("bye from "+name))
					},
				}
			},
		}
	}
	c := embertest.Start(t, ember.Config{
		Master: "local[1]",
		Plugins: []plugin.Plugin{
			mk("p1", map[string]string{"k": "one"}),
			mk("p2", nil),
			mk("p3", map[string]string{"k": "three"}),
		},
		Logger: quiet,
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"driver init p1", "driver init p2", "driver init p3",
		"executor init p1 map[k:one]", "executor init p2 map[]", "executor init p3 map[k:three]",
		"executor shutdown p3", "executor shutdown p2", "executor shutdown p1",
		"driver p3 received bye from p3", "driver p2 received bye from p2", "driver p1 received bye from p1",
		"driver shutdown p3", "driver shutdown p2", "driver shutdown p1",
	}
	got := rec.get()
	// The three lanes deliver the goodbyes independently; compare them as
	// a set and everything else in order.
	isBye := func(s string) bool { return strings.Contains(s, "received bye") }
	if !slices.Equal(slices.DeleteFunc(slices.Clone(got), isBye), slices.DeleteFunc(slices.Clone(want), isBye)) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
	gotBye, wantBye := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return !isBye(s) }), want[9:12]
	slices.Sort(gotBye)
	wantBye = slices.Clone(wantBye)
	slices.Sort(wantBye)
	if !slices.Equal(gotBye, wantBye) {
		t.Errorf("goodbyes: got %q, want %q", gotBye, wantBye)
	}
	// Every goodbye arrives before any driver shutdown.
	lastBye := slices.IndexFunc(got, func(s string) bool { return strings.HasPrefix(s, "driver shutdown") })
	for i, s := range got {
		if isBye(s) && i > lastBye {
			t.Errorf("%q came after a driver shutdown", s)
		}
	}
}

// Semantics 5: an executor init error ends that executor; Run reports the
// executor ID, plugin name and error, keeping the error's code (it was
// only in the text, and plugin.CodeOf said Unknown).
func TestExecutorInitFailure(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode plugin.Code
	}{
		{"plain", errors.New("no disk"), plugin.CodeUnknown},
		{"coded", plugin.Errorf(plugin.CodeInvalidArgument, "no disk"), plugin.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fakePlugin{
				name:      "fragile",
				newDriver: func() plugin.DriverPlugin { return &fakeDriver{} },
				newExecutor: func() plugin.ExecutorPlugin {
					return &fakeExecutor{InitF: func(context.Context, plugin.ExecutorContext, map[string]string) error {
						return tt.err
					}}
				},
			}
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet},
				func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
			for _, want := range []string{"executor 1", `"fragile"`, "no disk"} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Run: got %v, want an error containing %q", err, want)
				}
			}
			if got := plugin.CodeOf(err); got != tt.wantCode {
				t.Errorf("Run's error: got code %v, want %v (%v)", got, tt.wantCode, err)
			}
		})
	}
}

// Semantics 6: sends from one executor reach the plugin in order, one
// Receive at a time.
func TestSendOrderAndSerialReceive(t *testing.T) {
	const n = 5000
	var (
		active, maxActive atomic.Int32
		mu                = make(chan struct{}, 1)
		seen              = map[string][]int{}
		done              = make(chan struct{})
		total             int
		pcs               contexts
	)
	p := fakePlugin{
		name: "order",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(ctx context.Context, msg any) (any, error) {
				if a := active.Add(1); a > maxActive.Load() {
					maxActive.Store(a)
				}
				defer active.Add(-1)
				id, _ := plugin.SenderID(ctx)
				mu <- struct{}{}
				seen[id] = append(seen[id], int(msg.(number)))
				total++
				if total == 2*n {
					close(done)
				}
				<-mu
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: pcs.init}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	ctx := testCtx(t)
	errc := make(chan error, 2)
	for _, id := range []string{"1", "2"} {
		go func() {
			pc := pcs.get(id)
			for i := range n {
				if err := pc.Send(ctx, number(i)); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("only %d of %d messages arrived", total, 2*n)
	}
	for id, got := range seen {
		for i, v := range got {
			if v != i {
				t.Fatalf("executor %s: message %d is %d; out of order", id, i, v)
			}
		}
	}
	if got := maxActive.Load(); got != 1 {
		t.Errorf("concurrent Receive calls: got %d, want 1", got)
	}
}

// Semantics 6: each plugin has its own lane; a blocked plugin does not
// delay another. A ConcurrentReceiver gets concurrent calls.
func TestLanesAreIndependent(t *testing.T) {
	release := make(chan struct{})
	inSlow := make(chan struct{}, 4)
	var pcs contexts
	slow := fakePlugin{
		name: "slow",
		newDriver: func() plugin.DriverPlugin {
			return &concurrentDriver{n: 2, fakeDriver: fakeDriver{ReceiveF: func(ctx context.Context, msg any) (any, error) {
				inSlow <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, nil
			}}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: pcs.init}
		},
	}
	var fastPC contexts
	fast := fakePlugin{
		name: "fast",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(_ context.Context, msg any) (any, error) { return msg, nil }}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: fastPC.init}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{slow, fast}, Logger: quiet})
	ctx := testCtx(t)
	defer close(release)
	for range 2 {
		if err := pcs.get("1").Send(ctx, text("hold")); err != nil {
			t.Fatal(err)
		}
	}
	// Both sends are in Receive at once: the plugin opted into 2.
	<-inSlow
	<-inSlow
	got, err := plugin.Ask[number](ctx, fastPC.get("1"), number(7))
	if err != nil || got != 7 {
		t.Fatalf("Ask to the fast plugin while the slow one is blocked: got %v, %v; want 7, nil", got, err)
	}
}

// An extraConf too big to hand to executors fails Run at start-up, naming
// the plugin, instead of failing every executor at connect.
func TestExtraConfTooBig(t *testing.T) {
	p := fakePlugin{
		name: "bloated",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
				return map[string]string{"blob": strings.Repeat("x", 64<<10)}, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{} },
	}
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, MaxMessageBytes: 32 << 10},
		func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
	if plugin.CodeOf(err) != plugin.CodeResourceExhausted || !strings.Contains(err.Error(), `"bloated"`) {
		t.Errorf("got %v, want ResourceExhausted naming the plugin", err)
	}
}

// Configuration that executors could not be handed (its strings go out as
// protobuf strings, and the driver's proof binds their encoding) fails Run
// at start-up with an error naming the key, and the driver plugins already
// initialised are shut down.
func TestConfNotUTF8(t *testing.T) {
	tests := []struct {
		name      string
		conf      map[string]string
		extraConf map[string]string
		appName   string
		contains  string
	}{
		{name: "Conf value", conf: map[string]string{"ok": "yes", "path": "/tmp/\xff"}, contains: `Conf key "path"`},
		{name: "Conf key", conf: map[string]string{"k\xfe": "v"}, contains: `Conf key "k\xfe"`},
		{name: "extraConf value", extraConf: map[string]string{"token": "\xc3"}, contains: `driver plugin "conf": extraConf key "token"`},
		{name: "AppName", appName: "app\xff", contains: "AppName"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var shutdown atomic.Bool
			p := fakePlugin{
				name: "conf",
				newDriver: func() plugin.DriverPlugin {
					return &fakeDriver{
						InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
							return tt.extraConf, nil
						},
						ShutdownF: func(context.Context) error { shutdown.Store(true); return nil },
					}
				},
				newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{} },
			}
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", AppName: tt.appName, Conf: tt.conf, Plugins: []plugin.Plugin{p}, Logger: quiet},
				func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
			if plugin.CodeOf(err) != plugin.CodeInvalidArgument || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("got %v, want InvalidArgument containing %q", err, tt.contains)
			}
			if !shutdown.Load() {
				t.Error("the driver plugin was not shut down")
			}
		})
	}
}

// Run refuses values of Ember's own configuration keys that do not parse
// or are out of range, naming every such key, before any plugin code runs.
func TestBadConfFailsRun(t *testing.T) {
	tests := []struct {
		name     string
		conf     map[string]string
		contains []string
	}{
		{"maxFailures not a number", map[string]string{ember.ConfMaxTaskFailures: "four"}, []string{`ember.task.maxFailures="four": not an integer`}},
		{"maxFailures zero", map[string]string{ember.ConfMaxTaskFailures: "0"}, []string{"ember.task.maxFailures=0: want at least 1"}},
		{"slots negative", map[string]string{ember.ConfExecutorSlots: "-2"}, []string{"ember.executor.slots=-2: want at least 1"}},
		{"executor retries below -1", map[string]string{ember.ConfExecutorMaxRetries: "-2"}, []string{"ember.executor.maxRetries=-2: want at least -1"}},
		{"executor retries not a number", map[string]string{ember.ConfExecutorMaxRetries: "ten"}, []string{`ember.executor.maxRetries="ten": not an integer`}},
		// More TASKs at once than a connection queues: the driver's first
		// Map lost its executor ("the peer is not reading").
		{"slots beyond a connection's queue", map[string]string{ember.ConfExecutorSlots: "200000"}, []string{"ember.executor.slots=200000: want at most 16384"}},
		{"metrics interval without unit", map[string]string{ember.ConfMetricsInterval: "5"}, []string{`ember.metrics.interval="5": not a duration`}},
		{"metrics interval zero", map[string]string{ember.ConfMetricsInterval: "0s"}, []string{"ember.metrics.interval=0s: want at least 10ms"}},
		// An executor spun shipping its metrics (131% CPU at 1ns).
		{"metrics interval in nanoseconds", map[string]string{ember.ConfMetricsInterval: "1ns"}, []string{"ember.metrics.interval=1ns: want at least 10ms"}},
		{"progress switch", map[string]string{ember.ConfShowProgress: "off"}, []string{`ember.ui.showConsoleProgress="off": want true or false`}},
		{"discovery without a command", map[string]string{ember.ConfResourceDiscoveryScript("gpu"): "  "}, []string{"ember.executor.resource.gpu.discoveryScript: no discovery command"}},
		{"discovery without a name", map[string]string{ember.ConfResourceDiscoveryScript(""): "/bin/true"}, []string{"ember.executor.resource..discoveryScript: no resource name"}},
		{"every bad key named", map[string]string{ember.ConfExecutorSlots: "0", ember.ConfMetricsInterval: "soon"}, []string{"ember.executor.slots=0", "ember.metrics.interval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var inits atomic.Int32
			p := countingPlugin("conf", &inits)
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Conf: tt.conf, Plugins: []plugin.Plugin{p}, Logger: quiet},
				func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
			if plugin.CodeOf(err) != plugin.CodeInvalidArgument {
				t.Fatalf("got %v, want CodeInvalidArgument", err)
			}
			for _, c := range tt.contains {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("got %v, want it to contain %q", err, c)
				}
			}
			// The code once, in front: plugin.Conf's errors carry it too.
			if n := strings.Count(err.Error(), plugin.CodeInvalidArgument.String()); n != 1 {
				t.Errorf("got %v, want %q named once, in front", err, plugin.CodeInvalidArgument)
			}
			if n := inits.Load(); n != 0 {
				t.Errorf("plugin Init ran %d times, want 0", n)
			}
		})
	}
}

// A Config that Run cannot use fails with CodeInvalidArgument, like a
// bad Conf value: the master and plugin names returned plain errors.
func TestBadConfigFailsRun(t *testing.T) {
	tests := []struct {
		name string
		cfg  ember.Config
		want string
	}{
		{"master", ember.Config{Master: "local[0]"}, `master "local[0]": want local[N]`},
		{"plugin name", ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{named("Bad Name")}}, `plugin name "Bad Name"`},
		{"unknown registered plugin", ember.Config{Master: "local[1]", Conf: map[string]string{ember.ConfPlugins: "no-such-plugin"}}, "no-such-plugin"},
		// Under a millisecond, executors were told an interval of 0 and
		// lost at once ("peer silent for 0s (heartbeat timeout 10µs)").
		{"heartbeat interval in nanoseconds", ember.Config{Master: "local[1]", HeartbeatInterval: 1000}, "Config.HeartbeatInterval=1µs: want at least 1ms"},
		{"heartbeat interval under a millisecond", ember.Config{Master: "local[1]", HeartbeatInterval: 500 * time.Microsecond}, "Config.HeartbeatInterval=500µs: want at least 1ms"},
		// Every idle executor of a healthy cluster was lost within a few
		// intervals, and Run returned nil. Setting only the timeout,
		// below the default 1s interval, is the likely way there.
		{"heartbeat timeout alone, below the default interval", ember.Config{Master: "local[1]", HeartbeatTimeout: 500 * time.Millisecond}, "Config.HeartbeatTimeout=500ms: want more than Config.HeartbeatInterval (1s)"},
		{"heartbeat timeout below the interval", ember.Config{Master: "local[1]", HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: 150 * time.Millisecond}, "Config.HeartbeatTimeout=150ms: want more than"},
		{"heartbeat timeout equal to the interval", ember.Config{Master: "local[1]", HeartbeatInterval: 2 * time.Second, HeartbeatTimeout: 2 * time.Second}, "Config.HeartbeatTimeout=2s: want more than"},
		// gRPC frames a message with a 32-bit length: 4 GiB was taken,
		// and a message that size would have failed in the transport.
		{"message limit over 1 GiB", ember.Config{Master: "local[1]", MaxMessageBytes: 4 << 30}, "Config.MaxMessageBytes=4294967296: want at most 1073741824 (1 GiB)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = quiet
			err := ember.Run(testCtx(t), tt.cfg, func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
			if plugin.CodeOf(err) != plugin.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want CodeInvalidArgument saying %q", err, tt.want)
			}
		})
	}
}

// A local master that starts more executors than Config.MaxExecutors lets
// connect fails Run at once, naming both numbers. Run used to start them
// all and fail only once the driver had refused one, with an error about
// the refusal (ResourceExhausted) rather than the Config; local[100000]
// with a 5s ctx took about two minutes to return.
func TestLocalMasterOverMaxExecutorsFailsRun(t *testing.T) {
	tests := []struct {
		master string
		max    int
		want   string // "": Run succeeds
	}{
		{"local[3]", 2, `Config.Master "local[3]" starts 3 executors, more than Config.MaxExecutors (2) lets connect`},
		{"local-cluster[3]", 2, `Config.Master "local-cluster[3]" starts 3 executors, more than Config.MaxExecutors (2) lets connect`},
		{"local[10001]", 0, `Config.Master "local[10001]" starts 10001 executors, more than Config.MaxExecutors (10000) lets connect`},
		{"local[2]", 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.master, func(t *testing.T) {
			t.Parallel()
			// Short, so that a refusal that is not made up front fails
			// the test in seconds, not minutes.
			cfg := ember.Config{Master: tt.master, MaxExecutors: tt.max, StartTimeout: 5 * time.Second,
				ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet}
			ran := false
			err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { ran = true; return nil })
			if tt.want == "" {
				if err != nil || !ran {
					t.Fatalf("Run: got %v (function ran: %v), want nil, the function run", err, ran)
				}
				return
			}
			if plugin.CodeOf(err) != plugin.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: got %v, want CodeInvalidArgument saying %q", err, tt.want)
			}
			if ran {
				t.Error("Run called the function, want a refusal before anything starts")
			}
		})
	}
}

// A negative duration or limit is refused, naming it, not read as unset
// and replaced by its default (a computed StartTimeout gone below zero
// ran with a minute's).
func TestNegativeLimitsFailRun(t *testing.T) {
	tests := []struct {
		name string
		set  func(*ember.Config)
		want string
	}{
		{"MinExecutors", func(c *ember.Config) { c.MinExecutors = -1 }, "MinExecutors=-1"},
		{"MaxExecutors", func(c *ember.Config) { c.MaxExecutors = -2 }, "MaxExecutors=-2"},
		{"MaxMessageBytes", func(c *ember.Config) { c.MaxMessageBytes = -1 }, "MaxMessageBytes=-1"},
		{"MaxOutstandingAsks", func(c *ember.Config) { c.MaxOutstandingAsks = -1 }, "MaxOutstandingAsks=-1"},
		{"SendWindow", func(c *ember.Config) { c.SendWindow = -1 }, "SendWindow=-1"},
		{"SendQueue", func(c *ember.Config) { c.SendQueue = -1 }, "SendQueue=-1"},
		{"LaneQueue", func(c *ember.Config) { c.LaneQueue = -1 }, "LaneQueue=-1"},
		{"HeartbeatInterval", func(c *ember.Config) { c.HeartbeatInterval = -time.Second }, "HeartbeatInterval=-1s"},
		{"HeartbeatTimeout", func(c *ember.Config) { c.HeartbeatTimeout = -time.Second }, "HeartbeatTimeout=-1s"},
		{"StartTimeout", func(c *ember.Config) { c.StartTimeout = -time.Millisecond }, "StartTimeout=-1ms"},
		{"ShutdownTimeout", func(c *ember.Config) { c.ShutdownTimeout = -time.Second }, "ShutdownTimeout=-1s"},
		{"HandshakeTimeout", func(c *ember.Config) { c.HandshakeTimeout = -time.Second }, "HandshakeTimeout=-1s"},
	}
	// Every integer or duration of Config is covered: one added later is
	// refused when negative too (as the doc of Config says).
	covered := make(map[string]bool)
	for _, tt := range tests {
		covered[tt.name] = true
	}
	for f := range reflect.TypeFor[ember.Config]().Fields() {
		if k := f.Type.Kind(); (k == reflect.Int || k == reflect.Int64) && !covered[f.Name] {
			t.Errorf("Config.%s (%v) is not in the table: want a negative one refused", f.Name, f.Type)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ember.Config{Master: "standalone", InsecureNoAuth: true, Logger: quiet}
			tt.set(&cfg)
			err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
			if plugin.CodeOf(err) != plugin.CodeInvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run with %s negative: got %v, want InvalidArgument saying %q", tt.name, err, tt.want)
			}
		})
	}
}

// A key in Ember's namespace that Ember does not know (a typo, as
// "ember.executor.slot", or a known key in the wrong case) is ignored with
// a warning naming it; it used to be ignored without a word. Known keys
// and others' are not mentioned.
func TestUnknownEmberConfIsWarnedOf(t *testing.T) {
	var logs logtest.Buffer
	conf := map[string]string{
		"ember.executor.slot":                  "2", // the typo
		"Ember.Executor.MaxRetries":            "1", // keys are case-sensitive
		ember.ConfExecutorSlots:                "2",
		ember.ConfResourceDiscoveryScript("x"): "/bin/true",
		"myapp.batch":                          "10",
	}
	// The executor fails (/bin/true prints no resource): the warning
	// comes before any executor starts.
	_ = ember.Run(testCtx(t), ember.Config{Master: "local[1]", Conf: conf, Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		func(context.Context, *ember.Driver) error { return nil })
	var warning string
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "does not know") {
			warning = line
		}
	}
	if !strings.Contains(warning, `keys="[Ember.Executor.MaxRetries ember.executor.slot]"`) || strings.Contains(warning, "myapp") {
		t.Errorf("warning: %q, want it to name Ember.Executor.MaxRetries and ember.executor.slot only", warning)
	}
}

// Resources too many to report in one message (a discovery command
// listing 20,000 addresses, over a 64 KiB limit) fail start-up with an
// error saying so. The executor used to send them anyway, and start-up
// failed with gRPC's "received message larger than max".
func TestTooManyResourcesFailStartUp(t *testing.T) {
	addrs := make([]string, 20000)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("%08d", i)
	}
	out, err := json.Marshal(map[string]any{"name": "gpu", "addresses": addrs})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "gpus.json")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	err = ember.Run(testCtx(t), ember.Config{Master: "local[1]", Logger: quiet, MaxMessageBytes: 64 << 10,
		Conf: map[string]string{ember.ConfResourceDiscoveryScript("gpu"): "cat " + file}},
		func(context.Context, *ember.Driver) error {
			t.Error("the driver function ran")
			return nil
		})
	if want := "the resources discovered take 200011 bytes, over the 65536-byte message limit"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: got %v, want an error containing %q", err, want)
	}
}

// A driver address that cannot be bound fails Run, which leaves nothing
// running: the driver plugins' lanes used to be left behind.
func TestListenFailureLeavesNothingRunning(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	before := goleak.IgnoreCurrent()
	p := fakePlugin{name: "p", newDriver: func() plugin.DriverPlugin { return &fakeDriver{} }}
	err = ember.Run(testCtx(t), ember.Config{Master: "local[1]", ListenAddr: busy.Addr().String(), Plugins: []plugin.Plugin{p}, Logger: quiet},
		func(context.Context, *ember.Driver) error {
			t.Error("the driver function ran")
			return nil
		})
	if err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Run on a busy address: got %v, want the listen error", err)
	}
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left by the failed Run: %v", err)
	}
}

// Each caller of Driver.Executors gets its own copy of the executors'
// resources: the driver's own map and slices used to be handed out, so one
// caller's edit changed what everyone saw (and raced with their reads).
func TestExecutorsResourcesAreCopies(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Conf: map[string]string{
		ember.ConfResourceDiscoveryScript("gpu"): `echo {"name":"gpu","addresses":["0","1"]}`,
	}})
	first := c.Driver.Executors()
	first[0].Resources["gpu"].Addresses[0] = "changed"
	delete(first[0].Resources, "gpu")
	if got := c.Driver.Executors()[0].Resources["gpu"].Addresses; !slices.Equal(got, []string{"0", "1"}) {
		t.Errorf("gpu addresses after a caller edited its copy: got %v, want [0 1]", got)
	}
}

// The values Run accepts for the same keys start the application.
func TestGoodConfRuns(t *testing.T) {
	conf := map[string]string{
		ember.ConfMaxTaskFailures:                "1",
		ember.ConfExecutorSlots:                  "3",
		ember.ConfMetricsInterval:                "250ms",
		ember.ConfShowProgress:                   "0",
		ember.ConfResourceDiscoveryScript("gpu"): `echo {"name":"gpu","addresses":["7"]}`,
	}
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Conf: conf, Logger: quiet},
		func(ctx context.Context, d *ember.Driver) error {
			execs := d.Executors()
			if len(execs) != 1 {
				return fmt.Errorf("executors: got %d, want 1", len(execs))
			}
			if got := execs[0].Resources["gpu"].Addresses; !slices.Equal(got, []string{"7"}) {
				return fmt.Errorf("gpu addresses: got %v, want [7]", got)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
}

// The registered plugin merged-once, enabled by the configuration and
// passed in Config.Plugins too (Spark's merging, TestMergedListsInitOnce),
// is one plugin, not two with one name: nothing is dropped.
func TestMergedPluginIsNotLoggedDropped(t *testing.T) {
	var logs logtest.Buffer
	cfg := ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{mergedOnce},
		Conf:   map[string]string{ember.ConfPlugins: "merged-once"},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	if err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := logs.String(); strings.Contains(got, "plugin dropped") {
		t.Errorf("driver logs: got %q, want no plugin dropped", got)
	}
}

// heldPlugin is a registered plugin whose value holds its driver side, so
// that a program can keep one to reach the driver side from its function
// (as examples/dynamicconfig does with a plugin of its own).
type heldPlugin struct{ d *fakeDriver }

func (heldPlugin) Name() string                          { return "held" }
func (p heldPlugin) DriverPlugin() plugin.DriverPlugin   { return p.d }
func (heldPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return nil }

var heldRegistered = func() heldPlugin {
	p := heldPlugin{&fakeDriver{}}
	plugin.Register(p)
	return p
}()

// A registered plugin that the configuration enables, and that
// Config.Plugins lists too as another value of its type, is the
// registered one (the first); the program's value, whose driver side is
// never initialised, is dropped with a warning, as any plugin of
// Config.Plugins dropped for its name is. The very value registered merges
// quietly (TestMergedPluginIsNotLoggedDropped).
func TestMergedPluginOtherValueIsLoggedDropped(t *testing.T) {
	for _, tt := range []struct {
		name     string
		explicit heldPlugin
		want     int // "plugin dropped" warnings
	}{
		{"the registered value", heldRegistered, 0},
		{"another value", heldPlugin{&fakeDriver{}}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			cfg := ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{tt.explicit},
				Conf:   map[string]string{ember.ConfPluginsDefaults: "held"},
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			if err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { return nil }); err != nil {
				t.Fatal(err)
			}
			got := logs.String()
			if n := strings.Count(got, "plugin dropped"); n != tt.want || tt.want > 0 && !strings.Contains(got, "plugin=held") {
				t.Errorf("driver logs: got %d warnings of plugin held dropped, want %d: %q", n, tt.want, got)
			}
		})
	}
}

// A driver plugin's extraConf is what its Init returned, and Conf what
// Run was given. A plugin that returns a map it keeps using (its live
// settings, say, as a dynamic configuration plugin would), or a program
// that goes on using its Conf map, and changes it later must not change
// what executors receive, nor race with the driver encoding it for each
// executor's WELCOME (nor slip past the checks made at start-up). The
// driver kept the maps themselves, so executors got whatever they held
// when they connected (and with -race, the write raced the encoding).
func TestExtraConfIsCopiedWhenInitReturns(t *testing.T) {
	live := map[string]string{"level": "info"}
	conf := map[string]string{"app.level": "info"}
	var mu sync.Mutex
	got := map[string]string{}
	owner := fakePlugin{
		name: "owner",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
				return live, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, extra map[string]string) error {
				mu.Lock()
				got[pc.ExecutorID()] = extra["level"] + " " + pc.Conf().Get("app.level")
				mu.Unlock()
				return nil
			}}
		},
	}
	// The owner changes its map after its Init has returned (here from
	// the next plugin's Init, so that the test is deterministic).
	later := fakePlugin{
		name: "later",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
				live["level"] = "debug"
				conf["app.level"] = "debug"
				return nil, nil
			}}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[2]", Conf: conf, Plugins: []plugin.Plugin{owner, later}, Logger: quiet})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, v := range got {
		if v != "info info" {
			t.Errorf("executor %s got extraConf and Conf levels %q, want %q (what Init returned, and Run was given)", id, v, "info info")
		}
	}
}

// A local[N] start-up that fails before its in-process executors have
// connected returns at once: the driver cannot release executors it never
// welcomed, and they used to dial the closed driver until Run's shutdown
// gave up on them a whole ShutdownTimeout later (local-cluster kills such
// executors at once). Seen as a local[2] start-up, one executor's Init
// failing, that took 30s to fail now and then: the other had not dialled
// yet. Here Run's ctx ends during the driver plugins' Init (Ctrl-C during
// start-up).
func TestLocalStartFailureDoesNotWaitForUnconnectedExecutors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := fakePlugin{name: "stopper", newDriver: func() plugin.DriverPlugin {
		return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
			cancel()
			return nil, nil
		}}
	}}
	start := time.Now()
	err := ember.Run(ctx, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet, ShutdownTimeout: time.Minute},
		func(context.Context, *ember.Driver) error { return nil })
	if err == nil {
		t.Fatal("Run succeeded with its ctx canceled during start-up")
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("a start-up failure took %v to return (ShutdownTimeout 1m): %v", took, err)
	}
}

// Each call of ExecutorContext.Resources gives its caller a copy: one
// plugin's edit of its copy must not change what the executor's other
// plugins, or the driver, see.
func TestExecutorContextResourcesAreCopies(t *testing.T) {
	var got []string
	edit := fakePlugin{name: "edit", newExecutor: func() plugin.ExecutorPlugin {
		return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
			pc.Resources()["gpu"].Addresses[0] = "changed"
			got = pc.Resources()["gpu"].Addresses
			return nil
		}}
	}}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Plugins: []plugin.Plugin{edit}, Conf: map[string]string{
		ember.ConfResourceDiscoveryScript("gpu"): `echo {"name":"gpu","addresses":["0","1"]}`,
	}})
	want := []string{"0", "1"}
	if !slices.Equal(got, want) {
		t.Errorf("ExecutorContext.Resources after a plugin edited its copy: got %v, want %v", got, want)
	}
	if d := c.Driver.Executors()[0].Resources["gpu"].Addresses; !slices.Equal(d, want) {
		t.Errorf("driver's ExecutorInfo.Resources after an executor plugin edited its copy: got %v, want %v", d, want)
	}
}

// A standalone executor started before its driver warns that it cannot
// connect yet, and says so once it has: the warning used to be its last
// word while it went on working, and an operator reading its log took it
// for one still waiting.
func TestExecutorSaysItConnectedAfterWarning(t *testing.T) {
	const secret = "connect late secret"
	addr := freeAddr(t)
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	joined := make(chan struct{})
	execErr := make(chan error, 1)
	go func() {
		execErr <- executor.Run(ctx, executor.Config{DriverAddr: addr, Secret: secret, BuildID: "test", Tasks: ember.Tasks(),
			Logger: slog.New(slog.NewTextHandler(&logs, nil)), ConnectTimeout: time.Minute,
			OnWelcome: func(string) { close(joined) }})
	}()
	embertest.WaitFor(t, "the warning", func() bool { return strings.Contains(logs.String(), "cannot connect to the driver yet") })
	if strings.Contains(logs.String(), "connected to the driver") {
		t.Fatalf("got %q before the driver started, want no word of a connection", logs.String())
	}
	standalone(t, ember.Config{ListenAddr: addr, Secret: secret, BuildID: "test"})
	select {
	case <-joined:
	case err := <-execErr:
		t.Fatalf("the executor ended before it joined: %v", err)
	}
	embertest.WaitFor(t, "the connection logged", func() bool { return strings.Contains(logs.String(), "connected to the driver") })
	if got := logs.String(); !strings.Contains(got, "executor=1") || !strings.Contains(got, addr) {
		t.Errorf("got %q, want the connection logged with the executor's ID and the driver's address", got)
	}
	cancel()
	if err := <-execErr; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("executor: got %v, want it stopped by its ctx", err)
	}
}

// keeper is a plugin that keeps the executor sides it makes, as a test of
// in-process executors does, without a lock of its own: plugin.Plugin says
// ExecutorPlugin is called one call at a time.
type keeper struct {
	sides         []*keeperSide // unguarded on purpose
	inFlight, max atomic.Int32
}

type keeperSide struct{ plugin.BaseExecutorPlugin }

func (*keeper) Name() string                      { return "keeper" }
func (*keeper) DriverPlugin() plugin.DriverPlugin { return nil }
func (k *keeper) ExecutorPlugin() plugin.ExecutorPlugin {
	n := k.inFlight.Add(1)
	defer k.inFlight.Add(-1)
	for m := k.max.Load(); n > m && !k.max.CompareAndSwap(m, n); m = k.max.Load() {
	}
	s := &keeperSide{}
	for range 100 { // a constructor's work: room for another to overlap
		runtime.Gosched()
	}
	k.sides = append(k.sides, s)
	return s
}

// The executors of local[N] share the process, and used to call
// ExecutorPlugin from their own goroutines at once: a plugin keeping its
// sides raced.
func TestExecutorPluginCalledOneAtATime(t *testing.T) {
	tests := []struct{ master string }{{"local[8]"}, {"local[2]"}}
	for _, tt := range tests {
		t.Run(tt.master, func(t *testing.T) {
			k := &keeper{}
			c := embertest.Start(t, ember.Config{Master: tt.master, Plugins: []plugin.Plugin{k}, Logger: quiet})
			n := len(c.Driver.Executors())
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if got := k.max.Load(); got != 1 {
				t.Errorf("ExecutorPlugin calls at once: got %d, want 1", got)
			}
			if got := len(k.sides); got != n {
				t.Errorf("sides kept: got %d, want %d", got, n)
			}
		})
	}
}

// A driver whose ctx ends while it waits for its executors (a SIGTERM as
// the service starts) returns an error that matches the ctx's, without
// calling fn, so that main can tell a stop from a failure.
func TestRunCtxEndingDuringStartUp(t *testing.T) {
	for _, master := range []string{"standalone", "local[1]"} {
		t.Run(master, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
			defer cancel()
			cfg := ember.Config{Master: master, ListenAddr: "127.0.0.1:0", Secret: "start-up secret", MinExecutors: 1, Logger: quiet}
			if master != "standalone" {
				// Its executor takes longer to initialise than ctx lasts.
				cfg.Plugins = []plugin.Plugin{fakePlugin{name: "slow", newExecutor: func() plugin.ExecutorPlugin {
					return &fakeExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
						<-ctx.Done()
						return ctx.Err()
					}}
				}}}
			}
			err := ember.Run(ctx, cfg, func(context.Context, *ember.Driver) error {
				t.Error("fn ran")
				return nil
			})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run: got %v, want an error matching context.DeadlineExceeded", err)
			}
		})
	}
}
