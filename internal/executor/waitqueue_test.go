package executor

import (
	"slices"
	"testing"

	"github.com/emberhq/ember/internal/wire"
)

// popAll pops q until it is empty and returns the run IDs, in order.
func popAll(q *waitQueue) []uint64 {
	var runs []uint64
	for f := q.pop(); f != nil; f = q.pop() {
		runs = append(runs, f.Call)
	}
	return runs
}

func TestWaitQueue(t *testing.T) {
	tests := []struct {
		name        string
		push        []uint64
		remove      []uint64
		wantRemoved []bool
		want        []uint64 // popped, in order
	}{
		{name: "empty"},
		{name: "arrival order", push: []uint64{3, 1, 2}, want: []uint64{3, 1, 2}},
		{name: "canceled ones skipped", push: []uint64{1, 2, 3, 4}, remove: []uint64{2, 4}, wantRemoved: []bool{true, true}, want: []uint64{1, 3}},
		{name: "all canceled", push: []uint64{1, 2}, remove: []uint64{1, 2}, wantRemoved: []bool{true, true}},
		{name: "not waiting", push: []uint64{1}, remove: []uint64{7, 1, 1}, wantRemoved: []bool{false, true, false}},
		// Three of four canceled: the queue's order is compacted, and
		// what is left keeps its order.
		{name: "compacted", push: []uint64{1, 2, 3, 4, 5}, remove: []uint64{1, 3, 4}, wantRemoved: []bool{true, true, true}, want: []uint64{2, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q waitQueue
			for _, run := range tt.push {
				q.push(&wire.Frame{Call: run})
			}
			for i, run := range tt.remove {
				if got := q.remove(run); got != tt.wantRemoved[i] {
					t.Errorf("remove(%d): got %v, want %v", run, got, tt.wantRemoved[i])
				}
			}
			if got := popAll(&q); !slices.Equal(got, tt.want) {
				t.Errorf("popped: got %v, want %v", got, tt.want)
			}
			if q.order != nil || len(q.byRun) != 0 {
				t.Errorf("emptied queue: got order %v and %d waiting, want none", q.order, len(q.byRun))
			}
		})
	}
}

// A queue that does not move (every slot held by long attempts) while the
// TASKs sent ahead are canceled and others sent in their place keeps no
// more than it holds: the canceled run IDs used to stay until the queue
// moved.
func TestWaitQueueCanceledDoNotAccumulate(t *testing.T) {
	var q waitQueue
	q.push(&wire.Frame{Call: 1}) // waits throughout
	for run := uint64(2); run < 10_000; run++ {
		q.push(&wire.Frame{Call: run})
		if !q.remove(run) {
			t.Fatalf("remove(%d): got false, want true", run)
		}
		if got, max := len(q.order), 2*len(q.byRun)+1; got > max {
			t.Fatalf("after %d cancels: got %d run IDs kept for %d waiting, want at most %d", run-1, got, len(q.byRun), max)
		}
	}
	q.push(&wire.Frame{Call: 10_000})
	if got, want := popAll(&q), []uint64{1, 10_000}; !slices.Equal(got, want) {
		t.Errorf("popped: got %v, want %v", got, want)
	}
	if got := q.takeAll(); got != nil {
		t.Errorf("takeAll of an empty queue: got %d TASKs, want none", len(got))
	}
}

func TestWaitQueueTakeAll(t *testing.T) {
	var q waitQueue
	for _, run := range []uint64{5, 6, 7} {
		q.push(&wire.Frame{Call: run})
	}
	q.remove(6)
	var got []uint64
	for _, f := range q.takeAll() {
		got = append(got, f.Call)
	}
	if want := []uint64{5, 7}; !slices.Equal(got, want) {
		t.Errorf("takeAll: got %v, want %v", got, want)
	}
	if f := q.pop(); f != nil {
		t.Errorf("pop after takeAll: got run %d, want nil", f.Call)
	}
}
