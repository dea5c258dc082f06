package ember

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"
)

// ConfShowProgress switches the console progress bar (Spark:
// spark.ui.showConsoleProgress): "false" (or any value strconv.ParseBool
// reads as false) turns it off. Default "true"; the bar is drawn only when
// both stdout and stderr are terminals, on stderr. Jobs running at once
// share its line. What is logged through Config.Logger (Ember's lines, and
// plugins' through their context's Logger) erases the bar first, so that
// it starts a line of its own; what else writes to the terminal (the
// program's own log calls, a local-cluster's executor processes) may
// still continue the bar's line.
const ConfShowProgress = "ember.ui.showConsoleProgress"

// progressInterval is how often the bar is redrawn, and how long a job must
// run before it appears (short jobs draw nothing).
const progressInterval = 200 * time.Millisecond

// progressWidth is the width of the bar of one job; jobs running at once
// share it.
const progressWidth = 40

// showProgress adds a running job to the driver's progress bar when
// enabled, and returns the function that takes it off.
func (d *Driver) showProgress(j *runningJob) (stop func()) {
	if d.progress == nil {
		return func() {}
	}
	return d.progress.add(j)
}

// progressShown reports whether a driver with conf draws its progress bar:
// unless ConfShowProgress turns it off, when both stdout and stderr are
// terminals.
func progressShown(conf map[string]string) bool {
	show, err := strconv.ParseBool(conf[ConfShowProgress])
	return (err != nil || show) && isTerminal(os.Stdout) && isTerminal(os.Stderr)
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// progressBar draws the running jobs on one line of w, every interval, as
// Spark's console progress bar does: each job once it has run for an
// interval. The line is erased when the last job ends. It is safe for
// concurrent use; the zero value draws on os.Stderr every
// progressInterval.
type progressBar struct {
	w        io.Writer
	interval time.Duration
	// cols is the terminal's width, which the line is cut to fit: a
	// longer line wraps, and each redraw ("\r", erase to the end of the
	// row) then leaves a row behind. 0: os.Stderr's width, or 80.
	cols int

	mu   sync.Mutex
	jobs []*runningJob // in start order
	// done ends the drawing goroutine, which closes finished; nil while
	// no job runs.
	done, finished chan struct{}
	// drawn: the line shows the bar; a log line written now would
	// continue it (see barHandler).
	drawn bool
}

// add puts a job on the bar and returns the function that takes it off:
// the next redraw leaves the job out, and when it was the last, the
// function returns once the line is erased and the drawing stopped.
func (b *progressBar) add(j *runningJob) (remove func()) {
	b.mu.Lock()
	b.jobs = append(b.jobs, j)
	if b.done == nil {
		if b.w == nil {
			b.w = os.Stderr
		}
		if b.interval <= 0 {
			b.interval = progressInterval
		}
		if b.cols <= 0 {
			b.cols = 80
			if w, _, err := term.GetSize(int(os.Stderr.Fd())); err == nil && w > 0 {
				b.cols = w
			}
		}
		b.done, b.finished = make(chan struct{}), make(chan struct{})
		go b.draw(b.done, b.finished)
	}
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		b.jobs = slices.DeleteFunc(b.jobs, func(x *runningJob) bool { return x == j })
		var done, finished chan struct{}
		if len(b.jobs) == 0 {
			done, finished = b.done, b.finished
			b.done, b.finished = nil, nil
		}
		b.mu.Unlock()
		if done != nil {
			close(done)
			<-finished
		}
	}
}

// draw redraws the line every interval until done is closed, then erases
// it.
func (b *progressBar) draw(done, finished chan struct{}) {
	defer close(finished)
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			b.mu.Lock()
			b.eraseLocked()
			b.mu.Unlock()
			return
		case now := <-t.C:
			b.mu.Lock()
			if line := b.lineLocked(now); line != "" || b.drawn {
				fmt.Fprint(b.w, "\r"+line+"\033[K")
				b.drawn = line != ""
			}
			b.mu.Unlock()
		}
	}
}

// eraseLocked erases the line if it shows the bar. b.mu is held.
func (b *progressBar) eraseLocked() {
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
		b.drawn = false
	}
}

// barHandler is a slog.Handler that erases the progress bar before each
// record its handler writes, so that a log line starts a line of its own
// instead of continuing the bar's; the bar is drawn again at its next
// tick. It covers what is logged through the driver's logger (Ember's
// lines, and plugins' through their context's Logger); other writers to
// the terminal (a program's own log package, local-cluster executor
// processes) are not.
type barHandler struct {
	h   slog.Handler
	bar *progressBar
}

func (h barHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h barHandler) Handle(ctx context.Context, r slog.Record) error {
	h.bar.mu.Lock()
	defer h.bar.mu.Unlock()
	h.bar.eraseLocked()
	return h.h.Handle(ctx, r)
}

func (h barHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return barHandler{h: h.h.WithAttrs(attrs), bar: h.bar}
}

func (h barHandler) WithGroup(name string) slog.Handler {
	return barHandler{h: h.h.WithGroup(name), bar: h.bar}
}

// lineLocked renders the jobs that have run for an interval by now: one
// in full, several side by side in short, cut to the terminal's width.
// b.mu is held.
func (b *progressBar) lineLocked(now time.Time) string {
	var shown []*runningJob
	for _, j := range b.jobs {
		if now.Sub(j.since) >= b.interval {
			shown = append(shown, j)
		}
	}
	if len(shown) == 1 {
		n, running, total := shown[0].p.Counts()
		return fitLine(progressLine(shown[0].task, n, running, total, progressWidth), b.cols)
	}
	parts := make([]string, len(shown))
	for i, j := range shown {
		n, running, total := j.p.Counts()
		parts[i] = shortProgress(jobLabel(j.task, j.p.Job()), n, running, total, max(progressWidth/len(shown), 10))
	}
	return fitLine(strings.Join(parts, " "), b.cols)
}

// fitLine cuts line to fewer than cols runes (the last column left free,
// where some terminals wrap), ending it with "…" when cut.
func fitLine(line string, cols int) string {
	if cols < 2 || utf8.RuneCountInString(line) < cols {
		return line
	}
	r := []rune(line)
	return string(r[:cols-2]) + "…"
}

// progressLine renders "[task: ====>    ] 120 done, 8 running, 1000 total".
func progressLine(task string, done, running, total, width int) string {
	return fmt.Sprintf("[%s: %-*s] %d done, %d running, %d total", task, width, bar(done, running, total, width), done, running, total)
}

// jobLabel names a job on a line of several: its task and, once it has
// one, its ID, which tells two jobs of one task apart ("work #3").
func jobLabel(task string, job int) string {
	if job <= 0 {
		return task
	}
	return task + " #" + strconv.Itoa(job)
}

// shortProgress renders "[task #3: ==>  120+8/1000]", Spark's form for
// stages running at once (label is the task and its job).
func shortProgress(label string, done, running, total, width int) string {
	return fmt.Sprintf("[%s: %-*s %d+%d/%d]", label, width, bar(done, running, total, width), done, running, total)
}

// bar renders done as '=' and running as '>' in width characters.
func bar(done, running, total, width int) string {
	filled, active := 0, 0
	if total > 0 {
		filled = done * width / total
		active = min((done+running)*width/total-filled, width-filled)
	}
	return strings.Repeat("=", filled) + strings.Repeat(">", max(active, 0))
}
