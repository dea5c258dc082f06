package driver

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/auth"
	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// welcomeStream is a fuzzServerStream that keeps the codes of the
// WELCOMEs the driver sends.
type welcomeStream struct {
	*fuzzServerStream
	mu       sync.Mutex // protects welcomes
	welcomes []uint32
}

func (s *welcomeStream) Send(b *wire.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range b.GetFrames() {
		if f.GetKind() == wire.Kind_KIND_WELCOME {
			s.welcomes = append(s.welcomes, f.GetWelcome().GetCode())
		}
	}
	return nil
}

// FuzzConnectAuth runs the driver's side of an executor's stream under an
// application secret on arbitrary bytes: a HELLO, decoded as a first
// message (wire.FirstBatch), whose proof (Auth, AuthNonce) the driver
// checks against the nonce of its CHALLENGE, then a batch of frames. The
// CHALLENGE's nonce is fresh, so no input can carry a valid proof: what a
// peer that does not know the secret can send. FuzzConnect, without a
// secret, gets past the proof. It must never panic, and the peer must be
// refused: Connect fails, the only WELCOME sent (if any) refuses it as
// unauthenticated, and the driver lists no executor.
func FuzzConnectAuth(f *testing.F) {
	hello := func(proof, nonce []byte) []byte {
		data, err := (&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{
			ProtocolVersion: wire.ProtocolVersion, BuildId: "fuzz", Plugins: []string{"members"}, MessageTypes: codec.Names(),
			Tasks: []string{"t"}, Hostname: "h", Pid: 1, MaxMessageBytes: rpc.DefaultMaxMessageBytes, Auth: proof, AuthNonce: nonce,
		}}}}).MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	ready, err := (&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}}}}).MarshalVT()
	if err != nil {
		f.Fatal(err)
	}
	nonce := make([]byte, auth.NonceSize)
	// A proof made for another challenge (one of zeros), as a replay
	// carries, and proofs of the wrong sizes.
	f.Add(hello(auth.Prove("s", auth.Executor, make([]byte, auth.NonceSize), nonce, nil), nonce), ready)
	f.Add(hello(make([]byte, 32), nonce), ready)
	f.Add(hello(nil, nil), ready)
	f.Add(hello([]byte{1}, nonce[:1]), []byte(nil))
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, first, rest []byte) {
		d, err := New(Config{Logger: log, BuildID: "fuzz", Secret: "s", Plugins: []plugin.Plugin{&membership{}}, Tasks: []string{"t"},
			HandshakeTimeout: time.Second, ShutdownTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		s := &welcomeStream{fuzzServerStream: &fuzzServerStream{msgs: [][]byte{first, rest}}}
		err = d.Connect(s)
		if err == nil {
			t.Fatalf("Connect served a stream that proved nothing")
		}
		for _, code := range s.welcomes {
			if plugin.Code(code) != plugin.CodeUnauthenticated {
				t.Fatalf("sent a WELCOME of code %v to a peer that proved nothing, want %v", plugin.Code(code), plugin.CodeUnauthenticated)
			}
		}
		if len(s.welcomes) > 0 && status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Connect refused the peer as unauthenticated but returned %v", err)
		}
		d.mu.Lock()
		listed := len(d.execs)
		d.mu.Unlock()
		if listed != 0 {
			t.Fatalf("%d executors listed after a peer that proved nothing", listed)
		}
	})
}
