package wire

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
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

// Codec is the gRPC codec of the Ember service: protobuf, with the same
// bytes on the wire and the same name as gRPC's default codec, but encoded
// and decoded by the code protoc-gen-go-vtproto generates for frames.proto
// (frames_vtproto.pb.go) instead of by reflection, and with a Batch
// decoded into frames from NewFrame's pool. Install it on both ends with
// grpc.ForceServerCodecV2 and grpc.ForceCodecV2; a peer using the default
// codec interoperates with it.
//
// Unlike the reflection-based codec, it neither refuses to encode nor
// refuses to decode a string field that is not valid UTF-8: a Go string
// may hold any bytes, and one such byte in a plugin's error message must
// not break the connection.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// protoCodec is gRPC's protobuf codec, registered by its package's init
// (imported here, so initialised first), for messages that are not ours;
// looked up once, not per message.
var protoCodec = encoding.GetCodecV2(grpcproto.Name)

// vtMessage is the generated encoding of every message in frames.proto.
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dAtA []byte) (int, error)
}

// Name is the content-subtype, that of gRPC's protobuf codec.
func (Codec) Name() string { return grpcproto.Name }

// Marshal encodes v, a message of this package (generated code) or any
// other protobuf message (gRPC's protobuf codec). As gRPC's codec does, it
// takes the buffer of a large message from gRPC's buffer pool. A Batch
// holding a payload of LargePayload bytes or more is encoded around that
// payload instead of copying it (see LargePayload).
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return protoCodec.Marshal(v)
	}
	if b, ok := v.(*Batch); ok && hasLarge(b, LargePayload) {
		return marshalLarge(b, LargePayload)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes data into v, a *Batch (pooled frames) or any other
// protobuf message (gRPC's protobuf codec). A Batch's payloads of
// LargePayload bytes or more are not copied: they refer into the buffer
// the message was gathered into, which then stays out of gRPC's pool (see
// LargePayload).
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if fb, ok := v.(*FirstBatch); ok {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return fb.unmarshal(buf.ReadOnlyData())
	}
	b, ok := v.(*Batch)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	kept, err := unmarshalBatch(buf.ReadOnlyData(), b, LargePayload)
	if kept && err == nil && !worthKeeping(b, buf.Len()) {
		copyLarge(b)
		kept = false
	}
	if !kept {
		buf.Free()
	}
	// Otherwise a payload refers into buf, which therefore never goes back
	// to the pool: the garbage collector takes it once the payload is gone.
	return err
}

// UnmarshalBatch decodes data into b as proto.Unmarshal does, with the
// frames taken from NewFrame's pool and decoded by the generated code,
// which copies every byte it keeps: data may be reused once it returns.
// It resets b first but keeps the backing array of b.Frames, so a reader
// that decodes every batch into the same b allocates no batch and no
// slice per read; the frames b held are not touched.
//
// It refuses a batch of more than MaxBatchFrames frames. Below that,
// what proto.Unmarshal accepts, it accepts, with the same result: input
// the generated decoder refuses goes to proto.Unmarshal, whose result and
// error are then UnmarshalBatch's, and so does a frame carrying a
// Welcome, whose maps the generated decoder reads less strictly. It is
// more lenient in turn, as the
// generated decoder is: string fields are taken as they are, valid UTF-8
// or not (see Codec), some malformed input that no Ember peer writes (an
// over-long varint, an out-of-range field number kept as an unknown
// field) is accepted rather than refused, and unknown fields are kept,
// but not always in the bytes proto.Unmarshal would keep; Ember never
// reads them.
func UnmarshalBatch(data []byte, b *Batch) error {
	_, err := unmarshalBatch(data, b, 0)
	return err
}

// unmarshalBatch is UnmarshalBatch that, with min > 0, leaves payloads of
// at least min bytes in data instead of copying them (unmarshalFrame). It
// reports whether it did so for any frame (even one released again on
// error): data must then never be written again.
func unmarshalBatch(data []byte, b *Batch, min int) (kept bool, err error) {
	frames := b.Frames[:0]
	clear(frames[:cap(frames)]) // the last read's frames are someone else's now
	b.Reset()
	b.Frames = frames
	entries := 0 // of the batch's frames with lists (withLists)
	for rest := data; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return kept, slowBatch(data, b)
		}
		rest = rest[n:]
		v, n := protowire.ConsumeBytes(rest)
		if n < 0 {
			return kept, slowBatch(data, b)
		}
		rest = rest[n:]
		if len(b.Frames) == MaxBatchFrames {
			releaseAll(b)
			return kept, errTooManyFrames
		}
		if withLists(v) {
			// Before decoding: an empty list element is two bytes on the
			// wire and a hundred or more decoded.
			if err := CountEntries(v, (*Frame)(nil).ProtoReflect().Descriptor(), &entries, MaxBatchEntries, errTooManyBatchEntries); err != nil {
				releaseAll(b)
				return kept, err
			}
		}
		f := NewFrame()
		inPlace, err := unmarshalFrame(f, v, min)
		kept = kept || inPlace
		if err == nil && f.Welcome != nil {
			// The generated decoder does not check the wire types inside
			// map entries (Welcome's conf and extraConf), so it can read
			// a malformed entry differently from protobuf. A connection's
			// one WELCOME is decoded by reflection instead.
			*f = Frame{}
			err = proto.Unmarshal(v, f)
		}
		if err != nil {
			ReleaseFrame(f)
			return kept, slowBatch(data, b)
		}
		b.Frames = append(b.Frames, f)
	}
	return kept, nil
}

// slowBatch releases the frames decoded so far and decodes data with
// proto.Unmarshal, which is more lenient than the generated decoder (it
// keeps a field of an unexpected wire type as an unknown field) and has
// the last word on what a malformed batch is.
func slowBatch(data []byte, b *Batch) error {
	releaseAll(b)
	if n, err := countFrames(data); err == nil && n > MaxBatchFrames {
		return errTooManyFrames
	}
	return proto.Unmarshal(data, b)
}

// MaxBatchEntries bounds the list elements and map entries, at every
// depth, of the frames of one Batch that carry sub-messages with lists
// (withLists): far more than a READY's resources or a heartbeat's metric
// families hold. A peer that had authenticated could otherwise make a
// batch of millions of empty entries cost its reader about a hundred
// times its bytes (measured: 1.6 GiB of driver heap from four connections'
// 4 MiB READY batches). Frames without them (SEND, ASK, REPLY, CREDIT,
// TASK...) are not counted: their cost is bounded by MaxBatchFrames.
const MaxBatchEntries = 1 << 16

var errTooManyBatchEntries = fmt.Errorf("a batch of more than %d list elements and map entries", MaxBatchEntries)

// listFields are the numbers of Frame's fields whose messages hold lists
// or maps: hello, welcome, ready and metrics (TestListFields checks them
// against the descriptor).
var listFields = [...]protowire.Number{8, 9, 11, 13}

// withLists reports whether the encoded frame v has a field whose message
// holds lists or maps (or cannot be read, for the checked path to judge):
// a scan of its tags, without decoding. It runs on every frame read, so
// one-byte varints, what Ember writes, take a path of their own.
func withLists(v []byte) bool {
	for len(v) > 0 {
		tag, n := uint64(v[0]), 1
		if tag >= 0x80 {
			if tag, n = protowire.ConsumeVarint(v); n < 0 {
				return true
			}
		}
		v = v[n:]
		num := protowire.Number(tag >> 3)
		if num == listFields[0] || num == listFields[1] || num == listFields[2] || num == listFields[3] {
			return true
		}
		switch protowire.Type(tag & 7) {
		case protowire.VarintType:
			n = 0
			for n < len(v) && v[n] >= 0x80 {
				n++
			}
			if n == len(v) {
				return true
			}
			v = v[n+1:]
		case protowire.BytesType:
			size, n := uint64(0), 1
			if len(v) > 0 && v[0] < 0x80 {
				size = uint64(v[0])
			} else if size, n = protowire.ConsumeVarint(v); n < 0 {
				return true
			}
			if size > uint64(len(v)-n) {
				return true
			}
			v = v[n+int(size):]
		case protowire.Fixed32Type:
			if len(v) < 4 {
				return true
			}
			v = v[4:]
		case protowire.Fixed64Type:
			if len(v) < 8 {
				return true
			}
			v = v[8:]
		default: // groups, and wire types that do not exist
			return true
		}
	}
	return false
}

// MaxBatchFrames is the most frames a Batch may hold. A sender cuts its
// batches at 1 MiB, counting at least 32 bytes per frame, so an Ember
// peer never sends more than about half as many; the bound is for one
// that does, since every frame, two bytes on the wire when empty, takes a
// couple of hundred bytes of memory decoded.
const MaxBatchFrames = 1 << 16

var errTooManyFrames = fmt.Errorf("a batch of more than %d frames", MaxBatchFrames)

// countFrames counts the frames of an encoded Batch without decoding
// them. It stops with an error at malformed input.
func countFrames(data []byte) (int, error) {
	n := 0
	for len(data) > 0 {
		num, typ, m := protowire.ConsumeTag(data)
		if m < 0 {
			return n, protowire.ParseError(m)
		}
		data = data[m:]
		m = protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return n, protowire.ParseError(m)
		}
		data = data[m:]
		if num == 1 && typ == protowire.BytesType { // of another type, an unknown field
			n++
		}
	}
	return n, nil
}

// FirstBatch is a message read before the peer has proved anything: a
// driver's first read on a stream, which should hold one HELLO, and an
// executor's first two, CHALLENGE and WELCOME. Codec decodes at most one
// frame, so a peer that sends millions of frames instead costs no more
// than their bytes, and only a frame of at most MaxFirstEntries list
// elements and map entries: a peer that repeats empty sub-messages (two
// bytes each on the wire, a hundred or more decoded) gets an error.
type FirstBatch struct {
	Frames int    // how many frames the batch held
	Frame  *Frame // the batch's frame when it held exactly one, else nil
}

func (fb *FirstBatch) unmarshal(data []byte) error {
	n, err := countFrames(data)
	if err != nil {
		return err
	}
	fb.Frames, fb.Frame = n, nil
	if n != 1 {
		return nil
	}
	entries := 0
	if err := CountEntries(data, (&Batch{}).ProtoReflect().Descriptor(), &entries, MaxFirstEntries, errTooManyEntries); err != nil {
		return err
	}
	var b Batch
	if err := proto.Unmarshal(data, &b); err != nil {
		return err
	}
	if fb.Frames = len(b.Frames); fb.Frames == 1 { // as counted
		fb.Frame = b.Frames[0]
	}
	return nil
}

// MaxFirstEntries bounds the list elements and map entries, at every
// depth, of a FirstBatch: far more than a HELLO's plugins, message types
// and tasks, or a WELCOME's configuration, ever hold.
const MaxFirstEntries = 1 << 16

var errTooManyEntries = fmt.Errorf("a first message of more than %d list elements and map entries", MaxFirstEntries)

// CountEntries adds to *n the list elements and map entries of the message
// of descriptor md encoded in b, at every depth, without decoding it: what
// decoding it would cost, bar the bytes. It stops with tooMany once *n is
// over limit, and at input it cannot parse. A packed list counts as one:
// its elements cost about their size.
func CountEntries(b []byte, md protoreflect.MessageDescriptor, n *int, limit int, tooMany error) error {
	if *n > limit {
		return tooMany
	}
	fields := md.Fields()
	for len(b) > 0 {
		num, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
		m = protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		v := b[:m]
		b = b[m:]
		fd := fields.ByNumber(num)
		if fd == nil {
			continue // an unknown field, kept as its bytes
		}
		if fd.IsList() || fd.IsMap() {
			if *n++; *n > limit {
				return tooMany
			}
		}
		if fd.Message() != nil && typ == protowire.BytesType {
			sub, _ := protowire.ConsumeBytes(v) // checked by ConsumeFieldValue
			if err := CountEntries(sub, fd.Message(), n, limit, tooMany); err != nil {
				return err
			}
		}
	}
	return nil
}

// releaseAll releases b's frames and empties it.
func releaseAll(b *Batch) {
	for _, f := range b.Frames {
		ReleaseFrame(f)
	}
	b.Reset()
}
