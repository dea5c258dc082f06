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
		return &stream{ClientStream: s, link: l}, nil
	}
}

// stream is a client stream whose messages pass through a Link.
type stream struct {
	grpc.ClientStream
	link *Link
}

func (s *stream) SendMsg(m any) error {
	if err := s.link.pass(s.Context()); err != nil {
		return err
	}
	return s.ClientStream.SendMsg(m)
}

func (s *stream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return err
	}
	return s.link.pass(s.Context())
}
