package ember

import (
	"strings"
	"testing"
	"time"

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

func TestDrawProgressErasesItsLine(t *testing.T) {
	var w logtest.Buffer
	stop := drawProgress(&w, "sq", driver.NewProgress(0), time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(w.String(), "total") {
		if time.Now().After(deadline) {
			t.Fatal("no progress line drawn")
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if got := w.String(); !strings.HasSuffix(got, "\r\033[K") {
		t.Errorf("after stop the output ends %q, want the line erased", got[max(0, len(got)-20):])
	}
}
