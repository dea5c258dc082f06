package embertest

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember"
)

// Start waits DefaultTimeout, or longer for a StartTimeout that lets Run's
// start-up (the driver plugins' Init, then the executors') take longer: it
// used to give up after DefaultTimeout whatever Run allowed. A zero
// StartTimeout is Run's default of a minute, and waits as long as a
// minute set: it used to wait DefaultTimeout, so that Start gave up,
// saying only that the cluster had not started, as Run's executors' step
// was still running, and Run's own error, which says why, was never seen.
func TestStartWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		start time.Duration
		want  time.Duration
	}{
		{0, 2*time.Minute + 10*time.Second},            // Run's default, a minute
		{-time.Second, 2*time.Minute + 10*time.Second}, // so is a negative one
		{time.Minute, 2*time.Minute + 10*time.Second},
		{10 * time.Second, DefaultTimeout},
		{2 * time.Minute, 4*time.Minute + 10*time.Second},
		{math.MaxInt64, math.MaxInt64}, // no limit: it used to overflow to DefaultTimeout
	}
	for _, tt := range tests {
		if got := startWait(ember.Config{StartTimeout: tt.start}); got != tt.want {
			t.Errorf("startWait(StartTimeout %v) = %v, want %v", tt.start, got, tt.want)
		}
	}
}

// deadlineTB is a testing.TB with a deadline of its own.
type deadlineTB struct {
	testing.TB
	deadline time.Time
}

func (d deadlineTB) Deadline() (time.Time, bool) { return d.deadline, !d.deadline.IsZero() }

// WaitFor gives up before the test's deadline (go test -timeout), so that
// the test fails with WaitFor's message: it used to wait DefaultTimeout
// whatever the deadline, and a test binary run with a shorter -timeout
// panicked with a goroutine dump instead, saying nothing of what it
// waited for.
func TestWaitForGivesUpBeforeTheTestsDeadline(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		deadline time.Time
		want     time.Time
	}{
		{time.Time{}, now.Add(DefaultTimeout)},                                           // none
		{now.Add(time.Hour), now.Add(DefaultTimeout)},                                    // far
		{now.Add(10 * time.Second), now.Add(9 * time.Second)},                            // a tenth to spare
		{now.Add(DefaultTimeout + 5*time.Second), now.Add(DefaultTimeout)},               // DefaultTimeout first
		{now.Add(2 * DefaultTimeout), now.Add(DefaultTimeout)},                           // far
		{now.Add(-time.Second), now.Add(-time.Second)},                                   // passed: give up at once
		{now.Add(DefaultTimeout * 9 / 10), now.Add(DefaultTimeout*9/10 - 5*time.Second)}, // at most 5s to spare
	}
	for _, tt := range tests {
		if got := waitDeadline(deadlineTB{t, tt.deadline}, now); !got.Equal(tt.want) {
			t.Errorf("waitDeadline with test deadline %v from now: %v from now, want %v",
				tt.deadline.Sub(now), got.Sub(now), tt.want.Sub(now))
		}
	}
}

// fatalTB records Fatalf and ends the goroutine, as testing.T's does.
type fatalTB struct {
	deadlineTB
	msg chan string
}

func (f fatalTB) Helper() {}
func (f fatalTB) Fatalf(format string, args ...any) {
	f.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWaitForFailsWithItsMessageBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	f := fatalTB{deadlineTB{t, time.Now().Add(300 * time.Millisecond)}, make(chan string, 1)}
	// On a goroutine of its own, as f's Fatalf ends it (f is not t: vet's
	// check of Fatalf off the test's goroutine does not apply).
	waitFor := WaitFor
	go waitFor(f, "the impossible", func() bool { return false })
	select {
	case msg := <-f.msg:
		if !strings.Contains(msg, "waiting for the impossible") {
			t.Errorf("WaitFor failed with %q, want it to name what it waited for", msg)
		}
	case <-time.After(DefaultTimeout / 2): // when it gives up is TestWaitForGivesUpBeforeTheTestsDeadline's
		t.Fatal("WaitFor still waiting long after a test deadline of 300ms")
	}
}
