package ember

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
)

// fakeLauncher stands behind a replacer under test: it records the
// replacements started, the delays asked for and the give-up, and says
// which PIDs became ready (and so how many). Timers fire only when the test fires them.
type fakeLauncher struct {
	mu       sync.Mutex
	starts   int
	startErr error
	readyPID map[int]bool
	leftPID  map[int]bool          // said they were stopping on their own
	upFor    map[int]time.Duration // how long a ready one was up: an hour if not set
	delays   []time.Duration
	timers   []func()
	whys     []string
}

func newReplacer(t *testing.T, max int) (*replacer, *fakeLauncher) {
	t.Helper()
	f := &fakeLauncher{readyPID: map[int]bool{}, leftPID: map[int]bool{}, upFor: map[int]time.Duration{}}
	r := &replacer{
		start: func() error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.starts++
			return f.startErr
		},
		readies: func() int {
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.readyPID)
		},
		giveUp: func(why string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.whys = append(f.whys, why)
		},
		max:  max,
		kept: 3,
		log:  slog.New(slog.DiscardHandler),
		after: func(d time.Duration, fn func()) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.delays = append(f.delays, d)
			f.timers = append(f.timers, fn)
		},
	}
	return r, f
}

// errKilled is how the launcher reports an executor process killed.
var errKilled = errors.New("signal: killed")

// lose reports to r the end of process pid, ready, up and left as f says
// of it, as the driver would.
func (f *fakeLauncher) lose(r *replacer, pid int, err error) {
	f.mu.Lock()
	l := loss{pid: pid, err: err, ready: f.readyPID[pid], left: f.leftPID[pid]}
	if up, ok := f.upFor[pid]; ok {
		l.up = up
	} else if l.ready {
		l.up = time.Hour
	}
	f.mu.Unlock()
	r.lost(l)
}

// fire runs the timers set so far, as if their delays had passed.
func (f *fakeLauncher) fire() {
	f.mu.Lock()
	timers := f.timers
	f.timers = nil
	f.mu.Unlock()
	for _, fn := range timers {
		fn()
	}
}

func (f *fakeLauncher) check(t *testing.T, starts int, delays []time.Duration, gaveUp bool) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.starts != starts {
		t.Errorf("replacements started: got %d, want %d", f.starts, starts)
	}
	if !slices.Equal(f.delays, delays) {
		t.Errorf("delays: got %v, want %v", f.delays, delays)
	}
	if got := len(f.whys) > 0; got != gaveUp {
		t.Errorf("gave up: got %v (%q), want %v", got, f.whys, gaveUp)
	}
	if len(f.whys) > 1 {
		t.Errorf("gave up %d times, want once", len(f.whys))
	}
}

// Each executor lost after it was ready is replaced at once, however many
// are lost: the count of failures in a row stays at zero.
func TestReplacerReplacesReadyExecutorsAtOnce(t *testing.T) {
	r, f := newReplacer(t, 2)
	f.readyPID[10], f.readyPID[11], f.readyPID[12] = true, true, true
	r.run()
	for pid := range 3 {
		f.lose(r, 10+pid, errKilled)
	}
	f.check(t, 3, nil, false)
}

// Replacements that end before they are ready count in a row, each
// waiting longer than the last; max of them in a row and it gives up,
// once, saying why, and starts no more.
func TestReplacerGivesUpAfterFailuresInARow(t *testing.T) {
	r, f := newReplacer(t, 3)
	f.readyPID[10] = true
	r.run()
	f.lose(r, 10, errKilled) // the original: replaced at once
	f.lose(r, 20, errors.New("exit status 1"))
	f.fire()
	f.lose(r, 21, errors.New("exit status 1"))
	f.fire()
	f.lose(r, 22, errors.New("exit status 1")) // the third in a row
	f.fire()
	f.check(t, 3, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, true)
	if why := f.whys[0]; !strings.Contains(why, "the last 3 replacements ended before they were ready (ember.executor.maxRetries=3)") ||
		!strings.Contains(why, "exit status 1") {
		t.Errorf("why: got %q, want the count, the key and the last error", why)
	}
	f.readyPID[30] = true
	f.lose(r, 30, errKilled) // after giving up: not replaced
	f.check(t, 3, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, true)
}

// A replacement that becomes ready resets the count: failures separated by
// a success are not in a row.
func TestReplacerResetsOnAReadyReplacement(t *testing.T) {
	r, f := newReplacer(t, 2)
	r.run()
	f.lose(r, 20, errKilled) // failed
	f.fire()
	f.readyPID[21] = true
	f.lose(r, 21, errKilled) // was ready: at once
	f.lose(r, 22, errKilled) // failed: the first in a row again
	f.fire()
	f.check(t, 3, []time.Duration{100 * time.Millisecond, 100 * time.Millisecond}, false)
}

// A replacement that cannot start counts as failed, and is retried after
// the backoff, up to the limit.
func TestReplacerRetriesAStartThatFails(t *testing.T) {
	r, f := newReplacer(t, 2)
	f.readyPID[10] = true
	f.startErr = errors.New("fork/exec /app: no such file or directory")
	r.run()
	f.lose(r, 10, errKilled)
	f.fire()
	f.check(t, 2, []time.Duration{100 * time.Millisecond}, true)
	if why := f.whys[0]; !strings.Contains(why, "no such file or directory") {
		t.Errorf("why: got %q, want the start's error", why)
	}
}

// Executors lost before start-up succeeded are replaced by run: just
// after start-up, nothing else would; during it, Run fails anyway.
func TestReplacerReplacesEarlyLossesOnRun(t *testing.T) {
	r, f := newReplacer(t, 2)
	f.readyPID[10] = true
	f.lose(r, 10, errKilled)
	f.check(t, 0, nil, false)
	r.run()
	f.check(t, 1, nil, false)
}

// Once closed (the application shutting down, releasing its executors),
// nothing is replaced: not the executors that exit, nor one whose backoff
// ends after the close.
func TestReplacerStartsNothingOnceClosed(t *testing.T) {
	r, f := newReplacer(t, 5)
	r.run()
	f.lose(r, 20, errKilled) // failed: waits out its backoff
	r.close()
	f.fire()
	f.readyPID[10] = true
	f.lose(r, 10, errKilled)
	f.check(t, 0, []time.Duration{100 * time.Millisecond}, false)

	r, f = newReplacer(t, 5)
	r.close()
	r.run()
	f.readyPID[10] = true
	f.lose(r, 10, errKilled)
	f.check(t, 0, nil, false)
}

func TestReplaceBackoff(t *testing.T) {
	tests := []struct {
		k    int
		want time.Duration
	}{
		{0, 0},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{6, 3200 * time.Millisecond},
		{7, 5 * time.Second},
		{1000, 5 * time.Second},
	}
	for _, tt := range tests {
		if got := replaceBackoff(tt.k); got != tt.want {
			t.Errorf("replaceBackoff(%d) = %v, want %v", tt.k, got, tt.want)
		}
	}
}

// An executor process that exits cleanly without being released stopped
// on its own (its Run ctx ended: a SIGTERM to every process of a service
// being stopped): it is not replaced, nor does it count as a failure.
func TestReplacerLeavesExecutorsThatStoppedOnTheirOwn(t *testing.T) {
	r, f := newReplacer(t, 1)
	f.readyPID[10] = true
	f.leftPID[10], f.leftPID[20] = true, true
	r.run()
	f.lose(r, 10, nil)
	f.lose(r, 20, nil) // never ready: still not a failure
	f.check(t, 0, nil, false)
}

// An executor process that exits cleanly without having said it was
// stopping on its own (LEAVING) crashed all the same (a task that called
// os.Exit(0)): it is replaced, and counts as any lost executor does.
func TestReplacerReplacesACleanExitWithoutLeaving(t *testing.T) {
	r, f := newReplacer(t, 1)
	f.readyPID[10] = true
	r.run()
	f.lose(r, 10, nil) // was ready: replaced at once
	f.check(t, 1, nil, false)
	f.lose(r, 20, nil) // its replacement, never ready: the one failure allowed
	f.check(t, 1, nil, true)
	if why := f.whys[0]; !strings.Contains(why, "exit status 0, without stopping first") {
		t.Errorf("why: got %q, want it to say the process exited 0 without stopping first", why)
	}
}

// The line that says a lost executor is being replaced says how it ended,
// as the driver's "executor lost" line does: the two come in either
// order, and this one named the executor and its pid alone.
func TestReplacingLineSaysHowItEnded(t *testing.T) {
	r, f := newReplacer(t, 3)
	var logs logtest.Buffer
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	f.readyPID[10] = true
	r.run()
	f.lose(r, 10, errors.New("executor process (pid 10): signal: killed"))
	f.lose(r, 20, nil)
	for _, want := range []string{
		`msg="replacing a lost executor" executor="" pid=10 err="executor process (pid 10): signal: killed" after=0s`,
		`msg="replacing a lost executor" executor="" pid=20 err="exit status 0, without stopping first`,
	} {
		if s := logs.String(); !strings.Contains(s, want) {
			t.Errorf("logs: got %q, want %q", s, want)
		}
	}
}

// Once every executor it keeps has stopped on its own, none will come: it
// gives up, so that a job with no executor left fails instead of waiting
// for ever. Until then, a lost one is still replaced.
func TestReplacerGivesUpOnceEveryExecutorStoppedOnItsOwn(t *testing.T) {
	r, f := newReplacer(t, 5) // keeps 3
	f.readyPID[10], f.readyPID[11], f.readyPID[12] = true, true, true
	f.leftPID[10], f.leftPID[12], f.leftPID[20] = true, true, true
	r.run()
	f.lose(r, 10, nil)
	f.lose(r, 11, errKilled) // replaced
	f.lose(r, 12, nil)
	f.check(t, 1, nil, false)
	f.lose(r, 20, nil) // 11's replacement: the last
	f.check(t, 1, nil, true)
	if len(f.whys) == 1 && !strings.Contains(f.whys[0], "every executor stopped on its own") {
		t.Errorf("why: got %q, want that every executor stopped on its own", f.whys[0])
	}
}

// A nil replacer (no replacement: local[N], standalone, or turned off)
// does nothing.
func TestNilReplacer(t *testing.T) {
	var r *replacer
	r.lost(loss{pid: 1, err: errKilled})
	r.run()
	r.close()
}

// A replacement that becomes ready resets the count, even while it stays
// up: failures of other replacements before and after it are not in a
// row (Spark resets when an executor reaches RUNNING).
func TestReplacerResetsWhenAReplacementBecomesReady(t *testing.T) {
	r, f := newReplacer(t, 3)
	f.readyPID[10], f.readyPID[11] = true, true
	r.run()
	f.lose(r, 10, errKilled) // two lost at once: two replacements, 20 and 21
	f.lose(r, 11, errKilled)
	f.lose(r, 20, errors.New("exit status 1")) // failed: 1
	f.lose(r, 21, errors.New("exit status 1")) // failed: 2
	f.fire()                                   // 22 and 23
	f.readyPID[22] = true                      // 22 becomes ready, and stays
	f.lose(r, 23, errors.New("exit status 1")) // failed: the first since 22
	f.check(t, 4, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond}, false)
}

// With no limit (-1), failures in a row never make it give up; the wait
// between them stops growing at 5s.
func TestReplacerWithoutALimit(t *testing.T) {
	r, f := newReplacer(t, -1)
	r.run()
	var want []time.Duration
	for i := range 12 {
		f.lose(r, 20+i, errKilled) // never ready
		f.fire()
		want = append(want, replaceBackoff(i+1))
	}
	f.check(t, 12, want, false)
	if got := want[len(want)-1]; got != 5*time.Second {
		t.Errorf("the last wait: got %v, want 5s", got)
	}
}

// An executor that crashes soon after it became ready (a plugin that
// brings every executor down shortly after Init) is replaced after the
// backoff a failed replacement gets, so that the cluster does not spin;
// but it did become ready, so it does not count toward giving up, and
// one that was up for long resets the backoff.
func TestReplacerBacksOffExecutorsThatCrashSoon(t *testing.T) {
	r, f := newReplacer(t, 2)
	r.run()
	var want []time.Duration
	for i := range 4 {
		pid := 20 + i
		f.readyPID[pid], f.upFor[pid] = true, time.Second
		f.lose(r, pid, errKilled)
		f.fire()
		want = append(want, replaceBackoff(i+1))
	}
	f.check(t, 4, want, false) // four in a row, past max 2: not given up
	f.readyPID[30] = true      // up for an hour
	f.lose(r, 30, errKilled)
	f.check(t, 5, want, false) // at once
	f.readyPID[31], f.upFor[31] = true, time.Second
	f.lose(r, 31, errKilled)
	f.fire()
	f.check(t, 6, append(want, 100*time.Millisecond), false) // the backoff starts again
}
