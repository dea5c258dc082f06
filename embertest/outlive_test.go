package embertest

import (
	"log/slog"
	"os"
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
	// The wait is shortened in the executor process only, which runs
	// this test up to Start. The driver's Start keeps its own: shortened
	// there too, it gave up on an executor process that took more than
	// 500ms to start and join, as one may on a loaded machine ("cluster
	// not started within 500ms").
	const executorWait = 500 * time.Millisecond
	if _, executor := os.LookupEnv(ember.EnvDriver); executor {
		startWaitMin, startWaitMargin, defaultStartTimeout = executorWait, executorWait, 0
	}
	c := Start(t, ember.Config{
		Master: "local-cluster[1]",
		Conf:   map[string]string{ember.ConfExecutorMaxRetries: "0"},
		Logger: slog.New(slog.DiscardHandler),
	})
	want := c.Driver.Executors()[0].ID
	// Watch past the executor's wait (counted from a little before the
	// driver's): the executor is there all along.
	start := time.Now()
	for time.Since(start) < executorWait+time.Second {
		if ex := c.Driver.Executors(); len(ex) != 1 || ex[0].ID != want {
			t.Fatalf("executors after %v: got %v, want executor %s still there", time.Since(start), ex, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
