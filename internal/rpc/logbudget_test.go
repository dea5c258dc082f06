package rpc

import (
	"testing"
	"time"
)

// A lane logs logBurst warnings about sent messages per logWindow, the
// last saying that more are held back, and the first of the next window
// says how many were.
func TestLogBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type want struct {
		ok   bool
		held int
		last bool
	}
	var b logBudget
	steps := []struct {
		at   time.Duration
		n    int // calls at at
		want want
	}{
		{0, logBurst - 1, want{true, 0, false}},
		{time.Second, 1, want{true, 0, true}},
		{2 * time.Second, 5, want{false, 0, false}},
		{logWindow - time.Nanosecond, 1, want{false, 0, false}},
		{logWindow, 1, want{true, 6, false}}, // a new window: six held back
		{logWindow + time.Second, 1, want{true, 0, false}},
		{3 * logWindow, 1, want{true, 0, false}},
	}
	for _, s := range steps {
		for i := range s.n {
			ok, held, last := b.take(t0.Add(s.at))
			if got := (want{ok, held, last}); got != s.want {
				t.Fatalf("take at %v (call %d): got %+v, want %+v", s.at, i+1, got, s.want)
			}
		}
	}
}
