package ember

import (
	"testing"

	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/launch"
	"github.com/emberhq/ember/internal/rpc"
)

// The public names are spelled out for the docs; they must stay equal to
// the ones the machinery reads.
func TestPublicConstantsMatchTheMachinery(t *testing.T) {
	for _, c := range []struct{ public, internal string }{
		{EnvDriver, launch.EnvDriver},
		{EnvSecret, launch.EnvSecret},
		{EnvSecretFile, "EMBER_SECRET_FILE"},
		{ConfExecutorSlots, executor.ConfSlots},
		{ConfMetricsInterval, executor.ConfMetricsInterval},
		{ConfStallWarning, rpc.ConfStallWarning},
		{ConfResourceDiscoveryScript("gpu"), "ember.executor.resource.gpu.discoveryScript"},
	} {
		if c.public != c.internal {
			t.Errorf("got %q, want %q", c.public, c.internal)
		}
	}
}
