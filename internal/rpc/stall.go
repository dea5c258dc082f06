package rpc

import (
	"context"
	"log/slog"
	"time"

	"github.com/emberhq/ember/plugin"
)

// ConfStallWarning is the configuration key of how long a plugin's lane
// may hold messages without one of its calls returning before the side
// warns of it (see WatchStalls): a Go duration, "0" for never. Default
// DefaultStallWarning.
const ConfStallWarning = "ember.lane.stallWarning"

// DefaultStallWarning is ConfStallWarning's default.
const DefaultStallWarning = 15 * time.Second

// StallWarning returns c's ConfStallWarning, or DefaultStallWarning when
// it is unset or does not parse (ember.Run refuses such a value).
func StallWarning(c plugin.Conf) time.Duration {
	after, err := c.Duration(ConfStallWarning, DefaultStallWarning)
	if err != nil {
		return DefaultStallWarning
	}
	return after
}

// Progress is a snapshot of a lane's work.
type Progress struct {
	Finished uint64 // items that have run, ever
	Waiting  int    // items yet to start: queued, or held behind a membership event
	Running  int    // items running
	Max      int    // how many items may run at once
}

// Progress returns a snapshot of l's work. It takes the lane's lock and,
// on a lane of several workers, walks its members: for a watchdog, not a
// hot path.
func (l *Lane) Progress() Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := Progress{Finished: l.finished.Load(), Waiting: len(l.q) - l.head}
	if l.serial {
		// The worker's batch: the item running, and those after it.
		p.Max = 1
		if n := int(l.active.Load()); n > 0 {
			p.Running = 1
			p.Waiting += n - 1
		}
		return p
	}
	p.Max = l.max
	// Every item taken is in running until it has run, including those
	// held behind an event (or ready once it has run) and the events
	// waiting for their member's items.
	held := len(l.ready)
	for _, m := range l.members {
		held += len(m.held)
		if m.event != nil {
			held++
		}
	}
	p.Waiting += held
	p.Running = len(l.running) - held
	return p
}

// Watched is a lane WatchStalls watches, and the logger that names its
// plugin.
type Watched struct {
	Lane *Lane
	Log  *slog.Logger
	// Stalled, if set, is called with true as a stall is warned of, and
	// with false as it ends (a gauge's Set, say).
	Stalled func(bool)
}

// WatchStalls watches lanes until ctx ends, checking each every third of
// after: once a lane has held items waiting while none of its items
// finished for after or more, it logs a warning, once, and once items
// finish again or none waits any more, a line saying so. A Receive that
// blocks (a long poll, a lock, a call that ignores its ctx) holds the
// messages behind it without any other sign: only the lane's depth, which
// a busy lane shares. As ctx ends, a lane warned of is checked once more,
// so that a stall that ended since the last check (just before the side
// stops) has its line too, and not a warning as its last word; one still
// stalled has its Stalled called with false: the side is going, and its
// gauge must not stay raised. after <= 0 watches nothing.
func WatchStalls(ctx context.Context, after time.Duration, lanes []Watched) {
	if after <= 0 || len(lanes) == 0 {
		return
	}
	watches := make([]stallWatch, len(lanes))
	for i, w := range lanes {
		watches[i] = stallWatch{Watched: w}
	}
	t := time.NewTicker(max(after/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			now := time.Now()
			for i := range watches {
				w := &watches[i]
				if w.stalled {
					w.check(now, after) // says so if it moved
				}
				if w.stalled && w.Stalled != nil {
					w.Stalled(false)
				}
			}
			return
		case now := <-t.C:
			for i := range watches {
				watches[i].check(now, after)
			}
		}
	}
}

// stallWatch follows one lane from check to check.
type stallWatch struct {
	Watched
	finished uint64    // the lane's Finished at the last check
	since    time.Time // items have waited, with none finished, since; zero while none waits
	stalled  bool      // warned of, and not yet moving again
}

// check looks at w's lane at now and logs a stall of after or more, or
// its end.
func (w *stallWatch) check(now time.Time, after time.Duration) {
	p := w.Lane.Progress()
	if p.Finished == w.finished && p.Waiting > 0 {
		if w.since.IsZero() {
			w.since = now
		}
		if !w.stalled && now.Sub(w.since) >= after {
			w.stalled = true
			w.Log.Warn("this plugin's lane is stalled: messages wait behind calls that have not returned",
				"stalled_for", roundStall(now.Sub(w.since)), "waiting", p.Waiting, "running", p.Running, "max", p.Max, "hint", stallHint(p))
			if w.Stalled != nil {
				w.Stalled(true)
			}
		}
		return
	}
	if w.stalled {
		w.Log.Info("this plugin's lane is moving again", "stalled_for", roundStall(now.Sub(w.since)),
			"waiting", p.Waiting)
		if w.Stalled != nil {
			w.Stalled(false)
		}
	}
	w.finished, w.stalled, w.since = p.Finished, false, time.Time{}
	if p.Waiting > 0 {
		w.since = now // the items finished before now
	}
}

// roundStall rounds a stall's length for the log: to the second, or,
// under one (a short ConfStallWarning), to the millisecond.
func roundStall(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// stallHint says what holds a stalled lane of p, and what to do.
func stallHint(p Progress) string {
	switch {
	case p.Max == 1:
		return "a call that does not return (a long poll, a lock, I/O without a deadline, a ctx ignored) holds every message behind it: return sooner, or run calls side by side (plugin.ConcurrentReceiver)"
	case p.Running >= p.Max:
		return "every call it may run at once is running and none returns (long polls?): size MaxConcurrentReceives above the calls that may wait at once, or give the messages that must not wait a plugin of their own"
	default:
		return "messages wait behind an executor's OnExecutorAdded or OnExecutorRemoved, which waits for that executor's calls still running to return"
	}
}
