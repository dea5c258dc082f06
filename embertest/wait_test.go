package embertest

import (
	"math"
	"testing"
	"time"

	"github.com/emberhq/ember"
)

// Start waits DefaultTimeout, or longer for a StartTimeout that lets Run's
// start-up (the driver plugins' Init, then the executors') take longer: it
// used to give up after DefaultTimeout whatever Run allowed.
func TestStartWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		start time.Duration
		want  time.Duration
	}{
		{0, DefaultTimeout}, // Run's default
		{10 * time.Second, DefaultTimeout},
		{2 * time.Minute, 4*time.Minute + 10*time.Second},
		{math.MaxInt64, math.MaxInt64}, // no limit: it used to overflow to DefaultTimeout
	}
	for _, tt := range tests {
		if got := startWait(ember.Config{StartTimeout: tt.start}); got != tt.want {
			t.Errorf("startWait(StartTimeout %v) = %v, want %v", tt.start, got, tt.want)
		}
	}
}
