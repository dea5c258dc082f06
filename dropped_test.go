package ember_test

import (
	"context"
	"testing"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/plugin"
)

// giveUpInHandler runs ask under a ctx of its own, waits until its handler
// has it (entered), then cancels that ctx, and checks that ask returns
// CodeCanceled.
func giveUpInHandler(t *testing.T, ctx context.Context, entered <-chan struct{}, ask func(context.Context) error) {
	t.Helper()
	askCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ask(askCtx) }()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the handler never got the ask")
	}
	cancel()
	if err := <-errc; plugin.CodeOf(err) != plugin.CodeCanceled {
		t.Fatalf("the ask given up on: got %v, want CodeCanceled", err)
	}
}

// droppedReply is a reply a DroppedReplyListener was told of, with the
// sender its ctx carried.
type droppedReply struct {
	reply  any
	sender string
}

// droppedRecorder implements plugin.DroppedReplyListener for either side.
type droppedRecorder struct{ got chan droppedReply }

func (r droppedRecorder) OnReplyDropped(ctx context.Context, reply any) {
	sender, _ := plugin.SenderID(ctx)
	r.got <- droppedReply{reply, sender}
}

type droppingExecutor struct {
	fakeExecutor
	droppedRecorder
}

type droppingReceivingExecutor struct {
	receivingExecutor
	droppedRecorder
}

type droppingDriver struct {
	fakeDriver
	droppedRecorder
}

var (
	_ plugin.DroppedReplyListener = droppingExecutor{}
	_ plugin.DroppedReplyListener = droppingReceivingExecutor{}
	_ plugin.DroppedReplyListener = droppingDriver{}
)

// A reply that reaches the asking side after its ask gave up is handed to
// the asking plugin's OnReplyDropped, on either side, whatever the ask
// (Ask, Go, AskExecutor, GoExecutor): a queue whose replies are jobs
// learns at once that a job was not taken. The handlers here answer only
// once their asker has gone, so every reply comes too late. An executor
// plugin that listens without an ExecutorReceiver is told too.
func TestDroppedRepliesReachTheAsker(t *testing.T) {
	tests := []struct {
		name       string
		ask        func(ctx context.Context, dc plugin.DriverContext, ec plugin.ExecutorContext) error
		wantSender string // the sender OnReplyDropped's ctx carries
		onDriver   bool   // the driver plugin asked: its listener is told
	}{
		{"Ask", func(ctx context.Context, _ plugin.DriverContext, ec plugin.ExecutorContext) error {
			_, err := ec.Ask(ctx, text("late"))
			return err
		}, "", false},
		{"Go", func(ctx context.Context, _ plugin.DriverContext, ec plugin.ExecutorContext) error {
			return (<-ec.Go(ctx, text("late"), nil).Done).Err
		}, "", false},
		{"AskExecutor", func(ctx context.Context, dc plugin.DriverContext, _ plugin.ExecutorContext) error {
			_, err := dc.AskExecutor(ctx, "1", text("late"))
			return err
		}, "1", true},
		{"GoExecutor", func(ctx context.Context, dc plugin.DriverContext, _ plugin.ExecutorContext) error {
			return (<-dc.GoExecutor(ctx, "1", text("late"), nil).Done).Err
		}, "1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entered := make(chan struct{}, 1)
			receive := func(ctx context.Context, msg any) (any, error) {
				if msg != text("late") {
					return msg, nil
				}
				entered <- struct{}{}
				<-ctx.Done() // the asker has given up
				return text("job 7"), nil
			}
			driverGot := make(chan droppedReply, 1)
			execGot := make(chan droppedReply, 1)
			var (
				dc  plugin.DriverContext
				pcs contexts
			)
			embertest.Start(t, ember.Config{
				Master: "local[1]",
				Logger: quiet,
				Plugins: []plugin.Plugin{fakePlugin{
					name: "jobs",
					newDriver: func() plugin.DriverPlugin {
						return &droppingDriver{
							fakeDriver:      fakeDriver{InitF: keepDriverContext(&dc), ReceiveF: receive},
							droppedRecorder: droppedRecorder{driverGot},
						}
					},
					newExecutor: func() plugin.ExecutorPlugin {
						if !tt.onDriver { // no Receive needed
							return &droppingExecutor{fakeExecutor{InitF: pcs.init}, droppedRecorder{execGot}}
						}
						return &droppingReceivingExecutor{
							receivingExecutor: receivingExecutor{fakeExecutor: fakeExecutor{InitF: pcs.init}, ReceiveF: receive},
							droppedRecorder:   droppedRecorder{execGot},
						}
					},
				}},
			})
			ctx := testCtx(t)
			giveUpInHandler(t, ctx, entered, func(ctx context.Context) error { return tt.ask(ctx, dc, pcs.get("1")) })

			want, other := execGot, driverGot
			if tt.onDriver {
				want, other = driverGot, execGot
			}
			select {
			case got := <-want:
				if got.reply != text("job 7") || got.sender != tt.wantSender {
					t.Errorf("OnReplyDropped got reply %v from sender %q, want %v from %q", got.reply, got.sender, text("job 7"), tt.wantSender)
				}
			case <-ctx.Done():
				t.Fatal("OnReplyDropped was never called")
			}
			select {
			case got := <-other:
				t.Errorf("the plugin on the side that answered was told of a dropped reply: %v", got.reply)
			default:
			}
		})
	}
}

// A reply that comes after its ask gave up, to a plugin that does not
// listen for it, is counted in ember_messages_dropped_total (reason
// late_reply) where it came: on the executor for its Ask, shipped to the
// driver's /metrics under its ID, and on the driver for its AskExecutor.
func TestLateRepliesNobodyTakesAreCounted(t *testing.T) {
	tests := []struct {
		name     string
		ask      func(ctx context.Context, dc plugin.DriverContext, ec plugin.ExecutorContext) error
		executor string // the executor label: where the reply was dropped
	}{
		{"Ask", func(ctx context.Context, _ plugin.DriverContext, ec plugin.ExecutorContext) error {
			_, err := ec.Ask(ctx, text("late"))
			return err
		}, "1"},
		{"AskExecutor", func(ctx context.Context, dc plugin.DriverContext, _ plugin.ExecutorContext) error {
			_, err := dc.AskExecutor(ctx, "1", text("late"))
			return err
		}, "driver"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entered := make(chan struct{}, 1)
			p, dc, ec := receivingPlugin("unheard", func(ctx context.Context, msg any) (any, error) {
				entered <- struct{}{}
				<-ctx.Done() // the asker has given up
				return text("job 7"), nil
			})
			c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p}, Logger: quiet, MetricsAddr: "127.0.0.1:0",
				Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}})
			ctx := testCtx(t)
			giveUpInHandler(t, ctx, entered, func(ctx context.Context) error { return tt.ask(ctx, *dc, *ec) })
			embertest.WaitFor(t, "the late reply counted in /metrics", func() bool {
				n, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_messages_dropped_total",
					map[string]string{"executor": tt.executor, "plugin": "unheard", "reason": "late_reply"})
				return n == 1
			})
		})
	}
}
