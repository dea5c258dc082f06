package executor

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// An executor started before its driver keeps trying it at most about a
// second apart (gRPC's backoff, capped, with its jitter), so that it joins
// soon after the driver comes up. gRPC's default backoff grew to two
// minutes: an executor started half a minute early joined some fifteen
// seconds after its driver was up, and one started a minute early gave up
// at its ConnectTimeout though the driver was up by then. A server that
// accepts and closes every connection stands for the driver not up yet: it
// counts the attempts, where a closed port would not.
func TestExecutorRetriesAnUnreachableDriverOften(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var (
		mu       sync.Mutex
		attempts []time.Time
	)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
			_ = c.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() {
		runErr <- Run(ctx, Config{DriverAddr: lis.Addr().String(), Logger: slog.New(slog.DiscardHandler), ConnectTimeout: time.Minute})
	}()
	defer func() {
		cancel()
		<-runErr
	}()
	// By the eighth attempt gRPC's default backoff has left a gap of
	// some four seconds; the capped one never more than 1.2s (a second
	// and its jitter), which a loaded machine may stretch, not to 3s.
	const want = 8
	const maxGap = 3 * time.Second
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(attempts)
		var gap time.Duration
		if n >= 2 {
			gap = attempts[n-1].Sub(attempts[n-2])
		}
		mu.Unlock()
		if gap > maxGap {
			t.Fatalf("attempt %d to reach the driver: got it %v after the one before, want at most %v", n, gap, maxGap)
		}
		if n >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d attempts to reach the driver in 30s, want %d", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
