package executor

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"
)

// Run's ctx ending while the executor waits for its driver (a standalone
// executor started before the driver, SIGTERM meanwhile): Run's error
// matches ctx.Err(), so that ember.Run exits with status 0 as documented.
// It used to be gRPC's Canceled status, which does not.
func TestCtxEndingDuringTheHandshakeIsAStop(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens: the dial is retried (WaitForReady)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	err = Run(ctx, Config{DriverAddr: addr, Logger: slog.New(slog.DiscardHandler), ConnectTimeout: 10 * time.Second})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: got %v, want an error matching context.Canceled", err)
	}
}
