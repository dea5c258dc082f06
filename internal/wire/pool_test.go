package wire_test

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// dirty returns a frame with every field set, as a recycled frame was
// before its release.
func dirty() *wire.Frame {
	return &wire.Frame{
		Kind: wire.Kind_KIND_TASK, Call: 99, Plugin: 9, Type: "old", Payload: []byte("old"), Code: 3, Error: "old",
		Hello: &wire.Hello{BuildId: "old"}, Welcome: &wire.Welcome{AppId: "old"}, TimeoutMicros: 9,
		Ready: &wire.Ready{Slots: 9}, Task: &wire.Task{Name: "old"}, Metrics: &wire.Metrics{},
		Challenge: &wire.Challenge{Nonce: []byte("old")}, TypeId: 9,
	}
}

func TestUnmarshalBatchMatchesProto(t *testing.T) {
	// A batch with an unknown field (field 2, from a newer peer) takes
	// the slow path and keeps it, as proto.Unmarshal does.
	seed, err := proto.Marshal(seedBatches()[3])
	if err != nil {
		t.Fatal(err)
	}
	unknown := protowire.AppendTag(seed, 2, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 7)
	inputs := map[string][]byte{"unknown field": unknown, "truncated": seed[:len(seed)-1]}
	for i, b := range seedBatches() {
		data, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		inputs["seed "+string(rune('0'+i))] = data
	}
	for name, data := range inputs {
		// A reader reuses one batch for every read: what the last read
		// left in it (more frames, an unknown field) must not show through.
		for _, reused := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/reused=%v", name, reused), func(t *testing.T) {
				// Recycled frames must decode as fresh ones.
				for range 4 {
					wire.ReleaseFrame(dirty())
				}
				var want, got wire.Batch
				if reused {
					if err := wire.UnmarshalBatch(unknown, &got); err != nil {
						t.Fatal(err)
					}
					got.Frames = append(got.Frames, dirty(), dirty())
				}
				wantErr := proto.Unmarshal(data, &want)
				err := wire.UnmarshalBatch(data, &got)
				if (err != nil) != (wantErr != nil) {
					t.Fatalf("got error %v, want error %v", err, wantErr)
				}
				if !proto.Equal(&got, &want) {
					t.Errorf("got %v, want %v", &got, &want)
				}
				if name == "unknown field" && len(got.ProtoReflect().GetUnknown()) == 0 {
					t.Error("the unknown field was dropped")
				}
			})
		}
	}
}

func TestReleaseFrameEmpties(t *testing.T) {
	f := dirty()
	wire.ReleaseFrame(f)
	if !proto.Equal(f, &wire.Frame{}) {
		t.Errorf("released frame is %v, want empty", f)
	}
	wire.ReleaseFrame(nil) // no panic
	if g := wire.NewFrame(); !proto.Equal(g, &wire.Frame{}) {
		t.Errorf("NewFrame() = %v, want empty", g)
	}
}

func TestCodec(t *testing.T) {
	c := wire.Codec{}
	if got, want := c.Name(), "proto"; got != want {
		t.Errorf("Name() = %q, want %q (the content-subtype of gRPC's default codec)", got, want)
	}
	big := &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, 64<<10)}}}
	messages := []proto.Message{
		big, // over gRPC's pooling threshold: a pooled buffer
		&wire.Hello{BuildId: "b", Plugins: []string{"p"}},
		wrapperspb.String("not ours: gRPC's codec"),
	}
	for _, b := range seedBatches() {
		messages = append(messages, b)
	}
	for _, m := range messages {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal(%T): %v", m, err)
		}
		// Maps aside (at most one entry each here), the generated encoder
		// writes proto.Marshal's bytes.
		plain, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := data.Materialize(); string(got) != string(plain) {
			t.Errorf("Marshal(%v) = %x, want proto.Marshal's %x", m, got, plain)
		}
		got := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(plain)}, got); err != nil {
			t.Fatalf("Unmarshal(%T): %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Errorf("Unmarshal(%v) = %v", m, got)
		}
		data.Free()
	}
}

// A Go string may hold any bytes. Codec carries them as they are, where
// proto.Marshal refuses to encode a string field that is not valid UTF-8:
// a plugin's error message with such a byte used to break the connection.
func TestCodecTakesAnyString(t *testing.T) {
	b := &wire.Batch{Frames: []*wire.Frame{
		{Kind: wire.Kind_KIND_REPLY, Call: 1, Code: 2, Error: "no file \"\xff\xfe.log\""},
		{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{Hostname: "h\xc3"}},
	}}
	if _, err := proto.Marshal(b); err == nil {
		t.Fatal("proto.Marshal accepts invalid UTF-8; this test no longer tests anything")
	}
	data, err := wire.Codec{}.Marshal(b)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	var got wire.Batch
	if err := (wire.Codec{}).Unmarshal(data, &got); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if !proto.Equal(&got, b) {
		t.Errorf("round trip: got %v, want %v", &got, b)
	}
}

func TestWelcomeDigestInput(t *testing.T) {
	w := &wire.Welcome{AppId: "app", Conf: map[string]string{"a": "1", "b": "2", "c": "3"}, Auth: []byte("proof")}
	first, err := wire.WelcomeDigestInput(w)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // map order varies from call to call; the digest may not
		got, err := wire.WelcomeDigestInput(w)
		if err != nil || string(got) != string(first) {
			t.Fatalf("WelcomeDigestInput = %x, %v; want %x, nil every time", got, err, first)
		}
	}
	if string(w.Auth) != "proof" {
		t.Errorf("WelcomeDigestInput changed its argument's Auth to %q", w.Auth)
	}
	noAuth := proto.Clone(w).(*wire.Welcome)
	noAuth.Auth = nil
	if got, _ := wire.WelcomeDigestInput(noAuth); string(got) != string(first) {
		t.Errorf("the digest input depends on Auth: %x, want %x", got, first)
	}
	w.Conf["bad"] = "\xff"
	if got, err := wire.WelcomeDigestInput(w); err == nil {
		t.Errorf("WelcomeDigestInput with a value that is not UTF-8 = %x, nil; want an error", got)
	}
}

// emptyFrames returns an encoded Batch of n empty frames: two bytes each
// on the wire, a couple of hundred in memory once decoded.
func emptyFrames(n int) []byte {
	var data []byte
	for range n {
		data = protowire.AppendTag(data, 1, protowire.BytesType)
		data = protowire.AppendBytes(data, nil)
	}
	return data
}

// A Batch may hold MaxBatchFrames frames and no more, whichever decoder
// reads it: past that, a peer's few bytes would cost the receiver a
// hundred times as much memory.
func TestMaxBatchFrames(t *testing.T) {
	// A first frame the generated decoder refuses (its kind as a fixed32,
	// which proto.Unmarshal keeps as an unknown field) sends the whole
	// batch to proto.Unmarshal, the slow path: it is bounded too.
	inner := protowire.AppendFixed32(protowire.AppendTag(nil, 1, protowire.Fixed32Type), 7)
	odd := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), inner)
	tests := []struct {
		name    string
		data    []byte
		wantErr bool
	}{
		{"at the bound", emptyFrames(wire.MaxBatchFrames), false},
		{"one over", emptyFrames(wire.MaxBatchFrames + 1), true},
		{"at the bound, by the slow path", append(odd, emptyFrames(wire.MaxBatchFrames-1)...), false},
		{"one over, by the slow path", append(odd, emptyFrames(wire.MaxBatchFrames)...), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b wire.Batch
			err := wire.UnmarshalBatch(tt.data, &b)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("UnmarshalBatch: got %d frames, error %v; want an error: %v", len(b.Frames), err, tt.wantErr)
			}
			if tt.wantErr && len(b.Frames) != 0 {
				t.Errorf("UnmarshalBatch kept %d frames with its error", len(b.Frames))
			}
		})
	}
}

// The driver reads a stream's first message, before the peer has proved
// anything, as a FirstBatch: one frame is decoded, and any other number
// only counted.
func TestFirstBatch(t *testing.T) {
	hello := &wire.Frame{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{BuildId: "b"}}
	one, err := proto.Marshal(&wire.Batch{Frames: []*wire.Frame{hello}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		data       []byte
		wantFrames int
		wantHello  bool
	}{
		{"a HELLO", one, 1, true},
		{"no frame", nil, 0, false},
		{"two frames", append(append([]byte(nil), one...), one...), 2, false},
		{"a million empty frames", emptyFrames(1 << 20), 1 << 20, false},
		// Field 1 as a varint: an unknown field, not a frame (found by
		// FuzzFirstBatch: counted as one, it crashed the decoder).
		{"a frame's field number, another wire type", protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fb wire.FirstBatch
			if err := (wire.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(tt.data)}, &fb); err != nil {
				t.Fatal(err)
			}
			if fb.Frames != tt.wantFrames {
				t.Errorf("Frames: got %d, want %d", fb.Frames, tt.wantFrames)
			}
			if got := fb.Frame != nil && proto.Equal(fb.Frame, hello); got != tt.wantHello {
				t.Errorf("Frame: got %v, want the HELLO: %v", fb.Frame, tt.wantHello)
			}
		})
	}
	var fb wire.FirstBatch
	if err := (wire.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 0x01})}, &fb); err == nil {
		t.Error("a truncated batch: got no error")
	}
}

// A FirstBatch's one frame is decoded only if it holds at most
// MaxFirstEntries list elements and map entries, at every depth: an empty
// sub-message repeated takes two bytes on the wire and a hundred or more
// decoded. One frame whose READY repeated an empty Resource two million
// times (4 MiB) made the decoder allocate 250 MiB.
func TestFirstBatchBoundsEntries(t *testing.T) {
	names := func(n int) []string { return make([]string, n) }
	conf := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprint(i)] = ""
		}
		return m
	}
	const max = wire.MaxFirstEntries - 1 // the batch's one frame is an entry
	tests := []struct {
		name    string
		frame   *wire.Frame
		wantErr bool
	}{
		{"HELLO at the bound", &wire.Frame{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{Plugins: names(max / 2), MessageTypes: names(max - max/2)}}, false},
		{"HELLO past it", &wire.Frame{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{Plugins: names(max / 2), Tasks: names(max - max/2 + 1)}}, true},
		{"READY past it", &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Resources: make([]*wire.Resource, 2<<20)}}, true},
		{"WELCOME conf at the bound", &wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{Conf: conf(max)}}, false},
		{"WELCOME conf past it", &wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{Conf: conf(max + 1)}}, true},
		{"extraConf values past it, one level down", &wire.Frame{Kind: wire.Kind_KIND_WELCOME, Welcome: &wire.Welcome{
			ExtraConf: []*wire.ExtraConf{{Values: conf(max)}}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, r := range tt.frame.GetReady().GetResources() {
				if r == nil {
					tt.frame.Ready.Resources[i] = &wire.Resource{}
				}
			}
			data, err := (&wire.Batch{Frames: []*wire.Frame{tt.frame}}).MarshalVT()
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var fb wire.FirstBatch
			err = (wire.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &fb)
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; tt.wantErr && alloc > 2*uint64(len(data)) {
				t.Errorf("%d KiB made the decoder allocate %d KiB", len(data)>>10, alloc>>10)
			}
			switch {
			case tt.wantErr && err == nil:
				t.Fatalf("decoded a first message of more than %d entries", wire.MaxFirstEntries)
			case tt.wantErr && !strings.Contains(err.Error(), "list elements and map entries"):
				t.Errorf("error %q, want it to say why", err)
			case !tt.wantErr && err != nil:
				t.Fatal(err)
			case !tt.wantErr && !proto.Equal(fb.Frame, tt.frame):
				t.Errorf("decoded %d bytes to another frame", len(data))
			}
		})
	}
}

// listFields names the Frame fields whose messages hold lists or maps.
func TestListFields(t *testing.T) {
	fields := (*wire.Frame)(nil).ProtoReflect().Descriptor().Fields()
	for i, name := range []protoreflect.Name{"hello", "welcome", "ready", "metrics"} {
		if got, want := wire.ListFields[i], fields.ByName(name).Number(); got != want {
			t.Errorf("listFields[%d] = %d, want %s's number, %d", i, got, name, want)
		}
	}
}

// After the handshake, a batch's frames that carry lists (a READY's
// resources, a HELLO's names, a WELCOME's maps, heartbeat metrics) hold
// at most MaxBatchEntries list elements and map entries together,
// counted before they are decoded: a peer that had authenticated made its
// batches of empty entries (two bytes each on the wire, a hundred or more
// decoded) cost the driver about a hundred times their bytes. Frames
// without them are not counted.
func TestBatchEntriesBounded(t *testing.T) {
	ready := func(resources int) []byte { // a READY frame of empty resources
		f := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(wire.Kind_KIND_READY))
		return protowire.AppendBytes(protowire.AppendTag(f, 11, protowire.BytesType), bytes.Repeat([]byte{0x0a, 0x00}, resources))
	}
	send := func() []byte {
		f := &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 1, TypeId: 2, Payload: []byte("payload")}
		b, err := proto.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	batch := func(frames ...[]byte) []byte {
		var b []byte
		for _, f := range frames {
			b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), f)
		}
		return b
	}
	many := make([][]byte, wire.MaxBatchEntries+1)
	for i := range many {
		many[i] = send()
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr bool
	}{
		{"a READY at the bound", batch(ready(wire.MaxBatchEntries)), false},
		{"a READY over it", batch(ready(wire.MaxBatchEntries + 1)), true},
		{"two READYs over it together", batch(ready(wire.MaxBatchEntries/2+1), ready(wire.MaxBatchEntries/2)), true},
		{"SENDs, not counted", batch(many[:wire.MaxBatchFrames]...), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b wire.Batch
			err := wire.UnmarshalBatch(tt.data, &b)
			if tt.wantErr != (err != nil) {
				t.Fatalf("UnmarshalBatch: got %v, want an error: %v", err, tt.wantErr)
			}
			if tt.wantErr && !strings.Contains(err.Error(), "list elements and map entries") {
				t.Errorf("UnmarshalBatch: got %v, want it to say the batch holds too many list elements and map entries", err)
			}
		})
	}
}
