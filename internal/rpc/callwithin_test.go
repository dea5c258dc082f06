package rpc

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
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
	err := CallWithin(ctx, 20*time.Millisecond, slog.New(slog.DiscardHandler), "stuck", "Shutdown", func(context.Context) error {
		defer close(finished)
		<-release // ignores ctx
		return nil
	})
	if plugin.CodeOf(err) != plugin.CodeDeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"stuck"`) {
		t.Errorf("got %v, want DeadlineExceeded naming the plugin", err)
	}
	close(release)
	<-finished

	if err := CallWithin(context.Background(), 0, slog.New(slog.DiscardHandler), "ok", "Shutdown", func(context.Context) error { return nil }); err != nil {
		t.Errorf("a prompt plugin: got %v, want nil", err)
	}
}

// A plugin method that watches its ctx returns once it ends, and what it
// returns is CallWithin's result: it is not abandoned in a race with its
// own return. (Abandoned as the ctx ended, an executor plugin's final
// Send in Shutdown could go after STOPPED and be lost.)
func TestCallWithinWaitsForAPluginWatchingItsCtx(t *testing.T) {
	for range 100 {
		ctx, cancel := context.WithCancel(context.Background())
		entered := make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			errc <- CallWithin(ctx, time.Minute, slog.New(slog.DiscardHandler), "prompt", "Shutdown", func(ctx context.Context) error {
				close(entered)
				<-ctx.Done()
				return nil // its final work done
			})
		}()
		<-entered
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("a plugin returning as its ctx ended: got %v, want its nil", err)
		}
	}
}

// Abandoned because its ctx was canceled (a ^C during a driver plugin's
// Init), a plugin method fails with CodeCanceled, not DeadlineExceeded.
func TestCallWithinCanceled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := CallWithin(ctx, 0, slog.New(slog.DiscardHandler), "stuck", "Init", func(context.Context) error {
		<-release // ignores ctx
		return nil
	})
	if plugin.CodeOf(err) != plugin.CodeCanceled || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want Canceled", err)
	}
}

// A plugin method calling runtime.Goexit (t.Fatal outside its test's
// goroutine) fails at once, saying so: it used to be waited for until its
// ctx ended and a grace had passed, then reported abandoned for not
// returning in time.
func TestCallWithinGoexit(t *testing.T) {
	err := CallWithin(context.Background(), time.Hour, slog.New(slog.DiscardHandler), "fatal", "Shutdown", func(context.Context) error {
		runtime.Goexit()
		return nil
	})
	if plugin.CodeOf(err) != plugin.CodeInternal || !strings.Contains(err.Error(), `plugin "fatal": Shutdown called runtime.Goexit`) {
		t.Errorf("got %v, want Internal saying the plugin called runtime.Goexit", err)
	}
}
