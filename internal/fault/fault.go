// Package fault injects network faults into the stream between an
// in-process executor and its driver, for the test kit (embertest): a
// latency added to every message, and a partition that stops messages
// both ways without closing the connection. It works as a gRPC client
// stream interceptor, so the runtime's own code runs unchanged, and costs
// little while no fault is set: messages then go straight through.
package fault

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Link is the faults of one executor's stream. The zero value has none.
// Its methods are safe for concurrent use.
//
// While a fault is set, messages cross a Link in order, each way through
// a queue (of at most maxQueued bytes). A message joins its queue when
// the executor sends it, or when it reaches the executor from the
// driver, and leaves it once the delay since it joined has passed and the
// link is not partitioned, after the messages before it. A change of the
// faults applies at once to the messages still queued, as to later ones.
type Link struct {
	mu          sync.Mutex // protects the following fields
	delay       time.Duration
	partitioned bool
	changed     chan struct{} // closed when a fault changes; nil until a waiter needs one
}

// SetDelay adds latency d to every gRPC message (one batch of frames)
// between the executor and its driver, each way: a message is passed on d
// after it was sent by the executor, or d after it reached the executor,
// so a round trip takes 2d more. Messages keep their order but do not
// wait for one another, so d does not limit throughput; what a queue
// holds does, to 1 MiB per d each way, past which the sender waits (see
// maxQueued). The new d applies to the messages already waiting too: 0
// removes the delay and releases them at once.
func (l *Link) SetDelay(d time.Duration) {
	l.mu.Lock()
	l.delay = max(d, 0)
	l.notifyLocked()
	l.mu.Unlock()
}

// Partition stops messages both ways until Heal: what the executor sends
// waits, and what it has received is held. The connection stays open, so
// each side only sees silence and, after its heartbeat timeout, loses the
// other, as across a network partition.
func (l *Link) Partition() {
	l.mu.Lock()
	l.partitioned = true
	l.notifyLocked()
	l.mu.Unlock()
}

// Heal ends a partition: held messages flow again, in order, each once
// the delay since it arrived has passed.
func (l *Link) Heal() {
	l.mu.Lock()
	l.partitioned = false
	l.notifyLocked()
	l.mu.Unlock()
}

// Clear removes every fault, as Heal and SetDelay(0) do: what waited
// flows at once, in order.
func (l *Link) Clear() {
	l.mu.Lock()
	l.partitioned, l.delay = false, 0
	l.notifyLocked()
	l.mu.Unlock()
}

// notifyLocked wakes the messages waiting for the faults to change.
// l.mu must be held.
func (l *Link) notifyLocked() {
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// faulty reports whether a fault is set.
func (l *Link) faulty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.partitioned || l.delay > 0
}

// wait waits until a message that arrived at t may go on: the link not
// partitioned and its delay since t spent; or ctx ended; or, while the
// link is partitioned, end ended (the stream's: its end releases what a
// partition holds, with the error gRPC gives for it). A delay is waited
// out past the stream's end: gRPC ends the stream's ctx as soon as its
// end is read, ahead of the messages before it, which must still arrive.
// end may be nil.
func (l *Link) wait(ctx, end context.Context, t time.Time) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.mu.Lock()
		partitioned, delay := l.partitioned, l.delay
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		changed := l.changed
		l.mu.Unlock()
		var ended <-chan struct{}
		if partitioned && end != nil {
			ended = end.Done()
		}
		var fire <-chan time.Time
		if !partitioned {
			left := time.Until(t.Add(delay))
			if left <= 0 {
				return nil
			}
			if timer == nil {
				timer = time.NewTimer(left)
			} else {
				timer.Reset(left)
			}
			fire = timer.C
		}
		select {
		case <-fire:
		case <-changed:
		case <-ended:
			return status.FromContextError(end.Err()).Err()
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// Interceptor returns the client stream interceptor that applies l's
// faults to every stream it opens. The stream's codec must be gRPC's
// default or one set with grpc.ForceCodecV2 (Ember's): received messages
// are kept encoded while they wait, and decoded by that codec as they
// leave.
func (l *Link) Interceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		codec, err := codecOf(opts)
		if err != nil {
			return nil, err
		}
		s, err := streamer(ctx, desc, cc, method, append(slices.Clip(opts), grpc.ForceCodecV2(rawCodec{codec}))...)
		if err != nil {
			return nil, err
		}
		st := &stream{ClientStream: s, ctx: ctx, link: l, codec: codec, out: newQueue(), in: newQueue()}
		go st.sendLoop()
		return st, nil
	}
}

// codecOf returns the codec opts (a stream's call options, the dial's
// defaults included) set for the stream.
func codecOf(opts []grpc.CallOption) (encoding.CodecV2, error) {
	codec := encoding.GetCodecV2(grpcproto.Name)
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.ForceCodecV2CallOption:
			codec = o.CodecV2
		case grpc.ForceCodecCallOption, grpc.CustomCodecCallOption, grpc.ContentSubtypeCallOption:
			return nil, status.Error(codes.Internal, "fault: a stream's codec must be gRPC's default or set with grpc.ForceCodecV2")
		}
	}
	if codec == nil {
		return nil, status.Error(codes.Internal, "fault: gRPC's protobuf codec is not registered")
	}
	return codec, nil
}

// raw is a received message still encoded: rawCodec keeps its bytes.
type raw struct{ data mem.BufferSlice }

// rawCodec is a stream's codec that, decoding into a *raw, keeps the
// message's bytes (a reference to gRPC's buffers) for the codec it wraps
// to decode later.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*raw); ok {
		data.Ref() // gRPC frees its reference once Unmarshal returns
		r.data = data
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

// maxQueued bounds the bytes (encoded messages and their 5-byte gRPC
// headers) a stream's queue holds each way, as gRPC's own flow-control
// window would: the runtime relies on a Send not blocking while the peer
// has read all but less than its 1 MiB stream window. Once a queue is
// full, its writer waits for room: the executor's SendMsg, or, for what
// the driver sends, the reading of the stream, so that gRPC's flow
// control then makes the driver's sends wait. A message larger than
// maxQueued passes alone.
const maxQueued = 1 << 20

// header is the size of gRPC's header of each message.
const header = 5

// entry is a message in a queue.
type entry struct {
	at   time.Time         // when it joined the queue
	size int               // bytes counted against maxQueued
	msg  *grpc.PreparedMsg // sent; nil means CloseSend
	data mem.BufferSlice   // received
	err  error             // received: the stream's end, in place of a message
}

// queue is the messages of one direction of a stream, in order.
type queue struct {
	mu      sync.Mutex // protects the following fields
	q       []entry
	bytes   int           // sum of the sizes in q
	room    chan struct{} // closed and replaced when q shrinks
	more    chan struct{} // closed and replaced when q grows
	err     error         // sent: the first failed write; received: the end RecvMsg returned
	reading bool          // received: readLoop is running
}

func newQueue() *queue {
	return &queue{room: make(chan struct{}), more: make(chan struct{})}
}

// push appends e, stamped with the time, once there is room for it, or
// fails with q.err, or with ctx's end if that comes first.
func (q *queue) push(ctx context.Context, e entry) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.err == nil && q.bytes > 0 && e.size > 0 && q.bytes+e.size > maxQueued {
		room := q.room
		q.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			q.mu.Lock()
			return status.FromContextError(ctx.Err()).Err()
		}
		q.mu.Lock()
	}
	if q.err != nil {
		return q.err
	}
	e.at = time.Now()
	q.q = append(q.q, e)
	q.bytes += e.size
	close(q.more)
	q.more = make(chan struct{})
	return nil
}

// head waits for the first entry and returns it, left in q, or fails
// with ctx's end.
func (q *queue) head(ctx context.Context) (entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.q) == 0 {
		more := q.more
		q.mu.Unlock()
		select {
		case <-more:
		case <-ctx.Done():
			q.mu.Lock()
			return entry{}, status.FromContextError(ctx.Err()).Err()
		}
		q.mu.Lock()
	}
	return q.q[0], nil
}

// pop removes the first entry.
func (q *queue) pop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.bytes -= q.q[0].size
	q.q[0] = entry{}
	q.q = q.q[1:]
	close(q.room)
	q.room = make(chan struct{})
}

// stream is a client stream whose messages pass through a Link, each way
// through a queue.
//
// What the executor sends is encoded at once and handed to a goroutine
// (sendLoop) that writes it when the link lets it go, so that a held
// message holds neither its sender (an ask written by its caller would be
// deaf to its ctx) nor, until the queue is full, the messages queued
// behind it.
//
// While a fault is set, a goroutine (readLoop) reads what the driver
// sends as it arrives, still encoded, so that each message's delay counts
// from its arrival, not from when the previous one was passed on; RecvMsg
// decodes it once the link lets it go.
type stream struct {
	grpc.ClientStream
	// ctx is the caller's, which the stream's own (Context) is derived
	// from: gRPC ends the latter as the stream's end is read.
	ctx   context.Context
	link  *Link
	codec encoding.CodecV2 // the stream's own, which rawCodec wraps
	out   *queue           // sent
	in    *queue           // received
}

func (s *stream) SendMsg(m any) error {
	// Without a fault and with nothing held, straight through, as without
	// the interceptor (callers do not call SendMsg concurrently).
	faulty := s.link.faulty()
	s.out.mu.Lock()
	direct := !faulty && len(s.out.q) == 0 && s.out.err == nil
	s.out.mu.Unlock()
	if direct {
		return s.ClientStream.SendMsg(m)
	}
	p := new(grpc.PreparedMsg)
	if err := p.Encode(s.ClientStream, m); err != nil {
		return err
	}
	n := header
	if vm, ok := m.(interface{ SizeVT() int }); ok {
		n += vm.SizeVT()
	} else if pm, ok := m.(proto.Message); ok {
		n += proto.Size(pm)
	}
	return s.out.push(s.Context(), entry{size: n, msg: p})
}

func (s *stream) CloseSend() error { return s.out.push(s.Context(), entry{}) }

// sendLoop writes the queued messages in order, each once the link lets
// it go, until the stream ends.
func (s *stream) sendLoop() {
	ctx := s.Context()
	for {
		e, err := s.out.head(ctx)
		if err != nil {
			return
		}
		err = s.link.wait(ctx, nil, e.at)
		if err == nil {
			if e.msg == nil {
				err = s.ClientStream.CloseSend()
			} else {
				err = s.ClientStream.SendMsg(e.msg)
			}
		}
		if err != nil {
			s.out.mu.Lock()
			if s.out.err == nil {
				s.out.err = err
			}
			s.out.mu.Unlock()
		}
		s.out.pop()
		if err != nil {
			return
		}
	}
}

// RecvMsg returns the next message once the link lets it go. Without a
// fault, with nothing queued and readLoop not running, it reads straight
// from the stream (callers do not call RecvMsg concurrently).
func (s *stream) RecvMsg(m any) error {
	// What readLoop queued is passed on after the stream's end too, so
	// waits end with the caller's ctx (or, under a partition, the stream's).
	ctx, end := s.ctx, s.Context()
	s.in.mu.Lock()
	if err := s.in.err; err != nil {
		s.in.mu.Unlock()
		return err
	}
	faulty := s.link.faulty()
	if !faulty && !s.in.reading && len(s.in.q) == 0 {
		s.in.mu.Unlock()
		if err := s.ClientStream.RecvMsg(m); err != nil {
			return err
		}
		// A fault set while it waited holds it from now on.
		return s.link.wait(ctx, end, time.Now())
	}
	if n := len(s.in.q); faulty && !s.in.reading && (n == 0 || s.in.q[n-1].err == nil) {
		s.in.reading = true
		go s.readLoop()
	}
	s.in.mu.Unlock()
	e, err := s.in.head(ctx)
	if err != nil {
		return err
	}
	if err := s.link.wait(ctx, end, e.at); err != nil {
		return err
	}
	s.in.pop()
	if e.err == nil {
		err := s.codec.Unmarshal(e.data, m)
		e.data.Free()
		if err == nil {
			return nil
		}
		// As gRPC says it; the stream stays open, but the error sticks.
		e.err = status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	s.in.mu.Lock()
	s.in.err = e.err
	s.in.mu.Unlock()
	return e.err
}

// readLoop queues what the stream receives, as it arrives, while a fault
// is set: it ends after the first message that finds none, and at the
// stream's end, which it queues too.
func (s *stream) readLoop() {
	ctx := s.Context()
	for {
		var r raw
		e := entry{err: s.ClientStream.RecvMsg(&r)}
		if e.err == nil {
			e.data, e.size = r.data, header+r.data.Len()
		}
		err := s.in.push(ctx, e)
		s.in.mu.Lock()
		stop := err != nil || e.err != nil || !s.link.faulty()
		if stop {
			s.in.reading = false
		}
		s.in.mu.Unlock()
		if err != nil {
			// The stream ended while the queue was full: RecvMsg says so.
			e.data.Free()
		}
		if stop {
			return
		}
	}
}
