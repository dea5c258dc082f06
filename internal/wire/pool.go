package wire

import (
	"sync"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Frames are the one allocation every message makes on both ends, and at
// hundreds of thousands of messages a second the garbage collector's share
// of the work follows their bytes. The Frame structs (not what they point
// to) are therefore recycled: NewFrame takes one from a pool, ReleaseFrame
// gives one back, and Codec decodes batches into pooled frames.
//
// The rule that makes this safe: a frame is released once, by whoever holds
// its pointer last, and nobody uses that pointer afterwards. Only the struct
// is reused; its payload, strings and sub-messages are never written again,
// so anyone still holding those (a decoded message, a task input, a Hello)
// is unaffected. A frame that is never released is simply collected.

var framePool = sync.Pool{New: func() any { return new(Frame) }}

// NewFrame returns an empty frame, recycled when one is available. Safe for
// concurrent use.
func NewFrame() *Frame { return framePool.Get().(*Frame) }

// ReleaseFrame empties f and makes it available to NewFrame. The caller
// must hold the last use of f; nil is ignored. Safe for concurrent use.
func ReleaseFrame(f *Frame) {
	if f == nil {
		return
	}
	*f = Frame{} // Reset without its eager (and here useless) message-info store
	framePool.Put(f)
}

// Codec is the gRPC codec of the Ember service: protobuf, exactly as gRPC's
// default codec (same name, same bytes on the wire), except that a Batch
// is decoded into frames from NewFrame's pool. Install it on both ends
// with grpc.ForceServerCodecV2 and grpc.ForceCodecV2; a peer using the
// default codec interoperates with it.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// protoCodec is gRPC's protobuf codec, registered by its package's init
// (imported here, so initialised first); looked up once, not per message.
var protoCodec = encoding.GetCodecV2(grpcproto.Name)

// Name is the content-subtype, that of gRPC's protobuf codec.
func (Codec) Name() string { return grpcproto.Name }

// Marshal encodes v with gRPC's protobuf codec.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	return protoCodec.Marshal(v)
}

// Unmarshal decodes data into v, a *Batch (pooled frames) or any other
// protobuf message (gRPC's protobuf codec).
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*Batch)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return UnmarshalBatch(buf.ReadOnlyData(), b)
}

// unmarshalFrame decodes one embedded frame. proto.Unmarshal's options,
// with Merge because the pooled frame is already empty.
var unmarshalFrame = proto.UnmarshalOptions{Merge: true, RecursionLimit: protowire.DefaultRecursionLimit}

// UnmarshalBatch decodes data into b (which it resets) exactly as
// proto.Unmarshal does, with the frames taken from NewFrame's pool. Input
// the fast path does not expect (an unknown field from a newer peer, or
// malformed bytes) goes to proto.Unmarshal, so results and errors are
// proto.Unmarshal's.
func UnmarshalBatch(data []byte, b *Batch) error {
	b.Reset()
	for rest := data; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return slowBatch(data, b)
		}
		rest = rest[n:]
		v, n := protowire.ConsumeBytes(rest)
		if n < 0 {
			return slowBatch(data, b)
		}
		rest = rest[n:]
		f := NewFrame()
		if err := unmarshalFrame.Unmarshal(v, f); err != nil {
			ReleaseFrame(f)
			return slowBatch(data, b)
		}
		b.Frames = append(b.Frames, f)
	}
	return nil
}

// slowBatch releases the frames decoded so far and decodes data with
// proto.Unmarshal.
func slowBatch(data []byte, b *Batch) error {
	releaseAll(b)
	return proto.Unmarshal(data, b)
}

// releaseAll releases b's frames and empties it.
func releaseAll(b *Batch) {
	for _, f := range b.Frames {
		ReleaseFrame(f)
	}
	b.Reset()
}
