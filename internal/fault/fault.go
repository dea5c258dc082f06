// Package fault injects network faults into the stream between an
// in-process executor and its driver, for the test kit (embertest): a
// delay on every message, and a partition that stops messages both ways
// without closing the connection. It works as a gRPC client stream
// interceptor, so the runtime's own code runs unchanged, and costs nothing
// when not installed.
package fault

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Link is the faults of one executor's stream. The zero value has none.
// Its methods are safe for concurrent use.
type Link struct {
	mu     sync.Mutex // protects the following fields
	delay  time.Duration
	healed chan struct{} // nil when not partitioned; closed by Heal
}

// SetDelay makes every gRPC message (one batch of frames) wait d before it
// is sent, and d after it is received, by the executor: a round trip
// takes 2d more. Messages wait one after another, so the delay also
// bounds throughput. 0 removes it.
func (l *Link) SetDelay(d time.Duration) {
	l.mu.Lock()
	l.delay = max(d, 0)
	l.mu.Unlock()
}

// Partition stops messages both ways until Heal: what the executor sends
// waits, and what it has received is held. The connection stays open, so
// each side only sees silence and, after its heartbeat timeout, loses the
// other, as across a network partition.
func (l *Link) Partition() {
	l.mu.Lock()
	if l.healed == nil {
		l.healed = make(chan struct{})
	}
	l.mu.Unlock()
}

// Heal ends a partition: held messages flow again, in order.
func (l *Link) Heal() {
	l.mu.Lock()
	if l.healed != nil {
		close(l.healed)
		l.healed = nil
	}
	l.mu.Unlock()
}

// pass waits until a message may go on: the partition healed and the
// delay spent, or ctx ended (the stream's: its end releases what a
// partition holds, with the error gRPC gives for it).
func (l *Link) pass(ctx context.Context) error {
	l.mu.Lock()
	healed, delay := l.healed, l.delay
	l.mu.Unlock()
	if healed != nil {
		select {
		case <-healed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}

// Interceptor returns the client stream interceptor that applies l's
// faults to every stream it opens.
func (l *Link) Interceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		st := &stream{ClientStream: s, link: l, wake: make(chan struct{}, 1), space: make(chan struct{})}
		go st.sendLoop()
		return st, nil
	}
}

// sendBuffer is what a stream holds back (encoded bytes) before SendMsg
// waits, as gRPC's own flow-control window would make it: the runtime
// relies on a Send not blocking while the peer has read all but less
// than its 1 MiB stream window.
const sendBuffer = 1 << 20

// stream is a client stream whose messages pass through a Link. What the
// executor sends is encoded at once and handed to a goroutine that waits
// for the link, so that a held message holds neither its sender (an ask
// written by its caller would be deaf to its ctx) nor, until the buffer
// is full, the messages queued behind it.
type stream struct {
	grpc.ClientStream
	link *Link

	mu     sync.Mutex          // protects the following fields
	q      []*grpc.PreparedMsg // nil entry: CloseSend
	sizes  []int
	queued int   // bytes in q
	err    error // the first failed write; later SendMsg calls return it
	wake   chan struct{}
	space  chan struct{} // closed and replaced when q shrinks
}

func (s *stream) SendMsg(m any) error {
	// Without a fault and with nothing held, straight through, as without
	// the interceptor (callers do not call SendMsg concurrently).
	s.link.mu.Lock()
	none := s.link.healed == nil && s.link.delay == 0
	s.link.mu.Unlock()
	s.mu.Lock()
	direct := none && len(s.q) == 0 && s.err == nil
	s.mu.Unlock()
	if direct {
		return s.ClientStream.SendMsg(m)
	}
	p := new(grpc.PreparedMsg)
	if err := p.Encode(s.ClientStream, m); err != nil {
		return err
	}
	n := 0
	if pm, ok := m.(interface{ SizeVT() int }); ok {
		n = pm.SizeVT()
	}
	return s.push(p, n)
}

func (s *stream) CloseSend() error { return s.push(nil, 0) }

func (s *stream) push(p *grpc.PreparedMsg, n int) error {
	s.mu.Lock()
	for s.err == nil && s.queued > 0 && s.queued+n > sendBuffer {
		space := s.space
		s.mu.Unlock()
		select {
		case <-space:
		case <-s.Context().Done():
			return status.FromContextError(s.Context().Err()).Err()
		}
		s.mu.Lock()
	}
	if err := s.err; err != nil {
		s.mu.Unlock()
		return err
	}
	s.q = append(s.q, p)
	s.sizes = append(s.sizes, n)
	s.queued += n
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// sendLoop writes the queued messages in order, each once the link lets
// it go, until the stream ends.
func (s *stream) sendLoop() {
	ctx := s.Context()
	for {
		s.mu.Lock()
		if len(s.q) == 0 {
			s.mu.Unlock()
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		p := s.q[0]
		s.mu.Unlock()
		err := s.link.pass(ctx)
		if err == nil {
			if p == nil {
				err = s.ClientStream.CloseSend()
			} else {
				err = s.ClientStream.SendMsg(p)
			}
		}
		s.mu.Lock()
		if err != nil && s.err == nil {
			s.err = err
		}
		s.q[0] = nil
		s.q = s.q[1:]
		s.queued -= s.sizes[0]
		s.sizes = s.sizes[1:]
		close(s.space)
		s.space = make(chan struct{})
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (s *stream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return err
	}
	return s.link.pass(s.Context())
}
