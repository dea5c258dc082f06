package rpc_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// blocker is a lane run func whose items with a Frame block until
// release is closed, each telling started first; events run at once.
type blocker struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

// releaseAll lets every item return, and every later one run through.
func (b *blocker) releaseAll() { b.once.Do(func() { close(b.release) }) }

func newBlocker() *blocker {
	return &blocker{started: make(chan struct{}, 64), release: make(chan struct{})}
}

func (b *blocker) run(it rpc.Item) {
	if it.Event != nil {
		it.Event()
		return
	}
	b.started <- struct{}{}
	<-b.release
}

// wait waits for n items to have started.
func (b *blocker) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-b.started:
		case <-time.After(defaultTestTimeout):
			t.Fatalf("an item did not start within %v", defaultTestTimeout)
		}
	}
}

// The snapshot a stall watch reads: what waits, what runs, what may run,
// and what has finished, on lanes of one worker and of several.
func TestLaneProgress(t *testing.T) {
	t.Parallel()
	x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	item := func() rpc.Item { return rpc.Item{Conn: x, Frame: &wire.Frame{}} }
	tests := []struct {
		name    string
		workers int
		// fill pushes onto l, whose run is b's, and waits until the
		// state to look at holds.
		fill func(t *testing.T, l *rpc.Lane, b *blocker)
		want rpc.Progress
	}{
		{"one worker, one running, three behind it", 1, func(t *testing.T, l *rpc.Lane, b *blocker) {
			l.Push(item())
			b.wait(t, 1)
			for range 3 {
				l.Push(item())
			}
		}, rpc.Progress{Waiting: 3, Running: 1, Max: 1}},
		{"two workers, both running, three queued", 2, func(t *testing.T, l *rpc.Lane, b *blocker) {
			for range 5 {
				l.Push(item())
			}
			b.wait(t, 2)
		}, rpc.Progress{Waiting: 3, Running: 2, Max: 2}},
		{"four workers, an event and a message held behind a long poll", 4, func(t *testing.T, l *rpc.Lane, b *blocker) {
			l.Push(item()) // x's long poll
			b.wait(t, 1)
			l.Push(rpc.Item{Member: x, Event: func() {}}) // OnExecutorRemoved: waits for it
			l.Push(item())                                // held behind the event
		}, rpc.Progress{Waiting: 2, Running: 1, Max: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBlocker()
			l := rpc.NewLane(tt.workers, 0, b.run)
			tt.fill(t, l, b)
			if got := l.Progress(); got != tt.want {
				t.Errorf("Progress: got %+v, want %+v", got, tt.want)
			}
			b.releaseAll()
			if err := l.Flush(testContext(t)); err != nil {
				t.Fatal(err)
			}
			want := rpc.Progress{Finished: uint64(tt.want.Waiting + tt.want.Running), Max: tt.want.Max}
			if got := l.Progress(); got != want {
				t.Errorf("Progress once flushed: got %+v, want %+v", got, want)
			}
			l.Close()
		})
	}
}

// A lane holding messages while none of its calls returns is warned of
// once it has for the stall warning's time, once, and its end is said;
// a lane whose calls return, however busy, or whose long calls hold
// nothing back, is not.
func TestStallCheck(t *testing.T) {
	t.Parallel()
	const after = 15 * time.Second
	t0 := time.Unix(1e9, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		at     time.Duration
		do     func(t *testing.T, l *rpc.Lane, b *blocker) // before the check, if any
		warns  int                                         // warnings logged so far
		moving int                                         // "lane is moving again" lines so far
	}
	x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	item := rpc.Item{Conn: x, Frame: &wire.Frame{}}
	release := func(t *testing.T, l *rpc.Lane, b *blocker) {
		b.releaseAll()
		if err := l.Flush(testContext(t)); err != nil {
			t.Fatal(err)
		}
	}
	// one lets the item running return, and waits for the next to start.
	one := func(t *testing.T, l *rpc.Lane, b *blocker) {
		b.release <- struct{}{}
		b.wait(t, 1)
	}
	tests := []struct {
		name    string
		workers int
		fill    func(t *testing.T, l *rpc.Lane, b *blocker)
		steps   []step
		warning string // in the warning's line
	}{
		{"a blocked Receive with messages behind it", 1, func(t *testing.T, l *rpc.Lane, b *blocker) {
			l.Push(item)
			b.wait(t, 1)
			l.Push(item)
		}, []step{
			{at: 0},
			{at: after - time.Second},
			{at: after, warns: 1},
			{at: 3 * after, warns: 1}, // once per stall
			{at: 4 * after, do: release, warns: 1, moving: 1},
			{at: 6 * after, warns: 1, moving: 1},
		}, "stalled_for=15s waiting=1 running=1 max=1 hint=\"a call that does not return"},
		{"every worker of several in a long poll, a message behind them", 2, func(t *testing.T, l *rpc.Lane, b *blocker) {
			for range 3 {
				l.Push(item)
			}
			b.wait(t, 2)
		}, []step{
			{at: 0},
			{at: after, warns: 1},
			{at: after + time.Second, do: release, warns: 1, moving: 1},
		}, "waiting=1 running=2 max=2 hint=\"every call it may run at once is running"},
		{"a long call with nothing behind it", 1, func(t *testing.T, l *rpc.Lane, b *blocker) {
			l.Push(item)
			b.wait(t, 1)
		}, []step{{at: 0}, {at: after}, {at: 10 * after}}, ""},
		{"long polls on free workers", 4, func(t *testing.T, l *rpc.Lane, b *blocker) {
			l.Push(item)
			l.Push(item)
			b.wait(t, 2)
		}, []step{{at: 0}, {at: after}, {at: 10 * after}}, ""},
		{"messages behind calls that return, slowly", 1, func(t *testing.T, l *rpc.Lane, b *blocker) {
			l.Push(item)
			b.wait(t, 1)
			for range 3 {
				l.Push(item)
			}
		}, []step{
			{at: 0},
			{at: after - time.Second, do: one},
			{at: 2*after - 2*time.Second, do: one},
			{at: 2*after - time.Second, do: release},
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			b := newBlocker()
			l := rpc.NewLane(tt.workers, 0, b.run)
			defer l.Close()
			defer b.releaseAll() // before Close
			tt.fill(t, l, b)
			check := rpc.StallCheck(rpc.Watched{Lane: l, Log: slog.New(slog.NewTextHandler(&logs, nil))}, after)
			for _, s := range tt.steps {
				if s.do != nil {
					s.do(t, l, b)
				}
				check(at(s.at))
				warns := strings.Count(logs.String(), "level=WARN")
				moving := strings.Count(logs.String(), "lane is moving again")
				if warns != s.warns || moving != s.moving {
					t.Fatalf("at %v: got %d warnings and %d lines of moving again, want %d and %d; log:\n%s", s.at, warns, moving, s.warns, s.moving, logs.String())
				}
			}
			if tt.warning != "" && !strings.Contains(logs.String(), tt.warning) {
				t.Errorf("the warning does not say %q:\n%s", tt.warning, logs.String())
			}
		})
	}
}

// stalledLane returns a lane of one worker whose item b holds, with a
// second waiting behind it; the test's cleanup releases and closes it.
func stalledLane(t *testing.T) (*rpc.Lane, *blocker) {
	t.Helper()
	x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	b := newBlocker()
	l := rpc.NewLane(1, 0, b.run)
	t.Cleanup(l.Close)
	t.Cleanup(b.releaseAll) // first: Close waits for the item it holds
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{}})
	b.wait(t, 1)
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{}})
	return l, b
}

// WatchStalls checks on its own until its ctx ends, and lowers a stalled
// lane's flag as it does; with no stall warning ("0") it watches nothing
// and returns at once.
func TestWatchStalls(t *testing.T) {
	t.Parallel()
	l, _ := stalledLane(t)

	var logs logtest.Buffer
	var stalled atomic.Int32 // 1 while Stalled last said so
	lanes := []rpc.Watched{{Lane: l, Log: slog.New(slog.NewTextHandler(&logs, nil)), Stalled: func(on bool) {
		if on {
			stalled.Store(1)
		} else {
			stalled.Store(0)
		}
	}}}
	watch := func(ctx context.Context, after time.Duration) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			rpc.WatchStalls(ctx, after, lanes)
		}()
		return done
	}
	waitClosed(t, watch(testContext(t), 0), "WatchStalls with no stall warning")

	ctx, cancel := context.WithCancel(testContext(t))
	done := watch(ctx, 20*time.Millisecond)
	poll(t, "a warning of the stalled lane", func() bool { return strings.Contains(logs.String(), "lane is stalled") })
	if got := stalled.Load(); got != 1 {
		t.Errorf("Stalled once the stall was warned of: got %v, want true", got == 1)
	}
	cancel()
	waitClosed(t, done, "WatchStalls once its ctx ended")
	// The side is going: its gauge must not stay raised.
	if got := stalled.Load(); got != 0 {
		t.Errorf("Stalled once WatchStalls returned: got %v, want false", got == 1)
	}
}

// A stall that ends between two checks, just before the side stops (its
// Receive returned, then the executor was released), is said to have
// ended as WatchStalls' ctx ends: the warning used to be the lane's last
// word, and read as a lane stalled until the end.
func TestWatchStallsSaysAStallEndedAsItStops(t *testing.T) {
	t.Parallel()
	l, b := stalledLane(t)

	var logs logtest.Buffer
	lanes := []rpc.Watched{{Lane: l, Log: slog.New(slog.NewTextHandler(&logs, nil))}}
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Checks a second apart: the stall ends, and the watch stops,
		// between two of them.
		rpc.WatchStalls(ctx, 3*time.Second, lanes)
	}()
	poll(t, "a warning of the stalled lane", func() bool { return strings.Contains(logs.String(), "lane is stalled") })
	b.releaseAll()
	poll(t, "the lane to run both items", func() bool { return l.Progress().Finished == 2 })
	cancel()
	waitClosed(t, done, "WatchStalls once its ctx ended")
	if s := logs.String(); !strings.Contains(s, `msg="this plugin's lane is moving again"`) {
		t.Errorf("logs once the stall ended and the watch stopped: got %q, want the stall's end", s)
	}
}
