package rpc

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// LogBudget bounds how often one kind of line is logged when what it
// reports can recur at the rate of messages or tasks: a lane's warnings
// about the sent messages it could not run (those its plugin's Receive
// failed, and those it could not decode; a Receive that fails every
// message, a default case returning an error, logged a line per message),
// or a plugin's task hook panicking on every task. It allows LogBurst
// lines per LogWindow; the first line of a later window says how many
// were held back. Metrics, where the side keeps them, count every one.
// The zero value is ready; it is safe for concurrent use.
type LogBudget struct {
	mu    sync.Mutex // protects the following fields
	start time.Time  // of the current window
	lines int        // logged in the current window
	held  int        // held back since the last line logged
}

// A LogBudget's allowance.
const (
	LogBurst  = 10
	LogWindow = time.Minute
)

// Take reports whether one more line may be logged at now, how many were
// held back before it, and whether it is the window's last.
func (b *LogBudget) Take(now time.Time) (ok bool, held int, last bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lines == 0 || now.Sub(b.start) >= LogWindow {
		b.start, b.lines = now, 0
	}
	if b.lines >= LogBurst {
		b.held++
		return false, 0, false
	}
	b.lines++
	held, b.held = b.held, 0
	return true, held, b.lines == LogBurst
}

// Log logs msg at level with the attributes args returns, if the budget
// allows one more line now: with held_back=N after lines held back, and,
// for the window's last line, a second line saying that more lines about
// what are held back. args is called only for a line logged: a stack,
// say, is not taken for one held back.
func (b *LogBudget) Log(log *slog.Logger, level slog.Level, what, msg string, args func() []any) {
	ok, held, last := b.Take(time.Now())
	if !ok {
		return
	}
	attrs := args()
	if held > 0 {
		attrs = append(attrs, "held_back", held)
	}
	log.Log(context.Background(), level, msg, attrs...)
	if last {
		log.Log(context.Background(), level, "more "+what+" are held back until a minute has passed; the next one says how many (held_back)", "per_minute", LogBurst)
	}
}

// warnSent logs msg, about a sent message of pluginName's, within the
// budget of the lane whose handler ctx ctx is (always, outside a lane).
func warnSent(ctx context.Context, log *slog.Logger, pluginName, msg string, args ...any) {
	l := laneOf(ctx)
	if l == nil {
		log.Warn(msg, args...)
		return
	}
	l.sentWarnings.Log(log, slog.LevelWarn, "warnings about sent messages that plugin "+strconv.Quote(pluginName)+" could not run", msg,
		func() []any { return args })
}
