package codec_test

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"reflect"
	"strconv"
	"testing"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// The benchmark messages: a small struct (about 32 bytes of fields) and a
// medium one (a slice of 100 ints and a map of 10 strings).
type (
	benchSmall struct {
		ID    int64
		Name  string
		Value float64
	}
	benchMedium struct {
		IDs    []int
		Labels map[string]string
	}
)

func init() {
	for _, r := range []struct {
		t    reflect.Type
		name string
	}{
		{reflect.TypeFor[benchSmall](), "codec_test.benchSmall"},
		{reflect.TypeFor[benchMedium](), "codec_test.benchMedium"},
	} {
		if err := codec.Register(r.t, r.name); err != nil {
			panic(err)
		}
	}
}

func newSmall() benchSmall { return benchSmall{ID: 123456, Name: "executor-7", Value: 3.25} }

func newMedium() benchMedium {
	m := benchMedium{IDs: make([]int, 100), Labels: make(map[string]string, 10)}
	for i := range m.IDs {
		m.IDs[i] = i * 1009
	}
	for i := range 10 {
		m.Labels["key-"+strconv.Itoa(i)] = "value-" + strconv.Itoa(i*7)
	}
	return m
}

// BenchmarkCodec times one encode plus one decode of a message with the
// candidate codecs for plain Go values:
//
//   - json: encoding/json, the codec's first choice for plain values,
//     for comparison;
//   - codec: the codec package itself (registry lookup + CBOR into a
//     pooled value), what Ember pays per message;
//   - gob: encoding/gob with a fresh Encoder and Decoder per message, as a
//     per-message codec must (every message carries its type description);
//   - gob-stream: one Encoder and one Decoder kept across messages, which
//     only a codec with per-connection state, decoding in send order, could
//     use; shown for reference;
//   - proto: protobuf generated code, the baseline (and what the codec uses
//     for proto.Message values). small is a wire.Frame with a 32-byte
//     payload; medium is the closest generated types at hand: a
//     descriptorpb.SourceCodeInfo_Location with 100 packed int32s plus a
//     wire.Welcome whose conf map holds the same 10 strings.
//
// The "wire-B" metric is the encoded size.
//
//	go test -run '^$' -bench Codec -count 5 ./internal/codec
func BenchmarkCodec(b *testing.B) {
	small, medium := newSmall(), newMedium()
	smallFrame := &wire.Frame{Kind: wire.Kind_KIND_SEND, Call: 123456, Plugin: 3, Payload: bytes.Repeat([]byte{0xa5}, 32)}
	mediumLoc := &descriptorpb.SourceCodeInfo_Location{Path: make([]int32, 100)}
	for i := range mediumLoc.Path {
		mediumLoc.Path[i] = int32(medium.IDs[i])
	}
	mediumWelcome := &wire.Welcome{Conf: medium.Labels}

	for _, size := range []struct {
		name  string
		value any
		proto []proto.Message
	}{
		{"small", small, []proto.Message{smallFrame}},
		{"medium", medium, []proto.Message{mediumLoc, mediumWelcome}},
	} {
		b.Run(size.name+"/json", func(b *testing.B) {
			benchJSON(b, size.value)
		})
		b.Run(size.name+"/codec", func(b *testing.B) {
			benchRegistry(b, size.value)
		})
		b.Run(size.name+"/gob", func(b *testing.B) {
			benchGob(b, size.value)
		})
		b.Run(size.name+"/gob-stream", func(b *testing.B) {
			benchGobStream(b, size.value)
		})
		b.Run(size.name+"/proto", func(b *testing.B) {
			benchProto(b, size.proto)
		})
	}
}

// decodeInto returns a pointer to a fresh value of v's type, as the codec
// allocates one per decoded message.
func decodeInto(v any) any { return reflect.New(reflect.TypeOf(v)).Interface() }

func checkRoundTrip(b *testing.B, want, gotPtr any) {
	b.Helper()
	if got := reflect.ValueOf(gotPtr).Elem().Interface(); !reflect.DeepEqual(got, want) {
		b.Fatalf("round trip: got %+v, want %+v", got, want)
	}
}

func benchJSON(b *testing.B, v any) {
	b.ReportAllocs()
	var size int
	var out any
	for b.Loop() {
		data, err := json.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		out = decodeInto(v)
		if err := json.Unmarshal(data, out); err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.ReportMetric(float64(size), "wire-B")
	checkRoundTrip(b, v, out)
}

func benchRegistry(b *testing.B, v any) {
	b.ReportAllocs()
	var size int
	var out any
	for b.Loop() {
		name, data, err := codec.Encode(v)
		if err != nil {
			b.Fatal(err)
		}
		if out, err = codec.Decode(name, data); err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.ReportMetric(float64(size), "wire-B")
	if !reflect.DeepEqual(out, v) {
		b.Fatalf("round trip: got %+v, want %+v", out, v)
	}
}

func benchGob(b *testing.B, v any) {
	b.ReportAllocs()
	var size int
	var out any
	for b.Loop() {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(v); err != nil {
			b.Fatal(err)
		}
		size = buf.Len()
		out = decodeInto(v)
		if err := gob.NewDecoder(&buf).Decode(out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size), "wire-B")
	checkRoundTrip(b, v, out)
}

func benchGobStream(b *testing.B, v any) {
	b.ReportAllocs()
	var buf bytes.Buffer
	enc, dec := gob.NewEncoder(&buf), gob.NewDecoder(&buf)
	// The first message carries the type description; keep it out of the
	// loop, as a long-lived stream would.
	if err := enc.Encode(v); err != nil {
		b.Fatal(err)
	}
	if err := dec.Decode(decodeInto(v)); err != nil {
		b.Fatal(err)
	}
	var size int
	var out any
	for b.Loop() {
		if err := enc.Encode(v); err != nil {
			b.Fatal(err)
		}
		size = buf.Len()
		out = decodeInto(v)
		if err := dec.Decode(out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size), "wire-B")
	checkRoundTrip(b, v, out)
}

func benchProto(b *testing.B, msgs []proto.Message) {
	b.ReportAllocs()
	var size int
	outs := make([]proto.Message, len(msgs))
	for b.Loop() {
		size = 0
		for i, m := range msgs {
			data, err := proto.Marshal(m)
			if err != nil {
				b.Fatal(err)
			}
			out := m.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(data, out); err != nil {
				b.Fatal(err)
			}
			outs[i] = out
			size += len(data)
		}
	}
	b.ReportMetric(float64(size), "wire-B")
	for i, m := range msgs {
		if !proto.Equal(outs[i], m) {
			b.Fatalf("round trip: got %v, want %v", outs[i], m)
		}
	}
}
