package wire_test

import (
	"bytes"
	"slices"
	"testing"
	"unsafe"

	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestPayloadField(t *testing.T) {
	got := (&wire.Frame{}).ProtoReflect().Descriptor().Fields().ByName("payload").Number()
	if got != wire.PayloadField {
		t.Errorf("frames.proto numbers payload %d, large.go says %d", got, wire.PayloadField)
	}
}

// payload returns n bytes that differ from another payload of the same
// size made with another seed.
func payload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i%251)
	}
	return p
}

// largeBatches are batches with payloads of LargePayload bytes or more,
// among other frames and fields.
func largeBatches() map[string]*wire.Batch {
	big := wire.LargePayload
	return map[string]*wire.Batch{
		"one": {Frames: []*wire.Frame{{Kind: wire.Kind_KIND_SEND, Plugin: 1, TypeId: 3, Payload: payload(big, 1)}}},
		"among small ones": {Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_SEND, Plugin: 1, TypeId: 3, Payload: []byte("small")},
			{Kind: wire.Kind_KIND_ASK, Call: 7, Plugin: 2, Type: "m.Big", Payload: payload(1<<20, 2), TimeoutMicros: 5_000_000},
			{Kind: wire.Kind_KIND_HEARTBEAT},
			{Kind: wire.Kind_KIND_SEND, Plugin: 1, TypeId: 3, Payload: payload(big-1, 3)},
		}},
		"two, and every field": {Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_TASK, Call: 3, Type: "in", Payload: payload(big+1, 4), Task: &wire.Task{JobId: "j1", Name: "square", Index: 2}},
			{Kind: wire.Kind_KIND_REPLY, Call: 8, Plugin: 1, Payload: payload(3<<20, 5), Code: 5, Error: "partial", TypeId: 9},
		}},
	}
}

// holds reports whether s holds p itself, not a copy of it.
func holds(s mem.BufferSlice, p []byte) bool {
	for _, b := range s {
		if d := b.ReadOnlyData(); len(d) == len(p) && unsafe.SliceData(d) == unsafe.SliceData(p) {
			return true
		}
	}
	return false
}

// within reports whether p lies inside buf.
func within(p, buf []byte) bool {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	return at >= start && at+uintptr(len(p)) <= start+uintptr(len(buf))
}

// chunks cuts data into 16 KiB buffers, as gRPC receives a large message.
func chunks(data []byte) mem.BufferSlice {
	var s mem.BufferSlice
	for len(data) > 0 {
		n := min(len(data), 16<<10)
		s = append(s, mem.SliceBuffer(data[:n]))
		data = data[n:]
	}
	return s
}

func TestCodecLargePayloads(t *testing.T) {
	for name, b := range largeBatches() {
		t.Run(name, func(t *testing.T) {
			want := proto.Clone(b).(*wire.Batch)
			out, err := wire.Codec{}.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			data := out.Materialize()
			var got wire.Batch
			if err := proto.Unmarshal(data, &got); err != nil {
				t.Fatalf("proto.Unmarshal(Marshal(batch)): %v", err)
			}
			if !proto.Equal(&got, want) {
				t.Errorf("proto.Unmarshal(Marshal(batch)) = %v, want %v", &got, want)
			}
			if !proto.Equal(b, want) {
				t.Errorf("Marshal changed the batch: %v, want %v", b, want)
			}
			for i, f := range b.Frames {
				if large := len(f.Payload) >= wire.LargePayload; holds(out, f.Payload) != large {
					t.Errorf("frame %d (%d-byte payload): payload in the encoding itself = %v, want %v", i, len(f.Payload), !large, large)
				}
			}

			// Through the Codec as gRPC hands it a message, in pieces.
			var dec wire.Batch
			if err := (wire.Codec{}).Unmarshal(chunks(data), &dec); err != nil {
				t.Fatalf("Codec.Unmarshal: %v", err)
			}
			if !proto.Equal(&dec, want) {
				t.Errorf("Codec.Unmarshal(Marshal(batch)) = %v, want %v", &dec, want)
			}
			// Its large payloads were not copied one by one: they lie in
			// one buffer, as far apart as in the encoding.
			var at []int // offsets in data, and in memory from the first
			var addr []uintptr
			for _, f := range dec.Frames {
				if len(f.Payload) >= wire.LargePayload {
					at = append(at, bytes.Index(data, f.Payload))
					addr = append(addr, uintptr(unsafe.Pointer(unsafe.SliceData(f.Payload))))
				}
			}
			for i := 1; i < len(at); i++ {
				if got, want := addr[i]-addr[0], uintptr(at[i]-at[0]); got != want {
					t.Errorf("Codec.Unmarshal: large payload %d lies %d bytes after the first, want %d (one buffer)", i, got, want)
				}
			}

			// In place: large payloads refer into the input, the rest does not.
			var in wire.Batch
			if err := wire.UnmarshalBatchAliasing(data, &in, wire.LargePayload); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&in, want) {
				t.Errorf("UnmarshalBatchAliasing = %v, want %v", &in, want)
			}
			for i, f := range in.Frames {
				if large := len(f.Payload) >= wire.LargePayload; within(f.Payload, data) != large || cap(f.Payload) != len(f.Payload) && large {
					t.Errorf("frame %d (%d-byte payload): in the input = %v (capacity %d), want %v (capacity %[2]d)", i, len(f.Payload), !large, cap(f.Payload), large)
				}
				if f.Type != "" && within(unsafe.Slice(unsafe.StringData(f.Type), len(f.Type)), data) {
					t.Errorf("frame %d: type name %q refers into the input, want a copy", i, f.Type)
				}
			}
		})
	}
}

// Frames whose payload field is repeated, of the wrong type, followed by
// a truncated field or not where the encoder puts it: decoding in place
// ends as copying does, with the same batch or an error.
func TestUnmarshalLargeMalformed(t *testing.T) {
	p := payload(wire.LargePayload, 7)
	frame := func(fields ...[]byte) []byte { return bytes.Join(fields, nil) }
	payloadField := func(p []byte) []byte {
		return append(append([]byte{0x2a}, protoVarint(len(p))...), p...)
	}
	kind := []byte{0x08, byte(wire.Kind_KIND_SEND)}
	cases := map[string][]byte{
		"payload twice":           frame(kind, payloadField(p), payloadField(p[:10])),
		"payload as a varint":     frame(kind, []byte{0x28, 0x01}, bytes.Repeat([]byte{0x08, 0x01}, len(p)/2)),
		"truncated after payload": frame(kind, payloadField(p), []byte{0x30}),
		"payload last":            frame(payloadField(p), kind),
	}
	for name, fr := range cases {
		t.Run(name, func(t *testing.T) {
			data := append(append([]byte{0x0a}, protoVarint(len(fr))...), fr...)
			var want, got wire.Batch
			wantErr := wire.UnmarshalBatch(data, &want)
			err := wire.UnmarshalBatchAliasing(data, &got, wire.LargePayload)
			if (err != nil) != (wantErr != nil) || !proto.Equal(&got, &want) {
				t.Errorf("in place: %v, error %v; copying: %v, error %v", &got, err, &want, wantErr)
			}
		})
	}
}

func protoVarint(n int) []byte { return protowire.AppendVarint(nil, uint64(n)) }

// recordingPool is a mem.BufferPool that counts the buffers given back.
type recordingPool struct{ put int }

func (p *recordingPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *recordingPool) Put(*[]byte)       { p.put++ }

// The buffer a message arrives in goes back to its pool once decoded,
// unless a large payload refers into it: reusing it would overwrite the
// payload.
func TestCodecKeepsOnlyBuffersWithLargePayloads(t *testing.T) {
	var largest *wire.Batch
	for _, b := range largeBatches() {
		if largest == nil || proto.Size(b) > proto.Size(largest) {
			largest = b
		}
	}
	large, err := proto.Marshal(largest)
	if err != nil {
		t.Fatal(err)
	}
	// n small frames (gRPC pools buffers from 1 KiB up).
	sends := func(n int) []byte {
		var b wire.Batch
		for range n {
			b.Frames = append(b.Frames, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 1, TypeId: 3, Payload: payload(40, 9)})
		}
		data, err := proto.Marshal(&b)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	small, manySmall := sends(50), sends(wire.LargePayload/32)
	// A large payload with a few small frames, and with more small frames
	// than its own size.
	withSmall := func(n int) []byte {
		data, err := proto.Marshal(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_SEND, Plugin: 2, Payload: payload(wire.LargePayload, 4)}}})
		if err != nil {
			t.Fatal(err)
		}
		return append(sends(n), data...)
	}
	tests := []struct {
		name      string
		data      []byte
		givenBack bool
	}{
		{"small frames", small, true},
		{"small frames, over LargePayload in all", manySmall, true},
		{"large payloads", large, false},
		{"a large payload and a few small frames", withSmall(10), false},
		{"a large payload among more small frames", withSmall(wire.LargePayload / 32), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pool recordingPool
			data := slices.Clone(tt.data)
			msg := mem.BufferSlice{mem.NewBuffer(&data, &pool)}
			var b wire.Batch
			if err := (wire.Codec{}).Unmarshal(msg, &b); err != nil {
				t.Fatal(err)
			}
			var want wire.Batch
			if err := proto.Unmarshal(tt.data, &want); err != nil {
				t.Fatal(err)
			}
			clear(data) // as the pool's next user would
			msg.Free()  // gRPC's reference
			if got := pool.put == 1; got != tt.givenBack {
				t.Errorf("buffer given back to its pool: got %v, want %v", got, tt.givenBack)
			}
			if tt.givenBack && !proto.Equal(&b, &want) {
				t.Errorf("decoded batch changed with the buffer given back: a payload still refers into it")
			}
		})
	}
}
