package ember_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
)

// A panic in any plugin callback is recovered and reported with the plugin
// name; the process survives and the documented policy applies.
func TestPanicsInPluginCallbacks(t *testing.T) {
	type where int
	const (
		driverInit where = iota
		executorInit
		driverShutdown
		executorShutdown
		listener
		executorReceive
	)
	tests := []struct {
		name    string
		where   where
		wantErr string // in Run's error; "" for none
	}{
		{"driver Init fails Run", driverInit, `driver plugin "panicky": init: internal: plugin "panicky": panic in Init: boom`},
		{"executor Init ends the executor", executorInit, `internal: plugin "panicky": init: plugin "panicky": panic in Init: boom`},
		{"driver Shutdown is reported", driverShutdown, `driver plugin "panicky": shutdown: internal: plugin "panicky": panic in Shutdown: boom`},
		{"executor Shutdown is reported", executorShutdown, `internal: executor 1: plugin "panicky": shutdown: plugin "panicky": panic in Shutdown: boom`},
		{"listener is logged", listener, ""},
		{"executor Receive answers Internal", executorReceive, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			boom := func(w where) {
				if tt.where == w {
					panic("boom")
				}
			}
			var dc plugin.DriverContext
			p := fakePlugin{
				name: "panicky",
				newDriver: func() plugin.DriverPlugin {
					return &listeningDriver{
						fakeDriver: fakeDriver{
							InitF: func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) {
								dc = pc
								boom(driverInit)
								return nil, nil
							},
							ShutdownF: func(context.Context) error { boom(driverShutdown); return nil },
						},
						AddedF:   func(context.Context, plugin.ExecutorInfo) { boom(listener) },
						RemovedF: func(context.Context, plugin.ExecutorInfo, error) {},
					}
				},
				newExecutor: func() plugin.ExecutorPlugin {
					return &receivingExecutor{
						fakeExecutor: fakeExecutor{
							InitF:     func(context.Context, plugin.ExecutorContext, map[string]string) error { boom(executorInit); return nil },
							ShutdownF: func(context.Context) error { boom(executorShutdown); return nil },
						},
						ReceiveF: func(context.Context, any) (any, error) { boom(executorReceive); return text("fine"), nil },
					}
				},
			}
			var logs logtest.Buffer
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: slog.New(slog.NewTextHandler(&logs, nil))},
				func(ctx context.Context, d *ember.Driver) error {
					_, err := dc.AskExecutor(ctx, "1", text("hi"))
					if tt.where == executorReceive {
						if plugin.CodeOf(err) != plugin.CodeInternal || !strings.Contains(err.Error(), "panic in Receive: boom") {
							return fmt.Errorf("AskExecutor: got %v, want CodeInternal naming the panic", err)
						}
						// The executor keeps serving: the next ask is answered
						// too (with the same recovered panic).
						if _, err := plugin.AskExecutor[text](ctx, dc, "1", text("again")); plugin.CodeOf(err) != plugin.CodeInternal {
							return fmt.Errorf("second ask: got %v, want CodeInternal", err)
						}
						return nil
					}
					return err
				})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Run: got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Run: got %v, want an error containing %q", err, tt.wantErr)
			case tt.where == executorInit && strings.Count(err.Error(), "executor 1") != 1:
				// The driver names the executor; the READY's error did too.
				t.Errorf("Run: got %v, want executor 1 named once", err)
			case tt.where == executorInit && strings.Contains(logs.String(), "level=ERROR msg=\"executor lost"):
				// Its failure to initialise was logged; its going is no news.
				t.Errorf("driver logs: got %q, want no executor lost after the failure to initialise", logs.String())
			}
		})
	}
}

// sizedDriver answers the optional methods that size a driver plugin's
// lane and send window.
type sizedDriver struct {
	fakeDriver
	workers, window func() int
}

func (d *sizedDriver) MaxConcurrentReceives() int { return d.workers() }
func (d *sizedDriver) SendWindow() int            { return d.window() }

// A plugin whose DriverPlugin or ExecutorPlugin returns a nil pointer in a
// non-nil interface (a plugin value's zero form, say) fails Run naming the
// plugin, the method and the type: its Init used to run on nil and panic
// ("invalid memory address").
func TestNilPluginSides(t *testing.T) {
	tests := []struct {
		name    string
		p       plugin.Plugin
		wantErr string
	}{
		{"driver", fakePlugin{name: "nilly", newDriver: func() plugin.DriverPlugin { return (*fakeDriver)(nil) }},
			`driver plugin "nilly": invalid_argument: DriverPlugin returned a nil *ember_test.fakeDriver in a non-nil interface`},
		{"executor", fakePlugin{name: "nilly", newExecutor: func() plugin.ExecutorPlugin { return (*fakeExecutor)(nil) }},
			`invalid_argument: plugin "nilly": ExecutorPlugin returned a nil *ember_test.fakeExecutor in a non-nil interface`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{tt.p}, Logger: quiet},
				func(context.Context, *ember.Driver) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// A panic in the plugin code that builds a plugin (Plugin.DriverPlugin and
// ExecutorPlugin, and the methods that size its lane and window) fails Run
// with an error naming the plugin and method, and no plugin's Init runs on
// the side that failed.
func TestPanicsBuildingPlugins(t *testing.T) {
	tests := []struct {
		method  string
		wantErr string
	}{
		{"DriverPlugin", `driver plugin "panicky": internal: plugin "panicky": panic in DriverPlugin: boom`},
		{"MaxConcurrentReceives", `driver plugin "panicky": internal: plugin "panicky": panic in MaxConcurrentReceives: boom`},
		{"SendWindow", `driver plugin "panicky": internal: plugin "panicky": panic in SendWindow: boom`},
		{"ExecutorPlugin", `internal: plugin "panicky": plugin "panicky": panic in ExecutorPlugin: boom`},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			boom := func(method string) {
				if tt.method == method {
					panic("boom")
				}
			}
			var inits atomic.Int32 // Init calls of the healthy plugin, both sides
			healthy := countingPlugin("healthy", &inits)
			panicky := fakePlugin{
				name: "panicky",
				newDriver: func() plugin.DriverPlugin {
					boom("DriverPlugin")
					return &sizedDriver{
						workers: func() int { boom("MaxConcurrentReceives"); return 2 },
						window:  func() int { boom("SendWindow"); return 1 << 20 },
					}
				},
				newExecutor: func() plugin.ExecutorPlugin {
					boom("ExecutorPlugin")
					return &fakeExecutor{}
				},
			}
			ran := false
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{healthy, panicky}, Logger: quiet},
				func(context.Context, *ember.Driver) error { ran = true; return nil })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run: got %v, want an error containing %q", err, tt.wantErr)
			}
			if ran {
				t.Errorf("the driver function ran; want Run to fail before it")
			}
			// On the driver, nothing ran; on the executor, the driver
			// plugins' Init did, and no executor plugin's.
			wantInits := int32(0)
			if tt.method == "ExecutorPlugin" {
				wantInits = 1
			}
			if got := inits.Load(); got != wantInits {
				t.Errorf("healthy plugin's Init ran %d times, want %d", got, wantInits)
			}
		})
	}
}

// A Receive that returns a nil *plugin.Error as its error (the typed-nil
// mistake) gives the asker CodeUnknown naming the mistake, on either side,
// and a send's is logged; the process keeps serving. Handling one used to
// dereference the nil pointer and end the process.
func TestReceiveReturningNilPluginError(t *testing.T) {
	nilErr := func(context.Context, any) (any, error) {
		var e *plugin.Error
		return nil, e
	}
	p, dc, ec := receivingPlugin("typed-nil", nilErr)
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet},
		func(ctx context.Context, d *ember.Driver) error {
			want := "a nil *plugin.Error was returned as a non-nil error"
			for range 2 { // the second round shows both sides still serve
				if err := (*ec).Send(ctx, text("send")); err != nil {
					return fmt.Errorf("Send: %w", err)
				}
				_, err := (*ec).Ask(ctx, text("ask"))
				if plugin.CodeOf(err) != plugin.CodeUnknown || !strings.Contains(err.Error(), want) {
					return fmt.Errorf("Ask: got %v, want CodeUnknown containing %q", err, want)
				}
				_, err = (*dc).AskExecutor(ctx, "1", text("ask"))
				if plugin.CodeOf(err) != plugin.CodeUnknown || !strings.Contains(err.Error(), want) {
					return fmt.Errorf("AskExecutor: got %v, want CodeUnknown containing %q", err, want)
				}
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
}

// A Receive still running at shutdown is bounded by ShutdownTimeout on
// either side: a handler that waits on its ctx sees it end, and one that
// ignores it is abandoned, so Run returns, with an error saying what
// overran. The executor used to wait for its lanes with the handlers' ctx
// still live, and Run never returned.
func TestShutdownWithReceiveStillRunning(t *testing.T) {
	tests := []struct {
		name       string
		side       string // where the handler runs: "executor" or "driver"
		ignoresCtx bool
		wantErr    string // in Run's error; "" for none
	}{
		{"executor handler waiting on its ctx", "executor", false, ""},
		// Half the timeout to run, then as much again to return: the
		// driver may or may not have stopped waiting (either is fine).
		{"executor handler ignoring its ctx", "executor", true, "executor 1 did not stop within 500ms"},
		{"driver handler waiting on its ctx", "driver", false, `driver plugin "blocker": 1 messages still queued or being handled 500ms into shutdown`},
		{"driver handler ignoring its ctx", "driver", true, `driver plugin "blocker": Receive did not return within 500ms of shutdown; abandoned`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entered := make(chan struct{}, 1)
			release := make(chan struct{}) // lets a handler that ignores its ctx end, after the test
			defer close(release)
			sawCtxEnd := make(chan struct{}, 1)
			receive := func(ctx context.Context, _ any) (any, error) {
				entered <- struct{}{}
				if tt.ignoresCtx {
					<-release
					return nil, nil
				}
				<-ctx.Done()
				if cause := context.Cause(ctx); tt.side == "executor" && (!errors.Is(cause, context.Canceled) || cause.Error() != "executor 1 is shutting down: context canceled") {
					t.Errorf("the handler's ctx's cause: got %v, want Canceled, saying executor 1 is shutting down", cause)
				}
				sawCtxEnd <- struct{}{}
				return nil, ctx.Err()
			}
			p, dc, ec := receivingPlugin("blocker", receive)
			var logs logtest.Buffer
			runDone := make(chan error, 1)
			go func() {
				runDone <- ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: slog.New(slog.NewTextHandler(&logs, nil)), ShutdownTimeout: 500 * time.Millisecond},
					func(ctx context.Context, d *ember.Driver) error {
						var err error
						if tt.side == "executor" {
							err = (*dc).SendExecutor(ctx, "1", text("wait"))
						} else {
							err = (*ec).Send(ctx, text("wait"))
						}
						if err != nil {
							return err
						}
						<-entered
						return nil
					})
			}()
			var err error
			select {
			case err = <-runDone:
			case <-time.After(30 * time.Second):
				t.Fatal("Run has not returned 30s after the driver function did (ShutdownTimeout 500ms)")
			}
			switch {
			case tt.side == "executor" && tt.ignoresCtx && err == nil:
			case tt.wantErr == "" && err != nil:
				t.Errorf("Run: got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Run: got %v, want an error containing %q", err, tt.wantErr)
			}
			if !tt.ignoresCtx {
				select {
				case <-sawCtxEnd:
				default:
					t.Error("the handler's ctx did not end")
				}
			}
			// No task ran: none can have been abandoned. (The executor
			// whose handler took the time said so about one time in
			// two, its deadline for tasks having passed already.)
			if strings.Contains(logs.String(), "tasks did not return") {
				t.Errorf("logs: got %q, want no tasks said to be abandoned", logs.String())
			}
		})
	}
}

// An executor's whole stop fits in the driver's wait for it: a Receive
// still running at STOP, then two plugins' Shutdown, each slow but
// watching its ctx, share one ShutdownTimeout, so every final Send made in
// Shutdown arrives. Each step used to have a ShutdownTimeout (or half) of
// its own: the executor took longer than the driver waited, which then
// reported it as not stopping and lost the last plugin's final message.
// (The last plugin's Shutdown may see its ctx end: Run may report that.)
func TestExecutorStopFitsTheDriversWait(t *testing.T) {
	const timeout = 2 * time.Second
	var finals recorder
	entered := make(chan struct{}, 1)
	slow := func(name string, receive bool) fakePlugin {
		var pc plugin.ExecutorContext
		shutdown := func(ctx context.Context) error {
			select { // tidying up takes a while, unless time is up
			case <-time.After(timeout * 3 / 10):
			case <-ctx.Done():
			}
			return pc.Send(context.Background(), text(name))
		}
		init := func(_ context.Context, c plugin.ExecutorContext, _ map[string]string) error { pc = c; return nil }
		p := fakePlugin{
			name: name,
			newDriver: func() plugin.DriverPlugin {
				return &fakeDriver{ReceiveF: func(_ context.Context, msg any) (any, error) {
					finals.add(string(msg.(text)))
					return nil, nil
				}}
			},
			newExecutor: func() plugin.ExecutorPlugin {
				return &fakeExecutor{InitF: init, ShutdownF: shutdown}
			},
		}
		if receive {
			p.newExecutor = func() plugin.ExecutorPlugin {
				return &receivingExecutor{
					fakeExecutor: fakeExecutor{InitF: init, ShutdownF: shutdown},
					ReceiveF: func(ctx context.Context, _ any) (any, error) {
						entered <- struct{}{}
						<-ctx.Done() // runs until shutdown ends it
						return nil, ctx.Err()
					},
				}
			}
		}
		return p
	}
	var dc plugin.DriverContext
	a := slow("a", true)
	a.newDriver = func() plugin.DriverPlugin {
		return &fakeDriver{
			InitF: func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) { dc = pc; return nil, nil },
			ReceiveF: func(_ context.Context, msg any) (any, error) {
				finals.add(string(msg.(text)))
				return nil, nil
			},
		}
	}
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{a, slow("b", false)}, Logger: quiet, ShutdownTimeout: timeout},
		func(ctx context.Context, d *ember.Driver) error {
			if err := dc.SendExecutor(ctx, "1", text("wait")); err != nil {
				return err
			}
			<-entered
			return nil
		})
	if err != nil && (strings.Contains(err.Error(), "did not stop") || !strings.Contains(err.Error(), `plugin "a": shutdown: deadline_exceeded`)) {
		t.Errorf("Run: %v; want nil, or plugin a's Shutdown out of time", err)
	}
	got := finals.get()
	slices.Sort(got)
	if want := []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("final messages sent in Shutdown: got %v, want %v", got, want)
	}
}

// An executor plugin's Shutdown error reaches Run's error, as the driver
// plugins' do, on either kind of local master: it used to be logged on the
// executor only. The driver logs it too, as it logs a driver plugin's: it
// used to leave no line of its own.
func TestExecutorShutdownErrorReachesRun(t *testing.T) {
	p := fakePlugin{name: "flusher", newExecutor: func() plugin.ExecutorPlugin {
		return &fakeExecutor{ShutdownF: func(context.Context) error { return errors.New("flush to disk failed") }}
	}}
	for _, master := range []string{"local[1]", "local-cluster[1]"} {
		t.Run(master, func(t *testing.T) {
			var logs logtest.Buffer
			cfg := ember.Config{Master: master, Plugins: []plugin.Plugin{p}, ExecutorArgs: embertest.ExecutorArgs(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			if isChild() {
				cfg.Logger = quiet
				runChild(cfg, nil)
			}
			const want = `executor 1: plugin "flusher": shutdown: flush to disk failed`
			err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { return nil })
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Run: got %v, want an error containing %q", err, want)
			}
			if line := `level=ERROR msg="executor stopped with its plugins' shutdown errors" executor=1 host=`; !strings.Contains(logs.String(), line) || !strings.Contains(logs.String(), `shutdown: flush to disk failed"`) {
				t.Errorf("driver logs: got %q, want %q with the error", logs.String(), line)
			}
		})
	}
}

// An in-process executor whose plugin ignores its ctx (an Init that never
// returns) cannot hold Run for ever: start-up fails, and at shutdown the
// executor is abandoned after the shutdown timeout, which Run's error
// says. (Run used to wait for it indefinitely.) The start-up error names
// the executor it waited for (it used to say only that the time was up).
func TestRunGivesUpOnAnExecutorIgnoringItsCtx(t *testing.T) {
	release := make(chan struct{})
	defer close(release) // the abandoned Init ends with the test
	p := fakePlugin{
		name: "stuck",
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(context.Context, plugin.ExecutorContext, map[string]string) error {
				<-release
				return nil
			}}
		},
	}
	runDone := make(chan error, 1)
	go func() {
		runDone <- ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet,
			StartTimeout: 200 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond},
			func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
	}()
	select {
	case err := <-runDone:
		// It also says which executor start-up waited for, and why.
		for _, want := range []string{
			"executors did not exit within 200ms: canceled, and abandoned, still running 200ms later",
			"executors not ready within 200ms (Config.StartTimeout); waiting for executors (1 wanted, 0 ready; connected, still initialising their plugins: 1 (host ",
		} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Run: got %v, want an error containing %q", err, want)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run has not returned 30s after start-up timed out")
	}
}

// panickyName is a plugin whose Name panics.
type panickyName struct{ fakePlugin }

func (panickyName) Name() string { panic("boom") }

// A plugin whose Name panics fails Run with an error naming its type.
func TestPanickingPluginName(t *testing.T) {
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{panickyName{}}, Logger: quiet},
		func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
	want := "plugin of type ember_test.panickyName: panic in Name: boom"
	if plugin.CodeOf(err) != plugin.CodeInternal || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: got %v, want CodeInternal containing %q", err, want)
	}
	if _, err := ember.PluginNames(ember.Config{Plugins: []plugin.Plugin{panickyName{}}}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("PluginNames: got %v, want an error containing %q", err, want)
	}
}

func TestConfigStringRedactsSecrets(t *testing.T) {
	cfg := ember.Config{Secret: "hunter2", Conf: map[string]string{"db.password": "pw1", "db.host": "h"}}
	var text, json strings.Builder
	slog.New(slog.NewTextHandler(&text, nil)).Info("starting", "cfg", cfg)
	slog.New(slog.NewJSONHandler(&json, nil)).Info("starting", "cfg", cfg)
	for _, out := range []string{cfg.String(), fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), text.String(), json.String()} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "pw1") {
			t.Errorf("printed Config leaks a secret: %s", out)
		}
		if !strings.Contains(out, plugin.Redacted) || !strings.Contains(out, "db.host") {
			t.Errorf("printed Config: got %s, want the secrets shown as %s and the rest of Conf shown", out, plugin.Redacted)
		}
	}
}

// An executor plugin's Init that waits on its ctx ends when the driver
// stops: the executor does not outlive a driver that no longer wants it.
// Before, Init's ctx was only Run's, and the executor waited for ever.
// It is a release: the executor answers STOPPED and its Run returns nil,
// and the driver logs no executor that failed to initialise (it did, and
// the executor's Run failed with Init's ctx error, exiting its process 1).
func TestExecutorInitEndsWhenTheDriverStops(t *testing.T) {
	var logs logtest.Buffer
	entered := make(chan struct{})
	p := fakePlugin{name: "slow-init", newExecutor: func() plugin.ExecutorPlugin {
		return &fakeExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
			close(entered)
			<-ctx.Done()
			return ctx.Err()
		}}
	}}
	addr := freeAddr(t)
	runErr := make(chan error, 1)
	go func() {
		runErr <- ember.Run(testCtx(t), ember.Config{Master: "standalone", ListenAddr: addr, InsecureNoAuth: true, BuildID: "test",
			Plugins: []plugin.Plugin{p}, Logger: slog.New(slog.NewTextHandler(&logs, nil)), ShutdownTimeout: time.Second},
			func(context.Context, *ember.Driver) error {
				<-entered
				return nil
			})
	}()
	execErr := make(chan error, 1)
	go func() {
		execErr <- executor.Run(context.Background(), executor.Config{DriverAddr: addr, Plugins: []plugin.Plugin{p},
			Logger: quiet, BuildID: "test", Tasks: ember.Tasks(), ShutdownTimeout: time.Second})
	}()
	select {
	case err := <-execErr:
		if err != nil {
			t.Errorf("executor: got %v, want nil (released)", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the executor is still in its plugin's Init 20s after the driver began to stop")
	}
	// STOP ended the Init, so the executor left within the stop phase:
	// ended only by the stream closing (a whole ShutdownTimeout later),
	// the driver reports "executor 1 did not stop within 1s".
	if err := <-runErr; err != nil {
		t.Errorf("driver: got %v, want nil (the executor ended on STOP)", err)
	}
	if l := logs.String(); strings.Contains(l, "failed to initialise") {
		t.Errorf("driver log: got %q, want no executor that failed to initialise", l)
	}
}

// Once an executor plugin's Shutdown has returned, its Ask and Send fail
// with CodeUnavailable (ErrClosed), though the connection is still open.
// Before, a Send then returned nil, and a message queued after STOPPED was
// lost without a count. Plugins shut down in reverse order, so the first
// plugin's Shutdown calls the second's, which has shut down.
func TestExecutorCallsAfterShutdownFail(t *testing.T) {
	second, _, ec := receivingPlugin("second", func(context.Context, any) (any, error) { return nil, nil })
	errs := map[string]error{}
	first := fakePlugin{name: "first", newExecutor: func() plugin.ExecutorPlugin {
		return &fakeExecutor{ShutdownF: func(ctx context.Context) error {
			errs["Send"] = (*ec).Send(ctx, text("late send"))
			_, errs["Ask"] = (*ec).Ask(ctx, text("late ask"))
			return nil
		}}
	}}
	if err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{first, second}, Logger: quiet},
		func(context.Context, *ember.Driver) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Send", "Ask"} {
		if err := errs[name]; plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) || !strings.Contains(err.Error(), `executor plugin "second" has shut down`) {
			t.Errorf("%s after Shutdown: got %v, want Unavailable (ErrClosed) saying the plugin has shut down", name, err)
		}
	}
}

// A driver Receive long-polling on an executor's ask (it waits on its
// ctx) does not hold the driver's shutdown: its ctx ends once that
// executor's STOPPED arrives, since nobody waits for the reply any more.
// Before, the driver waited a whole ShutdownTimeout for it and Run failed
// with "1 messages not delivered".
func TestLongPollAskEndsAtStopped(t *testing.T) {
	polling := make(chan struct{}, 1)
	cause := make(chan error, 1)
	p, _, ec := receivingPlugin("poll", func(ctx context.Context, msg any) (any, error) {
		if msg == text("poll") {
			polling <- struct{}{}
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return nil, ctx.Err()
		}
		return nil, nil
	})
	asked := make(chan error, 1)
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, ShutdownTimeout: 10 * time.Second},
		func(context.Context, *ember.Driver) error {
			go func() {
				_, err := (*ec).Ask(context.Background(), text("poll"))
				asked <- err
			}()
			<-polling
			return nil
		})
	if err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	if err := <-asked; plugin.CodeOf(err) != plugin.CodeCanceled && plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("the long poll: got %v, want it ended (Canceled, or Unavailable)", err)
	}
	// The handler's ctx says why it ended: the executor stopped (or, if
	// the connection ended first, that it did).
	if err := <-cause; !errors.Is(err, context.Canceled) ||
		!strings.Contains(err.Error(), "executor 1 has stopped") && !strings.Contains(err.Error(), "the connection ended") {
		t.Errorf("the handler's ctx's cause: got %v, want Canceled, saying executor 1 has stopped", err)
	}
}

// A driver plugin's Init ignoring its ctx cannot hold Run for ever: it is
// abandoned after StartTimeout, and Run fails saying so. (Run used to wait
// for it indefinitely, even after its ctx ended.)
func TestRunGivesUpOnADriverInitIgnoringItsCtx(t *testing.T) {
	release := make(chan struct{})
	defer close(release) // the abandoned Init ends with the test
	p := fakePlugin{name: "stuck", newDriver: func() plugin.DriverPlugin {
		return &fakeDriver{InitF: func(context.Context, plugin.DriverContext) (map[string]string, error) {
			<-release
			return nil, nil
		}}
	}}
	runDone := make(chan error, 1)
	go func() {
		runDone <- ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, StartTimeout: 200 * time.Millisecond},
			func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
	}()
	select {
	case err := <-runDone:
		want := `driver plugin "stuck": init: deadline_exceeded: plugin "stuck": Init did not return in time; abandoned`
		if plugin.CodeOf(err) != plugin.CodeDeadlineExceeded || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: got %v, want DeadlineExceeded containing %q", err, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run has not returned 30s after StartTimeout")
	}
}

// Several executor plugins whose Shutdown ignores its ctx: each is
// abandoned, and the executor's stop still fits in the driver's wait
// (STOPPED in time). The grace CallWithin gives a plugin to return once
// its ctx ends never reaches past the deadline the plugins share: with a
// full grace each, five stuck plugins made the driver report "executor 1
// did not stop".
//
// ShutdownTimeout 4s: the plugins share nine tenths of it, and those
// abandoned after that share one grace (a twentieth) more, so STOP's and
// STOPPED's trips have what is left, a twentieth: 200ms. With 1s, the
// 50ms left was not enough on a loaded machine ("executor 1 did not stop
// within 1s"). A full grace each would still overrun 4s, by 600ms.
func TestStuckShutdownsStillStopInTime(t *testing.T) {
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) })
	var ps []plugin.Plugin
	for i := range 5 {
		ps = append(ps, fakePlugin{name: fmt.Sprintf("stuck%d", i), newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{ShutdownF: func(context.Context) error { <-unblock; return nil }}
		}})
	}
	cfg := ember.Config{Master: "local[1]", Plugins: ps, Logger: quiet, ShutdownTimeout: 4 * time.Second}
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { return nil })
	if err == nil || strings.Contains(err.Error(), "did not stop within") {
		t.Errorf("Run: got %v, want the plugins' abandoned shutdowns only, STOPPED in time", err)
	}
}

// One executor plugin whose Shutdown ignores its ctx uses up the shared
// deadline; the plugin shut down after it returns at once. It must not
// be reported as abandoned: with the grace capped at the time left
// (zero), CallWithin gives it a ctx already ended and no time at all, and
// usually abandons it before its goroutine has run.
func TestPromptShutdownAfterAStuckOneIsNotAbandoned(t *testing.T) {
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) })
	bad := 0
	for range 3 {
		prompt := fakePlugin{name: "prompt", newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{} }}
		stuck := fakePlugin{name: "stuck", newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{ShutdownF: func(context.Context) error { <-unblock; return nil }}
		}}
		// Reverse order at shutdown: stuck first, then prompt.
		// 2s: a grace of 100ms, which a loaded machine's timers do not
		// use up.
		cfg := ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{prompt, stuck}, Logger: quiet, ShutdownTimeout: 2 * time.Second}
		err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { return nil })
		if err != nil && strings.Contains(err.Error(), `plugin "prompt"`) {
			bad++
			t.Logf("Run: %v", err)
		}
	}
	if bad > 0 {
		t.Errorf("%d runs of 3 reported the prompt plugin's Shutdown as abandoned", bad)
	}
}

// An executor whose Run ctx ends while a plugin's Init waits on an Ask
// (the stream, tied to the ctx until READY, is cut under it) has stopped,
// not failed: Run's error matches the ctx's, so that its process exits 0.
// Before, the Ask's Unavailable was Run's error.
func TestCtxEndingDuringInitIsAStop(t *testing.T) {
	asking := make(chan struct{})
	p := fakePlugin{
		name: "asks-in-init",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(ctx context.Context, _ any) (any, error) {
				close(asking)
				<-ctx.Done()
				return nil, ctx.Err()
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
				_, err := pc.Ask(context.Background(), text("configure me")) // not Init's ctx: only the stream ends it
				return err
			}}
		},
	}
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test", Plugins: []plugin.Plugin{p}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	execErr := make(chan error, 1)
	go func() {
		execErr <- executor.Run(ctx, executor.Config{DriverAddr: d.Addr(), Plugins: []plugin.Plugin{p},
			Logger: quiet, BuildID: "test", Tasks: ember.Tasks(), ShutdownTimeout: time.Second})
	}()
	<-asking
	cancel()
	if err := <-execErr; !errors.Is(err, context.Canceled) {
		t.Errorf("executor stopped by its ctx during Init: got %v, want an error matching context.Canceled", err)
	}
}

// stopDuringInit runs an executor of a plugin named slow-init against
// the driver at addr, ends its ctx while the plugin's Init waits on it,
// and checks that Run reports a stop.
func stopDuringInit(t *testing.T, addr string) {
	t.Helper()
	initing := make(chan struct{})
	p := fakePlugin{
		name: "slow-init",
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
				close(initing)
				<-ctx.Done()
				return ctx.Err()
			}}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	execErr := make(chan error, 1)
	go func() {
		execErr <- executor.Run(ctx, executor.Config{DriverAddr: addr, Plugins: []plugin.Plugin{p},
			Logger: quiet, BuildID: "test", Tasks: ember.Tasks(), ShutdownTimeout: 5 * time.Second})
	}()
	<-initing
	cancel()
	if err := <-execErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("executor stopped by its ctx during Init: got %v, want an error matching context.Canceled", err)
	}
}

// An executor stopped by its ctx while its plugins' Init runs (a SIGTERM
// as a pod comes up) tells the driver it is leaving before its stream
// ends: the driver logs that it left, not that it lost it (an Error, for
// an ordinary stop).
func TestStopDuringInitIsALeaveAtTheDriver(t *testing.T) {
	var logs logtest.Buffer
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test", Plugins: []plugin.Plugin{fakePlugin{name: "slow-init"}},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	stopDuringInit(t, d.Addr())
	embertest.WaitFor(t, "the driver to log the executor's end", func() bool {
		l := logs.String()
		return strings.Contains(l, "executor left") || strings.Contains(l, "executor lost") || strings.Contains(l, "failed to initialise")
	})
	if l := logs.String(); !strings.Contains(l, "executor left: it stopped on its own") || strings.Contains(l, "executor lost") || strings.Contains(l, "failed to initialise") {
		t.Errorf("driver log: got %q, want the executor to have left, not been lost or failed", l)
	}
}

// An executor stopped by its ctx during its plugins' Init sends one
// LEAVING: both Run's goroutine (Init returned of its ctx) and the func
// that ctx's end runs sent one, whichever came first.
func TestStopDuringInitSendsOneLeaving(t *testing.T) {
	var logs logtest.Buffer
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test", Plugins: []plugin.Plugin{fakePlugin{name: "slow-init"}},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	const rounds = 100
	for i := range rounds {
		stopDuringInit(t, d.Addr())
		embertest.WaitFor(t, "the driver to log the executor's end", func() bool {
			return strings.Count(logs.String(), "executor left") == i+1
		})
	}
	n := strings.Count(logs.String(), "executor leaving: it is stopping on its own")
	if n != rounds {
		t.Errorf("LEAVINGs at the driver for %d executors stopped during Init: got %d, want one each", rounds, n)
	}
}

// A Shutdown abandoned for ignoring its ctx cannot send once it has been:
// its message would follow STOPPED. Its Send fails saying the plugin has
// shut down (it used to be accepted, and lost).
//
// The abandoned Shutdown takes the executor's whole stop, nine tenths of
// ShutdownTimeout, so that STOPPED has the last tenth to reach the driver
// (after STOP has reached the executor): 2s leaves it 200ms. With 500ms,
// the 50ms left was not enough on a loaded machine, and the driver
// reported "executor 1 did not stop within 500ms" instead of the
// abandoned Shutdown that STOPPED carries.
func TestAbandonedShutdownCannotSend(t *testing.T) {
	release := make(chan struct{})
	sent := make(chan error, 1)
	p := fakePlugin{name: "late", newExecutor: func() plugin.ExecutorPlugin {
		var pc plugin.ExecutorContext
		return &fakeExecutor{
			InitF: func(_ context.Context, c plugin.ExecutorContext, _ map[string]string) error { pc = c; return nil },
			ShutdownF: func(context.Context) error {
				<-release // ignores its ctx
				sent <- pc.Send(context.Background(), text("too late"))
				return nil
			},
		}
	}}
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, ShutdownTimeout: 2 * time.Second},
		func(context.Context, *ember.Driver) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "did not return in time; abandoned") {
		t.Errorf("Run: got %v, want the abandoned Shutdown", err)
	}
	close(release)
	if err := <-sent; plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), `executor plugin "late" has shut down`) {
		t.Errorf("Send from the abandoned Shutdown: got %v, want Unavailable saying the plugin has shut down", err)
	}
}

// A driver Receive stuck at shutdown is reported once, and is not waited
// for again: Close flushed the lanes a second time (for the
// OnExecutorRemoved events), waited a whole ShutdownTimeout more on the
// same stuck lane, and joined the same error twice into Run's.
func TestStuckLaneReportedOnce(t *testing.T) {
	g := newGate()
	defer g.open()
	var pcs contexts
	p := fakePlugin{
		name: "stuck",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(context.Context, any) (any, error) { g.wait(); return nil, nil }}
		},
		newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{InitF: pcs.init} },
	}
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, ShutdownTimeout: 300 * time.Millisecond},
		func(ctx context.Context, d *ember.Driver) error {
			return pcs.get("1").Send(ctx, text("x"))
		})
	if err == nil {
		t.Fatal("Run: got nil, want the stuck lane reported")
	}
	if n := strings.Count(err.Error(), "still queued"); n != 1 {
		t.Errorf("Run: the stuck lane is reported %d times, want once:\n%v", n, err)
	}
}

// Each plugin's Init ctx ends as its own Init returns, on both sides, as
// their docs promise: the plugins used to share one, which ended only
// after the last plugin's Init, so a goroutine started under the first
// one's ctx ran on through the others' Inits.
func TestInitCtxEndsAsItsInitReturns(t *testing.T) {
	tests := []struct {
		side string
		pair func(first *context.Context, errAtSecond *error) (a, b fakePlugin)
	}{
		{"driver", func(first *context.Context, errAtSecond *error) (a, b fakePlugin) {
			a = fakePlugin{name: "a", newDriver: func() plugin.DriverPlugin {
				return &fakeDriver{InitF: func(ctx context.Context, _ plugin.DriverContext) (map[string]string, error) {
					*first = ctx
					return nil, nil
				}}
			}}
			b = fakePlugin{name: "b", newDriver: func() plugin.DriverPlugin {
				return &fakeDriver{InitF: func(ctx context.Context, _ plugin.DriverContext) (map[string]string, error) {
					*errAtSecond = (*first).Err()
					return nil, ctx.Err()
				}}
			}}
			return a, b
		}},
		{"executor", func(first *context.Context, errAtSecond *error) (a, b fakePlugin) {
			a = fakePlugin{name: "a", newExecutor: func() plugin.ExecutorPlugin {
				return &fakeExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
					*first = ctx
					return nil
				}}
			}}
			b = fakePlugin{name: "b", newExecutor: func() plugin.ExecutorPlugin {
				return &fakeExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
					*errAtSecond = (*first).Err()
					return ctx.Err()
				}}
			}}
			return a, b
		}},
	}
	for _, tt := range tests {
		t.Run(tt.side, func(t *testing.T) {
			var (
				first       context.Context
				errAtSecond error
			)
			a, b := tt.pair(&first, &errAtSecond)
			embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{a, b}, Logger: quiet})
			if !errors.Is(errAtSecond, context.Canceled) {
				t.Errorf("plugin a's Init ctx while plugin b's Init ran: got Err %v, want context.Canceled (a's Init had returned)", errAtSecond)
			}
		})
	}
}
