package ember_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// undecodable always fails to decode, standing in for bytes a peer cannot
// read.
type undecodable struct{ X int }

func (*undecodable) UnmarshalCBOR([]byte) error { return errors.New("corrupt") }

type unregistered struct{ X int }

func init() { plugin.RegisterMessage[undecodable]() }

// askCluster starts local[1] with one plugin whose driver Receive is recv
// and returns the executor's context.
func askCluster(t *testing.T, recv func(ctx context.Context, msg any) (any, error), cfg ember.Config) (plugin.ExecutorContext, *embertest.Cluster) {
	t.Helper()
	var pcs contexts
	cfg.Master = "local[1]"
	cfg.Logger = quiet
	cfg.Plugins = append(cfg.Plugins, fakePlugin{
		name:      "asker",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{ReceiveF: recv} },
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: pcs.init}
		},
	})
	c := embertest.Start(t, cfg)
	return pcs.get("1"), c
}

// Config.MaxOutstandingAsks counts the asks the driver has not answered,
// including one whose asker gave up while its handler, ignoring its ctx,
// still runs, and the refusal says so: it said "asks waiting for the
// driver", and refused an executor that had none waiting. Once the
// handler returns, asks are taken again.
func TestMaxOutstandingAsksCountsAsksGivenUpOn(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	ec, _ := askCluster(t, func(_ context.Context, msg any) (any, error) {
		if msg == text("hold") {
			entered <- struct{}{}
			<-release // its ctx is not watched: the asker gives up meanwhile
		}
		return msg, nil
	}, ember.Config{MaxOutstandingAsks: 1})
	t.Cleanup(releaseOnce) // before the cluster's, which waits for the handler
	ctx := testCtx(t)
	giveUpInHandler(t, ctx, entered, func(ctx context.Context) error {
		_, err := ec.Ask(ctx, text("hold"))
		return err
	})

	_, err := ec.Ask(ctx, text("next"))
	const want = "executor 1 has 1 asks sent and not yet answered by the driver, the maximum (Config.MaxOutstandingAsks; an ask its asker gave up on counts until its handler returns); retry later"
	if plugin.CodeOf(err) != plugin.CodeResourceExhausted || !strings.Contains(err.Error(), want) {
		t.Errorf("an ask while the one given up on is still handled: got %v, want CodeResourceExhausted saying %q", err, want)
	}

	releaseOnce()
	embertest.WaitFor(t, "an ask taken once the handler has returned", func() bool {
		reply, err := ec.Ask(ctx, text("next"))
		return err == nil && reply == text("next")
	})
}

// Semantics 7, 8 and 11: what the asker sees for each kind of failure.
func TestAskErrors(t *testing.T) {
	var sawDeadline sync.Once
	hadDeadline := make(chan bool, 1)
	pc, _ := askCluster(t, func(ctx context.Context, msg any) (any, error) {
		switch msg {
		case text("not-found"):
			return nil, plugin.NewError(plugin.CodeNotFound, "no such key")
		case text("plain"):
			return nil, errors.New("plain failure")
		case text("not-utf8"):
			return nil, errors.New("no file \"\xff\xfe.log\"")
		case text("panic"):
			panic("handler bug")
		case text("goexit"): // a test's t.Fatal in a plugin
			runtime.Goexit()
		case text("slow"):
			_, ok := ctx.Deadline()
			sawDeadline.Do(func() { hadDeadline <- ok })
			<-ctx.Done()
			return nil, ctx.Err()
		case text("big-reply"):
			return payload{Data: make([]byte, 2<<20)}, nil
		case text("ok"):
			return text("fine"), nil
		}
		return nil, nil
	}, ember.Config{MaxMessageBytes: 1 << 20})
	ctx := testCtx(t)

	tests := []struct {
		name     string
		ctx      context.Context
		msg      any
		code     plugin.Code
		contains string
		is       error
		remote   bool
		either   bool // remote or local: whichever side's deadline fires first
	}{
		{name: "handler error keeps code and message", msg: text("not-found"), code: plugin.CodeNotFound, contains: "no such key", remote: true},
		{name: "plain error is unknown with its message", msg: text("plain"), code: plugin.CodeUnknown, contains: "plain failure", remote: true},
		{name: "error that is not UTF-8 arrives byte for byte", msg: text("not-utf8"), code: plugin.CodeUnknown, contains: "no file \"\xff\xfe.log\"", remote: true},
		{name: "panic is internal", msg: text("panic"), code: plugin.CodeInternal, contains: "handler bug", remote: true},
		{name: "runtime.Goexit is internal", msg: text("goexit"), code: plugin.CodeInternal, contains: "Goexit", remote: true},
		{name: "deadline", ctx: shortCtx(t, 100*time.Millisecond), msg: text("slow"), code: plugin.CodeDeadlineExceeded, is: context.DeadlineExceeded, either: true},
		{name: "unregistered type fails at the call", msg: unregistered{}, code: plugin.CodeInvalidArgument, is: plugin.ErrUnregisteredMessage, contains: "unregistered"},
		{name: "nil message", msg: nil, code: plugin.CodeInvalidArgument, contains: "nil message"},
		{name: "oversized message", msg: payload{Data: make([]byte, 2<<20)}, code: plugin.CodeResourceExhausted, is: plugin.ErrMessageTooLarge},
		{name: "undecodable message", msg: undecodable{X: 1}, code: plugin.CodeInvalidArgument, contains: "corrupt", remote: true},
		{name: "oversized reply", msg: text("big-reply"), code: plugin.CodeResourceExhausted, contains: "limit", remote: true},
	}
	// Go gives the same outcome on its Call.
	forms := []struct {
		name string
		ask  func(ctx context.Context, msg any) error
	}{
		{"Ask", func(ctx context.Context, msg any) error { _, err := pc.Ask(ctx, msg); return err }},
		{"Go", func(ctx context.Context, msg any) error { return (<-pc.Go(ctx, msg, nil).Done).Err }},
	}
	for _, form := range forms {
		for _, tt := range tests {
			t.Run(form.name+"/"+tt.name, func(t *testing.T) {
				if tt.name == "deadline" && form.name == "Go" {
					tt.ctx = shortCtx(t, 100*time.Millisecond) // the Ask's has passed
				}
				c := ctx
				if tt.ctx != nil {
					c = tt.ctx
				}
				err := form.ask(c, tt.msg)
				if got := plugin.CodeOf(err); got != tt.code {
					t.Fatalf("code: got %v (%v), want %v", got, err, tt.code)
				}
				if tt.contains != "" && !strings.Contains(err.Error(), tt.contains) {
					t.Errorf("error %q does not contain %q", err, tt.contains)
				}
				if tt.is != nil && !errors.Is(err, tt.is) {
					t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
				}
				if got := plugin.IsRemote(err); got != tt.remote && !tt.either {
					t.Errorf("IsRemote: got %v, want %v", got, tt.remote)
				}
				var e *plugin.Error
				if !errors.As(err, &e) {
					t.Errorf("errors.As(%T, *plugin.Error) = false", err)
				}
			})
		}
	}
	if !<-hadDeadline {
		t.Error("the handler's ctx had no deadline; the asker's should travel with the ask")
	}
	// The driver keeps serving after all of that.
	if got, err := plugin.Ask[text](ctx, pc, text("ok")); err != nil || got != "fine" {
		t.Errorf("Ask after failures: got %q, %v; want fine, nil", got, err)
	}
}

// An asker that gives up ends the handler's ctx on the other side, both
// ways: cancelling ctx cancels it (with the cause plugin.ErrAskCanceled),
// as a gRPC client's cancel reaches its server's handler. A long poll, a
// handler that waits for work, stops waiting, rather than take work for
// an asker that is gone and hold up its plugin's lane. An ask ended by its
// deadline ends the handler's ctx at that deadline, or a moment before
// with the cause, when the asker's ASK_CANCEL beats the handler's copy of
// the deadline (which counts from the ask's arrival).
func TestGivingUpEndsTheHandlersCtx(t *testing.T) {
	type end struct{ err, cause error }
	entered := make(chan struct{}, 1)
	ended := make(chan end, 1)
	receive := func(ctx context.Context, msg any) (any, error) {
		if msg != text("wait") {
			return msg, nil
		}
		entered <- struct{}{}
		<-ctx.Done()
		ended <- end{ctx.Err(), context.Cause(ctx)}
		return nil, ctx.Err()
	}
	p, dc, ec := receivingPlugin("longpoll", receive)
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})

	outcome := func(c *plugin.Call) (any, error) { <-c.Done; return c.Reply, c.Err }
	asks := map[string]func(context.Context, any) (any, error){
		"executor asks the driver": func(ctx context.Context, msg any) (any, error) { return (*ec).Ask(ctx, msg) },
		"driver asks the executor": func(ctx context.Context, msg any) (any, error) { return (*dc).AskExecutor(ctx, "1", msg) },
		"executor's Go": func(ctx context.Context, msg any) (any, error) {
			return outcome((*ec).Go(ctx, msg, make(chan *plugin.Call, 1)))
		},
		"driver's GoExecutor": func(ctx context.Context, msg any) (any, error) {
			return outcome((*dc).GoExecutor(ctx, "1", msg, nil))
		},
	}
	for name, ask := range asks {
		for _, tt := range []struct {
			how       string
			ctx       func() (context.Context, context.CancelFunc)
			code      plugin.Code
			err, ends error
			cause     error // what the handler's ctx's cause is, besides ends
			or        *end  // another end allowed
		}{
			{"canceled", func() (context.Context, context.CancelFunc) { return context.WithCancel(testCtx(t)) },
				plugin.CodeCanceled, context.Canceled, context.Canceled, plugin.ErrAskCanceled, nil},
			{"past its deadline", func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
				t.Cleanup(cancel)
				return ctx, func() {}
			}, plugin.CodeDeadlineExceeded, context.DeadlineExceeded, context.DeadlineExceeded, context.DeadlineExceeded,
				&end{context.Canceled, plugin.ErrAskCanceled}},
		} {
			t.Run(name+", "+tt.how, func(t *testing.T) {
				ctx, cancel := tt.ctx()
				errc := make(chan error, 1)
				go func() {
					_, err := ask(ctx, text("wait"))
					errc <- err
				}()
				select {
				case <-entered:
				case err := <-errc:
					t.Fatalf("Ask returned %v before its handler started", err)
				}
				cancel()
				if err := <-errc; plugin.CodeOf(err) != tt.code || !errors.Is(err, tt.err) {
					t.Errorf("Ask: got %v, want code %v matching %v", err, tt.code, tt.err)
				}
				select {
				case e := <-ended:
					alt := tt.or != nil && errors.Is(e.err, tt.or.err) && errors.Is(e.cause, tt.or.cause)
					if (!errors.Is(e.err, tt.ends) || !errors.Is(e.cause, tt.cause)) && !alt {
						t.Errorf("the handler's ctx ended with %v (cause %v), want %v (cause %v)", e.err, e.cause, tt.ends, tt.cause)
					}
				case <-time.After(embertest.DefaultTimeout):
					t.Fatal("the handler's ctx did not end once its asker had given up")
				}
				// The plugin's lane is free again.
				if got, err := ask(testCtx(t), text("next")); err != nil || got != text("next") {
					t.Errorf("Ask after: got %v, %v; want next, nil", got, err)
				}
			})
		}
	}
}

// An ask held up on its way (here by a partition; a stalled writer or a
// slow link does the same) reaches the driver after its asker gave up at
// its deadline. Its handler's copy of the deadline counts from the ask's
// arrival, so without the asker's ASK_CANCEL it would wait a full timeout
// for an asker long gone, and a long poll would take a job for nobody.
func TestStalledAskEndsItsHandler(t *testing.T) {
	type end struct {
		waited time.Duration
		cause  error
	}
	ended := make(chan end, 1)
	p, _, ec := receivingPlugin("longpoll", func(ctx context.Context, msg any) (any, error) {
		start := time.Now()
		<-ctx.Done()
		ended <- end{time.Since(start), context.Cause(ctx)}
		return nil, ctx.Err()
	})
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	if err := c.Partition("1"); err != nil {
		t.Fatal(err)
	}
	const timeout = 2 * time.Second
	ctx, cancel := context.WithTimeout(testCtx(t), timeout)
	defer cancel()
	time.AfterFunc(timeout+500*time.Millisecond, func() { _ = c.Heal("1") })
	if _, err := (*ec).Ask(ctx, text("wait")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ask: got %v, want DeadlineExceeded", err)
	}
	select {
	case e := <-ended:
		if e.waited > timeout/2 || !errors.Is(e.cause, plugin.ErrAskCanceled) {
			t.Errorf("the handler of an ask whose asker had given up before it arrived waited %v, ending with %v; want it ended at once with ErrAskCanceled", e.waited, e.cause)
		}
	case <-time.After(embertest.DefaultTimeout):
		t.Fatal("the handler's ctx did not end")
	}
}

func shortCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Semantics 8 for sends: failures are reported locally when they can be,
// and a message the driver cannot decode is dropped without disturbing
// the ones after it.
func TestSendErrors(t *testing.T) {
	got := make(chan any, 10)
	pc, _ := askCluster(t, func(_ context.Context, msg any) (any, error) {
		got <- msg
		return nil, nil
	}, ember.Config{MaxMessageBytes: 1 << 10})
	ctx := testCtx(t)

	if err := pc.Send(ctx, unregistered{}); !errors.Is(err, plugin.ErrUnregisteredMessage) ||
		strings.Count(err.Error(), "unregistered message type") != 1 || !strings.Contains(err.Error(), "plugin.RegisterMessage[") {
		t.Errorf("Send(unregistered): got %v, want ErrUnregisteredMessage, said once, with the call that registers it", err)
	}
	if err := pc.Send(ctx, payload{Data: make([]byte, 4<<10)}); plugin.CodeOf(err) != plugin.CodeResourceExhausted {
		t.Errorf("Send(oversized): got %v, want CodeResourceExhausted", err)
	}
	if err := pc.Send(ctx, undecodable{}); err != nil {
		t.Errorf("Send(undecodable): got %v, want nil (the failure is the receiver's)", err)
	}
	if err := pc.Send(ctx, text("after")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != text("after") {
			t.Errorf("first delivered message: got %v, want after", m)
		}
	case <-ctx.Done():
		t.Fatal("message after an undecodable one never arrived")
	}
}

// A message for a plugin with no driver side gets NotFound.
func TestAskPluginWithoutDriverSide(t *testing.T) {
	var pcs contexts
	p := fakePlugin{
		name: "executor-only",
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: pcs.init}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	_, err := pcs.get("1").Ask(testCtx(t), text("hello"))
	if plugin.CodeOf(err) != plugin.CodeNotFound || !strings.Contains(err.Error(), "executor-only") {
		t.Errorf("got %v, want CodeNotFound naming the plugin", err)
	}
}

// Beyond Spark: the driver asks, sends and broadcasts to executors.
func TestDriverToExecutors(t *testing.T) {
	var dc plugin.DriverContext
	received := make(chan string, 10)
	p := fakePlugin{
		name: "push",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: keepDriverContext(&dc)}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			var pc plugin.ExecutorContext
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: func(_ context.Context, c plugin.ExecutorContext, _ map[string]string) error {
					pc = c
					return nil
				}},
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					switch m := msg.(type) {
					case text:
						received <- pc.ExecutorID() + ":" + string(m)
						return nil, nil
					case number:
						return number(int(m) * 10), nil
					}
					return nil, plugin.NewError(plugin.CodeInvalidArgument, "what?")
				},
			}
		},
	}
	passive := fakePlugin{
		name:        "passive",
		newDriver:   func() plugin.DriverPlugin { return &fakeDriver{} },
		newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{} },
	}
	var passiveDC plugin.DriverContext
	passive.newDriver = func() plugin.DriverPlugin {
		return &fakeDriver{InitF: keepDriverContext(&passiveDC)}
	}
	c := embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p, passive}, Logger: quiet})
	ctx := testCtx(t)

	if got := len(dc.Executors()); got != 2 {
		t.Fatalf("Executors: got %d, want 2", got)
	}
	for _, id := range []string{"1", "2"} {
		got, err := plugin.AskExecutor[number](ctx, dc, id, number(4))
		if err != nil || got != 40 {
			t.Errorf("AskExecutor(%s): got %v, %v; want 40, nil", id, got, err)
		}
	}
	if err := dc.SendExecutor(ctx, "2", text("direct")); err != nil {
		t.Fatal(err)
	}
	if got := <-received; got != "2:direct" {
		t.Errorf("SendExecutor: got %q, want 2:direct", got)
	}
	if err := dc.Broadcast(ctx, text("all")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 2 {
		got = append(got, <-received)
	}
	if !(got[0] == "1:all" && got[1] == "2:all" || got[0] == "2:all" && got[1] == "1:all") {
		t.Errorf("Broadcast: got %q, want 1:all and 2:all", got)
	}
	if _, err := dc.AskExecutor(ctx, "9", number(1)); !errors.Is(err, plugin.ErrNoSuchExecutor) || plugin.CodeOf(err) != plugin.CodeNotFound {
		t.Errorf("AskExecutor(unknown): got %v, want ErrNoSuchExecutor with CodeNotFound", err)
	}
	if _, err := passiveDC.AskExecutor(ctx, "1", number(1)); plugin.CodeOf(err) != plugin.CodeUnimplemented || !strings.Contains(err.Error(), "passive") {
		t.Errorf("AskExecutor(no receiver): got %v, want CodeUnimplemented naming the plugin", err)
	}

	// GoExecutor: the same, with the outcomes on one channel.
	done := make(chan *plugin.Call, 4)
	calls := map[*plugin.Call]string{
		dc.GoExecutor(ctx, "1", number(5), done):        "50",
		dc.GoExecutor(ctx, "2", number(6), done):        "60",
		dc.GoExecutor(ctx, "9", number(1), done):        "not_found",
		passiveDC.GoExecutor(ctx, "1", number(1), done): "unimplemented",
	}
	for range calls {
		call := <-done
		n, err := plugin.Reply[number](call)
		got := fmt.Sprint(int(n))
		if err != nil {
			got = plugin.CodeOf(err).String()
		}
		if want := calls[call]; got != want {
			t.Errorf("GoExecutor(%v): got %s (%v), want %s", call.Msg, got, err, want)
		}
	}

	// Once the driver shuts down, calls to executors say so: they used to
	// say there was no such executor, and Broadcast reached nobody, nil.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closed := map[string]error{
		"AskExecutor":  func() error { _, err := dc.AskExecutor(ctx, "1", number(1)); return err }(),
		"GoExecutor":   (<-dc.GoExecutor(ctx, "1", number(1), nil).Done).Err,
		"SendExecutor": dc.SendExecutor(ctx, "1", text("late")),
		"Broadcast":    dc.Broadcast(ctx, text("late")),
	}
	for call, err := range closed {
		if plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) {
			t.Errorf("%s after Close: got %v, want Unavailable wrapping ErrClosed", call, err)
		}
	}
	// An Unavailable error from an ask names its executor (see
	// DriverContext.AskExecutor): a Call does not say which it asked.
	for _, call := range []string{"AskExecutor", "GoExecutor"} {
		if err := closed[call]; err == nil || !strings.Contains(err.Error(), "executor 1") {
			t.Errorf("%s after Close: got %v, want it to name executor 1", call, err)
		}
	}
}

// ExecutorListener sees executors join and leave, with a reason for a
// crash and none for a clean release; an executor that dies while the
// driver asks it fails the ask with CodeUnavailable at once.
func TestMembershipAndExecutorDeath(t *testing.T) {
	var (
		dc      plugin.DriverContext
		events  = make(chan string, 10)
		inRecv  = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	defer close(release)
	p := fakePlugin{
		name: "members",
		newDriver: func() plugin.DriverPlugin {
			return &listeningDriver{
				fakeDriver: fakeDriver{InitF: keepDriverContext(&dc)},
				AddedF: func(ctx context.Context, e plugin.ExecutorInfo) {
					if id, _ := plugin.SenderID(ctx); id != e.ID {
						events <- "bad sender " + id
					}
					events <- "added " + e.ID
				},
				RemovedF: func(_ context.Context, e plugin.ExecutorInfo, reason error) {
					events <- "removed " + e.ID + " crash=" + boolString(reason != nil)
				},
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &receivingExecutor{ReceiveF: func(ctx context.Context, _ any) (any, error) {
				inRecv <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, nil
			}}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	ctx := testCtx(t)
	added := []string{<-events, <-events}
	if !(added[0] == "added 1" && added[1] == "added 2" || added[0] == "added 2" && added[1] == "added 1") {
		t.Fatalf("got %q, want added 1 and added 2", added)
	}

	askErr := make(chan error, 1)
	go func() {
		_, err := dc.AskExecutor(ctx, "1", text("hang"))
		askErr <- err
	}()
	<-inRecv
	start := time.Now()
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	err := <-askErr
	if plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("ask to a dead executor: got %v, want CodeUnavailable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("ask to a dead executor took %v to fail", took)
	}
	if got := <-events; got != "removed 1 crash=true" {
		t.Errorf("got %q, want removed 1 crash=true", got)
	}
	embertest.WaitFor(t, "executor 1 to leave", func() bool { return len(dc.Executors()) == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := <-events; got != "removed 2 crash=false" {
		t.Errorf("got %q, want removed 2 crash=false", got)
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// proto.Message values travel as protobuf.
func TestProtoMessages(t *testing.T) {
	pc, _ := askCluster(t, func(_ context.Context, msg any) (any, error) {
		s := msg.(*wrapperspb.StringValue)
		return wrapperspb.String(strings.ToUpper(s.GetValue())), nil
	}, ember.Config{})
	got, err := plugin.Ask[*wrapperspb.StringValue](testCtx(t), pc, wrapperspb.String("hello"))
	if err != nil || got.GetValue() != "HELLO" {
		t.Fatalf("got %v, %v; want HELLO, nil", got, err)
	}
}

func init() { plugin.RegisterMessage[*wrapperspb.StringValue]() }

// Backpressure end to end: while the driver plugin is stuck, a fast
// sender fills the lane, the stream and its own queue, and then Send
// blocks until its ctx ends; nothing sent is lost, and the stall, ten
// times longer than the heartbeat timeout, does not cost the executor.
func TestSendBackpressure(t *testing.T) {
	release := make(chan struct{})
	var got atomic.Int64
	pc, _ := askCluster(t, func(_ context.Context, msg any) (any, error) {
		<-release
		got.Add(1)
		return nil, nil
	}, ember.Config{LaneQueue: 10, SendQueue: 10, HeartbeatInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
	defer cancel()
	sent := 0
	var err error
	for ; sent < 10_000_000; sent++ {
		if err = pc.Send(ctx, number(sent)); err != nil {
			break
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) || plugin.CodeOf(err) != plugin.CodeDeadlineExceeded {
		t.Fatalf("Send after %d messages: got %v, want it to block until the deadline", sent, err)
	}
	close(release)
	embertest.WaitFor(t, "every message sent before the block", func() bool { return got.Load() == int64(sent) })
	if err := pc.Send(testCtx(t), number(-1)); err != nil {
		t.Errorf("Send after the stall: %v (the executor was dropped?)", err)
	}
}

// Semantics 6 under overload: a driver plugin that falls behind holds up
// only its own senders. While an executor's Send to it waits (its lane is
// full), the same executor's asks to another plugin are answered, and the
// stuck plugin's own Receive can still ask that executor back: the stream
// they share keeps flowing. Nothing sent is lost.
func TestFullLaneStallsOnlyItsPlugin(t *testing.T) {
	release := newGate()
	asked := make(chan error, 1)
	var got atomic.Int64
	var dc plugin.DriverContext
	var slowPCs, fastPCs contexts
	slow := fakePlugin{
		name: "slow",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{
				InitF: keepDriverContext(&dc),
				ReceiveF: func(ctx context.Context, msg any) (any, error) {
					if got.Add(1) == 1 {
						// The executor is flooding this plugin; with a
						// stalled stream this reply could not arrive.
						actx, cancel := context.WithTimeout(ctx, 5*time.Second)
						_, err := plugin.AskExecutor[text](actx, dc, "1", text("back"))
						cancel()
						asked <- err
					}
					release.wait()
					return nil, nil
				},
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: slowPCs.init},
				ReceiveF:     func(context.Context, any) (any, error) { return text("here"), nil },
			}
		},
	}
	fast := fakePlugin{
		name: "fast",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(context.Context, any) (any, error) { return text("fast"), nil }}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: fastPCs.init}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Plugins: []plugin.Plugin{slow, fast}, LaneQueue: 10, MetricsAddr: "127.0.0.1:0"})
	t.Cleanup(release.open) // after Start: a failed test must not leave the plugin stuck at shutdown

	ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
	defer cancel()
	sent := 0
	var err error
	for ; sent < 10_000_000; sent++ {
		if err = slowPCs.get("1").Send(ctx, number(sent)); err != nil {
			break
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send to the stuck plugin after %d messages: got %v, want it to wait until the deadline", sent, err)
	}
	if err := <-asked; err != nil {
		t.Errorf("the stuck plugin asking the flooding executor back: %v, want the reply", err)
	}
	actx, acancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer acancel()
	if r, err := plugin.Ask[text](actx, fastPCs.get("1"), text("hi")); err != nil || r != "fast" {
		t.Errorf("Ask to the other plugin while the stuck one's sender waits: got %q, %v; want fast, nil", r, err)
	}
	// Both limits are counted: the driver's lane filled, and the
	// executor's Send waited for its window (shipped with its metrics).
	embertest.WaitFor(t, "the limit hits in /metrics", func() bool {
		fams := scrape(t, c.Driver.MetricsURL())
		filled, _ := value(fams, "ember_limit_hits_total", map[string]string{"executor": "driver", "limit": "lane_queue"})
		waited, _ := value(fams, "ember_limit_hits_total", map[string]string{"executor": "1", "limit": "send_window"})
		return filled >= 1 && waited >= 1
	})
	release.open()
	embertest.WaitFor(t, "every message sent before the wait", func() bool { return got.Load() == int64(sent) })
	if err := slowPCs.get("1").Send(testCtx(t), number(-1)); err != nil {
		t.Errorf("Send once the plugin caught up: %v, want nil", err)
	}
}

// The same from the driver's side: an executor plugin that falls behind
// holds up the driver's SendExecutor to it, and only that. Meanwhile the
// driver's asks to another plugin on the same executor are answered; once
// the plugin catches up, everything sent has arrived and sending goes on.
func TestFullExecutorLaneStallsOnlyItsPlugin(t *testing.T) {
	release := newGate()
	var got atomic.Int64
	var mu sync.Mutex
	dcs := map[string]plugin.DriverContext{}
	receiver := func(name string, recv func(context.Context, any) (any, error)) fakePlugin {
		return fakePlugin{
			name: name,
			newDriver: func() plugin.DriverPlugin {
				return &fakeDriver{InitF: func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) {
					mu.Lock()
					dcs[name] = pc
					mu.Unlock()
					return nil, nil
				}}
			},
			newExecutor: func() plugin.ExecutorPlugin { return &receivingExecutor{ReceiveF: recv} },
		}
	}
	slow := receiver("slow", func(context.Context, any) (any, error) {
		release.wait()
		got.Add(1)
		return nil, nil
	})
	other := receiver("other", func(context.Context, any) (any, error) { return text("other"), nil })
	embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Plugins: []plugin.Plugin{slow, other}, LaneQueue: 10})
	t.Cleanup(release.open) // after Start: a failed test must not leave the plugin stuck at shutdown
	mu.Lock()
	slowDC, otherDC := dcs["slow"], dcs["other"]
	mu.Unlock()

	ctx, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
	defer cancel()
	sent := 0
	var err error
	for ; sent < 10_000_000; sent++ {
		if err = slowDC.SendExecutor(ctx, "1", number(sent)); err != nil {
			break
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendExecutor to the stuck plugin after %d messages: got %v, want it to wait until the deadline", sent, err)
	}
	actx, acancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer acancel()
	if r, err := plugin.AskExecutor[text](actx, otherDC, "1", text("hi")); err != nil || r != "other" {
		t.Errorf("AskExecutor to the other plugin while the stuck one's sender waits: got %q, %v; want other, nil", r, err)
	}
	release.open()
	embertest.WaitFor(t, "every message sent before the wait", func() bool { return got.Load() == int64(sent) })
	if err := slowDC.SendExecutor(testCtx(t), "1", number(-1)); err != nil {
		t.Errorf("SendExecutor once the plugin caught up: %v, want nil", err)
	}
}

// windowedDriver is a driver plugin with a send window of its own.
type windowedDriver struct {
	fakeDriver
	window int
}

func (d *windowedDriver) SendWindow() int { return d.window }

// Config.SendWindow is what one plugin may have in flight, each way, and a
// plugin.SendWindowed driver plugin sets its own: with the receiving
// plugin stuck, as many Sends go as the window holds (the last may
// overdraw it) and the next waits, naming the window, while another
// plugin on the same connection keeps the application's window. Executors
// take the driver's values at the handshake; one still counting with the
// default would let a different number through towards the driver, and
// would close the connection on the driver's sends beyond its default.
func TestConfiguredSendWindow(t *testing.T) {
	// Each message costs its 250,000 bytes of text, a CBOR header of a
	// few bytes and 64 bytes of overhead: about 250,070.
	const size = 250_000
	for _, tc := range []struct {
		name       string
		window     int  // Config.SendWindow
		windowed   bool // the "bulk" plugin implements plugin.SendWindowed
		own        int  // and returns this
		toExecutor bool
		want       int // ceil(window / 250,070)
		wantOther  int // for the "other" plugin, checked when windowed
	}{
		{name: "default to the driver", want: 5},
		{name: "4 MiB to the driver", window: 4 << 20, want: 17},
		{name: "16 MiB to the driver", window: 16 << 20, want: 68},
		{name: "16 MiB to an executor", window: 16 << 20, toExecutor: true, want: 68},
		{name: "the plugin's own 16 MiB to the driver", windowed: true, own: 16 << 20, want: 68, wantOther: 5},
		{name: "the plugin's own 16 MiB to an executor, under 4 MiB", window: 4 << 20, windowed: true, own: 16 << 20, toExecutor: true, want: 68, wantOther: 17},
		{name: "the plugin's own 0 keeps 4 MiB", window: 4 << 20, windowed: true, want: 17, wantOther: 17},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := newGate()
			var got atomic.Int64
			recv := func(context.Context, any) (any, error) {
				release.wait()
				got.Add(1)
				return nil, nil
			}
			dcs := map[string]*plugin.DriverContext{"bulk": new(plugin.DriverContext), "other": new(plugin.DriverContext)}
			pcs := map[string]*contexts{"bulk": new(contexts), "other": new(contexts)}
			var plugins []plugin.Plugin
			for _, name := range []string{"bulk", "other"} {
				plugins = append(plugins, fakePlugin{
					name: name,
					newDriver: func() plugin.DriverPlugin {
						d := fakeDriver{InitF: keepDriverContext(dcs[name]), ReceiveF: recv}
						if name == "bulk" && tc.windowed {
							return &windowedDriver{fakeDriver: d, window: tc.own}
						}
						return &d
					},
					newExecutor: func() plugin.ExecutorPlugin {
						return &receivingExecutor{
							fakeExecutor: fakeExecutor{InitF: pcs[name].init},
							ReceiveF:     recv,
						}
					},
				})
			}
			embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet, Plugins: plugins, SendWindow: tc.window})
			t.Cleanup(release.open) // after Start: a failed test must not leave the plugins stuck at shutdown
			send := func(ctx context.Context, name string) error {
				msg := text(strings.Repeat("x", size))
				if tc.toExecutor {
					return (*dcs[name]).SendExecutor(ctx, "1", msg)
				}
				return pcs[name].get("1").Send(ctx, msg)
			}

			check := func(name string, want, window int) {
				t.Helper()
				sent := 0
				var err error
				for ; sent <= want; sent++ {
					ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
					err = send(ctx, name)
					cancel()
					if err != nil {
						break
					}
				}
				if sent != want || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s: got %d sends before one waited (%v), want %d and then a wait until the deadline", name, sent, err, want)
				}
				if want := fmt.Sprintf("plugin %q: waiting for the receiving side to take in the messages already sent (send window %d bytes)", name, window); !strings.Contains(err.Error(), want) {
					t.Errorf("%s: error of the Send that waited: got %q, want it to say %q", name, err, want)
				}
			}
			window := cmp.Or(tc.window, 1<<20)
			check("bulk", tc.want, cmp.Or(tc.own, window))
			if tc.windowed {
				check("other", tc.wantOther, window)
			}
			release.open()
			wantGot := int64(tc.want + tc.wantOther)
			embertest.WaitFor(t, "every message sent before the waits", func() bool { return got.Load() == wantGot })
			if err := send(testCtx(t), "bulk"); err != nil {
				t.Errorf("Send once the plugin caught up: %v, want nil", err)
			}
		})
	}
}

// Broadcast gives every executor that can take the message its copy at
// once, and only then waits for one whose plugin is behind: a slow
// executor delays nobody else's copy. (Broadcast visits executors in no
// fixed order, so several rounds make the slow one come first.)
func TestBroadcastDoesNotWaitForASlowExecutor(t *testing.T) {
	release := newGate()
	got2 := make(chan text, 16)
	var dc plugin.DriverContext
	var pcs contexts
	p := fakePlugin{
		name: "bcast",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: keepDriverContext(&dc)}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			var id string
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
					id = pc.ExecutorID()
					pcs.put(pc)
					return nil
				}},
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					switch {
					case id == "1":
						release.wait() // executor 1's plugin is stuck
					case id == "2":
						if m, ok := msg.(text); ok {
							got2 <- m
						}
					}
					return nil, nil
				},
			}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, Plugins: []plugin.Plugin{p}, LaneQueue: 10})
	t.Cleanup(release.open) // after Start: a failed test must not leave the plugin stuck at shutdown

	// Spend executor 1's window.
	fctx, fcancel := context.WithTimeout(testCtx(t), time.Second)
	defer fcancel()
	var err error
	for sent := 0; err == nil && sent < 10_000_000; sent++ {
		err = dc.SendExecutor(fctx, "1", number(sent))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendExecutor to the stuck executor: got %v, want it to wait until the deadline", err)
	}

	for round := range 5 {
		want := text(fmt.Sprint("round ", round))
		ctx, cancel := context.WithCancel(testCtx(t))
		done := make(chan error, 1)
		go func() { done <- dc.Broadcast(ctx, want) }()
		select {
		case m := <-got2:
			if m != want {
				t.Errorf("round %d: executor 2 got %q, want %q", round, m, want)
			}
		case <-time.After(5 * time.Second):
			cancel()
			t.Fatalf("round %d: executor 2 got nothing while executor 1's plugin is stuck", round)
		}
		select {
		case err := <-done:
			t.Errorf("round %d: Broadcast returned (%v) before executor 1 could take its copy", round, err)
		default:
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("round %d: Broadcast after its ctx ended: got %v, want context.Canceled", round, err)
		}
	}
}

// Messages of every size arrive byte for byte, in both directions and in
// order, including around wire.LargePayload (64 KiB), from which payloads
// are neither copied into the batch that carries them nor out of it.
func TestLargeMessagesArriveIntact(t *testing.T) {
	sizes := []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 1 << 20, 3 << 20}
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([][]byte, len(sizes))
	for i, n := range sizes {
		data[i] = make([]byte, n)
		for j := range data[i] {
			data[i][j] = byte(rng.Uint32())
		}
	}
	reversed := func(p payload) payload {
		r := slices.Clone(p.Data)
		slices.Reverse(r)
		return payload{Data: r}
	}
	toDriver := make(chan text, len(sizes))
	toExecutors := make(chan string, 2*len(sizes))
	var dc plugin.DriverContext
	var pcs contexts
	p := fakePlugin{
		name: "bulk",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{
				InitF: keepDriverContext(&dc),
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					switch m := msg.(type) {
					case payload:
						return reversed(m), nil
					case text:
						toDriver <- m
					}
					return nil, nil
				},
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			var id string
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: pcs.initWithID(&id)},
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					switch m := msg.(type) {
					case payload:
						return reversed(m), nil
					case text:
						toExecutors <- id + ":" + string(m)
					}
					return nil, nil
				},
			}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	ctx := testCtx(t)
	pc := pcs.get("1")

	for i, d := range data {
		want := reversed(payload{Data: d})
		got, err := plugin.Ask[payload](ctx, pc, payload{Data: d})
		if err != nil || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("Ask with %d bytes: got %d bytes (%v), want them reversed", sizes[i], len(got.Data), err)
		}
		got, err = plugin.AskExecutor[payload](ctx, dc, "2", payload{Data: d})
		if err != nil || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("AskExecutor with %d bytes: got %d bytes (%v), want them reversed", sizes[i], len(got.Data), err)
		}
	}
	// Large and small sends queued together share batches.
	for _, d := range data {
		if err := pc.Send(ctx, text(d)); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range data {
		if got := <-toDriver; string(got) != string(d) {
			t.Errorf("send %d (%d bytes): got %d bytes, not the ones sent", i, sizes[i], len(got))
		}
	}
	for _, d := range data {
		if err := dc.Broadcast(ctx, text(d)); err != nil {
			t.Fatal(err)
		}
	}
	next := map[string]int{}
	for range 2 * len(data) {
		id, got, _ := strings.Cut(<-toExecutors, ":")
		if i := next[id]; got != string(data[i]) {
			t.Errorf("executor %s, broadcast %d (%d bytes): got %d bytes, not the ones sent", id, i, sizes[i], len(got))
		}
		next[id]++
	}
}

// numbered is a message whose content follows from its sender and number,
// so that the receiver can check it.
type numbered struct {
	From string
	Seq  int
	Data []byte
}

func init() { plugin.RegisterMessage[numbered]() }

// numberedMsg returns message seq from from: a size around the large-
// payload threshold, up to 1 MiB, or small, and bytes that follow from
// (from, seq).
func numberedMsg(from string, seq int) numbered {
	rng := rand.New(rand.NewPCG(uint64(len(from))<<32|uint64(from[0]), uint64(seq)))
	sizes := []int{0, 10, 1000, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10, 1 << 20}
	data := make([]byte, sizes[rng.IntN(len(sizes))])
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return numbered{From: from, Seq: seq, Data: data}
}

// Messages of mixed sizes, small ones and ones over the large-payload
// threshold sharing batches, sent from two executors at once while the
// driver broadcasts more, with a window of the plugin's own that keeps
// many in flight: each arrives intact and in its sender's order.
func TestMixedSizesArriveIntact(t *testing.T) {
	const sends, broadcasts = 60, 40
	check := func(got numbered, next map[string]int) error {
		want := numberedMsg(got.From, got.Seq)
		if got.Seq != next[got.From] {
			return fmt.Errorf("from %s: got message %d, want %d", got.From, got.Seq, next[got.From])
		}
		next[got.From]++
		if !bytes.Equal(got.Data, want.Data) {
			return fmt.Errorf("from %s, message %d: %d bytes that differ from the %d sent", got.From, got.Seq, len(got.Data), len(want.Data))
		}
		return nil
	}
	var problems sync.Map // description -> struct{}
	var atDriver atomic.Int64
	var atExecutors atomic.Int64
	var dc plugin.DriverContext
	var pcs contexts
	p := fakePlugin{
		name: "mixed",
		newDriver: func() plugin.DriverPlugin {
			next := map[string]int{} // Receive runs one at a time
			return &windowedDriver{window: 8 << 20, fakeDriver: fakeDriver{
				InitF: keepDriverContext(&dc),
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					if err := check(msg.(numbered), next); err != nil {
						problems.Store("driver: "+err.Error(), struct{}{})
					}
					atDriver.Add(1)
					return nil, nil
				},
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			next := map[string]int{}
			var id string
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: pcs.initWithID(&id)},
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					if err := check(msg.(numbered), next); err != nil {
						problems.Store("executor "+id+": "+err.Error(), struct{}{})
					}
					atExecutors.Add(1)
					return nil, nil
				},
			}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	ctx := testCtx(t)

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, id := range []string{"1", "2"} {
		wg.Go(func() {
			for seq := range sends {
				if err := pcs.get(id).Send(ctx, numberedMsg("executor "+id, seq)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for seq := range broadcasts {
			if err := dc.Broadcast(ctx, numberedMsg("driver", seq)); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "every message received", func() bool {
		return atDriver.Load() == 2*sends && atExecutors.Load() == 2*broadcasts
	})
	problems.Range(func(k, _ any) bool {
		t.Error(k)
		return true
	})
}

// A driver plugin's ExecutorListener sees OnExecutorAdded once the
// executor's plugins are initialised: messages its executor plugin sends
// from Init come before it (an Init may wait on an Ask's reply, so they
// cannot wait for it), and every later message after it, in the lane's
// order.
func TestExecutorAddedAmongMessages(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(ev string) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}
	var pcs contexts
	p := fakePlugin{
		name: "listener",
		newDriver: func() plugin.DriverPlugin {
			return &listeningDriver{
				fakeDriver: fakeDriver{ReceiveF: func(_ context.Context, msg any) (any, error) {
					record(string(msg.(text)))
					return nil, nil
				}},
				AddedF:   func(context.Context, plugin.ExecutorInfo) { record("added") },
				RemovedF: func(context.Context, plugin.ExecutorInfo, error) {},
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(ctx context.Context, pc plugin.ExecutorContext, conf map[string]string) error {
				if _, err := pc.Ask(ctx, text("asked in Init")); err != nil {
					return err
				}
				return pcs.init(ctx, pc, conf)
			}}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	if err := pcs.get("1").Send(testCtx(t), text("sent after Init")); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "three events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"asked in Init", "added", "sent after Init"}; !slices.Equal(events, want) {
		t.Errorf("events in the driver plugin's lane: got %q, want %q", events, want)
	}
}

// A message to a side that takes none fails at the call: an executor's
// Send to a plugin with no driver side (WELCOME lists them), the driver's
// SendExecutor and Broadcast to a plugin whose executor side has no
// Receive (READY lists them), as the asks to them already did, from the
// other side. The sends used to return nil, and the message was dropped
// there, logged and counted.
func TestMessagesToASideWithoutReceiveFailAtTheCall(t *testing.T) {
	var ec plugin.ExecutorContext
	var dc plugin.DriverContext
	executorOnly := fakePlugin{
		name: "executor-only",
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error { ec = pc; return nil }}
		},
	}
	driverOnly := fakePlugin{
		name:      "driver-only",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
	}
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{executorOnly, driverOnly}, Logger: quiet})
	ctx := testCtx(t)
	tests := []struct {
		name string
		call func() error
		code plugin.Code
		text string
	}{
		{"executor Send, no driver side", func() error { return ec.Send(ctx, text("hi")) }, plugin.CodeNotFound, `plugin "executor-only" has no driver side`},
		{"executor Ask, no driver side", func() error { _, err := ec.Ask(ctx, text("hi")); return err }, plugin.CodeNotFound, `plugin "executor-only" has no driver side`},
		{"SendExecutor, no Receive", func() error { return dc.SendExecutor(ctx, "1", text("hi")) }, plugin.CodeUnimplemented, `plugin "driver-only" takes no messages on executors: it has no executor side, or its executor plugin does not implement plugin.ExecutorReceiver`},
		{"AskExecutor, no Receive", func() error { _, err := dc.AskExecutor(ctx, "1", text("hi")); return err }, plugin.CodeUnimplemented, `plugin "driver-only" takes no messages on executors: it has no executor side, or its executor plugin does not implement plugin.ExecutorReceiver`},
		{"Broadcast, no Receive", func() error { return dc.Broadcast(ctx, text("hi")) }, plugin.CodeUnimplemented, `plugin "driver-only" takes no messages on executors: it has no executor side, or its executor plugin does not implement plugin.ExecutorReceiver`},
	}
	for _, tt := range tests {
		err := tt.call()
		if plugin.CodeOf(err) != tt.code || err == nil || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: got %v, want %v saying %q", tt.name, err, tt.code, tt.text)
		}
	}
}

// A plugin whose executor side takes messages on some executors only (it
// picks its ExecutorPlugin per host, say): Broadcast delivers to those
// that take it, and should report success, as it did.
func TestBroadcastToSomeReceiversSucceeds(t *testing.T) {
	var dc plugin.DriverContext
	var built, got atomic.Int32
	p := fakePlugin{
		name:      "some",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
		newExecutor: func() plugin.ExecutorPlugin {
			if built.Add(1) == 1 {
				return &receivingExecutor{ReceiveF: func(context.Context, any) (any, error) { got.Add(1); return nil, nil }}
			}
			return &fakeExecutor{}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	err := dc.Broadcast(testCtx(t), text("hi"))
	embertest.WaitFor(t, "the receiving executor to get it", func() bool { return got.Load() == 1 })
	if err != nil {
		t.Errorf("Broadcast delivered to the executor that takes it, yet returned %v", err)
	}
}

// SendExecutor and Broadcast racing the driver's shutdown: every one that
// returned nil is delivered to the executors' Receive. A SendExecutor that
// passed the driver's "stopping" check just before Close, and queued its
// frame after Close had queued STOP, returned nil and the executor,
// stopping, dropped it ("executor plugin has shut down"): one message lost
// in every round.
func TestDriverSendsRacingShutdownAreDeliveredOrFail(t *testing.T) {
	for round := range 5 {
		var dc plugin.DriverContext
		var gotSent, gotBroadcast atomic.Int64
		p := fakePlugin{
			name:      "push",
			newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
			newExecutor: func() plugin.ExecutorPlugin {
				return &receivingExecutor{ReceiveF: func(_ context.Context, msg any) (any, error) {
					if msg == text("all") {
						gotBroadcast.Add(1)
					} else {
						gotSent.Add(1)
					}
					return nil, nil
				}}
			},
		}
		c := embertest.Start(t, ember.Config{Master: "local[2]", Plugins: []plugin.Plugin{p}, Logger: quiet})
		var sent, broadcast atomic.Int64
		var wg sync.WaitGroup
		lastErrs := make(chan error, 3)
		for _, id := range []string{"1", "2"} {
			wg.Go(func() {
				for {
					err := dc.SendExecutor(context.Background(), id, text("x"))
					if err != nil {
						lastErrs <- fmt.Errorf("SendExecutor: %w", err)
						return
					}
					sent.Add(1)
				}
			})
		}
		wg.Go(func() {
			for {
				err := dc.Broadcast(context.Background(), text("all"))
				if err != nil {
					lastErrs <- fmt.Errorf("Broadcast: %w", err)
					return
				}
				broadcast.Add(1)
			}
		})
		embertest.WaitFor(t, "messages to flow", func() bool { return gotSent.Load() >= 1000 })
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(lastErrs)
		// What ended them: the shutdown, as documented; Broadcast's
		// names no executor, as if one were at fault.
		for err := range lastErrs {
			if !errors.Is(err, plugin.ErrShuttingDown) || plugin.CodeOf(err) != plugin.CodeUnavailable ||
				strings.HasPrefix(err.Error(), "Broadcast: executor") {
				t.Errorf("round %d: %v, want CodeUnavailable matching plugin.ErrShuttingDown (naming no executor, from Broadcast)", round, err)
			}
		}
		if s, r := sent.Load(), gotSent.Load(); s != r {
			t.Errorf("round %d: %d SendExecutor calls returned nil, the executors received %d", round, s, r)
		}
		// The last Broadcast failed, maybe after reaching one executor.
		if b, r := broadcast.Load(), gotBroadcast.Load(); r < 2*b || r > 2*b+1 {
			t.Errorf("round %d: %d Broadcast calls returned nil (to 2 executors), the executors received %d", round, b, r)
		}
	}
}

// concurrentListener is a ConcurrentReceiver that also watches membership.
type concurrentListener struct {
	listeningDriver
	n int
}

func (c *concurrentListener) MaxConcurrentReceives() int { return c.n }

// plugin.ExecutorListener promises that OnExecutorAdded precedes every
// message the executor sends once initialised, and that OnExecutorRemoved
// follows its last message; nothing says ConcurrentReceiver gives that up
// (only the order of messages). In a concurrent lane the events are items
// like any other: a message from an executor runs while its
// OnExecutorAdded is still running.
func TestConcurrentReceiverKeepsMembershipEventsInLine(t *testing.T) {
	var mu sync.Mutex // guards added and received
	added := map[string]bool{}
	received := 0
	var early atomic.Int64
	var dc plugin.DriverContext
	dp := &concurrentListener{n: 4}
	dp.InitF = keepDriverContext(&dc)
	dp.AddedF = func(ctx context.Context, e plugin.ExecutorInfo) {
		// The executor is ready: what it sends from now on waits for
		// this call to return. (What it sends before it is ready, from
		// a goroutine its Init started, may run before: it used to,
		// now and then, in this test, which sent as soon as Init
		// returned.)
		if err := dc.SendExecutor(ctx, e.ID, text("go")); err != nil {
			t.Errorf("SendExecutor: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // a listener doing some work: opening a per-executor file, say
		mu.Lock()
		added[e.ID] = true
		mu.Unlock()
	}
	dp.RemovedF = func(context.Context, plugin.ExecutorInfo, error) {}
	dp.ReceiveF = func(ctx context.Context, _ any) (any, error) {
		id, _ := plugin.SenderID(ctx)
		mu.Lock()
		if !added[id] {
			early.Add(1)
		}
		received++
		mu.Unlock()
		return nil, nil
	}
	p := fakePlugin{
		name:      "conc",
		newDriver: func() plugin.DriverPlugin { return dp },
		newExecutor: func() plugin.ExecutorPlugin {
			var pc plugin.ExecutorContext
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: func(_ context.Context, c plugin.ExecutorContext, _ map[string]string) error {
					pc = c
					return nil
				}},
				// Told to go by OnExecutorAdded, as it starts: it sends
				// from a goroutine of its own while that call runs.
				ReceiveF: func(context.Context, any) (any, error) {
					go func() {
						for range 20 {
							if pc.Send(context.Background(), text("x")) != nil {
								return
							}
						}
					}()
					return nil, nil
				},
			}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	embertest.WaitFor(t, "20 messages received", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received == 20
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := early.Load(); n > 0 {
		t.Fatalf("%d messages of executor 1 ran before its OnExecutorAdded had returned", n)
	}
}

// A long poll from a goroutine an executor plugin's Init started (the
// workqueue pattern) reaches a concurrent driver lane before the
// executor's OnExecutorAdded. Waiting for what only that executor's later
// message brings (here, its result), it used to hold the event, and so
// that message, for ever (until the poll's deadline, when it has one).
// The event now runs once the poll has started, and the result, still
// after the event, ends the poll.
func TestPollFromInitDoesNotHoldOnExecutorAdded(t *testing.T) {
	polled := make(chan struct{})
	addedStarted := make(chan struct{})
	result := make(chan struct{})
	var addedDone atomic.Bool
	var resultBeforeAdded atomic.Bool
	dp := &concurrentListener{n: 4}
	dp.AddedF = func(context.Context, plugin.ExecutorInfo) {
		close(addedStarted)
		addedDone.Store(true)
	}
	dp.RemovedF = func(context.Context, plugin.ExecutorInfo, error) {}
	dp.ReceiveF = func(ctx context.Context, msg any) (any, error) {
		switch msg {
		case text("poll"):
			close(polled)
			select {
			case <-result:
				return text("job"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case text("result"):
			if !addedDone.Load() {
				resultBeforeAdded.Store(true)
			}
			close(result)
		}
		return nil, nil
	}
	polls := make(chan error, 1)
	p := fakePlugin{
		name:      "queue",
		newDriver: func() plugin.DriverPlugin { return dp },
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
				go func() {
					_, err := pc.Ask(context.Background(), text("poll"))
					polls <- err
				}()
				go func() {
					<-addedStarted // the executor is ready
					_ = pc.Send(context.Background(), text("result"))
				}()
				select { // READY follows the poll
				case <-polled:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	select {
	case err := <-polls:
		if err != nil {
			t.Errorf("the poll: %v", err)
		}
	case <-time.After(embertest.DefaultTimeout):
		t.Fatal("the poll never returned: OnExecutorAdded waited for it, and the result that ends it waited for OnExecutorAdded")
	}
	if resultBeforeAdded.Load() {
		t.Error("the executor's result, sent once it was ready, ran before its OnExecutorAdded returned")
	}
}

// A driver plugin answering an executor's Ask from that executor's Init,
// and pushing to it at once (assigning it work), is told the executor does
// not exist: "executor "1": ember: no such executor", while that executor
// is the sender of the message being handled. The error should say it is
// not ready yet.
func TestPushToAnExecutorInItsInitSaysNotReady(t *testing.T) {
	var dc plugin.DriverContext
	var pushErr error
	p := fakePlugin{
		name: "early",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{
				InitF: keepDriverContext(&dc),
				ReceiveF: func(ctx context.Context, _ any) (any, error) {
					id, _ := plugin.SenderID(ctx)
					pushErr = dc.SendExecutor(ctx, id, text("work"))
					return text("ok"), nil
				},
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: func(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
					_, err := pc.Ask(ctx, text("hello"))
					return err
				}},
				ReceiveF: func(context.Context, any) (any, error) { return nil, nil },
			}
		},
	}
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	if !errors.Is(pushErr, plugin.ErrNoSuchExecutor) || !strings.Contains(pushErr.Error(), "not ready") {
		t.Errorf("SendExecutor to an executor in its Init: got %v, want ErrNoSuchExecutor saying it is not ready yet", pushErr)
	}
}

// ackingExecutor acknowledges every message it receives with a Send of
// its own, as examples/dynamicconfig's executor side does.
type ackingExecutor struct {
	plugin.BaseExecutorPlugin
	pcs *contexts
	pc  plugin.ExecutorContext
	ran *atomic.Int64
}

func (e *ackingExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.pc = pc
	e.pcs.put(pc)
	return nil
}

func (e *ackingExecutor) Receive(ctx context.Context, _ any) (any, error) {
	e.ran.Add(1)
	return nil, e.pc.Send(ctx, text("ack"))
}

// A driver plugin whose Receive broadcasts for every report it takes in,
// and an executor plugin whose Receive acknowledges every broadcast with a
// Send, are each other's senders. With both sending far more than a small
// window holds, neither waits for the other for ever (they did, within
// about fifty messages: each lane waited in its Send for credit that only
// the other lane, waiting too, would give back), and every message runs.
func TestReceivesSendingToEachOtherDoNotDeadlock(t *testing.T) {
	const reports = 2000 // from each executor; each message takes about 70 bytes of the 4,096-byte window
	var dc plugin.DriverContext
	var pcs contexts
	var driverRan, executorsRan atomic.Int64
	p := fakePlugin{
		name: "cycle",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: keepDriverContext(&dc), ReceiveF: func(ctx context.Context, msg any) (any, error) {
				driverRan.Add(1)
				if msg == text("report") {
					return nil, dc.Broadcast(ctx, text("push"))
				}
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin { return &ackingExecutor{pcs: &pcs, ran: &executorsRan} },
	}
	embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, Plugins: []plugin.Plugin{p}, SendWindow: 4096})
	ctx := testCtx(t)
	for _, id := range []string{"1", "2"} {
		pc := pcs.get(id)
		go func() {
			for range reports {
				if err := pc.Send(ctx, text("report")); err != nil {
					t.Errorf("executor %s: report: %v", id, err)
					return
				}
			}
		}()
	}
	// Each report is broadcast to both executors, and each push acknowledged.
	const pushes = 2 * 2 * reports
	embertest.WaitFor(t, "every report, push and acknowledgement run", func() bool {
		return driverRan.Load() == 2*reports+pushes && executorsRan.Load() == pushes
	})
}

// floodReport, floodPush and floodAck are the messages of
// TestReceivesSendingToEachOtherUnderAFlood, 4,000 bytes each.
type (
	floodReport struct{ Pad string }
	floodPush   struct{ Pad string }
	floodAck    struct{ Pad string }
)

func init() {
	plugin.RegisterMessage[floodReport]()
	plugin.RegisterMessage[floodPush]()
	plugin.RegisterMessage[floodAck]()
}

// floodExecutor sends reports from a goroutine of its own, as fast as its
// window lets it, until it shuts down, and acknowledges every push with a
// Send under its Receive's ctx.
type floodExecutor struct {
	plugin.BaseExecutorPlugin
	pc   plugin.ExecutorContext
	stop context.CancelFunc
	done chan struct{}
}

func (e *floodExecutor) Init(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	e.pc = pc
	ctx, cancel := context.WithCancel(context.Background())
	e.stop, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		report := floodReport{strings.Repeat("r", 4000)}
		for ctx.Err() == nil {
			_ = pc.Send(ctx, report)
		}
	}()
	return nil
}

func (e *floodExecutor) Receive(ctx context.Context, _ any) (any, error) {
	return nil, e.pc.Send(ctx, floodAck{strings.Repeat("a", 4000)})
}

func (e *floodExecutor) Shutdown(context.Context) error {
	e.stop()
	<-e.done
	return nil
}

// TestReceivesSendingToEachOtherDoNotDeadlock's plugins, with the
// executors' reports sent by a goroutine of their own as fast as their
// windows let them, go on too. They stopped for good within a second,
// with three executors or more (a user's trial; here, eight): what the driver's lane
// lent while its Receive waited in Broadcast became anyone's once the
// Broadcast went on, the reports spent it, and the lane, lending for
// each report that came while its next Broadcast waited, reached its
// loan cap with reports that could run only once that Broadcast returned.
// Then it lent nothing more, and the executors' Receives, waiting to
// acknowledge, held the pushes Broadcast waited on. Lent credit is now
// the handlers' until what it was lent for has run.
func TestReceivesSendingToEachOtherUnderAFlood(t *testing.T) {
	const reports = 5000 // with eight executors and a 32 KiB window, it stopped at 2,700 to 3,100
	var dc plugin.DriverContext
	var handled atomic.Int64
	p := fakePlugin{
		name: "flood",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{InitF: keepDriverContext(&dc), ReceiveF: func(ctx context.Context, msg any) (any, error) {
				if _, ok := msg.(floodReport); ok {
					handled.Add(1)
					return nil, dc.Broadcast(ctx, floodPush{strings.Repeat("p", 4000)})
				}
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin { return &floodExecutor{} },
	}
	embertest.Start(t, ember.Config{Master: "local[8]", Logger: quiet, Plugins: []plugin.Plugin{p}, SendWindow: 32 << 10})
	embertest.WaitFor(t, fmt.Sprintf("%d reports handled, each pushed to every executor", reports), func() bool {
		return handled.Load() >= reports
	})
}

// A Broadcast waits for an executor whose plugin is behind (its window
// spent) until its ctx ends, then fails naming that executor; an executor
// lost while Broadcast waits for it is skipped, not a failure: its error
// (CodeUnavailable, ErrClosed) read as the driver shutting down, and a
// caller retrying delivered twice to every other executor. Once the
// driver has shut down, Broadcast fails with ErrClosed.
func TestBroadcastWithAStuckOrLostExecutor(t *testing.T) {
	release := newGate()
	got2 := make(chan text, 16)
	var dc plugin.DriverContext
	p := fakePlugin{
		name:      "bcast",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{InitF: keepDriverContext(&dc)} },
		newExecutor: func() plugin.ExecutorPlugin {
			var id string
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
					id = pc.ExecutorID()
					return nil
				}},
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					switch m, ok := msg.(text); {
					case id == "1":
						release.wait() // executor 1's plugin is stuck
					case ok:
						got2 <- m
					}
					return nil, nil
				},
			}
		},
	}
	c := embertest.Start(t, ember.Config{Master: "local[2]", Logger: quiet, Plugins: []plugin.Plugin{p}, LaneQueue: 10})
	t.Cleanup(release.open)

	// Spend executor 1's window.
	fctx, fcancel := context.WithTimeout(testCtx(t), time.Second)
	defer fcancel()
	var err error
	for sent := 0; err == nil; sent++ {
		err = dc.SendExecutor(fctx, "1", number(sent))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendExecutor to the stuck executor: got %v, want it to wait until the deadline", err)
	}

	// Stuck: the ctx ends while Broadcast waits.
	sctx, scancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer scancel()
	err = dc.Broadcast(sctx, text("first"))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "executor 1: ") {
		t.Errorf("Broadcast with executor 1 stuck: got %v, want DeadlineExceeded naming executor 1", err)
	}
	if m := <-got2; m != "first" {
		t.Fatalf("executor 2 got %q, want %q", m, "first")
	}

	// Lost while Broadcast waits for it.
	done := make(chan error, 1)
	go func() { done <- dc.Broadcast(testCtx(t), text("second")) }()
	if m := <-got2; m != "second" {
		t.Fatalf("executor 2 got %q, want %q", m, "second")
	}
	select {
	case err := <-done:
		t.Fatalf("Broadcast returned (%v) before executor 1 could take its copy", err)
	default:
	}
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Broadcast while executor 1 was lost: got %v, want nil (executor 1 skipped)", err)
	}

	release.open()
	_ = c.Close()
	if err := dc.Broadcast(testCtx(t), text("late")); !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("Broadcast after shutdown: got %v, want ErrClosed", err)
	}
}

// Go keeps many asks in flight from one goroutine, their outcomes on one
// channel, and its asks keep their place among the same goroutine's sends:
// the driver plugin takes them in the order they were made.
func TestGoKeepsManyAsksInFlight(t *testing.T) {
	const n = 300
	var mu sync.Mutex
	var order []string
	pc, _ := askCluster(t, func(_ context.Context, msg any) (any, error) {
		mu.Lock()
		order = append(order, fmt.Sprint(msg))
		mu.Unlock()
		if m, ok := msg.(number); ok {
			return number(int(m) * 10), nil
		}
		return nil, nil
	}, ember.Config{})
	ctx := testCtx(t)
	done := make(chan *plugin.Call, n)
	var want []string
	for i := range n {
		if i%3 == 0 {
			if err := pc.Send(ctx, text(fmt.Sprint("send ", i))); err != nil {
				t.Fatal(err)
			}
			want = append(want, fmt.Sprint("send ", i))
		}
		if c := pc.Go(ctx, number(i), done); c.Done != done || c.Msg != number(i) {
			t.Fatalf("Go returned %+v, want a Call for number %d on the channel given", c, i)
		}
		want = append(want, fmt.Sprint(i))
	}
	seen := make(map[number]bool)
	for range n {
		c := <-done
		got, err := plugin.Reply[number](c)
		if err != nil || got != c.Msg.(number)*10 {
			t.Errorf("Go(%v): got %v, %v; want %v", c.Msg, got, err, c.Msg.(number)*10)
		}
		seen[c.Msg.(number)] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct asks answered, want %d", len(seen), n)
	}
	// The last send may still be on its way.
	embertest.WaitFor(t, "every message taken", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == len(want) })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		i := 0
		for i < len(order) && order[i] == want[i] {
			i++
		}
		t.Errorf("the driver took the messages in another order than they were made: first difference at %d: got %q, want %q", i, order[i], want[i])
	}
}

// A done Call keeps nothing of its ask but what it shows (Msg, Reply,
// Err, Done): not the ask's ctx, which a caller keeping Calls by request
// (to match replies, or to call each one's cancel func) would otherwise
// keep alive, with all its values, for as long as it keeps the Call.
func TestGoCallDoesNotHoldItsCtx(t *testing.T) {
	p, dc, ec := receivingPlugin("keeper", func(_ context.Context, msg any) (any, error) {
		if msg == text("fail") {
			return nil, plugin.NewError(plugin.CodeNotFound, "no such key")
		}
		return number(1), nil
	})
	embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet})
	type heavyCtx struct {
		context.Context
		ballast [1 << 16]byte
	}
	tests := []struct {
		name string
		msg  any
		ask  func(ctx context.Context, msg any) *plugin.Call
	}{
		{"Go", number(1), func(ctx context.Context, msg any) *plugin.Call { return (*ec).Go(ctx, msg, nil) }},
		{"Go, failed", text("fail"), func(ctx context.Context, msg any) *plugin.Call { return (*ec).Go(ctx, msg, nil) }},
		{"GoExecutor", number(1), func(ctx context.Context, msg any) *plugin.Call { return (*dc).GoExecutor(ctx, "1", msg, nil) }},
		{"GoExecutor, failed", text("fail"), func(ctx context.Context, msg any) *plugin.Call { return (*dc).GoExecutor(ctx, "1", msg, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// ask makes the ask under a ctx of its own and returns the
			// done Call and a weak pointer to that ctx: nothing else
			// refers to the ctx.
			ask := func() (*plugin.Call, weak.Pointer[heavyCtx]) {
				ctx := &heavyCtx{Context: testCtx(t)}
				call := tt.ask(ctx, tt.msg)
				<-call.Done
				return call, weak.Make(ctx)
			}
			call, ctx := ask()
			runtime.GC()
			if ctx.Value() != nil {
				t.Errorf("a done Call (Err %v) keeps its ask's ctx alive, want it unreachable", call.Err)
			}
			runtime.KeepAlive(call)
		})
	}
}
