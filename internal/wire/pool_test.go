package wire_test

import (
	"fmt"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
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
