package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/auth"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc"
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
	waitWarned(t, &logs, done)
	if !strings.Contains(logs.String(), addr) {
		t.Errorf("the warning does not name the address %s: %q", addr, logs.String())
	}
	// It says why: the dial's own error, as this process meets it.
	_, dialErr := net.Dial("tcp", addr)
	var errno syscall.Errno
	if !errors.As(dialErr, &errno) {
		t.Fatalf("dialing %s: got %v, want a refused connection", addr, dialErr)
	}
	if !strings.Contains(logs.String(), errno.Error()) {
		t.Errorf("the warning does not say why (%q): %q", errno.Error(), logs.String())
	}
}

// An executor that never reached its driver says so when ConnectTimeout
// ends, and asks the two questions that matter. It used to say it had
// "lost the driver", which it never had.
func TestUnreachableDriverError(t *testing.T) {
	addr := deadAddr(t)
	err := Run(context.Background(), Config{DriverAddr: addr, Logger: slog.New(slog.DiscardHandler), ConnectTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "no handshake with driver "+addr) ||
		!strings.Contains(err.Error(), "is it running, at that address, and reachable from this host?") || errors.Is(err, ErrDriverLost) {
		t.Errorf("Run: got %v, want no handshake with %s, asking whether it runs there, and not ErrDriverLost", err, addr)
	}
}

// An executor whose EMBER_DRIVER names a server that does not speak gRPC
// says so in its first warning and in its error: one that answers in
// HTTP/1 (the driver's /metrics address, say) is quoted, and one that
// closes the connection at once (a TLS driver, to a plaintext executor)
// is taken for a TLS driver. It used to warn only "not started yet,
// something else at that address, or TLS not set up alike", and say a
// minute later only gRPC's "http2: frame too large" or "error reading
// server preface: EOF".
func TestWrongServerIsNamed(t *testing.T) {
	metrics := httptest.NewServer(http.NotFoundHandler())
	defer metrics.Close()
	tlsServer := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsServer.Close()
	tests := []struct {
		name           string
		addr           string
		connectTimeout time.Duration
		wantErr        bool     // Run's error, else the warning, says it
		want           []string // what it says
	}{
		{"HTTP/1, the warning", metrics.Listener.Addr().String(), time.Hour, false, []string{"does not speak gRPC: it answered", "HTTP/1.1 ", "/metrics"}},
		{"HTTP/1, the error", metrics.Listener.Addr().String(), 500 * time.Millisecond, true, []string{"does not speak gRPC: it answered", "HTTP/1.1 ", "/metrics"}},
		{"TLS, the warning", tlsServer.Listener.Addr().String(), time.Hour, false, []string{"closed the connection before sending anything", "a driver with TLS"}},
		{"TLS, the error", tlsServer.Listener.Addr().String(), 500 * time.Millisecond, true, []string{"closed the connection before sending anything", "a driver with TLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, Config{DriverAddr: tt.addr, Logger: slog.New(slog.NewTextHandler(&logs, nil)), ConnectTimeout: tt.connectTimeout})
			}()
			if tt.wantErr {
				err := <-done
				if !errors.Is(err, ErrNotGRPC) || !strings.Contains(err.Error(), "no handshake with driver "+tt.addr) {
					t.Fatalf("Run: got %v, want no handshake with %s, matching ErrNotGRPC", err, tt.addr)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Run: got %v, want it to say %q", err, w)
					}
				}
				return
			}
			defer func() { cancel(); <-done }()
			waitWarned(t, &logs, done)
			for _, w := range tt.want {
				if got := logs.String(); !strings.Contains(got, w) {
					t.Errorf("warning: got %q, want it to say %q", got, w)
				}
			}
		})
	}
}

// rawCodec sends and receives messages as the bytes they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// impostor serves Ember.Connect at a loopback address: it opens each
// stream with msgs[0] and answers each message it receives with the next
// of msgs, then waits for the executor to leave.
func impostor(t *testing.T, msgs ...[]byte) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "ember.wire.v1.Ember",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Connect", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, s grpc.ServerStream) error {
				var b []byte
				for i, m := range msgs {
					if i > 0 && s.RecvMsg(&b) != nil {
						return nil
					}
					if err := s.SendMsg(m); err != nil {
						return err
					}
				}
				for s.RecvMsg(&b) == nil {
				}
				return nil
			}}},
	}, nil)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// An executor trusts its driver only once it has proved the secret, in
// WELCOME. What comes before, CHALLENGE and WELCOME, costs it about what
// the peer sends: a frame that repeats an empty message two million times
// (4 MiB) made it allocate 250 MiB before it checked anything.
func TestImpostorDriverCostsItsBytes(t *testing.T) {
	marshal := func(f *wire.Frame) []byte {
		b, err := (&wire.Batch{Frames: []*wire.Frame{f}}).MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	empties := make([]*wire.Resource, 2<<20)
	for i := range empties {
		empties[i] = &wire.Resource{}
	}
	challenge := &wire.Frame{Kind: wire.Kind_KIND_CHALLENGE, Challenge: &wire.Challenge{Nonce: make([]byte, 32)}}
	tests := []struct {
		name string
		msgs [][]byte
	}{
		{"CHALLENGE", [][]byte{marshal(&wire.Frame{Kind: wire.Kind_KIND_CHALLENGE, Challenge: &wire.Challenge{}, Ready: &wire.Ready{Resources: empties}})}},
		{"WELCOME", [][]byte{marshal(challenge), marshal(&wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{}, Ready: &wire.Ready{Resources: empties}})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := impostor(t, tt.msgs...)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := Run(context.Background(), Config{DriverAddr: addr, Secret: "s", Logger: slog.New(slog.DiscardHandler), ConnectTimeout: 10 * time.Second})
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), "list elements and map entries") {
				t.Errorf("Run: got %v, want the handshake refused for its size", err)
			}
			size := len(tt.msgs[len(tt.msgs)-1])
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16*uint64(size) {
				t.Errorf("an impostor's %s of %d MiB made the executor allocate %d MiB", tt.name, size>>20, alloc>>20)
			}
		})
	}
}

// waitWarned waits until logs say the executor cannot connect yet, failing
// t if its Run (whose error arrives on done) returns first or no warning
// comes within 30s of the first failed dial.
func waitWarned(t *testing.T, logs *logtest.Buffer, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "cannot connect to the driver yet") {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before warning; logs: %q", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warning within 30s; logs: %q", logs.String())
		}
		runtime.Gosched()
	}
}

// An executor signs its driver's nonce with the secret only when it has
// the size every driver draws: a peer choosing its length chose what the
// executor signs.
func TestChallengeNonceOfTheWrongSize(t *testing.T) {
	for _, size := range []int{0, 16, 33, 1 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			b, err := (&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_CHALLENGE, Challenge: &wire.Challenge{Nonce: make([]byte, size), AuthRequired: true}}}}).MarshalVT()
			if err != nil {
				t.Fatal(err)
			}
			err = Run(context.Background(), Config{DriverAddr: impostor(t, b), Secret: "s", Logger: slog.New(slog.DiscardHandler), ConnectTimeout: 10 * time.Second})
			if want := fmt.Sprintf("a nonce of %d bytes, not 32", size); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Run: got %v, want an error saying %q", err, want)
			}
		})
	}
}

// A driver that stops answering in the handshake, once the stream is open
// (a partition, packets dropped), ends Run within HandshakeTimeout, naming
// the answer that did not come: the executor used to wait, silent, until
// ConnectTimeout (a minute by default), while the driver had dropped it.
func TestUnansweredHandshakeEndsRun(t *testing.T) {
	challenge, err := (&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_CHALLENGE,
		Challenge: &wire.Challenge{Nonce: make([]byte, auth.NonceSize)}}}}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		msgs [][]byte // what the driver sends before it goes silent
		want string
	}{
		{"no CHALLENGE", nil, "did not answer the handshake: no CHALLENGE, and no byte from it for 200ms (HandshakeTimeout"},
		{"no WELCOME", [][]byte{challenge}, "did not answer the handshake: no WELCOME, and no byte from it for 200ms (HandshakeTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := impostor(t, tt.msgs...)
			err := Run(context.Background(), Config{DriverAddr: addr, Logger: slog.New(slog.DiscardHandler),
				ConnectTimeout: time.Minute, HandshakeTimeout: 200 * time.Millisecond})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: got %v, want an error saying %q", err, tt.want)
			}
			if errors.Is(err, ErrMisconfigured) {
				t.Errorf("Run: got %v, which matches ErrMisconfigured; want a failure that starting again may mend", err)
			}
		})
	}
}

// silentAddr returns the address of a listener that accepts connections
// and never writes to them, as a host that drops packets never answers:
// gRPC waits for its HTTP/2 preface until its connect timeout, 20s.
func silentAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { lis.Close(); <-done })
	return lis.Addr().String()
}

// A connection attempt nobody answers lasts gRPC's connect timeout (20s):
// the executor warns after SlowConnect, where it used to say nothing
// until the attempt failed, or at all, when ConnectTimeout came first.
func TestUnansweredConnectionIsLogged(t *testing.T) {
	addr := silentAddr(t)
	var logs logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{DriverAddr: addr, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			ConnectTimeout: time.Hour, SlowConnect: 100 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	waitWarned(t, &logs, done)
	if want := "no answer from its address within 100ms"; !strings.Contains(logs.String(), want) {
		t.Errorf("the warning: got %q, want it to say %q", logs.String(), want)
	}
}

// An executor whose connection attempt was still unanswered when
// ConnectTimeout ended says so: gRPC's error said only that the wait was
// canceled.
func TestUnansweredConnectionError(t *testing.T) {
	addr := silentAddr(t)
	err := Run(context.Background(), Config{DriverAddr: addr, Logger: slog.New(slog.DiscardHandler), ConnectTimeout: 300 * time.Millisecond})
	if want := "no answer from that address"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: got %v, want an error saying %q", err, want)
	}
}
