package fault_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/fault"
	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// ending is a server that sends n messages and ends the stream with code.
type ending struct {
	wire.UnimplementedEmberServer
	n int
}

func (s *ending) Connect(st driverStream) error {
	for i := range s.n {
		if err := st.Send(batch(i, 0)); err != nil {
			return err
		}
	}
	return status.Error(codes.FailedPrecondition, "the driver's last word")
}

// Under a delay, what the driver sent before it ended the stream still
// reaches the executor, in order, each after the delay, and then the
// stream's own end: gRPC ends the stream's ctx as the end is read (by
// readLoop, early), which must not turn the messages still waiting into
// "context canceled".
func TestDelayKeepsMessagesBeforeTheStreamsEnd(t *testing.T) {
	const n = 5
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(wire.Codec{}))
	wire.RegisterEmberServer(srv, &ending{n: n})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	link := new(fault.Link)
	link.SetDelay(100 * time.Millisecond)
	cc, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wire.Codec{})),
		grpc.WithStreamInterceptor(link.Interceptor()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	es, err := wire.NewEmberClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		b, err := es.Recv()
		if err != nil {
			t.Fatalf("receive %d: %v; want message %d", i, err, i)
		}
		if got := b.Frames[0].Call; got != uint64(i) {
			t.Fatalf("receive %d: got message %d", i, got)
		}
	}
	if _, err := es.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("receive after the last message: got %v, want the driver's FailedPrecondition", err)
	}
}
