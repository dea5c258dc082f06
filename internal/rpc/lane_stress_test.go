package rpc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// stressItem is one item of the stress test: its connection, its index
// among that connection's items, and whether it is an event.
type stressItem struct {
	conn    int
	idx     int
	event   bool
	poll    bool
	started atomic.Bool
	runs    atomic.Int32
	done    atomic.Bool
}

type stressConn struct {
	c     *rpc.Conn
	items []*stressItem // in push order
}

// laneStress pushes, from one goroutine per connection (its reader), an
// event first, messages, maybe more events in the middle (middle), and
// an event last; handlers take random times, some long-poll for another
// connection's message; Flush runs concurrently. It checks every
// accepted item runs exactly once, that an event starts after every
// item of its connection pushed before it has returned and before any
// pushed after it has started, and that every Flush returns with the
// items pushed before it done.
func laneStress(t *testing.T, workers, nconns int, middle bool, closeEarly bool) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
	conns := make([]*stressConn, nconns)
	var all []*stressItem
	for i := range conns {
		sc := &stressConn{c: rpc.New(nil, nil, newHandler(nil), rpc.Options{})}
		n := rng.IntN(40)
		add := func(ev, poll bool) {
			it := &stressItem{conn: i, idx: len(sc.items), event: ev, poll: poll}
			sc.items = append(sc.items, it)
			all = append(all, it)
		}
		add(true, false)
		for range n {
			if middle && rng.IntN(10) == 0 {
				add(true, false)
			} else {
				add(false, rng.IntN(20) == 0)
			}
		}
		add(true, false)
		conns[i] = sc
	}
	// The final connection's message releases any poll still waiting.
	var errMu sync.Mutex
	var errs []string
	fail := func(format string, a ...any) {
		errMu.Lock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, a...))
		}
		errMu.Unlock()
	}
	// At most one poll at a time (two would hold both workers).
	var pollSem = make(chan struct{}, 1)
	var pollMu sync.Mutex
	var pollConn = -1
	var pollRelease chan struct{}
	var pollsOver bool // under pollMu: the final message ran; polls return at once
	// endPolls releases the poll waiting, if any, and any to come.
	endPolls := func() {
		pollMu.Lock()
		if pollRelease != nil {
			close(pollRelease)
			pollRelease = nil
		}
		pollsOver = true
		pollMu.Unlock()
	}

	check := func(it *stressItem) {
		sc := conns[it.conn]
		if it.event {
			for _, o := range sc.items[:it.idx] {
				if !o.done.Load() {
					fail("conn %d: event %d started before item %d returned", it.conn, it.idx, o.idx)
				}
			}
			for _, o := range sc.items[it.idx+1:] {
				if o.started.Load() {
					fail("conn %d: item %d started before event %d", it.conn, o.idx, it.idx)
				}
			}
			return
		}
		for j := it.idx - 1; j >= 0; j-- {
			if o := sc.items[j]; o.event {
				if !o.done.Load() {
					fail("conn %d: message %d started before event %d returned", it.conn, it.idx, j)
				}
				break
			}
		}
		for _, o := range sc.items[it.idx+1:] {
			if o.event {
				if o.started.Load() {
					fail("conn %d: message %d started after event %d", it.conn, it.idx, o.idx)
				}
				break
			}
		}
	}
	body := func(it *stressItem) {
		it.started.Store(true)
		if it.runs.Add(1) != 1 {
			fail("conn %d item %d ran twice", it.conn, it.idx)
		}
		check(it)
		// A message of another connection releases a waiting poll.
		if !it.event {
			pollMu.Lock()
			if pollRelease != nil && pollConn != it.conn {
				close(pollRelease)
				pollRelease, pollConn = nil, -1
			}
			pollMu.Unlock()
		}
		if it.poll {
			select {
			case pollSem <- struct{}{}:
				ch := make(chan struct{})
				pollMu.Lock()
				if pollsOver {
					close(ch)
				} else {
					pollRelease, pollConn = ch, it.conn
				}
				pollMu.Unlock()
				select {
				case <-ch:
				case <-time.After(5 * time.Second):
					fail("conn %d: poll %d never released: lane stuck", it.conn, it.idx)
				}
				<-pollSem
			default:
			}
		}
		switch d := rand.IntN(10); {
		case d < 5:
		case d < 8:
			time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
		default:
			time.Sleep(time.Duration(rand.IntN(2)) * time.Millisecond)
		}
		it.done.Store(true)
	}
	l := rpc.NewLane(workers, 64, func(ri rpc.Item) {
		if ri.Event != nil {
			ri.Event()
			return
		}
		body(all[ri.Frame.Call])
	})
	ids := map[*stressItem]uint64{}
	for i, it := range all {
		ids[it] = uint64(i)
	}

	var pushedMu sync.Mutex
	var pushed []*stressItem
	var accepted sync.Map
	var wg sync.WaitGroup
	var closing atomic.Bool
	for _, sc := range conns {
		wg.Go(func() {
			for _, it := range sc.items {
				var ri rpc.Item
				if it.event {
					ri = rpc.Item{Member: sc.c, Event: func() { body(it) }}
				} else {
					ri = rpc.Item{Conn: sc.c, Frame: &wire.Frame{Call: ids[it]}}
				}
				if rand.IntN(4) == 0 {
					time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				}
				if !l.Push(ri) {
					if !closing.Load() {
						fail("Push refused on an open lane")
					}
					return
				}
				accepted.Store(it, true)
				pushedMu.Lock()
				pushed = append(pushed, it)
				pushedMu.Unlock()
			}
		})
	}
	stopFlush := make(chan struct{})
	var fwg sync.WaitGroup
	for range 3 {
		fwg.Go(func() {
			for {
				select {
				case <-stopFlush:
					return
				default:
				}
				pushedMu.Lock()
				before := append([]*stressItem(nil), pushed...)
				pushedMu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
				err := l.Flush(ctx)
				cancel()
				if err != nil {
					if !closing.Load() {
						fail("Flush: %v", err)
					}
					continue
				}
				for _, it := range before {
					if !it.done.Load() {
						fail("Flush returned before conn %d item %d (pushed before it) was done", it.conn, it.idx)
						break
					}
				}
				time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
			}
		})
	}
	if closeEarly {
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		closing.Store(true)
		endPolls() // no message may come to release a poll
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		if err := l.CloseWithin(ctx); err != nil {
			fail("CloseWithin: %v", err)
		}
		cancel()
		wg.Wait()
	} else {
		wg.Wait()
		// Release a poll still waiting, with a last connection's message.
		z := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
		l.Push(rpc.Item{Member: z, Event: func() {}})
		l.Push(rpc.Item{Conn: z, Event: endPolls})
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		if err := l.Flush(ctx); err != nil {
			fail("final Flush: %v (Len %d)", err, l.Len())
		}
		cancel()
		closing.Store(true)
		ctx, cancel = context.WithTimeout(context.Background(), 8*time.Second)
		if err := l.CloseWithin(ctx); err != nil {
			fail("CloseWithin: %v", err)
		}
		cancel()
	}
	close(stopFlush)
	fwg.Wait()
	for _, it := range all {
		_, ok := accepted.Load(it)
		switch r := it.runs.Load(); {
		case ok && r != 1:
			fail("conn %d item %d accepted, ran %d times", it.conn, it.idx, r)
		case !ok && r != 0:
			fail("conn %d item %d refused, ran %d times", it.conn, it.idx, r)
		}
	}
	if n := l.Len(); n != 0 {
		fail("Len after Close = %d", n)
	}
	for _, e := range errs {
		t.Error(e)
	}
}

func TestLaneStress(t *testing.T) {
	for _, workers := range []int{2, 3, 8} {
		for _, middle := range []bool{false, true} {
			for _, early := range []bool{false, true} {
				t.Run(fmt.Sprintf("w%d/middle=%v/close=%v", workers, middle, early), func(t *testing.T) {
					laneStress(t, workers, 30, middle, early)
				})
			}
		}
	}
}
