package wire_test

import (
	"testing"

	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/protobuf/proto"
)

// BenchmarkUnmarshalBatch compares decoding a batch of 1,000 SEND frames
// (32-byte payloads) as both ends do (UnmarshalBatch: generated code, into
// pooled frames) with proto.Unmarshal (reflection, fresh frames).
func BenchmarkUnmarshalBatch(b *testing.B) {
	var batch wire.Batch
	for i := range 1000 {
		batch.Frames = append(batch.Frames, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 1, TypeId: 3, Payload: make([]byte, 32), Call: uint64(i)})
	}
	data, err := proto.Marshal(&batch)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got wire.Batch
			if err := proto.Unmarshal(data, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pooled", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got wire.Batch
			if err := wire.UnmarshalBatch(data, &got); err != nil {
				b.Fatal(err)
			}
			for _, f := range got.Frames {
				wire.ReleaseFrame(f)
			}
		}
	})
}
