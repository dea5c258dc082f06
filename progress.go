package ember

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emberhq/ember/internal/driver"
	"golang.org/x/term"
)

// ConfShowProgress switches the console progress bar (Spark:
// spark.ui.showConsoleProgress): "false" (or any value strconv.ParseBool
// reads as false) turns it off. Default "true"; the bar is drawn only when
// both stdout and stderr are terminals, on stderr.
const ConfShowProgress = "ember.ui.showConsoleProgress"

// progressInterval is how often the bar is redrawn, and how long a job must
// run before it appears (short jobs draw nothing).
const progressInterval = 200 * time.Millisecond

// showProgress draws a one-line progress bar for a running job when
// enabled, and returns the function that stops and erases it.
func (d *Driver) showProgress(task string, p *driver.Progress) (stop func()) {
	if show, err := strconv.ParseBool(d.cfg.Conf[ConfShowProgress]); (err == nil && !show) || !isTerminal(os.Stdout) || !isTerminal(os.Stderr) {
		return func() {}
	}
	return drawProgress(os.Stderr, task, p, progressInterval)
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// drawProgress redraws the bar on w every interval until stop is called.
func drawProgress(w io.Writer, task string, p *driver.Progress, interval time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		drawn := false
		for {
			select {
			case <-done:
				if drawn {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
				n, running, total := p.Counts()
				fmt.Fprint(w, "\r"+progressLine(task, n, running, total, 40))
				drawn = true
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// progressLine renders "[task: ====>    ] 120 done, 8 running, 1000 total".
func progressLine(task string, done, running, total, width int) string {
	filled, active := 0, 0
	if total > 0 {
		filled = done * width / total
		active = min((done+running)*width/total-filled, width-filled)
	}
	bar := strings.Repeat("=", filled) + strings.Repeat(">", max(active, 0))
	return fmt.Sprintf("[%s: %-*s] %d done, %d running, %d total", task, width, bar, done, running, total)
}
