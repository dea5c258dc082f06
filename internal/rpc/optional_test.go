package rpc_test

import (
	"context"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/plugin"
)

// A driver plugin whose OnExecutorRemoved takes the executor's ID, not its
// ExecutorInfo, compiles, and is never called: a queue that puts a lost
// executor's jobs back there silently loses them. Nothing said so.
type wrongRemoved struct{ plugin.BaseDriverPlugin }

func (*wrongRemoved) OnExecutorAdded(context.Context, plugin.ExecutorInfo) {}
func (*wrongRemoved) OnExecutorRemoved(context.Context, string, error)     {}

type valueSide struct{ plugin.BaseExecutorPlugin }

func (*valueSide) Receive(context.Context, any) (any, error) { return nil, nil }

type onlyStart struct{ plugin.BaseExecutorPlugin }

func (onlyStart) OnTaskStart(context.Context, plugin.TaskInfo) {}

type fine struct{ plugin.BaseDriverPlugin }

func (*fine) OnExecutorAdded(context.Context, plugin.ExecutorInfo)          {}
func (*fine) OnExecutorRemoved(context.Context, plugin.ExecutorInfo, error) {}
func (*fine) MaxConcurrentReceives() int                                    { return 4 }

func TestMissedOptional(t *testing.T) {
	for _, tc := range []struct {
		name  string
		v     any
		sides string
		want  []string
	}{
		{"wrong signature", &wrongRemoved{}, "driver", []string{"plugin.ExecutorListener", "OnExecutorRemoved is func(context.Context, string, error), want func(context.Context, plugin.ExecutorInfo, error)", "OnExecutorAdded and OnExecutorRemoved are never called"}},
		{"pointer method, value side", valueSide{}, "executor", []string{"plugin.ExecutorReceiver", "Receive is declared on *rpc_test.valueSide, and the plugin side is a rpc_test.valueSide value"}},
		{"part of an interface", onlyStart{}, "executor", []string{"plugin.TaskListener", "OnTaskSucceeded is missing", "OnTaskFailed is missing", "so OnTaskStart is never called"}},
		{"all fine", &fine{}, "driver", nil},
		{"none", plugin.BaseDriverPlugin{}, "driver", nil},
		{"nil", nil, "executor", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ifaces := rpc.DriverOptional
			if tc.sides == "executor" {
				ifaces = rpc.ExecutorOptional
			}
			got := rpc.MissedOptional(tc.v, ifaces)
			if tc.want == nil {
				if len(got) != 0 {
					t.Fatalf("got %q, want nothing", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("got %q, want one line", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got[0], w) {
					t.Errorf("got %q, want it to contain %q", got[0], w)
				}
			}
		})
	}
}
