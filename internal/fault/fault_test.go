package fault_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/fault"
	"github.com/emberhq/ember/internal/wire"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// defaultTestTimeout bounds every wait of these tests.
const defaultTestTimeout = 60 * time.Second

type (
	executorStream = grpc.BidiStreamingClient[wire.Batch, wire.Batch]
	driverStream   = grpc.BidiStreamingServer[wire.Batch, wire.Batch]
)

// server hands each stream opened to it to the test, and ends it when its
// ctx ends.
type server struct {
	wire.UnimplementedEmberServer
	streams chan driverStream
}

func (s *server) Connect(st driverStream) error {
	s.streams <- st
	<-st.Context().Done()
	return nil
}

// connect opens a stream through link's interceptor, as an in-process
// executor's, to a server on 127.0.0.1 with Ember's codec, and returns
// both ends. The executor's end, stream, ends with ctx; everything ends
// with the test.
func connect(t *testing.T, ctx context.Context, link *fault.Link) (executorStream, driverStream) {
	t.Helper()
	s := &server{streams: make(chan driverStream, 1)}
	es := dial(t, ctx, link, s)
	select {
	case ds := <-s.streams:
		return es, ds
	case <-time.After(defaultTestTimeout):
		t.Fatalf("the server saw no stream within %v", defaultTestTimeout)
		return nil, nil
	}
}

// dial serves impl on 127.0.0.1 with Ember's codec, and opens a stream to
// it through link's interceptor, as an in-process executor's. The stream
// ends with ctx; everything ends with the test.
func dial(t *testing.T, ctx context.Context, link *fault.Link, impl wire.EmberServer) executorStream {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(wire.Codec{}))
	wire.RegisterEmberServer(srv, impl)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wire.Codec{})),
		grpc.WithStreamInterceptor(link.Interceptor()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	es, err := wire.NewEmberClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// batch is a message of one frame that carries i and, if size > 0, a
// payload of size bytes.
func batch(i, size int) *wire.Batch {
	return &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HEARTBEAT, Call: uint64(i), Payload: make([]byte, size)}}}
}

// A delay is a latency: a burst of messages arrives, in order, each
// message at least d after it was sent, but all of them about d after the
// burst, not one d after another. Messages waited their turn, so n of
// them took n*d (200 took 10s, where the test allows a quarter of that).
func TestDelayIsALatency(t *testing.T) {
	const (
		d = 50 * time.Millisecond
		n = 200
	)
	tests := []struct {
		name string
		send func(executorStream, driverStream, *wire.Batch) error
		recv func(executorStream, driverStream) (*wire.Batch, error)
	}{
		{
			name: "executor to driver",
			send: func(es executorStream, _ driverStream, b *wire.Batch) error { return es.Send(b) },
			recv: func(_ executorStream, ds driverStream) (*wire.Batch, error) { return ds.Recv() },
		},
		{
			name: "driver to executor",
			send: func(_ executorStream, ds driverStream, b *wire.Batch) error { return ds.Send(b) },
			recv: func(es executorStream, _ driverStream) (*wire.Batch, error) { return es.Recv() },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			link := new(fault.Link)
			es, ds := connect(t, context.Background(), link)
			link.SetDelay(d)
			begin := time.Now()
			sent := make([]time.Time, n)
			for i := range n {
				sent[i] = time.Now()
				if err := tt.send(es, ds, batch(i, 0)); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			for i := range n {
				b, err := tt.recv(es, ds)
				if err != nil {
					t.Fatalf("receive %d: %v", i, err)
				}
				took := time.Since(sent[i])
				if got := b.Frames[0].Call; got != uint64(i) {
					t.Fatalf("message %d: got message %d, want them in order", i, got)
				}
				if took < d {
					t.Errorf("message %d arrived %v after it was sent, want at least %v", i, took, d)
				}
			}
			if took, limit := time.Since(begin), n*d/4; took > limit {
				t.Errorf("%d messages delayed %v each took %v, want under %v (they waited one after another, %v)", n, d, took, limit, n*d)
			}
		})
	}
}

// A new delay applies to the messages already waiting: SetDelay(0)
// releases them at once, in order, so that ending a long delay (as
// embertest's Close does) does not wait it out.
func TestDelayZeroReleasesWaitingMessages(t *testing.T) {
	link := new(fault.Link)
	es, ds := connect(t, context.Background(), link)
	link.SetDelay(time.Hour)
	for i := range 3 {
		if err := es.Send(batch(i, 0)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := ds.Send(batch(10, 0)); err != nil {
		t.Fatal(err)
	}
	link.SetDelay(0)
	for i := range 3 {
		b, err := ds.Recv()
		if err != nil || b.Frames[0].Call != uint64(i) {
			t.Fatalf("driver's receive %d: got %v, %v; want message %d", i, b, err, i)
		}
	}
	if b, err := es.Recv(); err != nil || b.Frames[0].Call != 10 {
		t.Fatalf("executor's receive: got %v, %v; want message 10", b, err)
	}
}

// What a partition holds of the executor's sends is bounded: sends
// return at once until 1 MiB waits, and the next one waits for room,
// here until the stream's end, which fails it.
func TestPartitionHoldsAtMostOneMiB(t *testing.T) {
	const size = 100 << 10 // 10 fit in 1 MiB with their headers, 11 do not
	link := new(fault.Link)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	es, _ := connect(t, ctx, link)
	link.Partition()
	type result struct {
		sent int
		err  error
	}
	done := make(chan result, 1)
	progress := make(chan int, 20)
	go func() {
		for i := range 20 {
			if err := es.Send(batch(i, size)); err != nil {
				done <- result{i, err}
				return
			}
			progress <- i + 1
		}
		done <- result{20, nil}
	}()
	deadline := time.After(defaultTestTimeout)
	for sent := 0; sent < 10; {
		select {
		case sent = <-progress:
		case r := <-done:
			t.Fatalf("the sends ended after %d, with %v; want 10 to return and the 11th to wait", r.sent, r.err)
		case <-deadline:
			t.Fatalf("%d sends returned within %v, want 10", sent, defaultTestTimeout)
		}
	}
	cancel()
	r := <-done
	if r.sent != 10 || status.Code(r.err) != codes.Canceled {
		t.Errorf("sends held by a partition: got %d, then %v; want 10, then Canceled at the stream's end", r.sent, r.err)
	}
}

// A codec set otherwise than with grpc.ForceCodecV2 cannot be wrapped:
// the stream fails to open, where received messages would have been
// decoded by the wrong codec.
func TestInterceptorRefusesOtherCodecOptions(t *testing.T) {
	link := new(fault.Link)
	streamer := func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, ...grpc.CallOption) (grpc.ClientStream, error) {
		return nil, errors.New("streamer called")
	}
	_, err := link.Interceptor()(context.Background(), &grpc.StreamDesc{}, nil, "/m", streamer, grpc.CallContentSubtype("json"))
	if status.Code(err) != codes.Internal {
		t.Errorf("interceptor with CallContentSubtype: got %v, want an Internal error", err)
	}
}
