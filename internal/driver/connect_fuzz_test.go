package driver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/metrics"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
)

// fuzzServerStream is an executor's stream as the driver's Connect sees
// it: each RecvMsg decodes the next of msgs with wire.Codec, as gRPC
// does, then the executor ends the stream. Before it does, onEnd runs.
type fuzzServerStream struct {
	grpc.ServerStream // nil: the methods Connect does not call
	msgs              [][]byte
	onEnd             func()
}

func (s *fuzzServerStream) Context() context.Context { return context.Background() }
func (s *fuzzServerStream) Send(*wire.Batch) error   { return nil } // keeps nothing, like gRPC
func (s *fuzzServerStream) SendMsg(any) error        { return nil }
func (s *fuzzServerStream) Recv() (*wire.Batch, error) {
	b := new(wire.Batch)
	return b, s.RecvMsg(b)
}

func (s *fuzzServerStream) SetHeader(metadata.MD) error  { return nil }
func (s *fuzzServerStream) SendHeader(metadata.MD) error { return nil }
func (s *fuzzServerStream) SetTrailer(metadata.MD)       {}

func (s *fuzzServerStream) RecvMsg(m any) error {
	if len(s.msgs) == 0 {
		if s.onEnd != nil {
			s.onEnd()
			s.onEnd = nil
		}
		return io.EOF
	}
	data := s.msgs[0]
	s.msgs = s.msgs[1:]
	return wire.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, m)
}

// FuzzConnect runs the driver's side of an executor's stream on arbitrary
// bytes, from the first message on: a HELLO decoded as the driver decodes
// a first message (wire.FirstBatch), checked against the driver's build,
// plugins, message types and tasks, then one batch of frames read by the
// connection's reader and handled by the driver, while a job waits for an
// executor to run its task (so that a READY gets it a TASK, with call ID
// 1, whose TASK_RESULT the batch may carry). Before the executor ends its
// stream, the driver's /metrics is gathered and written, the executor's
// heartbeat metrics merged with the driver's own. FuzzHandleFrames stops
// short of all but the frames' handling. It must never panic, and the
// driver must have forgotten the executor once the stream has ended.
func FuzzConnect(f *testing.F) {
	types := codec.Names()
	hello := &wire.Hello{ProtocolVersion: wire.ProtocolVersion, BuildId: "fuzz", Plugins: []string{"members"},
		MessageTypes: types, Tasks: []string{"t"}, Hostname: "h", Pid: 1, MaxMessageBytes: rpc.DefaultMaxMessageBytes}
	fam, err := metrics.Encode(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		name, help, typ, v := "ember_limit_hits_total", "Times a limit was hit.", dto.MetricType_COUNTER, 1.0
		ln, lv := "limit", "send_queue"
		return []*dto.MetricFamily{{Name: &name, Help: &help, Type: &typ, Metric: []*dto.Metric{{
			Label: []*dto.LabelPair{{Name: &ln, Value: &lv}}, Counter: &dto.Counter{Value: &v},
		}}}}, nil
	}))
	if err != nil {
		f.Fatal(err)
	}
	enc := func(b *wire.Batch) []byte {
		data, err := b.MarshalVT()
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	first := enc(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: hello}}})
	for _, b := range []*wire.Batch{
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 2, Resources: []*wire.Resource{{Name: "gpu", Addresses: []string{"0"}}}}},
			{Kind: wire.Kind_KIND_TASK_RESULT, Call: 1, Payload: []byte("out")},
			{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: fam},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1, NoReceiver: []uint32{0, 9}}},
			{Kind: wire.Kind_KIND_LEAVING},
			{Kind: wire.Kind_KIND_TASK_RESULT, Call: 1, Code: 14, Error: "stopping", ExecutorStopping: true},
			{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: fam},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_READY},
			{Kind: wire.Kind_KIND_TASK_RESULT, Call: 1, Code: 2, Error: "failed"},
			{Kind: wire.Kind_KIND_ASK, Call: 1, Plugin: 0, TypeId: 1, Payload: []byte{0xa0}, TimeoutMicros: 1000},
			{Kind: wire.Kind_KIND_SEND, Plugin: 0, Type: "x", Payload: []byte{0xa0}},
			{Kind: wire.Kind_KIND_CREDIT, Plugin: 0, Credit: 100},
			{Kind: wire.Kind_KIND_REPLY, Call: 3},
			{Kind: wire.Kind_KIND_REPLY, Call: 4, Code: 14, Error: "executor plugin \"members\" has shut down", Closed: true},
		}},
		{Frames: []*wire.Frame{
			{Kind: wire.Kind_KIND_READY, Code: 13, Error: "init failed"},
			{Kind: wire.Kind_KIND_STOPPED},
		}},
	} {
		f.Add(first, enc(b))
	}
	// Refused at the handshake.
	f.Add(enc(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HELLO, Hello: &wire.Hello{ProtocolVersion: 1, BuildId: "other", Plugins: []string{"a", "members"}}}}}), []byte(nil))
	f.Add([]byte(nil), []byte(nil))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, first, rest []byte) {
		d, err := New(Config{Logger: log, BuildID: "fuzz", Plugins: []plugin.Plugin{&membership{}}, Tasks: []string{"t"},
			HandshakeTimeout: time.Second, ShutdownTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background()); err != nil {
			t.Fatal(err)
		}
		var job sync.WaitGroup
		job.Go(func() { _, _ = d.RunJob(context.Background(), "t", [][]byte{[]byte("in")}, nil) })
		for { // the job waits for an executor
			d.sched.mu.Lock()
			queued := len(d.sched.pending.queued()) > 0
			d.sched.mu.Unlock()
			if queued {
				break
			}
			time.Sleep(time.Microsecond)
		}
		s := &fuzzServerStream{msgs: [][]byte{first, rest}, onEnd: func() {
			fams, _ := d.Gatherer().Gather()
			var text bytes.Buffer
			for _, f := range fams {
				if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
					t.Errorf("family %s cannot be served: %v", f.GetName(), err)
				}
			}
		}}
		_ = d.Connect(s)
		d.mu.Lock()
		left := len(d.execs)
		d.mu.Unlock()
		if left != 0 {
			t.Errorf("%d executors listed after their streams ended", left)
		}
		d.Close()
		job.Wait()
	})
}
