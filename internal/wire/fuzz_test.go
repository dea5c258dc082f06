package wire_test

import (
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// seedBatches are valid batches of the kinds a peer sends first and most:
// the handshake, an ask and its reply, sends, heartbeats.
func seedBatches() []*wire.Batch {
	return []*wire.Batch{
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{
			ProtocolVersion: wire.ProtocolVersion, BuildId: "build-1", Plugins: []string{"a", "b"},
			Hostname: "host", Pid: 1234, ExecutorId: "1", Auth: []byte{1, 2, 3}, MessageTypes: []string{"m.A", "m.B"},
		}}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{
			AppId: "app", ExecutorId: "1", Conf: map[string]string{"k": "v"},
			ExtraConf: []*wire.ExtraConf{{Values: map[string]string{"x": "y"}}, {}}, HeartbeatIntervalMs: 1000, AppName: "demo", SendWindow: 1 << 20, PluginSendWindows: []uint64{0, 16 << 20},
		}}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_ASK, Call: 7, Plugin: 1, Type: "m.A", Payload: []byte(`{"N":1}`), TimeoutMicros: 5_000_000}}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_REPLY, Call: 7, Plugin: 1, Type: "m.B", Payload: []byte(`{"OK":true}`)},
			{Kind: wire.Kind_KIND_REPLY, Call: 8, Plugin: 1, Code: 5, Error: "no such key"},
		}},
		// A refusal by a plugin that has shut down (rpc.RefuseClosed), and
		// closed on a reply that carries a value.
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_REPLY, Call: 9, Plugin: 1, Code: 14, Error: "executor plugin \"p\" has shut down", Closed: true},
			{Kind: wire.Kind_KIND_REPLY, Call: 10, Type: "m.B", Payload: []byte("{}"), Closed: true},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_SEND, Plugin: 2, Type: "m.A", Payload: []byte("1")},
			{Kind: wire.Kind_KIND_SEND, Plugin: 2, Type: "m.A", Payload: []byte("2")},
			{Kind: wire.Kind_KIND_HEARTBEAT},
		}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Resources: []*wire.Resource{{Name: "gpu", Addresses: []string{"0", "1"}}}, Slots: 4}}}},
		{},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_TASK, Call: 3, Type: "in", Payload: []byte("[1,2]"), Task: &wire.Task{JobId: "j1", Name: "square", Index: 2, Attempt: 1}},
			{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 2},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_TASK_RESULT, Call: 3, Payload: []byte("4")},
			{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: &wire.Metrics{Families: [][]byte{{0x0a, 0x01, 'm'}, nil}}},
		}},
	}
}

// FuzzBatchUnmarshal decodes arbitrary bytes as a Batch, as both ends do
// with what arrives on the stream (UnmarshalBatch, through Codec). It must
// never panic, and must accept what proto.Unmarshal accepts and decode it
// to an equal batch (unknown fields aside: Ember never reads them, and the
// generated decoder keeps some of them in other bytes), even into recycled
// frames. A batch it accepts must encode again with Codec and survive a
// second round trip unchanged. It may accept bytes proto.Unmarshal refuses
// (see UnmarshalBatch): strings that are not valid UTF-8, by design, and
// some malformed input that the generated decoder tolerates. Decoding with
// payloads left in place, and encoding around them, must agree with the
// copying paths on every input.
func FuzzBatchUnmarshal(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var want wire.Batch
		wantErr := proto.Unmarshal(data, &want)
		var b wire.Batch
		err := wire.UnmarshalBatch(data, &b)
		if err != nil {
			// Its own bounds aside (frames, and list entries of frames
			// with lists), it refuses what proto.Unmarshal refuses.
			bounded := len(want.Frames) > wire.MaxBatchFrames || strings.Contains(err.Error(), "list elements and map entries")
			if wantErr == nil && !bounded {
				t.Fatalf("UnmarshalBatch(%q) error %v, proto.Unmarshal accepts it", data, err)
			}
			return
		}
		if len(b.Frames) > wire.MaxBatchFrames {
			t.Fatalf("UnmarshalBatch accepted %d frames, over MaxBatchFrames", len(b.Frames))
		}
		defer releaseFrames(&b)
		if wantErr == nil && !proto.Equal(known(t, &b), known(t, &want)) {
			t.Fatalf("UnmarshalBatch(%q) = %v, proto.Unmarshal = %v", data, &b, &want)
		}
		// The large-payload paths, with every payload counted as large:
		// decoding in place gives the same batch, and so does encoding
		// around the payloads.
		var aliased wire.Batch
		if err := wire.UnmarshalBatchAliasing(data, &aliased, 1); err != nil {
			t.Fatalf("UnmarshalBatchAliasing(%q) error %v, UnmarshalBatch accepts it", data, err)
		}
		defer releaseFrames(&aliased)
		if !proto.Equal(&aliased, &b) {
			t.Fatalf("UnmarshalBatchAliasing(%q) = %v, UnmarshalBatch = %v", data, &aliased, &b)
		}
		var viaCodec wire.Batch
		if err := (wire.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &viaCodec); err != nil {
			t.Fatalf("Codec.Unmarshal(%q) error %v, UnmarshalBatch accepts it", data, err)
		}
		defer releaseFrames(&viaCodec)
		if !proto.Equal(&viaCodec, &b) {
			t.Fatalf("Codec.Unmarshal(%q) = %v, UnmarshalBatch = %v", data, &viaCodec, &b)
		}
		large, err := wire.MarshalLarge(&b, 1)
		if err != nil {
			t.Fatalf("UnmarshalBatch(%q) succeeded but MarshalLarge failed: %v", data, err)
		}
		out, err := wire.Codec{}.Marshal(&b)
		if err != nil {
			t.Fatalf("UnmarshalBatch(%q) succeeded but Marshal failed: %v", data, err)
		}
		for _, out := range []mem.BufferSlice{out, large} {
			var again wire.Batch
			if err := wire.UnmarshalBatch(out.Materialize(), &again); err != nil {
				t.Fatalf("re-marshalled batch %q does not unmarshal: %v", out.Materialize(), err)
			}
			defer releaseFrames(&again)
			if !proto.Equal(&b, &again) {
				t.Fatalf("round trip changed the batch:\n got %v\nwant %v", &again, &b)
			}
		}
	})
}

// known returns a copy of m without unknown fields, at any depth: m
// re-encoded, then decoded with protobuf's DiscardUnknown option.
func known(t *testing.T, m proto.Message) proto.Message {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("Marshal(%v): %v", m, err)
	}
	c := m.ProtoReflect().New().Interface()
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, c); err != nil {
		t.Fatalf("Unmarshal(Marshal(%v)): %v", m, err)
	}
	return c
}

func releaseFrames(b *wire.Batch) {
	for _, f := range b.Frames {
		wire.ReleaseFrame(f)
	}
}

func TestSeedBatchesRoundTrip(t *testing.T) {
	t.Parallel()
	for i, b := range seedBatches() {
		data, err := proto.Marshal(b)
		if err != nil {
			t.Fatalf("seed %d: Marshal: %v", i, err)
		}
		var got wire.Batch
		if err := proto.Unmarshal(data, &got); err != nil {
			t.Fatalf("seed %d: Unmarshal: %v", i, err)
		}
		if !proto.Equal(&got, b) {
			t.Errorf("seed %d: round trip got %v, want %v", i, &got, b)
		}
	}
}

// FuzzFirstBatch decodes arbitrary bytes as the first message of a stream,
// as the driver does before the peer has proved anything (a FirstBatch,
// through Codec). It must never panic, must count the frames proto.Unmarshal
// finds, and must decode the one frame of a one-frame batch to what
// proto.Unmarshal decodes; a one-frame batch proto.Unmarshal refuses is
// refused. (A frame of more than MaxFirstEntries list elements and map
// entries is refused too, but takes more bytes than a fuzzer's inputs.)
func FuzzFirstBatch(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var want wire.Batch
		wantErr := proto.Unmarshal(data, &want)
		var fb wire.FirstBatch
		err := wire.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &fb)
		switch {
		case wantErr != nil:
			if err == nil && fb.Frames == 1 {
				t.Fatalf("FirstBatch(%q) decoded %v, proto.Unmarshal refuses it: %v", data, fb.Frame, wantErr)
			}
		case err != nil && len(data) < 2*wire.MaxFirstEntries: // an entry takes two bytes at least
			t.Fatalf("FirstBatch(%q) error %v, proto.Unmarshal accepts it", data, err)
		case fb.Frames != len(want.Frames):
			t.Fatalf("FirstBatch(%q) counted %d frames, proto.Unmarshal finds %d", data, fb.Frames, len(want.Frames))
		case fb.Frames == 1 && !proto.Equal(fb.Frame, want.Frames[0]):
			t.Fatalf("FirstBatch(%q) = %v, proto.Unmarshal = %v", data, fb.Frame, want.Frames[0])
		case fb.Frames != 1 && fb.Frame != nil:
			t.Fatalf("FirstBatch(%q) holds a frame of %d", data, fb.Frames)
		}
	})
}

// addSeeds adds seedBatches, encoded, to f's corpus.
func addSeeds(f *testing.F) {
	f.Helper()
	for _, b := range seedBatches() {
		data, err := proto.Marshal(b)
		if err != nil {
			f.Fatalf("Marshal(seed): %v", err)
		}
		f.Add(data)
	}
}
