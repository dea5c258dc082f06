package rpc

import (
	"testing"
	"time"
)

// A peer's silence counts the time this side ran, not a stall of its own:
// a process stopped longer than the heartbeat timeout (SIGSTOP, a paused
// VM) used to find, at its first tick, every peer silent for the whole
// stall, before its reader had taken in what they sent meanwhile, and
// closed every connection.
func TestSilenceDiscountsOwnStalls(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const interval = time.Second
	type tick struct {
		at    time.Duration // since t0
		heard bool
		want  time.Duration // silence reported
	}
	tests := []struct {
		name  string
		ticks []tick
	}{
		{"heard every tick", []tick{{1 * time.Second, true, 0}, {2 * time.Second, true, 0}}},
		{"silent peer", []tick{{1 * time.Second, true, 0}, {2 * time.Second, false, time.Second}, {3 * time.Second, false, 2 * time.Second}, {4 * time.Second, false, 3 * time.Second}}},
		{"a late tick is not a stall", []tick{{1 * time.Second, true, 0}, {3 * time.Second, false, 2 * time.Second}}},
		// Stopped from 1s to 14s: the tick at 14s counts one interval,
		// not thirteen seconds, and silence goes on counting after.
		{"own stall", []tick{{1 * time.Second, true, 0}, {14 * time.Second, false, time.Second}, {15 * time.Second, false, 2 * time.Second}}},
		{"own stall, then heard", []tick{{1 * time.Second, false, time.Second}, {14 * time.Second, true, 0}}},
		{"silence before a stall still counts", []tick{{1 * time.Second, true, 0}, {2 * time.Second, false, time.Second}, {3 * time.Second, false, 2 * time.Second}, {20 * time.Second, false, 3 * time.Second}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSilence(interval, t0)
			for _, k := range tt.ticks {
				if got := s.Tick(t0.Add(k.at), k.heard); got != k.want {
					t.Fatalf("tick at %v (heard %v): got silence %v, want %v", k.at, k.heard, got, k.want)
				}
			}
		})
	}
}
