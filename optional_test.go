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

// missedListener meant to be a plugin.ExecutorListener, and takes the
// executor's ID where the interface has its ExecutorInfo.
type missedListener struct{ plugin.BaseDriverPlugin }

func (*missedListener) OnExecutorAdded(context.Context, plugin.ExecutorInfo) {}
func (*missedListener) OnExecutorRemoved(context.Context, string, error)     {}

// missedTasks meant to be a plugin.TaskListener, and has one of its
// three methods.
type missedTasks struct{ plugin.BaseExecutorPlugin }

func (*missedTasks) OnTaskStart(context.Context, plugin.TaskInfo) {}

// A plugin side with a method meant for an optional interface it does not
// implement is warned of, on each side: it compiles, and the method is
// never called (a queue whose OnExecutorRemoved takes an ID lost the work
// of every executor lost, without a word).
func TestMissedOptionalInterfaceIsLogged(t *testing.T) {
	var logs logtest.Buffer
	embertest.Start(t, ember.Config{Master: "local[1]", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Plugins: []plugin.Plugin{fakePlugin{name: "missed",
			newDriver:   func() plugin.DriverPlugin { return &missedListener{} },
			newExecutor: func() plugin.ExecutorPlugin { return &missedTasks{} }}}})
	for _, want := range []string{
		"driver plugin: a method meant for an optional interface is never called",
		"OnExecutorRemoved is func(context.Context, string, error), want func(context.Context, plugin.ExecutorInfo, error)",
		"executor plugin: a method meant for an optional interface is never called",
		"OnTaskSucceeded is missing",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs: want %q in\n%s", want, logs.String())
		}
	}
}
