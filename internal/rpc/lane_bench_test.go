package rpc_test

import (
	"testing"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

func BenchmarkLaneConcurrentMessages(b *testing.B) {
	c := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	l := rpc.NewLane(2, 0, func(rpc.Item) {})
	defer l.Close()
	f := &wire.Frame{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.Push(rpc.Item{Conn: c, Frame: f})
		if i%1024 == 0 {
			l.Flush(b.Context())
		}
	}
	l.Flush(b.Context())
}
