package wire_test

import (
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
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
		t.Run(name, func(t *testing.T) {
			// Recycled frames must decode as fresh ones.
			for range 4 {
				wire.ReleaseFrame(dirty())
			}
			var want, got wire.Batch
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
	for _, m := range []proto.Message{seedBatches()[2], &wire.Hello{BuildId: "b", Plugins: []string{"p"}}} {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal(%T): %v", m, err)
		}
		plain, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := data.Materialize(); string(got) != string(plain) {
			t.Errorf("Marshal(%T) = %x, want proto.Marshal's %x", m, got, plain)
		}
		got := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(plain)}, got); err != nil {
			t.Fatalf("Unmarshal(%T): %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Errorf("Unmarshal(%T) = %v, want %v", m, got, m)
		}
		data.Free()
	}
}
