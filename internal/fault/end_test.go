package fault_test

import (
	"context"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/fault"
	"github.com/emberhq/ember/internal/wire"
	"google.golang.org/grpc/codes"
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
	link := new(fault.Link)
	link.SetDelay(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	es := dial(t, ctx, link, &ending{n: n})
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
