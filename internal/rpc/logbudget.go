package rpc

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logBudget bounds the warnings a lane logs about the sent messages it
// could not run: those its plugin's Receive failed, and those it could not
// decode. Their senders are not told, so each used to be a Warn line, and
// a Receive that fails every message (a default case returning an error)
// logged a line per message, at the rate they arrived. It allows
// logBurst lines per logWindow; the first line of a later window says how
// many were held back. Metrics, where the side keeps them, count every one.
type logBudget struct {
	mu    sync.Mutex // protects the following fields
	start time.Time  // of the current window
	lines int        // logged in the current window
	held  int        // held back since the last line logged
}

// The budget of a lane's warnings about sent messages.
const (
	logBurst  = 10
	logWindow = time.Minute
)

// take reports whether one more line may be logged at now, how many were
// held back before it, and whether it is the window's last.
func (b *logBudget) take(now time.Time) (ok bool, held int, last bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lines == 0 || now.Sub(b.start) >= logWindow {
		b.start, b.lines = now, 0
	}
	if b.lines >= logBurst {
		b.held++
		return false, 0, false
	}
	b.lines++
	held, b.held = b.held, 0
	return true, held, b.lines == logBurst
}

// warnSent logs msg, about a sent message of pluginName's, within the
// budget of the lane whose handler ctx ctx is (always, outside a lane).
func warnSent(ctx context.Context, log *slog.Logger, pluginName, msg string, args ...any) {
	l := laneOf(ctx)
	if l == nil {
		log.Warn(msg, args...)
		return
	}
	ok, held, last := l.sentWarnings.take(time.Now())
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "held_back", held)
	}
	log.Warn(msg, args...)
	if last {
		log.Warn("more warnings about sent messages this plugin could not run are held back until a minute has passed; the next one says how many (held_back)",
			"plugin", pluginName, "per_minute", logBurst)
	}
}
