package executor

import "github.com/emberhq/ember/internal/wire"

// waitQueue holds the TASKs that came with every slot taken, in order of
// arrival, until a slot frees for them or a cancel takes them out. Its
// memory is bounded by the TASKs waiting, however many are canceled while
// the queue does not move (every slot held by long attempts): the run IDs
// of canceled ones are dropped once they are as many as those waiting.
// It is not safe for concurrent use (the executor's mu guards it).
type waitQueue struct {
	byRun map[uint64]*wire.Frame
	order []uint64 // run IDs by arrival, canceled ones included until passed over or dropped
}

// push adds f at the back.
func (q *waitQueue) push(f *wire.Frame) {
	if q.byRun == nil {
		q.byRun = map[uint64]*wire.Frame{}
	}
	q.byRun[f.Call] = f
	q.order = append(q.order, f.Call)
}

// has reports whether attempt run is waiting in the queue.
func (q *waitQueue) has(run uint64) bool {
	_, ok := q.byRun[run]
	return ok
}

// remove takes attempt run out of the queue and reports whether it was
// waiting there.
func (q *waitQueue) remove(run uint64) bool {
	if _, ok := q.byRun[run]; !ok {
		return false
	}
	delete(q.byRun, run)
	switch stale := len(q.order) - len(q.byRun); {
	case len(q.byRun) == 0:
		q.order = nil // lets the array go
	case stale > len(q.byRun):
		q.order = q.live(q.order[:0])
	}
	return true
}

// pop takes the first TASK waiting; nil if none is.
func (q *waitQueue) pop() *wire.Frame {
	for len(q.order) > 0 {
		run := q.order[0]
		q.order = q.order[1:]
		f, ok := q.byRun[run]
		if !ok {
			continue // canceled while it waited
		}
		delete(q.byRun, run)
		if len(q.order) == 0 {
			q.order = nil // lets the array go
		}
		return f
	}
	q.order = nil
	return nil
}

// takeAll empties the queue and returns the TASKs that were waiting, in
// order of arrival.
func (q *waitQueue) takeAll() []*wire.Frame {
	var fs []*wire.Frame
	for _, run := range q.order {
		if f, ok := q.byRun[run]; ok {
			fs = append(fs, f)
		}
	}
	q.order = nil
	clear(q.byRun)
	return fs
}

// live appends to dst, in order, the run IDs of q.order still waiting.
// dst may share q.order's array: it is written no faster than read.
func (q *waitQueue) live(dst []uint64) []uint64 {
	for _, run := range q.order {
		if _, ok := q.byRun[run]; ok {
			dst = append(dst, run)
		}
	}
	return dst
}
