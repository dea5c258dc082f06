package executor

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
)

// deadAddr returns a loopback address where nothing listens: one just
// listened on and closed.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// Run's ctx ending while the executor waits for its driver (a standalone
// executor started before the driver, SIGTERM meanwhile): Run's error
// matches ctx.Err(), so that ember.Run exits with status 0 as documented.
// It used to be gRPC's Canceled status, which does not.
func TestCtxEndingDuringTheHandshakeIsAStop(t *testing.T) {
	addr := deadAddr(t) // the dial is retried (WaitForReady)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	err := Run(ctx, Config{DriverAddr: addr, Logger: slog.New(slog.DiscardHandler), ConnectTimeout: 10 * time.Second})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: got %v, want an error matching context.Canceled", err)
	}
}

// An executor that cannot reach its driver says so at once (Warn), rather
// than waiting silently for ConnectTimeout (a minute by default), as it did.
func TestUnreachableDriverIsLoggedAtOnce(t *testing.T) {
	addr := deadAddr(t)
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{DriverAddr: addr, Logger: slog.New(slog.NewTextHandler(&logs, nil)), ConnectTimeout: time.Hour})
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "cannot reach the driver yet") {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before warning; logs: %q", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warning within 30s of the first failed dial (ConnectTimeout is an hour); logs: %q", logs.String())
		}
		runtime.Gosched()
	}
	if !strings.Contains(logs.String(), addr) {
		t.Errorf("the warning does not name the address %s: %q", addr, logs.String())
	}
}

// An executor that never reached its driver says so when ConnectTimeout
// ends, and asks the two questions that matter. It used to say it had
// "lost the driver", which it never had.
func TestUnreachableDriverError(t *testing.T) {
	addr := deadAddr(t)
	err := Run(context.Background(), Config{DriverAddr: addr, Logger: slog.New(slog.DiscardHandler), ConnectTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no handshake with driver "+addr) ||
		!strings.Contains(err.Error(), "is it running, at that address?") || errors.Is(err, ErrDriverLost) {
		t.Errorf("Run: got %v, want no handshake with %s, asking whether it runs there, and not ErrDriverLost", err, addr)
	}
}
