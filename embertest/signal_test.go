//go:build unix

package embertest_test

import (
	"syscall"
	"testing"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
)

// A local-cluster executor process stops on its own on SIGTERM, as a
// program that follows the README does (its Run's ctx ends on it): the
// driver sees it leave, not lost, so a test can stop an executor the way
// an operator would. Before, the signal killed the test binary
// re-executed, and the driver lost the executor.
func TestSIGTERMStopsALocalClusterExecutorOnItsOwn(t *testing.T) {
	c, r := start(t, ember.Config{Master: "local-cluster[1]", Conf: map[string]string{ember.ConfExecutorMaxRetries: "0"}})
	pid := c.Driver.Executors()[0].PID
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "the executor's removal", func() bool { return r.removals() == 1 })
	r.mu.Lock()
	reason := r.removed[0]
	r.mu.Unlock()
	if reason != nil {
		t.Errorf("OnExecutorRemoved: got reason %v, want nil (it left on its own)", reason)
	}
}
