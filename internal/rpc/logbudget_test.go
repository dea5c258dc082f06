package rpc

import (
	"testing"
	"time"
)

// A lane logs LogBurst warnings about sent messages per LogWindow, the
// last saying that more are held back, and the first of the next window
// says how many were.
func TestLogBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type want struct {
		ok   bool
		held int
		last bool
	}
	var b LogBudget
	steps := []struct {
		at   time.Duration
		n    int // calls at at
		want want
	}{
		{0, LogBurst - 1, want{true, 0, false}},
		{time.Second, 1, want{true, 0, true}},
		{2 * time.Second, 5, want{false, 0, false}},
		{LogWindow - time.Nanosecond, 1, want{false, 0, false}},
		{LogWindow, 1, want{true, 6, false}}, // a new window: six held back
		{LogWindow + time.Second, 1, want{true, 0, false}},
		{3 * LogWindow, 1, want{true, 0, false}},
	}
	for _, s := range steps {
		for i := range s.n {
			ok, held, last := b.Take(t0.Add(s.at))
			if got := (want{ok, held, last}); got != s.want {
				t.Fatalf("take at %v (call %d): got %+v, want %+v", s.at, i+1, got, s.want)
			}
		}
	}
}
