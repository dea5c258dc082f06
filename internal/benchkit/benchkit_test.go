package benchkit

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBaselines(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := StartGRPC()
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	tcp, err := StartTCP(32)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Stop()

	for name, run := range map[string]func() ([]time.Duration, error){
		"grpc ping-pong": func() ([]time.Duration, error) { return GRPCPingPong(ctx, g.Addr, 32, 100) },
		"grpc unary":     func() ([]time.Duration, error) { return GRPCUnary(ctx, g.Addr, 32, 100) },
		"tcp ping-pong":  func() ([]time.Duration, error) { return TCPPingPong(tcp.Addr, 32, 100) },
	} {
		ds, err := run()
		if err != nil || len(ds) != 100 {
			t.Errorf("%s: got %d round trips, %v; want 100, nil", name, len(ds), err)
		}
	}
	readied := false
	if _, err := GRPCOneWay(ctx, g.Addr, 32, 1000, func() error { readied = true; return nil }); err != nil || !readied {
		t.Errorf("one-way: got %v, ready called %v; want nil, true", err, readied)
	}
	stop := errors.New("stop")
	if _, err := GRPCOneWay(ctx, g.Addr, 32, 1000, func() error { return stop }); !errors.Is(err, stop) {
		t.Errorf("one-way whose ready fails: got %v, want %v", err, stop)
	}
	readied = false
	if _, err := GRPCPipelined(ctx, g.Addr, 32, 1000, 64, func() error { readied = true; return nil }); err != nil || !readied {
		t.Errorf("pipelined: got %v, ready called %v; want nil, true", err, readied)
	}
	if _, err := GRPCPipelined(ctx, g.Addr, 32, 1000, 64, func() error { return stop }); !errors.Is(err, stop) {
		t.Errorf("pipelined whose ready fails: got %v, want %v", err, stop)
	}
	readied = false
	if _, err := GRPCPush(ctx, g.Addr, 32, 1000, func() error { readied = true; return nil }); err != nil || !readied {
		t.Errorf("push: got %v, ready called %v; want nil, true", err, readied)
	}
	if _, err := GRPCPush(ctx, g.Addr, 32, 1000, func() error { return stop }); !errors.Is(err, stop) {
		t.Errorf("push whose ready fails: got %v, want %v", err, stop)
	}
}

func TestStats(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	if got := Percentile(ds, 50); got != 5 {
		t.Errorf("p50: got %v, want 5", got)
	}
	if got := Percentile(ds, 99); got != 10 {
		t.Errorf("p99: got %v, want 10", got)
	}
	// Nearest rank: ceil(p/100 × n).
	for _, tt := range []struct {
		n    int
		p    float64
		want time.Duration
	}{
		{60, 99, 60}, {160, 99, 159}, {5060, 99, 5010}, {100, 99, 99}, {20000, 99, 19800}, {20000, 50, 10000}, {1, 99, 1}, {7, 100, 7},
	} {
		ds := make([]time.Duration, tt.n)
		for i := range ds {
			ds[i] = time.Duration(tt.n - i) // 1..n, unsorted
		}
		if got := Percentile(ds, tt.p); got != tt.want {
			t.Errorf("p%v of 1..%d: got %d, want %d", tt.p, tt.n, got, tt.want)
		}
	}
	xs := []float64{3, 1, 2}
	if got := Summarize(xs); got != (Summary{Median: 2, Min: 1, Max: 3}) {
		t.Errorf("Summarize: got %+v, want median 2, min 1, max 3", got)
	}
	if want := []float64{3, 1, 2}; !slices.Equal(xs, want) {
		t.Errorf("Summarize left its input as %v, want it untouched: %v", xs, want)
	}
	if got := Summarize([]float64{4, 1, 3, 2}); got.Median != 2.5 {
		t.Errorf("Summarize of an even count: got median %v, want 2.5", got.Median)
	}
}

func TestBody(t *testing.T) {
	prefixed := func(b string) ([]byte, error) { return []byte("abc" + b), nil } // 3 bytes of envelope
	if got := Body(5, prefixed); got != "ee" {
		t.Errorf("Body(5, 3-byte envelope) = %q, want %q", got, "ee")
	}
	defer func() {
		if recover() == nil {
			t.Error("Body with no fitting length: got no panic, want one")
		}
	}()
	Body(2, prefixed)
}
