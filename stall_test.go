package ember_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
)

// A Receive that blocks with messages waiting behind it holds them
// without any other sign. Either side warns of it once the lane has held
// them for ember.lane.stallWarning, and says when they move again; its
// ember_lane_stalled is 1 meanwhile, and before and after 0 (the driver's)
// or absent (an executor's).
func TestStalledLaneIsWarnedOf(t *testing.T) {
	tests := []struct {
		name string
		// send sends two messages to the plugin's side under test.
		send func(ctx context.Context, dc plugin.DriverContext, ec plugin.ExecutorContext) error
		want string // in the warning's line: who warns
		// where is the executor label of the lane's ember_lane_stalled;
		// atZero, whether it is served at 0 when not stalled (the
		// driver's), or absent (an executor's, which ships it only
		// while stalled).
		where  string
		atZero bool
	}{
		{"driver", func(ctx context.Context, _ plugin.DriverContext, ec plugin.ExecutorContext) error {
			for range 2 {
				if err := ec.Send(ctx, text("hold")); err != nil {
					return err
				}
			}
			return nil
		}, "plugin=stalling", "driver", true},
		{"executor", func(ctx context.Context, dc plugin.DriverContext, ec plugin.ExecutorContext) error {
			for range 2 {
				if err := dc.SendExecutor(ctx, ec.ExecutorID(), text("hold")); err != nil {
					return err
				}
			}
			return nil
		}, "executor=1 plugin=stalling", "1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := newGate()
			defer release.open()
			p, dc, ec := receivingPlugin("stalling", func(ctx context.Context, msg any) (any, error) {
				select {
				case <-release.ch:
				case <-ctx.Done():
				}
				return nil, nil
			})
			var logs logtest.Buffer
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{p},
				Conf:   map[string]string{ember.ConfStallWarning: "50ms", ember.ConfMetricsInterval: "10ms"},
				Logger: slog.New(slog.NewTextHandler(&logs, nil))},
				func(ctx context.Context, d *ember.Driver) error {
					series := map[string]string{"executor": tt.where, "plugin": "stalling"}
					stalled := func(want float64) func() bool {
						return func() bool {
							v, ok := value(scrape(t, d.MetricsURL()), "ember_lane_stalled", series)
							if want == 0 && !tt.atZero {
								return !ok
							}
							return ok && v == want
						}
					}
					embertest.WaitFor(t, "ember_lane_stalled at 0 before the stall", stalled(0))
					if err := tt.send(ctx, *dc, *ec); err != nil {
						return err
					}
					embertest.WaitFor(t, "a warning of the stalled lane", func() bool {
						return strings.Contains(logs.String(), "lane is stalled")
					})
					embertest.WaitFor(t, "ember_lane_stalled at 1", stalled(1))
					release.open()
					embertest.WaitFor(t, "a line saying the lane moves again", func() bool {
						return strings.Contains(logs.String(), "lane is moving again")
					})
					embertest.WaitFor(t, "ember_lane_stalled back at 0", stalled(0))
					return nil
				})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			var warning string
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, "lane is stalled") {
					warning = line
				}
			}
			for _, want := range []string{"level=WARN", tt.want, "waiting=1 running=1 max=1", "plugin.ConcurrentReceiver"} {
				if !strings.Contains(warning, want) {
					t.Errorf("the warning %q does not say %q", warning, want)
				}
			}
		})
	}
}

// ember.lane.stallWarning is a duration, 0 (never) or at least 10ms (each
// side looks at every lane every third of it).
func TestStallWarningConf(t *testing.T) {
	tests := []struct {
		value, wantErr string
	}{
		{"0", ""},
		{"2m", ""},
		{"soon", `conf ember.lane.stallWarning="soon": not a duration`},
		{"-1s", "conf ember.lane.stallWarning=-1s: want 0 (never) or at least 10ms"},
		{"1ns", "conf ember.lane.stallWarning=1ns: want 0 (never) or at least 10ms"},
		{"10ms", ""},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", Conf: map[string]string{ember.ConfStallWarning: tt.value}},
				func(context.Context, *ember.Driver) error { return nil })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Run: got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Run: got %v, want an error saying %q", err, tt.wantErr)
			}
		})
	}
}
