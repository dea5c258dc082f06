package executor

import (
	"sync/atomic"
	"testing"
	"time"
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
