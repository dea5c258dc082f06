package rpc

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/plugin"
)

// A plugin method that ignores its ctx is abandoned when the ctx ends.
func TestCallWithinAbandonsAHungPlugin(t *testing.T) {
	release := make(chan struct{})
	finished := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := CallWithin(ctx, slog.New(slog.DiscardHandler), "stuck", "Shutdown", func(context.Context) error {
		defer close(finished)
		<-release // ignores ctx
		return nil
	})
	if plugin.CodeOf(err) != plugin.CodeDeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"stuck"`) {
		t.Errorf("got %v, want DeadlineExceeded naming the plugin", err)
	}
	close(release)
	<-finished

	if err := CallWithin(context.Background(), slog.New(slog.DiscardHandler), "ok", "Shutdown", func(context.Context) error { return nil }); err != nil {
		t.Errorf("a prompt plugin: got %v, want nil", err)
	}
}
