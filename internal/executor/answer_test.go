package executor

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
)

// An answer wait gives up once no byte has come for its timeout, and not
// while bytes arrive: a large WELCOME on a slow link is an answer coming.
func TestAnswerWait(t *testing.T) {
	var arriving atomic.Bool
	arriving.Store(true)
	var reads atomic.Uint64
	received := func() uint64 {
		n := reads.Add(1)
		if arriving.Load() {
			return n // a new count at every look: bytes arrive
		}
		return 0
	}
	gaveUp := make(chan struct{})
	w := newAnswerWait(time.Millisecond, received, func() { close(gaveUp) })
	deadline := time.Now().Add(30 * time.Second)
	for reads.Load() < 20 { // the wait has looked, and run on, many times
		select {
		case <-gaveUp:
			t.Fatalf("the wait gave up after %d looks while bytes were arriving", reads.Load())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the wait looked at the bytes received %d times in 30s, want 20", reads.Load())
		}
		time.Sleep(time.Millisecond)
	}
	arriving.Store(false)
	select {
	case <-gaveUp:
	case <-time.After(30 * time.Second):
		t.Fatal("the wait did not give up once bytes stopped arriving")
	}
	if w.Stop() {
		t.Error("Stop after the wait gave up: got true, want false")
	}

	w = newAnswerWait(time.Hour, received, func() { t.Error("a stopped wait gave up") })
	if !w.Stop() {
		t.Error("Stop before the timeout: got false, want true")
	}
}

// The wait gives up a timeout after the last byte, looking often enough
// to tell: it used to look once a timeout, and ran on a whole timeout
// more for bytes that came just after it began (20s after the last byte,
// with HandshakeTimeout 10s, in a multi-host trial). It looks every tenth
// of timeout, as its timer does; a look long after the last (this process
// stalled) does not count the stall as the driver's silence.
func TestAnswerWaitCountsFromTheLastByte(t *testing.T) {
	const timeout = 10 * time.Second
	var n atomic.Uint64
	start := time.Now()
	w := &answerWait{timeout: timeout, received: n.Load, silence: rpc.NewSilence(timeout/10, start)}
	at := func(d time.Duration) time.Duration {
		t.Helper()
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.lookLocked(start.Add(d))
	}
	n.Add(55) // the last byte, just after the wait began
	tests := []struct {
		look time.Duration // since the wait began
		max  time.Duration // the next look at most this far off; 0: give up
	}{
		{time.Second, time.Second}, // the byte seen: a look a tenth of timeout on
		{2 * time.Second, time.Second},
		{3 * time.Second, time.Second},
		{4 * time.Second, time.Second},
		{5 * time.Second, time.Second},
		{6 * time.Second, time.Second},
		{7 * time.Second, time.Second},
		{8 * time.Second, time.Second},
		{9 * time.Second, time.Second},
		{10 * time.Second, time.Second},                                 // a timeout since the start, not since the byte
		{10*time.Second + 900*time.Millisecond, 100 * time.Millisecond}, // the rest of the timeout
		{11 * time.Second, 0},                                           // a timeout since the byte: give up
	}
	for _, tt := range tests {
		got := at(tt.look)
		if tt.max == 0 && got != 0 || tt.max != 0 && (got <= 0 || got > tt.max) {
			t.Errorf("a look %v after the start, the last byte seen at 1s: got the next look %v on, want %v at most (0: give up)", tt.look, got, tt.max)
		}
	}

	// This process stalled for a minute after a look 5s into the silence:
	// the stall is not the driver's, and the wait goes on.
	n.Add(1)
	w = &answerWait{timeout: timeout, received: n.Load, last: n.Load(), silence: rpc.NewSilence(timeout/10, start)}
	for look := time.Second; look <= 5*time.Second; look += time.Second {
		at(look)
	}
	if got := at(65 * time.Second); got <= 0 {
		t.Errorf("the first look after a stall of this process's own: got %v, want the wait to go on", got)
	}
}
