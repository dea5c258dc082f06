package ember

import (
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emberhq/ember/internal/driver"
	"github.com/emberhq/ember/internal/logtest"
)

func TestProgressLine(t *testing.T) {
	tests := []struct {
		done, running, total int
		want                 string
	}{
		{0, 0, 10, "[sq: " + strings.Repeat(" ", 10) + "] 0 done, 0 running, 10 total"},
		{5, 2, 10, "[sq: =====>>   ] 5 done, 2 running, 10 total"},
		{10, 0, 10, "[sq: ==========] 10 done, 0 running, 10 total"},
		{0, 0, 0, "[sq: " + strings.Repeat(" ", 10) + "] 0 done, 0 running, 0 total"},
	}
	for _, tt := range tests {
		if got := progressLine("sq", tt.done, tt.running, tt.total, 10); got != tt.want {
			t.Errorf("progressLine(%d, %d, %d):\n got %q\nwant %q", tt.done, tt.running, tt.total, got, tt.want)
		}
	}
}

func TestShortProgress(t *testing.T) {
	for _, tt := range []struct {
		job  int
		want string
	}{{0, "sq"}, {3, "sq #3"}} {
		if got := jobLabel("sq", tt.job); got != tt.want {
			t.Errorf("jobLabel(sq, %d) = %q, want %q", tt.job, got, tt.want)
		}
	}
	if got, want := shortProgress("sq", 5, 2, 10, 10), "[sq: =====>>    5+2/10]"; got != want {
		t.Errorf("shortProgress:\n got %q\nwant %q", got, want)
	}
}

// The bar draws each job once it has run for an interval, jobs running at
// once side by side on its one line (two concurrent Maps used to redraw
// one line each, over each other, and the first to end erased the
// other's); the line is erased when the last job ends.
func TestProgressBarSharesItsLine(t *testing.T) {
	var w logtest.Buffer
	b := &progressBar{w: &w, interval: time.Millisecond, cols: 200}
	// lastLine is what the terminal shows: the text after the last \r,
	// up to the erase at its end.
	lastLine := func() string {
		s := w.String()
		s = s[strings.LastIndex(s, "\r")+1:]
		return strings.TrimSuffix(s, "\033[K")
	}
	waitLine := func(what string, ok func(line string) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(lastLine()) {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: the line is %q", what, lastLine())
			}
			time.Sleep(time.Millisecond)
		}
	}
	p1, p2 := driver.NewProgress(10), driver.NewProgress(20)
	stop1 := b.add(&runningJob{task: "one", p: p1, since: time.Now()})
	waitLine("job one alone, in full", func(l string) bool { return l == progressLine("one", 0, 0, 10, progressWidth) })
	stop2 := b.add(&runningJob{task: "two", p: p2, since: time.Now()})
	waitLine("both jobs, side by side", func(l string) bool {
		return l == shortProgress("one", 0, 0, 10, 20)+" "+shortProgress("two", 0, 0, 20, 20)
	})
	stop1()
	waitLine("job two alone, in full", func(l string) bool { return l == progressLine("two", 0, 0, 20, progressWidth) })
	stop2()
	if got := w.String(); !strings.HasSuffix(got, "\r\033[K") {
		t.Errorf("after the last job ended the output ends %q, want the line erased", got[max(0, len(got)-20):])
	}
	// The bar starts again for the next job.
	stop3 := b.add(&runningJob{task: "three", p: p1, since: time.Now()})
	waitLine("job three", func(l string) bool { return strings.HasPrefix(l, "[three: ") })
	stop3()
}

// A line logged through the driver's logger while the bar is drawn starts
// a line of its own: the bar is erased first, and drawn again at its next
// tick. It used to continue the bar's line ("[job: ==>  ] 3 done, ...time=
// ... level=WARN ...").
func TestLogLinesDoNotContinueTheBar(t *testing.T) {
	var w logtest.Buffer
	b := &progressBar{w: &w, interval: time.Millisecond, cols: 200}
	log := slog.New(barHandler{h: slog.NewTextHandler(&w, nil), bar: b}).With("executor", "1")
	stop := b.add(&runningJob{task: "job", p: driver.NewProgress(10), since: time.Now()})
	defer stop()
	waitOutput := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(w.String()) {
			if time.Now().After(deadline) {
				s := w.String()
				t.Fatalf("waiting for %s: the output ends %q", what, s[max(0, len(s)-300):])
			}
			time.Sleep(time.Millisecond)
		}
	}
	bar := progressLine("job", 0, 0, 10, progressWidth) + "\033[K"
	waitOutput("the bar", func(s string) bool { return strings.HasSuffix(s, bar) })
	log.Warn("executor lost")
	s := w.String()
	i := strings.Index(s, "time=")
	if i < 0 || !strings.HasSuffix(s[:i], bar+"\r\033[K") {
		t.Errorf("the output up to the log line: got %q, want the bar erased (\\r, erase to the end) before it", s[max(0, i-300):max(i, 0)])
	}
	if !strings.Contains(s, `msg="executor lost" executor=1`+"\n") {
		t.Errorf("the log line, with the logger's attributes: got %q", s)
	}
	waitOutput("the bar drawn again", func(s string) bool { return strings.Contains(s, "\n\r"+bar) })
}

// The line fits the terminal: one longer wraps, and every redraw ("\r",
// then erase to the end of the row) leaves a row behind, scrolling the
// terminal five times a second. Four jobs with plain task names made a
// line of about 150 columns.
func TestProgressLineFitsTheTerminal(t *testing.T) {
	b := &progressBar{interval: time.Millisecond, cols: 80}
	for _, name := range []string{"wordcount.map", "wordcount.reduce", "pagerank.iterate", "pagerank.normalize"} {
		b.jobs = append(b.jobs, &runningJob{task: name, p: driver.NewProgress(10000)})
	}
	line := b.lineLocked(time.Now().Add(time.Hour))
	if n := utf8.RuneCountInString(line); n >= b.cols {
		t.Errorf("a line of 4 jobs is %d columns, want fewer than %d: %q", n, b.cols, line)
	}
	if !strings.HasPrefix(line, "[wordcount.map: ") {
		t.Errorf("line %q: want it to begin with the first job", line)
	}
	short := progressLine("sq", 1, 2, 10, progressWidth)
	if got := fitLine(short, 80); got != short {
		t.Errorf("fitLine of a line that fits: got %q, want it unchanged", got)
	}
}
