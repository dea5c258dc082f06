package ember

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ConfExecutorMaxRetries is how many replacements of lost local-cluster
// executors may fail in a row (end before their plugins are initialised)
// before Ember stops replacing lost executors (Spark:
// spark.deploy.maxExecutorRetries). A replacement that becomes ready
// resets the count. Default 10; 0 turns replacement off; -1 never stops
// replacing (each failed replacement then waits at most 5s). An executor
// that crashes within 10s of becoming ready is replaced after the same
// backoff, without counting.
const ConfExecutorMaxRetries = "ember.executor.maxRetries"

// defaultMaxRetries is ConfExecutorMaxRetries' default.
const defaultMaxRetries = 10

// minUptime is how long an executor must have been ready for its crash
// to be replaced at once. One that crashes sooner (a plugin that brings
// every executor down shortly after Init, say) is replaced after a
// backoff, as a replacement that failed before it was ready is, but does
// not count toward giving up: it did become ready (Spark counts the same).
const minUptime = 10 * time.Second

// replaceBackoff is how long a replacement waits after k replacements in
// a row failed, or k executors in a row crashed soon after they were ready
// (minUptime): nothing for the first (the executor it replaces had been
// up for long), then 100ms doubling to at most 5s, so that a replacement
// that cannot start, or a plugin that crashes every executor, does not
// spin.
func replaceBackoff(k int) time.Duration {
	if k == 0 {
		return 0
	}
	return min(100*time.Millisecond<<min(k-1, 6), 5*time.Second)
}

// A replacer starts a new executor for each one a local-cluster loses
// while the application runs (crashed or killed), as Spark's standalone
// master does. Each replacement is a new process with a new executor ID.
// A replacement that ends before it is ready counts as a failure; once max
// (at least 1, or -1 for no limit) have failed in a row, it stops
// replacing and says so (giveUp). Safe for concurrent use.
type replacer struct {
	start   func() error     // starts one executor
	readies func() int       // how many executors have become ready so far
	giveUp  func(why string) // told once, when it stops replacing
	max     int              // failures in a row before it stops; -1: no limit
	log     *slog.Logger
	after   func(time.Duration, func()) // runs a func later: time.AfterFunc

	// mu protects the following fields and serialises calls of start, so
	// that none is made once close has returned. The driver never calls
	// into the replacer, so readies may be called with mu held.
	mu      sync.Mutex
	running bool // start-up has succeeded
	kept    int  // executors it keeps: N when made, less those that stopped on their own
	closed  bool // the application is shutting down
	gaveUp  bool
	inRow   int    // replacements in a row that failed
	soon    int    // executors in a row that crashed within minUptime of being ready
	seen    int    // readies when inRow last grew
	early   []loss // lost after start-up succeeded, before run
}

// A loss is an executor process's end, as the launcher and the driver
// report it.
type loss struct {
	pid   int
	id    string        // its executor ID, if it got one
	err   error         // how it ended (nil: cleanly), or why its plugins failed
	ready bool          // its plugins had initialised
	up    time.Duration // since they had, if they had
	left  bool          // it had said it was stopping on its own (LEAVING)
}

// lost reports an executor process's end. One that ended cleanly after
// saying it was stopping on its own (left) had its Run ctx end: a SIGTERM
// sent to every process of a service that is stopping, say. It is not
// replaced, or the replacer would fight the stop. Once every executor has,
// it stops replacing and says so (giveUp): a job with no executor left
// then fails, as none will come, instead of waiting for ever. One that
// ended cleanly without saying so crashed all the same (a task that called
// os.Exit(0)), and is replaced. A nil r does nothing.
func (r *replacer) lost(l loss) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed || r.gaveUp:
	case l.err == nil && l.left:
		r.log.Info("executor process stopped on its own: not replaced", "executor", l.id, "pid", l.pid)
		if r.kept--; r.kept == 0 {
			r.gaveUp = true
			r.giveUp("every executor stopped on its own")
		}
	case !r.running:
		// During start-up, whose failure the launcher's report ends;
		// or just after it, before run: replaced then.
		r.early = append(r.early, l)
	default:
		r.replaceLocked(l)
	}
}

// run starts replacing: start-up has succeeded. Executors lost in the
// meantime are replaced now. A nil r does nothing.
func (r *replacer) run() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.running = true
	for _, l := range r.early {
		r.replaceLocked(l)
	}
	r.early = nil
}

// close stops replacing: once it returns, no replacement is starting or
// will start. A nil r does nothing.
func (r *replacer) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// replaceLocked replaces the executor whose end l reports. r.mu is held.
func (r *replacer) replaceLocked(l loss) {
	if r.gaveUp {
		return
	}
	switch {
	case !l.ready:
		r.failedLocked()
	case l.up < minUptime:
		r.inRow = 0
		r.soon++
	default:
		r.inRow, r.soon = 0, 0
	}
	err := l.err
	if err == nil {
		err = errors.New("exit status 0, without stopping first (os.Exit(0) in a task or plugin?)")
	}
	// How it ended, in this line too: the driver's "executor lost" line,
	// which says it as well, may come before or after this one.
	r.retryLocked(err, "executor", l.id, "pid", l.pid, "err", err)
}

// failedLocked counts a replacement that failed: one more in a row,
// unless an executor (another replacement, say, still up) has become
// ready since the last failure, which ends the row. r.mu is held.
func (r *replacer) failedLocked() {
	if n := r.readies(); n != r.seen {
		r.seen, r.inRow = n, 0
	}
	r.inRow++
}

// retryLocked starts a replacement, after the backoff that the failures
// in a row call for, or gives up if there have been too many. r.mu is
// held.
func (r *replacer) retryLocked(last error, attrs ...any) {
	if r.max >= 0 && r.inRow >= r.max {
		r.gaveUp = true
		why := fmt.Sprintf("the last %d replacements ended before they were ready (%s=%d)", r.inRow, ConfExecutorMaxRetries, r.max)
		if last != nil {
			why += "; the last: " + last.Error()
		}
		r.log.Error("lost executors are no longer replaced", "why", why)
		r.giveUp(why)
		return
	}
	d := replaceBackoff(max(r.inRow, r.soon))
	attrs = append(attrs, "after", d, "failed_in_a_row", r.inRow)
	if r.soon > 0 {
		attrs = append(attrs, "crashed_soon_in_a_row", r.soon)
	}
	r.log.Info("replacing a lost executor", attrs...)
	if d == 0 {
		r.startLocked()
		return
	}
	r.after(d, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.closed && !r.gaveUp {
			r.startLocked()
		}
	})
}

// startLocked starts a replacement; one that cannot start counts as a
// failed replacement. r.mu is held.
func (r *replacer) startLocked() {
	if err := r.start(); err != nil {
		r.log.Warn("could not start a replacement executor", "err", err)
		r.failedLocked()
		r.retryLocked(err)
	}
}
