package driver

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// FuzzHandleFrames gives the driver the frames of an arbitrary batch from
// a ready executor, as its connection's reader does once the handshake is
// over: what a buggy or compromised executor can send. The decoders' own
// targets (wire, codec, metrics) stop where this starts: plugin and type
// indexes, call IDs, type names and kinds put to use, in HandleFrame and
// then in the plugin's lane. It must never panic.
func FuzzHandleFrames(f *testing.F) {
	for _, b := range []*wire.Batch{
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_SEND, Type: "x", Payload: []byte{0xa0}}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_SEND, Type: "\xff", Payload: []byte{0xa0}}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_ASK, Call: 1, Plugin: 7, TypeId: 3}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_ASK, Call: 1, TimeoutMicros: -1}, {Kind: wire.Kind_KIND_REPLY, Call: 1}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_REPLY, Call: 2, Code: 14, Error: "executor plugin \"members\" has shut down", Closed: true}, {Kind: wire.Kind_KIND_REPLY, Call: 3, Plugin: 0, Closed: true}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_READY, Code: 13, Error: "e"}, {Kind: wire.Kind_KIND_STOPPED}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_TASK_RESULT, Call: 9, ExecutorStopping: true}, {Kind: wire.Kind_KIND_LEAVING}}},
		{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: &wire.Metrics{Families: [][]byte{{1}}}}, {Kind: wire.Kind_KIND_CREDIT, Plugin: 0, Credit: 1 << 62}}},
	} {
		data, err := b.MarshalVT() // proto.Marshal refuses text that is not UTF-8
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Plugins: []plugin.Plugin{&membership{}}})
	if err != nil {
		f.Fatal(err)
	}
	if err := d.Init(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		var b wire.Batch
		if wire.UnmarshalBatch(data, &b) != nil {
			return
		}
		es := testExecState(d, plugin.ExecutorInfo{ID: "1"})
		es.askCtx, es.endAsks = context.WithCancelCause(context.Background())
		d.markHandlers(es)
		c := rpc.New(nil, nil, d, rpc.Options{Plugins: d.names})
		c.Peer, es.conn = es, c
		d.mu.Lock()
		d.execs["1"] = es
		d.mu.Unlock()
		d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
		for _, f := range b.Frames {
			d.HandleFrame(c, f)
		}
		flushLanes(t, d)
		c.Close(nil)
	})
}
