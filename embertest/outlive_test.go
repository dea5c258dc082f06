package embertest

import (
	"log/slog"
	"testing"
	"time"

	"github.com/emberhq/ember"
)

// A local-cluster executor process outlives Start's wait for start-up: in
// the executor, Start becomes the executor and never sees the cluster
// start, so it must not give up on it. It used to fail the test there
// after startWait, and the test binary, exiting, took the executor down:
// every test longer than DefaultTimeout lost its executors.
func TestLocalClusterExecutorOutlivesStartWait(t *testing.T) {
	// In the executor process too: it runs this test up to Start.
	startWaitMin, startWaitMargin = 500*time.Millisecond, 500*time.Millisecond
	t.Cleanup(func() { startWaitMin, startWaitMargin = DefaultTimeout, 10*time.Second })
	c := Start(t, ember.Config{
		Master: "local-cluster[1]",
		Conf:   map[string]string{ember.ConfExecutorMaxRetries: "0"},
		Logger: slog.New(slog.DiscardHandler),
	})
	want := c.Driver.Executors()[0].ID
	// Watch past the executor's wait (counted from a little before the
	// driver's): the executor is there all along.
	start := time.Now()
	for time.Since(start) < startWait(ember.Config{})+time.Second {
		if ex := c.Driver.Executors(); len(ex) != 1 || ex[0].ID != want {
			t.Fatalf("executors after %v: got %v, want executor %s still there", time.Since(start), ex, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
