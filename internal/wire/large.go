package wire

import (
	"bytes"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Large payloads (a plugin sending a file, a big task input) would be
// copied twice more than the bytes on the wire need: into the batch's
// encoding on the way out, and out of the received batch into the frame on
// the way in. Codec skips both copies for a payload of at least
// LargePayload bytes, relying on the rule every frame already follows: a
// payload is never written once it is in a frame.
//
//   - Marshal returns a large payload as a buffer of its own in the
//     mem.BufferSlice it gives gRPC, which copies it straight into its
//     write buffer; the frame's other fields go in the buffers around it,
//     with the payload field last in the frame (field order is free in
//     protobuf). gRPC holds the slice until it is written, so the memory
//     stays live even if the frame is released first.
//   - Unmarshal leaves a large payload in the buffer the message was
//     gathered into (its capacity capped at its length) instead of copying
//     it out, and then does not give that buffer back to gRPC's pool: the
//     garbage collector takes it once the payload is gone. Only the large
//     payloads refer into it: every other field is copied as before, so a
//     small retained value never pins a large buffer. And only when they
//     make up at least half of it: a large payload that arrived among
//     many small frames (say, in a batch of a megabyte of another
//     plugin's sends) is copied out after all. A kept buffer thus holds at
//     most twice the payload bytes that pin it, and the send windows,
//     which count payloads, keep bounding the memory held. A message
//     without a large payload gives its buffer back, as before.

// LargePayload is the payload size, in bytes, from which Codec neither
// copies a payload into an outgoing batch nor out of an incoming one.
const LargePayload = 64 << 10

// payloadField is the number of Frame's payload field in frames.proto
// (TestPayloadField holds it to the generated descriptor).
const payloadField protowire.Number = 5

// payloadTag is the encoded tag of the payload field (one byte).
var payloadTag = protowire.AppendTag(nil, payloadField, protowire.BytesType)

// hasLarge reports whether a frame of b has a payload of at least min bytes.
func hasLarge(b *Batch, min int) bool {
	for _, f := range b.Frames {
		if len(f.Payload) >= min {
			return true
		}
	}
	return false
}

// marshalLarge encodes b as proto.Marshal would, but for field order, with
// every payload of at least min bytes as a buffer of its own in the result
// rather than copied. It detaches each such payload from its frame while
// encoding the frame's other fields and puts it back after: b's frames
// must not be read by anyone else meanwhile (the writer owns them).
func marshalLarge(b *Batch, min int) (mem.BufferSlice, error) {
	// One buffer for everything but the large payloads, cut into the
	// pieces between them.
	n := len(b.unknownFields)
	for _, f := range b.Frames {
		if p := f.Payload; len(p) >= min {
			n += protowire.SizeTag(1) + protowire.SizeBytes(largeSize(f)) - len(p)
		} else {
			n += protowire.SizeTag(1) + protowire.SizeBytes(f.SizeVT())
		}
	}
	buf := make([]byte, n)
	var out mem.BufferSlice
	at, from := 0, 0 // where the next byte goes; where the current piece began
	for _, f := range b.Frames {
		p := f.Payload
		if len(p) < min {
			size := f.SizeVT()
			at = putTagLen(buf, at, size)
			if _, err := f.MarshalToSizedBufferVT(buf[at : at+size]); err != nil {
				return nil, err
			}
			at += size
			continue
		}
		at = putTagLen(buf, at, largeSize(f))
		f.Payload = nil
		size := f.SizeVT()
		_, err := f.MarshalToSizedBufferVT(buf[at : at+size])
		f.Payload = p
		if err != nil {
			return nil, err
		}
		at += size
		at += copy(buf[at:], payloadTag)
		at = len(protowire.AppendVarint(buf[:at], uint64(len(p))))
		out = append(out, mem.SliceBuffer(buf[from:at]), mem.SliceBuffer(p))
		from = at
	}
	at += copy(buf[at:], b.unknownFields) // as the generated encoder does
	if from < at {
		out = append(out, mem.SliceBuffer(buf[from:at]))
	}
	return out, nil
}

// largeSize is the encoded size of f as marshalLarge writes it: its other
// fields, then its payload field.
func largeSize(f *Frame) int {
	p := f.Payload
	f.Payload = nil
	n := f.SizeVT()
	f.Payload = p
	return n + len(payloadTag) + protowire.SizeBytes(len(p))
}

// putTagLen writes the tag of Batch's frames field and the length n at
// buf[at:] and returns where the frame itself goes.
func putTagLen(buf []byte, at, n int) int {
	b := protowire.AppendTag(buf[:at], 1, protowire.BytesType)
	return len(protowire.AppendVarint(b, uint64(n)))
}

// worthKeeping reports whether the large payloads of b (those of
// LargePayload bytes or more) make up at least half of the n bytes they
// were decoded from.
func worthKeeping(b *Batch, n int) bool {
	large := 0
	for _, f := range b.Frames {
		if len(f.Payload) >= LargePayload {
			large += len(f.Payload)
		}
	}
	return 2*large >= n
}

// copyLarge gives each large payload of b a copy of its own, so that none
// refers into the buffer b was decoded from.
func copyLarge(b *Batch) {
	for _, f := range b.Frames {
		if len(f.Payload) >= LargePayload {
			f.Payload = bytes.Clone(f.Payload)
		}
	}
}

// unmarshalFrame decodes the frame encoded in v into f. With min > 0 a
// payload of at least min bytes is not copied: f.Payload refers into v,
// and kept reports it (v must then never be written again).
func unmarshalFrame(f *Frame, v []byte, min int) (kept bool, err error) {
	if min > 0 && len(v) >= min {
		if rest, p, ok := cutPayload(v, min); ok {
			if err := f.UnmarshalVT(rest); err != nil {
				return true, err
			}
			f.Payload = p
			return true, nil
		}
	}
	return false, f.UnmarshalVT(v)
}

// cutPayload finds the payload field of the frame encoded in v and, if it
// is the only one and holds at least min bytes, returns v without it (a
// copy) and the payload (in v, capacity capped). ok is false otherwise,
// and for input it cannot parse: the generated decoder then has the say.
func cutPayload(v []byte, min int) (rest, payload []byte, ok bool) {
	start, end := -1, -1
	for i := 0; i < len(v); {
		num, typ, n := protowire.ConsumeTag(v[i:])
		if n < 0 {
			return nil, nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, v[i+n:])
		if m < 0 {
			return nil, nil, false
		}
		if num == payloadField {
			if start >= 0 || typ != protowire.BytesType {
				return nil, nil, false // the generated decoder resolves repeats and refuses wrong types
			}
			payload, _ = protowire.ConsumeBytes(v[i+n:])
			start, end = i, i+n+m
		}
		i += n + m
	}
	if start < 0 || len(payload) < min {
		return nil, nil, false
	}
	rest = make([]byte, 0, len(v)-(end-start))
	rest = append(append(rest, v[:start]...), v[end:]...)
	return rest, payload[:len(payload):len(payload)], true
}
