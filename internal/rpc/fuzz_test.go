package rpc_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/grpc/mem"
)

// fuzzStream is an rpc.Stream whose reader gets one batch, decoded from a
// peer's bytes by wire.Codec as gRPC does, once the Conn has written the
// asks that the batch's replies may answer; then the peer ends the stream.
type fuzzStream struct {
	data  []byte
	asks  int           // ASKs to wait for before the batch is read
	asked chan struct{} // a token per ASK written

	mu   sync.Mutex // protects read
	read bool
}

func (s *fuzzStream) Send(b *wire.Batch) error {
	for _, f := range b.Frames { // keeps nothing of b, like gRPC
		if f.Kind == wire.Kind_KIND_ASK {
			s.asked <- struct{}{}
		}
	}
	return nil
}

func (s *fuzzStream) RecvMsg(m any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.read {
		return io.EOF
	}
	s.read = true
	for range s.asks {
		<-s.asked
	}
	return wire.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(s.data)}, m)
}

// fuzzHandler hands ASKs and SENDs to a lane, as the driver and executors
// do with their plugins' messages, and counts HandleClose calls.
type fuzzHandler struct {
	lane   *rpc.Lane
	closes atomic.Int32
}

func (h *fuzzHandler) HandleFrame(c *rpc.Conn, f *wire.Frame) {
	switch f.Kind {
	case wire.Kind_KIND_ASK, wire.Kind_KIND_SEND:
		if f.Plugin >= 2 {
			if !rpc.Refuse(c, f, plugin.CodeNotFound, "no such plugin") {
				wire.ReleaseFrame(f)
			}
			return
		}
		if !rpc.Deliver(context.Background(), h.lane, c, f, nil) && !rpc.Refuse(c, f, plugin.CodeUnavailable, "shut down") {
			wire.ReleaseFrame(f)
		}
	default:
		wire.ReleaseFrame(f)
	}
}

func (h *fuzzHandler) HandleClose(*rpc.Conn, error) { h.closes.Add(1) }

// refusal is the code and closed flag of an error REPLY, as the asker's
// error carries them.
type refusal struct {
	code   plugin.Code
	closed bool
}

// checkAskErrors checks the errors asks returned while their Conn read
// data: each is, or wraps, a *plugin.Error of a valid code other than OK
// (as plugin.Error promises), and one received from the peer is that of
// an error REPLY in data, matching plugin.ErrClosed if and only if that
// REPLY was marked closed (RefuseClosed) with CodeUnavailable.
func checkAskErrors(t *testing.T, data []byte, errs []error) {
	t.Helper()
	sent := map[refusal]bool{}
	var b wire.Batch
	if wire.UnmarshalBatch(data, &b) == nil {
		for _, f := range b.Frames {
			if f.Kind == wire.Kind_KIND_REPLY && f.Code != 0 {
				code := plugin.Code(f.Code)
				if !code.Valid() {
					code = plugin.CodeUnknown
				}
				// closed counts only on ErrClosed's code.
				sent[refusal{code, f.Closed && code == plugin.CodeUnavailable}] = true
			}
			wire.ReleaseFrame(f)
		}
	}
	for i, err := range errs {
		if err == nil {
			continue
		}
		var e *plugin.Error
		if !errors.As(err, &e) || e == nil || !e.Code().Valid() || e.Code() == plugin.CodeOK {
			t.Fatalf("ask %d: error %v (%T) is not a *plugin.Error of a valid code other than OK", i, err, err)
		}
		if !plugin.IsRemote(err) {
			continue
		}
		got := refusal{e.Code(), errors.Is(err, plugin.ErrClosed)}
		if !sent[got] {
			t.Fatalf("ask %d: remote error %v (code %v, matches ErrClosed: %t), the peer sent no such REPLY", i, err, got.code, got.closed)
		}
	}
}

// FuzzConnRead gives a Conn's reader one batch of arbitrary bytes from its
// peer, decoded as gRPC decodes it (wire.Codec), while three asks of its
// own wait for replies: what a buggy or compromised peer can send on
// either side of the stream. The decoders' own targets stop where this
// starts: type indexes resolved against the handshake's table, replies
// matched to asks and decoded on the reader, CREDIT taken into the send
// windows, SENDs counted against the receive windows, ASKs and SENDs
// dispatched through a lane, ASK_CANCELs. It must never panic, the Conn
// must close once, every ask must return, no plugin's credit may exceed
// its window, what is reserved of it for the handlers (lent CREDITs, and
// released ones a peer may forge) must stay within it, nothing may be
// kept for a cancelable ask once the lane has run it, and an ask's error
// must be a *plugin.Error, a refusal's code and closed flag its REPLY's
// (checkAskErrors).
func FuzzConnRead(f *testing.F) {
	names := codec.Names()
	id := func(name string) uint32 {
		for i, n := range names {
			if n == name {
				return uint32(i + 1)
			}
		}
		f.Fatalf("%s not registered", name)
		return 0
	}
	msg, err := codec.Marshal(rpcMsg{N: 1, Text: "a"})
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range []*wire.Batch{
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_REPLY, Call: 1, TypeId: id(rpcMsgName), Payload: msg},
			{Kind: wire.Kind_KIND_REPLY, Call: 2, Type: rpcMsgName, Payload: []byte{0xff}},
			{Kind: wire.Kind_KIND_REPLY, Call: 3, Code: 5, Error: "no"},
		}},
		{Frames: []*wire.Frame{ // refused by plugins that have shut down (RefuseClosed)
			{Kind: wire.Kind_KIND_REPLY, Call: 1, Code: 14, Error: "executor plugin \"p0\" has shut down", Closed: true},
			{Kind: wire.Kind_KIND_REPLY, Call: 2, TypeId: id(rpcMsgName), Payload: msg, Closed: true},
			{Kind: wire.Kind_KIND_REPLY, Call: 3, Code: 99, Closed: true},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_REPLY, Call: 2},
			{Kind: wire.Kind_KIND_SEND, Plugin: 1, TypeId: id(rpcMsgName), Payload: msg},
			{Kind: wire.Kind_KIND_REPLY, Call: 2, TypeId: 1 << 20},
			{Kind: wire.Kind_KIND_REPLY, Call: 9},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_ASK, Call: 1, Plugin: 0, TypeId: id(rpcMsgName), Payload: msg, TimeoutMicros: 1},
			{Kind: wire.Kind_KIND_ASK, Call: 2, Plugin: 7, Type: "x"},
			{Kind: wire.Kind_KIND_SEND, Plugin: 1, Payload: make([]byte, 300)},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 0, Credit: 1 << 63},
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 1, Credit: 100},
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 1 << 31, Credit: 1},
			{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: &wire.Metrics{}},
			{Kind: wire.Kind_KIND_HEARTBEAT},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 0, Credit: 300, Lent: true},
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 0, Credit: 1 << 40, Lent: true, Released: true},
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 1, Credit: 1 << 62, Lent: true},
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 1, Credit: 7, Released: true},
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 1, Lent: true, Released: true},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_SEND, Plugin: 0, Payload: make([]byte, 600)},
			{Kind: wire.Kind_KIND_SEND, Plugin: 0, Payload: make([]byte, 600)},
			{Kind: wire.Kind_KIND_STOP},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_ASK, Call: 4, Plugin: 0, TypeId: id(rpcMsgName), Payload: msg, Cancelable: true},
			{Kind: wire.Kind_KIND_ASK_CANCEL, Call: 4},
			{Kind: wire.Kind_KIND_ASK, Call: 4, Plugin: 1, Cancelable: true},
			{Kind: wire.Kind_KIND_ASK, Call: 5, Plugin: 9, Cancelable: true},
			{Kind: wire.Kind_KIND_SEND, Plugin: 0, Cancelable: true},
			{Kind: wire.Kind_KIND_ASK_CANCEL, Call: 6},
		}},
	} {
		data, err := b.MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &fuzzStream{data: data, asks: 3, asked: make(chan struct{}, 3)}
		h := &fuzzHandler{}
		// Small windows and messages, so that a few bytes overdraw them.
		c := rpc.New(s, func() {}, h, rpc.Options{
			MaxMessageBytes:   512,
			Plugins:           []string{"p0", "p1"},
			SendWindow:        1024,
			PluginSendWindows: []int{0, 256},
		})
		c.SetTypes(names)
		h.lane = rpc.NewLane(1, 4, func(it rpc.Item) {
			rpc.Dispatch(context.Background(), context.Background(), log, "p", it, 512, false,
				func(_ context.Context, v any) (any, error) { return v, nil })
			wire.ReleaseFrame(it.Frame)
		})
		c.Start()
		var wg sync.WaitGroup
		errs := make([]error, s.asks)
		for i := range s.asks {
			wg.Go(func() {
				_, errs[i] = c.AskMessage(context.Background(), &wire.Frame{Plugin: 0, Type: rpcMsgName, Payload: msg})
			})
		}
		wg.Wait() // answered, or failed as the peer ended the stream
		checkAskErrors(t, data, errs)
		c.Wait()
		h.lane.Close()
		if n := h.closes.Load(); n != 1 {
			t.Fatalf("HandleClose called %d times, want 1", n)
		}
		if n := rpc.Cancelables(c); n != 0 {
			t.Fatalf("%d handler ctxs of cancelable asks kept after the lane closed, want 0", n)
		}
		credit, windows := rpc.Credit(c)
		reserved, drawn := rpc.Reserved(c), rpc.Drawn(c)
		for p := range credit {
			if credit[p] > windows[p] {
				t.Fatalf("plugin %d has %d bytes of credit, over its %d-byte window", p, credit[p], windows[p])
			}
			if reserved[p] < 0 || reserved[p] > max(credit[p], 0) || drawn[p] < 0 {
				t.Fatalf("plugin %d: %d bytes reserved and %d drawn of %d bytes of credit", p, reserved[p], drawn[p], credit[p])
			}
		}
	})
}
