package rpc

import (
	"context"
	"sync"

	"github.com/emberhq/ember/internal/wire"
)

// Item is one unit of work for a lane: a frame from a connection, or an
// event function (membership changes) ordered with the frames.
type Item struct {
	Conn  *Conn
	Frame *wire.Frame
	Event func()
}

// Lane runs one plugin's work in order on its own goroutine(s), so that a
// slow plugin delays nobody else. With one worker (the default) items run
// one at a time in push order.
//
// Push never blocks: a lane's queue grows with its backlog, and the queue
// depth is observable with Len. Stream-level backpressure bounds it in
// practice: Send blocks once the sender's queue is full.
type Lane struct {
	run func(Item)

	mu      sync.Mutex // protects the following fields
	q       []Item
	head    int
	pending int           // queued + running
	idle    chan struct{} // closed when pending drops to 0
	closed  bool
	wake    *sync.Cond
	wg      sync.WaitGroup
}

// NewLane starts a lane with workers goroutines (at least one) calling run
// for every pushed item.
func NewLane(workers int, run func(Item)) *Lane {
	if workers < 1 {
		workers = 1
	}
	l := &Lane{run: run, idle: make(chan struct{})}
	close(l.idle)
	l.wake = sync.NewCond(&l.mu)
	l.wg.Add(workers)
	for range workers {
		go l.loop()
	}
	return l
}

// Push queues it. It reports false if the lane is closed.
func (l *Lane) Push(it Item) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	if l.pending == 0 {
		l.idle = make(chan struct{})
	}
	l.pending++
	l.q = append(l.q, it)
	l.mu.Unlock()
	l.wake.Signal()
	return true
}

// Len returns the number of items queued or running.
func (l *Lane) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending
}

// Flush waits until every item pushed before the call has run, or ctx ends.
func (l *Lane) Flush(ctx context.Context) error {
	l.mu.Lock()
	idle := l.idle
	l.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the workers after the queued items have run, and waits.
func (l *Lane) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.wake.Broadcast()
	l.wg.Wait()
}

func (l *Lane) loop() {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		for l.head == len(l.q) && !l.closed {
			l.wake.Wait()
		}
		if l.head == len(l.q) {
			l.mu.Unlock()
			return
		}
		it := l.q[l.head]
		l.q[l.head] = Item{}
		l.head++
		if l.head == len(l.q) {
			l.q, l.head = l.q[:0], 0
		} else if l.head > 1024 && l.head*2 > len(l.q) {
			n := copy(l.q, l.q[l.head:])
			clear(l.q[n:])
			l.q, l.head = l.q[:n], 0
		}
		l.mu.Unlock()

		l.run(it)

		l.mu.Lock()
		l.pending--
		if l.pending == 0 {
			close(l.idle)
		}
		l.mu.Unlock()
	}
}
