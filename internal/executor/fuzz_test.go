package executor

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/auth"
	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
)

// fuzzDriver is an EmberClient whose stream reads msgs, each decoded with
// wire.Codec as gRPC does, then ends.
type fuzzDriver struct{ msgs [][]byte }

func (d *fuzzDriver) Connect(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[wire.Batch, wire.Batch], error) {
	return &fuzzClientStream{msgs: d.msgs}, nil
}

type fuzzClientStream struct {
	grpc.ClientStream // nil: the methods the handshake does not call
	msgs              [][]byte
}

func (s *fuzzClientStream) Send(*wire.Batch) error       { return nil }
func (s *fuzzClientStream) SendMsg(any) error            { return nil }
func (s *fuzzClientStream) CloseSend() error             { return nil }
func (s *fuzzClientStream) Header() (metadata.MD, error) { return nil, nil }
func (s *fuzzClientStream) Trailer() metadata.MD         { return nil }
func (s *fuzzClientStream) Context() context.Context     { return context.Background() }
func (s *fuzzClientStream) Recv() (*wire.Batch, error) {
	b := new(wire.Batch)
	return b, s.RecvMsg(b)
}

func (s *fuzzClientStream) RecvMsg(m any) error {
	if len(s.msgs) == 0 {
		return io.EOF
	}
	data := s.msgs[0]
	s.msgs = s.msgs[1:]
	return wire.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, m)
}

// FuzzHandshake runs an executor's side of the handshake against a driver
// that sends arbitrary bytes as its CHALLENGE and its WELCOME: what an
// impostor at the driver's address can send before proving anything. It
// must never panic; with a secret it must refuse every WELCOME (an
// impostor cannot prove the secret), and without one, what it accepts must
// give the connection options Run derives from it.
func FuzzHandshake(f *testing.F) {
	enc := func(fr *wire.Frame) []byte {
		data, err := (&wire.Batch{Frames: []*wire.Frame{fr}}).MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	challenge := enc(&wire.Frame{Kind: wire.Kind_KIND_CHALLENGE, Challenge: &wire.Challenge{Nonce: make([]byte, auth.NonceSize), AuthRequired: true}})
	for _, w := range []*wire.Welcome{
		{AppId: "app", ExecutorId: "1", Conf: map[string]string{ConfSlots: "4"}, HeartbeatIntervalMs: 1000,
			SendWindow: 1 << 20, PluginSendWindows: []uint64{0, 1 << 40}, ExtraConf: []*wire.ExtraConf{{Values: map[string]string{"k": "v"}}}, NoDriverSide: []uint32{0}},
		{ExecutorId: "2", HeartbeatIntervalMs: -1, SendWindow: 1 << 63, Auth: make([]byte, 32)},
		{Code: 3, Error: "handshake mismatch"},
	} {
		f.Add(challenge, enc(&wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: w}), false)
		f.Add(challenge, enc(&wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: w}), true)
	}
	f.Add(enc(&wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{}}), []byte(nil), false)
	f.Add([]byte(nil), []byte(nil), true)
	log := slog.New(slog.DiscardHandler)
	handshake := func(challenge, welcome []byte, secret bool) (*wire.Welcome, error) {
		x := &Executor{cfg: Config{DriverAddr: "fuzz", BuildID: "b", ConnectTimeout: time.Hour, HandshakeTimeout: time.Hour}, log: log}
		if secret {
			x.cfg.Secret = "s"
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w, _, err := x.handshake(ctx, cancel, &fuzzDriver{msgs: [][]byte{challenge, welcome}}, func() connectivity.State { return connectivity.Ready }, []string{"t"}, &handshakeErrors{handshakeState: new(handshakeState)})
		return w, err
	}
	// A driver's own answers pass, without a secret: a target that
	// refused everything would check nothing below.
	if _, err := handshake(challenge, enc(&wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{ExecutorId: "1"}}), false); err != nil {
		f.Fatalf("the handshake refused a driver's CHALLENGE and WELCOME: %v", err)
	}
	f.Fuzz(func(t *testing.T, challenge, welcome []byte, secret bool) {
		w, err := handshake(challenge, welcome, secret)
		switch {
		case err != nil:
			return
		case secret:
			t.Fatalf("an impostor's WELCOME %v was accepted under a secret", w)
		case w == nil || w.Code != 0:
			t.Fatalf("handshake accepted WELCOME %v", w)
		}
		// What Run derives from it.
		if n := sendWindow(w.SendWindow); n < 0 {
			t.Fatalf("sendWindow(%d) = %d", w.SendWindow, n)
		}
		for i, n := range pluginSendWindows(w.PluginSendWindows) {
			if n < 0 {
				t.Fatalf("plugin %d's send window %d gives %d", i, w.PluginSendWindows[i], n)
			}
		}
	})
}
