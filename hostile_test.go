package ember_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/auth"
	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// standalone runs a standalone driver in the background until the test
// ends and returns it.
func standalone(t *testing.T, cfg ember.Config) *ember.Driver {
	t.Helper()
	cfg.Master = "standalone"
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	started := make(chan *ember.Driver, 1)
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- ember.Run(context.Background(), cfg, func(_ context.Context, d *ember.Driver) error {
			started <- d
			<-release
			return nil
		})
	}()
	t.Cleanup(func() {
		close(release)
		if err := <-done; err != nil {
			t.Errorf("standalone driver: %v", err)
		}
	})
	select {
	case d := <-started:
		return d
	case err := <-done:
		t.Fatalf("standalone driver did not start: %v", err)
	}
	return nil
}

// joinErr runs an in-process executor against addr and returns how its
// handshake ended (nil: it joined and was released).
func joinErr(t *testing.T, addr, secret string, opts ...grpc.DialOption) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	joined := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- executor.Run(ctx, executor.Config{
			DriverAddr:     addr,
			Secret:         secret,
			Logger:         quiet,
			BuildID:        "test",
			Tasks:          ember.Tasks(),
			DialOptions:    opts,
			ConnectTimeout: 2 * time.Second,
			OnWelcome:      func(string) { close(joined) },
		})
	}()
	select {
	case err := <-errc:
		return err
	case <-joined:
		cancel() // it got in; leave
		<-errc
		return nil
	}
}

func TestAuthentication(t *testing.T) {
	d := standalone(t, ember.Config{Secret: "right secret", BuildID: "test", MetricsAddr: "127.0.0.1:0"})
	tests := []struct {
		name, secret string
		wantCode     plugin.Code
		wantText     string
	}{
		{name: "right secret", secret: "right secret"},
		{name: "wrong secret", secret: "wrong secret", wantCode: plugin.CodeUnauthenticated, wantText: "does not know the application secret"},
		{name: "no secret", secret: "", wantCode: plugin.CodeUnauthenticated, wantText: "EMBER_SECRET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := joinErr(t, d.Addr(), tt.secret)
			if tt.wantCode == plugin.CodeOK {
				if err != nil {
					t.Fatalf("got %v, want to join", err)
				}
				return
			}
			if plugin.CodeOf(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("got %v, want %v mentioning %q", err, tt.wantCode, tt.wantText)
			}
		})
	}
	fams := scrape(t, d.MetricsURL())
	if got, _ := value(fams, "ember_auth_failures_total", map[string]string{"reason": "wrong proof"}); got != 1 {
		t.Errorf("ember_auth_failures_total{reason=wrong proof}: got %v, want 1", got)
	}
}

// An executor that has the secret refuses a driver that cannot prove it.
func TestExecutorAuthenticatesTheDriver(t *testing.T) {
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test"})
	err := joinErr(t, d.Addr(), "my secret")
	if plugin.CodeOf(err) != plugin.CodeUnauthenticated || !strings.Contains(err.Error(), "did not prove") {
		t.Errorf("got %v, want CodeUnauthenticated: the driver did not prove the secret", err)
	}
}

// An executor that refuses its driver at the handshake (here: it has a
// secret, and the driver runs without authentication) never joined: the
// driver must not log it as an executor lost, nor count it in
// ember_executors_lost_total, but say that the executor refused it, and
// why that happens without authentication.
func TestExecutorRefusingTheDriverIsNotLost(t *testing.T) {
	var logs logtest.Buffer
	d := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test", MetricsAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := joinErr(t, d.Addr(), "my secret"); plugin.CodeOf(err) != plugin.CodeUnauthenticated {
		t.Fatalf("got %v, want CodeUnauthenticated", err)
	}
	const want = "refused this driver"
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	if !strings.Contains(out, want) || !strings.Contains(out, "InsecureNoAuth") {
		t.Errorf("the driver's log does not say the executor refused it, nor why (InsecureNoAuth):\n%s", out)
	}
	if strings.Contains(out, "executor lost") {
		t.Errorf("the driver logged an executor that refused it as lost:\n%s", out)
	}
	if v, _ := value(scrape(t, d.MetricsURL()), "ember_executors_lost_total", nil); v != 0 {
		t.Errorf("ember_executors_lost_total = %v, want 0: the executor never joined", v)
	}
}

func TestStandaloneRequiresASecret(t *testing.T) {
	t.Setenv(ember.EnvSecret, "")
	t.Setenv(ember.EnvSecretFile, "")
	err := ember.Run(testCtx(t), ember.Config{Master: "standalone", Logger: quiet}, func(context.Context, *ember.Driver) error {
		t.Error("driver function ran without a secret")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "no application secret") {
		t.Errorf("got %v, want an error saying a secret is needed", err)
	}
}

// bytesCodec sends []byte as a gRPC message as is: a peer that speaks
// gRPC but not Ember's frames.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (bytesCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (bytesCodec) Name() string { return "ember-test-bytes" }

var _ encoding.Codec = bytesCodec{}

// hostileClient is an authenticated peer that speaks Ember's frames and
// then misbehaves.
type hostileClient struct {
	stream wire.Ember_ConnectClient
	cc     *grpc.ClientConn
}

// awaitReply reads h's stream until the REPLY to call comes, failing t,
// with what it waited for, if the stream ends first.
func (h *hostileClient) awaitReply(t *testing.T, call uint64, what string) {
	t.Helper()
	for {
		b, err := h.stream.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		for _, f := range b.Frames {
			if f.Kind == wire.Kind_KIND_REPLY && f.Call == call {
				return
			}
		}
	}
}

func dialHostile(t *testing.T, addr, secret string, authenticate bool) *hostileClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := wire.NewEmberClient(cc).Connect(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileClient{stream: stream, cc: cc}
	if !authenticate {
		return h
	}
	b, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	nonce := auth.Nonce()
	hello := &wire.Hello{
		ProtocolVersion: wire.ProtocolVersion,
		BuildId:         "test",
		Plugins:         []string{"honest"},
		MessageTypes:    codec.Names(),
		Tasks:           ember.Tasks(),
		MaxMessageBytes: rpc.DefaultMaxMessageBytes,
		AuthNonce:       nonce,
		Auth:            auth.Prove(secret, auth.Executor, b.Frames[0].Challenge.Nonce, nonce, nil),
	}
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: hello}}}); err != nil {
		t.Fatal(err)
	}
	w, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if c := w.Frames[0].GetWelcome().GetCode(); c != 0 {
		t.Fatalf("hostile client refused: %s", w.Frames[0].GetWelcome().GetError())
	}
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 0}}}}); err != nil {
		t.Fatal(err)
	}
	return h
}

// Hostile peers: garbage, HTTP/1, a truncated frame, a replayed
// handshake, a frame for a plugin that does not exist, a flood of asks, a
// flood of sends beyond the flow-control window and a slowloris. The driver stays up, serves the honest executors, and loses
// none of their messages.
func TestHostilePeers(t *testing.T) {
	const secret, sends = "hostile test secret", 2000
	var received, flood atomic.Int64
	var afterFlood atomic.Bool
	flooding := newGate() // opened when the flood is over
	var pcs contexts
	honest := fakePlugin{
		name: "honest",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(ctx context.Context, msg any) (any, error) {
				switch msg.(type) {
				case number:
					received.Add(1)
					return nil, nil
				case block:
					<-ctx.Done() // the flood's asks pile up here
					return nil, ctx.Err()
				case payload:
					flood.Add(1)
					flooding.wait() // the flood of sends piles up here
					return nil, nil
				case text:
					if msg == text("after the flood") {
						afterFlood.Store(true)
						return nil, nil
					}
				}
				return msg, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: pcs.init}
		},
	}
	c := embertest.Start(t, ember.Config{
		Master:             "local[2]",
		Plugins:            []plugin.Plugin{honest},
		Secret:             secret,
		BuildID:            "test",
		Logger:             quiet,
		HandshakeTimeout:   300 * time.Millisecond,
		MaxOutstandingAsks: 16,
	})
	addr := c.Driver.Addr()
	ctx := testCtx(t)

	// Honest traffic runs throughout.
	honestDone := make(chan error, 2)
	for _, id := range []string{"1", "2"} {
		go func() {
			pc := pcs.get(id)
			for i := range sends {
				if err := pc.Send(ctx, number(i)); err != nil {
					honestDone <- err
					return
				}
				if i%100 == 0 {
					if _, err := pc.Ask(ctx, text("ping")); err != nil {
						honestDone <- fmt.Errorf("honest ask: %w", err)
						return
					}
				}
			}
			honestDone <- nil
		}()
	}

	t.Run("garbage bytes", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("\x00\xff garbage \x16\x03\x01 not a protocol at all\r\n\r\n"))
		expectClosed(t, conn)
	})
	t.Run("HTTP/1 request", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectClosed(t, conn)
	})
	t.Run("slowloris TCP", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		expectClosed(t, conn) // after HandshakeTimeout, having sent nothing
	})
	t.Run("slowloris handshake", func(t *testing.T) {
		h := dialHostile(t, addr, secret, false)
		if _, err := h.stream.Recv(); err != nil { // the challenge
			t.Fatal(err)
		}
		if _, err := h.stream.Recv(); err == nil { // never answered: dropped
			t.Error("a peer that never sent HELLO was not dropped")
		}
	})
	t.Run("truncated frame", func(t *testing.T) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		s, err := cc.NewStream(ctx, &wire.Ember_ServiceDesc.Streams[0], "/ember.wire.v1.Ember/Connect", grpc.ForceCodec(bytesCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		full, _ := proto.Marshal(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{BuildId: strings.Repeat("x", 100)}}}})
		_ = s.SendMsg(full[:len(full)/2])
		var b []byte
		for s.RecvMsg(&b) == nil { // the challenge, then the end
		}
	})
	t.Run("replayed handshake", func(t *testing.T) {
		h := dialHostile(t, addr, secret, false)
		if _, err := h.stream.Recv(); err != nil {
			t.Fatal(err)
		}
		old, nonce := auth.Nonce(), auth.Nonce() // a proof made for another challenge
		_ = h.stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{
			ProtocolVersion: wire.ProtocolVersion, AuthNonce: nonce, Auth: auth.Prove(secret, auth.Executor, old, nonce, nil),
		}}}})
		w, err := h.stream.Recv()
		if err != nil || w.Frames[0].GetWelcome().GetCode() != uint32(plugin.CodeUnauthenticated) {
			t.Errorf("replayed proof: got %v, %v; want an Unauthenticated WELCOME", w, err)
		}
	})
	t.Run("unknown plugin, unknown type and flood of asks", func(t *testing.T) {
		h := dialHostile(t, addr, secret, true)
		name, payload, _ := codec.Encode(block{})
		var frames []*wire.Frame
		frames = append(frames, &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: 1000, TypeId: 9999, Payload: payload})
		frames = append(frames, &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: 1, Plugin: 99, Type: name, Payload: payload})
		for i := range 200 {
			frames = append(frames, &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: uint64(i + 2), Type: name, Payload: payload, TimeoutMicros: 2e6})
		}
		frames = append(frames, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 99, Type: name, Payload: payload})
		if err := h.stream.Send(&wire.Batch{Frames: frames}); err != nil {
			t.Fatal(err)
		}
		codes := map[uint32]int{}
		for codes[uint32(plugin.CodeNotFound)] == 0 || codes[uint32(plugin.CodeInvalidArgument)] == 0 || codes[uint32(plugin.CodeResourceExhausted)] < 200-16 {
			b, err := h.stream.Recv()
			if err != nil {
				t.Fatalf("after replies %v: %v", codes, err)
			}
			for _, f := range b.Frames {
				if f.Kind == wire.Kind_KIND_REPLY {
					codes[f.Code]++
				}
			}
		}
		if codes[uint32(plugin.CodeNotFound)] != 1 {
			t.Errorf("ask for plugin 99: got %v, want one NotFound", codes)
		}
		if codes[uint32(plugin.CodeInvalidArgument)] != 1 {
			t.Errorf("ask with an out-of-range type ID: got %v, want one InvalidArgument", codes)
		}
		if got := codes[uint32(plugin.CodeResourceExhausted)]; got < 200-16 {
			t.Errorf("flood: %d asks refused with ResourceExhausted, want at least %d (limit 16)", got, 200-16)
		}
	})

	t.Run("repeated READY and STOPPED", func(t *testing.T) {
		h := dialHostile(t, addr, secret, true) // sent one READY
		frames := []*wire.Frame{
			{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 4}},
			{Kind: wire.Kind_KIND_STOPPED},
			{Kind: wire.Kind_KIND_STOPPED}, // closing the stopped channel twice would crash the driver
		}
		if err := h.stream.Send(&wire.Batch{Frames: frames}); err != nil {
			t.Fatal(err)
		}
		// Frames are handled in order: once the ask after them is answered,
		// the driver has taken them in, and it is still up.
		name, ping, _ := codec.Encode(text("ping"))
		if err := h.stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_ASK, Call: 1, Type: name, Payload: ping}}}); err != nil {
			t.Fatal(err)
		}
		h.awaitReply(t, 1, "the reply after the repeated frames")
		// Counted once: the gauge of executors alive agrees with the list
		// (a second READY counted twice would keep it one above).
		embertest.WaitFor(t, "ember_executors_alive to equal the executors ready", func() bool {
			alive := scrape(t, c.Driver.MetricsURL())["ember_executors_alive"].GetMetric()[0].GetGauge().GetValue()
			return int(alive) == len(c.Driver.Executors())
		})
	})

	// A peer that keeps asking and never reads its replies: they would pile
	// up in the driver's send queue without bound. Once they fill the queue
	// and its overflow, the driver hangs up and forgets the peer.
	t.Run("asks with replies never read", func(t *testing.T) {
		known := map[string]bool{}
		for _, e := range c.Driver.Executors() {
			known[e.ID] = true
		}
		h := dialHostile(t, addr, secret, true)
		var hostile string
		embertest.WaitFor(t, "the peer to be ready", func() bool {
			for _, e := range c.Driver.Executors() {
				if !known[e.ID] {
					hostile = e.ID
				}
			}
			return hostile != ""
		})
		name, ping, _ := codec.Encode(text("ping"))
		sent := make(chan uint64, 1)
		go func() {
			call := uint64(0)
			defer func() { sent <- call }()
			for call < 1e6 {
				frames := make([]*wire.Frame, 1000)
				for i := range frames {
					call++
					frames[i] = &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: call, Type: name, Payload: ping}
				}
				if h.stream.Send(&wire.Batch{Frames: frames}) != nil {
					return
				}
			}
		}()
		embertest.WaitFor(t, "the driver to hang up on the peer", func() bool {
			n, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_limit_hits_total", map[string]string{"executor": "driver", "limit": "queue_overflow"})
			return n == 1
		})
		embertest.WaitFor(t, "the driver to forget the peer", func() bool {
			return !slices.ContainsFunc(c.Driver.Executors(), func(e plugin.ExecutorInfo) bool { return e.ID == hostile })
		})
		h.cc.Close() // the peer's last Send waits for a window the driver will not give
		if n := <-sent; n >= 1e6 {
			t.Errorf("the driver took %d asks from a peer that never reads", n)
		}
	})

	// A peer that ignores flow control sends 7,000 SENDs to a plugin that
	// is stuck: about 7 MiB, where its window plus one message allows
	// 5 MiB. The driver hangs up on it instead of taking in the rest.
	const floodSends = 7000
	name, floodPayload, _ := codec.Encode(payload{Data: make([]byte, 1000)})
	t.Cleanup(flooding.open) // after Start: a failed test must not leave the plugin stuck at shutdown
	t.Run("sends beyond the window", func(t *testing.T) {
		h := dialHostile(t, addr, secret, true)
		for range floodSends / 100 {
			frames := make([]*wire.Frame, 100)
			for i := range frames {
				frames[i] = &wire.Frame{Kind: wire.Kind_KIND_SEND, Type: name, Payload: floodPayload}
			}
			if err := h.stream.Send(&wire.Batch{Frames: frames}); err != nil {
				break // the driver has closed the stream
			}
		}
		for {
			if _, err := h.stream.Recv(); err != nil {
				break // the stream has ended
			}
		}
		flooding.open()
		// A message queued behind what the driver took in of the flood:
		// once it is delivered, so is all of that.
		if err := pcs.get("1").Send(ctx, text("after the flood")); err != nil {
			t.Fatal(err)
		}
		embertest.WaitFor(t, "the message sent after the flood", afterFlood.Load)
		window := int64(rpc.DefaultSendWindow + rpc.DefaultMaxMessageBytes + 64)
		if got, most := flood.Load(), window/int64(len(floodPayload)+64)+1; got == 0 || got > most {
			t.Errorf("the flood beyond the window: %d of %d sends delivered, want some and at most %d", got, floodSends, most)
		}
	})

	for range 2 {
		if err := <-honestDone; err != nil {
			t.Fatal(err)
		}
	}
	embertest.WaitFor(t, "every honest message", func() bool { return received.Load() == 2*sends })
	if got := len(c.Driver.Executors()); got < 2 {
		t.Errorf("honest executors still ready: got %d, want 2", got)
	}
}

// A connection whose handshake fails is closed once the peer has read the
// refusal, whatever the failure: a peer that proves nothing cannot keep a
// connection by opening stream after stream on it (one used to keep it
// for ever, each stream refused in turn).
func TestFailedHandshakeEndsTheConnection(t *testing.T) {
	d := standalone(t, ember.Config{Secret: "right secret", BuildID: "test", HandshakeTimeout: time.Minute})
	tests := []struct {
		name  string
		hello *wire.Hello // nil: no HELLO, another frame instead
	}{
		{"no proof", &wire.Hello{ProtocolVersion: wire.ProtocolVersion}},
		{"not a HELLO", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, err := grpc.NewClient(d.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			s, err := wire.NewEmberClient(cc).Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil { // CHALLENGE
				t.Fatal(err)
			}
			f := &wire.Frame{Kind: wire.Kind_KIND_HELLO, Hello: tt.hello}
			if tt.hello == nil {
				f = &wire.Frame{Kind: wire.Kind_KIND_READY}
			}
			if err := s.Send(&wire.Batch{Frames: []*wire.Frame{f}}); err != nil {
				t.Fatal(err)
			}
			// The refusal (or the stream's end); then the stream ends as
			// a refused executor ends it.
			_, _ = s.Recv()
			cancel()
			embertest.WaitFor(t, "the driver to close the connection", func() bool {
				return cc.GetState() != connectivity.Ready
			})
		})
	}
}

// A peer that has proved nothing costs the driver little more than the
// bytes it sends: its first message, read before it authenticates, is
// decoded one frame at most, and that frame only if it holds at most
// wire.MaxFirstEntries list elements and map entries. A first message of
// two million empty frames (4 MiB) used to make the driver allocate 500
// MiB; one frame whose READY held two million empty resources, 250 MiB.
func TestFirstMessageCostsItsSize(t *testing.T) {
	resources := bytes.Repeat([]byte{0x0a, 0x00}, (4<<20-16)/2) // Ready.resources, empty
	ready := protowire.AppendBytes(protowire.AppendTag(nil, 11, protowire.BytesType), resources)
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty frames", bytes.Repeat([]byte{0x0a, 0x00}, (4<<20)/2)},
		{"one frame of empty messages", protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), ready)},
	}
	d := standalone(t, ember.Config{Secret: "right secret", BuildID: "test"})
	cc, err := grpc.NewClient(d.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := cc.NewStream(testCtx(t), &wire.Ember_ServiceDesc.Streams[0], "/ember.wire.v1.Ember/Connect", grpc.ForceCodec(bytesCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			var b []byte
			if err := s.RecvMsg(&b); err != nil { // CHALLENGE
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			if err := s.SendMsg(tt.msg); err != nil {
				t.Fatal(err)
			}
			for s.RecvMsg(&b) == nil { // refused: the stream ends
			}
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16*uint64(len(tt.msg)) {
				t.Errorf("a first message of %d MiB made the driver allocate %d MiB", len(tt.msg)>>20, alloc>>20)
			}
		})
	}
}

// expectClosed waits for the driver to close conn.
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Error("the driver kept the connection open")
	}
}

// What a peer claims in its HELLO is quoted in logs, errors and the
// refusal only so far: a host name no longer than a host name can be, a
// mismatch no longer than an error's text on the wire. A peer without the
// secret used to have a 1 MiB host name logged in full at every attempt,
// and one with it a 1 MiB build ID quoted in the log, the refusal and the
// failure the driver keeps.
func TestHelloClaimsAreCut(t *testing.T) {
	const secret = "right secret"
	long := strings.Repeat("x", 1<<20)
	tests := []struct {
		name         string
		hello        func(challenge []byte) *wire.Hello
		wantRefusal  string
		wantInTheLog string
	}{
		{"host name, no proof", func([]byte) *wire.Hello {
			return &wire.Hello{ProtocolVersion: wire.ProtocolVersion, Hostname: long}
		}, "authentication failed", "refused executor: authentication failed"},
		{"build ID, with the proof", func(challenge []byte) *wire.Hello {
			nonce := auth.Nonce()
			return &wire.Hello{ProtocolVersion: wire.ProtocolVersion, BuildId: long, Hostname: long, AuthNonce: nonce,
				Auth: auth.Prove(secret, auth.Executor, challenge, nonce, nil)}
		}, "handshake mismatch", "refused executor: handshake mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			d := standalone(t, ember.Config{Secret: secret, BuildID: "test", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			cc, err := grpc.NewClient(d.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			s, err := wire.NewEmberClient(cc).Connect(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.Recv() // CHALLENGE
			if err != nil {
				t.Fatal(err)
			}
			hello := tt.hello(b.Frames[0].GetChallenge().GetNonce())
			if err := s.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: hello}}}); err != nil {
				t.Fatal(err)
			}
			w, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			refusal := w.Frames[0].GetWelcome().GetError()
			if !strings.Contains(refusal, tt.wantRefusal) || len(refusal) > 32<<10 {
				t.Errorf("refusal of %d bytes: %.100q…, want it to say %q in at most 32 KiB", len(refusal), refusal, tt.wantRefusal)
			}
			embertest.WaitFor(t, "the refusal logged", func() bool { return strings.Contains(logs.String(), tt.wantInTheLog) })
			if n := len(logs.String()); n > 64<<10 {
				t.Errorf("the driver logged %d KiB for one refused HELLO of 2 MiB of claims", n>>10)
			}
		})
	}
}

// A driver without authentication must not tell the operator to give
// executors a secret: an executor that has one refuses a driver that
// cannot prove it, so following the hint makes every executor fail.
func TestInsecureNoAuthStartHintAsksForNoSecret(t *testing.T) {
	t.Setenv(ember.EnvSecret, "")
	t.Setenv(ember.EnvSecretFile, "")
	var buf logtest.Buffer
	standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test",
		Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, "driver listening for executors") && strings.Contains(line, "EMBER_SECRET") {
			t.Errorf("the start hint of a driver without authentication asks for a secret: %s", line)
		}
	}
}

// A standalone start-up that times out while executors were refused (a
// wrong secret) says so: the error used to say only "0 ready", and the
// refusals were in the log alone.
func TestStartTimeoutCountsRefusedExecutors(t *testing.T) {
	addr := freeAddr(t)
	errc := make(chan error, 1)
	go func() {
		errc <- ember.Run(testCtx(t), ember.Config{Master: "standalone", ListenAddr: addr, Secret: "right secret right secret",
			BuildID: "test", MinExecutors: 1, StartTimeout: 3 * time.Second, Logger: quiet},
			func(context.Context, *ember.Driver) error { t.Error("driver function ran"); return nil })
	}()
	// Until the driver listens, the executor cannot reach it; then it is
	// refused.
	embertest.WaitFor(t, "an executor with the wrong secret refused", func() bool {
		err := joinErr(t, addr, "wrong secret wrong secret")
		return plugin.CodeOf(err) == plugin.CodeUnauthenticated
	})
	err := <-errc
	for _, want := range []string{"refused at the handshake meanwhile", "the latest: executor at", "refused: authentication failed (wrong proof)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: got %v, want the start-up timeout to count the refused executor and say %q", err, want)
		}
	}
}

// executor.Run's error matches ErrMisconfigured when the executor and its
// driver cannot work together as set up (the process then exits with
// ember.ExitMisconfigured), and not when starting it again may help.
func TestMisconfiguredExecutorErrors(t *testing.T) {
	secured := standalone(t, ember.Config{Secret: "right secret", BuildID: "test"})
	open := standalone(t, ember.Config{InsecureNoAuth: true, BuildID: "test"})
	wanting := standalone(t, ember.Config{Secret: "right secret", BuildID: "test", Plugins: []plugin.Plugin{named("wanted")}})
	tests := []struct {
		name, addr, secret string
		want               bool
	}{
		{"wrong secret", secured.Addr(), "wrong secret", true},
		{"a driver that does not prove the secret", open.Addr(), "my secret", true},
		{"a handshake mismatch", wanting.Addr(), "right secret", true},
		{"no driver at the address", freeAddr(t), "right secret", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := joinErr(t, tt.addr, tt.secret)
			if err == nil || errors.Is(err, executor.ErrMisconfigured) != tt.want {
				t.Errorf("got %v, matching ErrMisconfigured %v; want an error matching it %v", err, errors.Is(err, executor.ErrMisconfigured), tt.want)
			}
		})
	}
}

// The driver's warnings about frames an executor should not have sent are
// logged within a budget per executor (rpc.LogBudget): an authenticated
// executor repeats such a frame as often as it likes, up to 65,536 in one
// batch, and each used to make a line (a batch of 30,000 unexpected
// frames, 120 KB, logged 3 MB).
func TestFrameWarningsBounded(t *testing.T) {
	const secret, frames = "right secret", 2000
	tests := []struct {
		name, want string
		frame      *wire.Frame
	}{
		{"unexpected kind", "dropped unexpected frame", &wire.Frame{Kind: wire.Kind_KIND_CHALLENGE}},
		{"repeated READY", "dropped a repeated READY", &wire.Frame{Kind: wire.Kind_KIND_READY}},
		{"STOPPED before STOP", "dropped a STOPPED before any STOP", &wire.Frame{Kind: wire.Kind_KIND_STOPPED}},
		{"send to no plugin", "dropped message", &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 99}},
		{"invalid metrics", "dropped invalid executor metrics", &wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT,
			Metrics: &wire.Metrics{Families: [][]byte{{0xff}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			d := standalone(t, ember.Config{Secret: secret, BuildID: "test", Plugins: []plugin.Plugin{fakePlugin{name: "honest"}},
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			h := dialHostile(t, d.Addr(), secret, true)
			b := &wire.Batch{}
			for range frames {
				b.Frames = append(b.Frames, proto.Clone(tt.frame).(*wire.Frame))
			}
			// An ask for no plugin is refused as it is read: its reply
			// says that every frame before it has been handled.
			b.Frames = append(b.Frames, &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: 1, Plugin: 99})
			if err := h.stream.Send(b); err != nil {
				t.Fatal(err)
			}
			h.awaitReply(t, 1, "the reply to the last frame")
			got := strings.Count(logs.String(), tt.want)
			if got == 0 || got > rpc.LogBurst {
				t.Errorf("got %d lines %q for %d such frames, want 1 to %d", got, tt.want, frames, rpc.LogBurst)
			}
			if !strings.Contains(logs.String(), "are held back") {
				t.Errorf("the log does not say that lines are held back:\n%.2000s", logs.String())
			}
		})
	}
}

// A connection holds one handshake at a time: while a stream waits for
// its HELLO, gRPC lets the peer send up to the message limit on it, and a
// peer without the secret held four such HELLOs in the driver's memory on
// each connection, one per stream allowed (100 connections of four
// streams of 4 MiB held 1.6 GiB for the handshake timeout). Another
// stream is refused at once; the first one's handshake goes on.
func TestOneHandshakePerConnection(t *testing.T) {
	const secret = "right secret"
	d := standalone(t, ember.Config{Secret: secret, BuildID: "test"})
	cc, err := grpc.NewClient(d.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := wire.NewEmberClient(cc)
	first, err := client.Connect(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := first.Recv() // CHALLENGE: its handshake has begun
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.Connect(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second stream in its handshake on the connection: got %v, want ResourceExhausted", err)
	}
	nonce := auth.Nonce()
	hello := &wire.Hello{
		ProtocolVersion: wire.ProtocolVersion,
		BuildId:         "test",
		MessageTypes:    codec.Names(),
		Tasks:           ember.Tasks(),
		MaxMessageBytes: rpc.DefaultMaxMessageBytes,
		AuthNonce:       nonce,
		Auth:            auth.Prove(secret, auth.Executor, b.Frames[0].GetChallenge().GetNonce(), nonce, nil),
	}
	if err := first.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: hello}}}); err != nil {
		t.Fatal(err)
	}
	w, err := first.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if c := w.Frames[0].GetWelcome().GetCode(); c != 0 {
		t.Errorf("the first stream's handshake: got code %d (%s), want it welcomed", c, w.Frames[0].GetWelcome().GetError())
	}
}

// Peers that fail the handshake before proving the secret are logged
// within a budget, as failed TLS handshakes are: such a peer can open
// connection after connection, and each used to make a WARN line.
func TestPreAuthWarningsBounded(t *testing.T) {
	const attempts = 3 * rpc.LogBurst
	var logs logtest.Buffer
	d := standalone(t, ember.Config{Secret: "right secret", BuildID: "test", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for range attempts {
		h := dialHostile(t, d.Addr(), "", false)
		if _, err := h.stream.Recv(); err != nil { // CHALLENGE
			t.Fatal(err)
		}
		if err := h.stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{ProtocolVersion: wire.ProtocolVersion}}}}); err != nil {
			t.Fatal(err)
		}
		w, err := h.stream.Recv() // logged before the refusal is sent
		if err != nil || w.Frames[0].GetWelcome().GetCode() != uint32(plugin.CodeUnauthenticated) {
			t.Fatalf("got %v, %v; want an Unauthenticated WELCOME", w, err)
		}
		h.cc.Close()
	}
	if got := strings.Count(logs.String(), "refused executor: authentication failed"); got == 0 || got > rpc.LogBurst {
		t.Errorf("got %d lines for %d refused peers, want 1 to %d", got, attempts, rpc.LogBurst)
	}
	if !strings.Contains(logs.String(), "are held back") {
		t.Errorf("the log does not say that lines are held back:\n%.2000s", logs.String())
	}
}

// The claim on a connection's handshake ends once its executor has
// joined: a later stream on that connection gets its CHALLENGE (it is
// then authenticated or refused on its own), not ResourceExhausted.
func TestHandshakeClaimEndsWithTheJoin(t *testing.T) {
	const secret = "right secret"
	d := standalone(t, ember.Config{Secret: secret, BuildID: "test", Plugins: []plugin.Plugin{fakePlugin{name: "honest"}}})
	h := dialHostile(t, d.Addr(), secret, true) // joined
	second, err := wire.NewEmberClient(h.cc).Connect(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := second.Recv()
	if err != nil {
		t.Fatalf("a second stream once the first has joined: got %v, want its CHALLENGE", err)
	}
	if b.Frames[0].GetChallenge() == nil {
		t.Errorf("a second stream once the first has joined: got %v, want a CHALLENGE", b.Frames[0].Kind)
	}
}
