package ember_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
)

// A handshake cut short because the driver is shutting down is no
// executor's failure: it is not logged as a warning. A local-cluster
// start that failed (one executor's Init) logged "executor handshake
// failed ... context canceled" for the others still connecting, which
// said nothing to do.
func TestHandshakeEndedByShutdownIsNotAWarning(t *testing.T) {
	var logs logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local[1]", Plugins: []plugin.Plugin{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h := dialHostile(t, c.Driver.Addr(), "", false)
	if _, err := h.stream.Recv(); err != nil { // the CHALLENGE: the driver is in the handshake
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); strings.Contains(l, "level=WARN msg=\"executor handshake failed") {
		t.Errorf("driver log: got %q, want no warning for a handshake the shutdown ended", l)
	}
}
