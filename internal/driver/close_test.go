package driver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/emberhq/ember/internal/auth"
	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/metrics"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const testSecret = "close-test-secret"

// servedDriver starts a driver with the test secret on a loopback port,
// its Config changed by edits.
func servedDriver(t *testing.T, edits ...func(*Config)) *Driver {
	t.Helper()
	cfg := Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Secret: testSecret, ShutdownTimeout: 200 * time.Millisecond}
	for _, edit := range edits {
		edit(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.Serve(lis)
	return d
}

// waitUntil polls cond until it holds, failing the test, which names
// what it waited for, after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// handshake connects to d as an executor with the test secret and returns
// the stream once HELLO, changed by edits, is sent; what the driver sends
// next is the test's to read.
func handshake(t *testing.T, d *Driver, edits ...func(*wire.Hello)) wire.Ember_ConnectClient {
	t.Helper()
	cc, err := grpc.NewClient(d.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(func() { cancel(); cc.Close() })
	stream, err := wire.NewEmberClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := stream.Recv()
	if err != nil || len(b.Frames) != 1 || b.Frames[0].Challenge == nil {
		t.Fatalf("CHALLENGE: got %v, %v", b, err)
	}
	nonce := auth.Nonce()
	hello := &wire.Hello{
		ProtocolVersion: wire.ProtocolVersion,
		MessageTypes:    codec.Names(),
		MaxMessageBytes: rpc.DefaultMaxMessageBytes,
		AuthNonce:       nonce,
		Auth:            auth.Prove(testSecret, auth.Executor, b.Frames[0].Challenge.Nonce, nonce, nil),
	}
	for _, edit := range edits {
		edit(hello)
	}
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: hello}}}); err != nil {
		t.Fatal(err)
	}
	return stream
}

// hookConnect sets testHookConnect for one test.
func hookConnect(t *testing.T, hook func(stage string, es *execState)) {
	t.Helper()
	testHookConnect.Store(&hook)
	t.Cleanup(func() { testHookConnect.Store(nil) })
}

// Close called while an executor is listed but its connection not yet
// made (it used to send STOP on a nil connection: a panic) leaves that
// executor to be refused, as one arriving after Close is, or cut off when
// Close stops the server first.
func TestCloseDuringHandshakeRefusesTheExecutor(t *testing.T) {
	d := servedDriver(t)
	closed := make(chan error, 1)
	hookConnect(t, func(stage string, _ *execState) {
		if stage != "listed" {
			return
		}
		go func() { closed <- d.Close() }()
		// Let Close take its list of executors before the handshake goes on.
		for {
			d.mu.Lock()
			stopping := d.stopping
			d.mu.Unlock()
			if stopping {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	stream := handshake(t, d)
	// The refusal, unless Close has stopped the server first.
	if b, err := stream.Recv(); err == nil {
		w := b.Frames[0].Welcome
		if w == nil || plugin.Code(w.Code) != plugin.CodeUnavailable || w.Error != "the driver is shutting down" {
			t.Errorf("got %v, want a WELCOME refusing with CodeUnavailable: the driver is shutting down", b.Frames[0])
		}
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := len(d.Executors()); n != 0 {
		t.Errorf("executors listed after Close: %d, want 0", n)
	}
}

// Once an executor's connection is published, a frame queued on it (a
// STOP from Close) reaches the executor after the WELCOME and in a batch
// of its own: the executor's handshake reads the WELCOME's batch only, and
// dropped a STOP that shared it (the executor then never stopped).
func TestWelcomeTravelsAlone(t *testing.T) {
	d := servedDriver(t)
	t.Cleanup(func() { d.Close() })
	hookConnect(t, func(stage string, es *execState) {
		if stage == "published" {
			_ = es.conn.SendControl(&wire.Frame{Kind: wire.Kind_KIND_STOP})
		}
	})
	stream := handshake(t, d)
	var kinds [][]wire.Kind
	for len(kinds) < 2 {
		b, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", kinds, err)
		}
		var batch []wire.Kind
		for _, f := range b.Frames {
			batch = append(batch, f.Kind)
		}
		kinds = append(kinds, batch)
	}
	if len(kinds[0]) != 1 || kinds[0][0] != wire.Kind_KIND_WELCOME || len(kinds[1]) == 0 || kinds[1][0] != wire.Kind_KIND_STOP {
		t.Errorf("batches received: %v, want [WELCOME] then [STOP ...]", kinds)
	}
}

// A STOPPED that arrived is taken as such even when Close's wait for the
// executors ends with another still stopping: once that wait is over, the
// select over both chose between them at random, reporting the stopped
// executor as not stopping and losing the errors its STOPPED carried.
//
// The wait is a second, not servedDriver's 200ms: the STOP has to reach
// the stopping executor's goroutine and its STOPPED come back within it,
// and a loaded machine can keep a process off the CPU for 200ms ("executor
// 1 did not stop within 200ms").
func TestStoppedCountsAfterTheWaitForAnotherEnds(t *testing.T) {
	for range 10 {
		d := servedDriver(t, func(c *Config) { c.ShutdownTimeout = time.Second })
		stops, hangs := handshake(t, d), handshake(t, d)
		for _, s := range []wire.Ember_ConnectClient{stops, hangs} {
			if b, err := s.Recv(); err != nil || b.Frames[0].Welcome == nil {
				t.Fatalf("WELCOME: got %v, %v", b, err)
			}
		}
		go func() { // STOPPED, with its plugins' errors, as soon as STOP arrives
			for {
				b, err := stops.Recv()
				if err != nil {
					return
				}
				for _, f := range b.Frames {
					if f.Kind == wire.Kind_KIND_STOP {
						_ = stops.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_STOPPED, Code: uint32(plugin.CodeInternal), Error: "plugin \"p\": shutdown: boom"}}})
					}
				}
			}
		}()
		go func() { // never stops
			for {
				if _, err := hangs.Recv(); err != nil {
					return
				}
			}
		}()
		err := d.Close()
		if err == nil || !strings.Contains(err.Error(), "boom") || strings.Count(err.Error(), "did not stop within") != 1 {
			t.Fatalf("Close: got %v; want the stopped executor's error (boom), and one that did not stop", err)
		}
	}
}

// Close stops the timers that drop the final series of executors that
// left on their own: one still armed kept the closed Driver (its registry,
// plugins, every executor's series) reachable for departedSeriesKept.
func TestClosedDriverIsNotKeptByDepartedTimers(t *testing.T) {
	wd := func() weak.Pointer[Driver] {
		d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Plugins: []plugin.Plugin{&membership{}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		es := testExecState(d, plugin.ExecutorInfo{ID: "1"})
		c := rpc.New(nil, nil, d, rpc.Options{})
		c.Peer, es.conn = es, c
		d.mu.Lock()
		d.execs["1"] = es
		d.mu.Unlock()
		d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "executor_work_total", Help: "Work."}))
		final, _ := metrics.Encode(reg)
		d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_LEAVING})
		d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: final})
		c.Close(plugin.Errorf(plugin.CodeUnavailable, "%w", rpc.ErrPeerClosed)) // left cleanly
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		return weak.Make(d)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for wd.Value() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("a closed Driver is still reachable (departedSeriesKept = %v): its timer was not stopped", departedSeriesKept)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// An executor that does not answer STOP within ShutdownTimeout (one whose
// STOPPED is stuck behind a large send on a slow link, say) is named as
// such when its connection ends, in the driver's line and in the reason
// its attempts and OnExecutorRemoved get: the line used to say it was lost
// with "connection closed", the driver's own graceful close of it after
// the wait, which reads like a crash of the executor's.
func TestExecutorNotStoppedInTimeIsNamedSo(t *testing.T) {
	var logs logtest.Buffer
	d := servedDriver(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	hangs := handshake(t, d)
	if b, err := hangs.Recv(); err != nil || b.Frames[0].Welcome == nil {
		t.Fatalf("WELCOME: got %v, %v", b, err)
	}
	go func() { // reads, and never answers STOP
		for {
			if _, err := hangs.Recv(); err != nil {
				return
			}
		}
	}()
	err := d.Close()
	if err == nil || !strings.Contains(err.Error(), "executor 1 did not stop within 200ms") {
		t.Fatalf("Close: got %v, want executor 1 did not stop within 200ms", err)
	}
	waitUntil(t, "the executor's removal to be logged", func() bool {
		return strings.Contains(logs.String(), "executor=1") && strings.Contains(logs.String(), "during shutdown")
	})
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "during shutdown") {
			line = l
		}
	}
	if !strings.Contains(line, "did not stop within 200ms (ShutdownTimeout), and its connection was closed") {
		t.Errorf("the driver's line for an executor that did not stop in time: got\n%s\nwant it to say that it did not stop within 200ms, and was closed", line)
	}
}

// An executor whose release also timed out, its connection not ending
// (its reads stuck behind a large send on a slow link, say), is closed
// with the reason it did not stop, if it did not: the release's timeout
// is a consequence. Close used to give "not released within" alone.
func TestUnreleasedReason(t *testing.T) {
	d := &Driver{cfg: Config{ShutdownTimeout: time.Second}}
	tests := []struct {
		name       string
		notStopped error
		want       string
	}{
		{"stopped", nil, "executor 3 not released within 1s"},
		{"not stopped", errors.New("executor 3 did not stop within 1s"), "executor 3 did not stop within 1s (ShutdownTimeout), and its connection was closed"},
	}
	for _, tt := range tests {
		es := &execState{info: plugin.ExecutorInfo{ID: "3"}, notStopped: tt.notStopped}
		err := d.unreleasedReason(es)
		if !strings.Contains(err.Error(), tt.want) || plugin.CodeOf(err) != plugin.CodeUnavailable {
			t.Errorf("%s: got %v (code %v), want %q, unavailable", tt.name, err, plugin.CodeOf(err), tt.want)
		}
	}
}
