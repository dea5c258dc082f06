package executor

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
)

// A Send waiting for its plugin's window when the executor is released
// cannot go once STOPPED has: the driver takes nothing after it. It
// fails, Unavailable (ErrClosed), when the window opens after STOPPED.
// It used to return nil, and its SEND followed STOPPED.
func TestSendWaitingForItsWindowAtStopFails(t *testing.T) {
	p, initialised := contextPlugin("p")
	d := newFakeDriver(t, []string{"p"}, 1) // a one-byte window: one SEND at a time
	reg := prometheus.NewRegistry()
	runErr := d.run(p, reg)
	pc := <-initialised
	d.waitFor(wire.Kind_KIND_READY, 0)
	if err := pc.Send(context.Background(), note{"first"}); err != nil { // overdraws the window
		t.Fatalf("first Send: %v", err)
	}
	sent := make(chan error, 1)
	go func() { sent <- pc.Send(context.Background(), note{"second"}) }()
	waitUntil(t, "the second Send to wait for its window", func() bool {
		return limitHits(t, reg, "send_window") > 0
	})

	d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
	stopped := d.waitFor(wire.Kind_KIND_STOPPED, 0)
	d.grant(0) // the window opens after STOPPED

	err := <-sent
	if plugin.CodeOf(err) != plugin.CodeUnavailable || !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("Send waiting at STOPPED: got %v, want Unavailable (ErrClosed)", err)
	}
	if err == nil {
		d.waitFor(wire.Kind_KIND_SEND, stopped) // on its way: checked below
	}
	d.release()
	if err := <-runErr; err != nil {
		t.Errorf("Run: got %v, want nil (released)", err)
	}
	if i := slices.Index(d.kinds()[stopped+1:], wire.Kind_KIND_SEND); i >= 0 {
		t.Errorf("frames from the executor: %v; a SEND follows STOPPED", d.kinds())
	}
}

// limitHits returns the executor's ember_limit_hits_total for limit,
// from reg.
func limitHits(t *testing.T, reg *prometheus.Registry, limit string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Error(err)
	}
	var n float64
	for _, f := range fams {
		if f.GetName() != "ember_limit_hits_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// waitUntil polls cond until it holds, failing the test after 20s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 20s waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// An executor started by hand (Announce) says at Info that it joined,
// with the ID the driver gave it, and that it was released: its log was
// silent on success and could not be matched with the driver's. One
// the driver started says nothing of either: the driver does.
func TestAnnounceJoinAndRelease(t *testing.T) {
	for _, announce := range []bool{true, false} {
		var logs logtest.Buffer
		d := newFakeDriver(t, []string{"p"}, 0)
		runErr := d.runWith(testPlugin{name: "p", ep: &funcExecutor{}}, func(c *Config) {
			c.Announce = announce
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		d.waitFor(wire.Kind_KIND_READY, 0)
		d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
		d.waitFor(wire.Kind_KIND_STOPPED, 0)
		d.release()
		if err := <-runErr; err != nil {
			t.Fatalf("Run: got %v, want nil (released)", err)
		}
		out := logs.String()
		for _, want := range []string{`level=INFO msg="executor ready: joined the driver" executor=1 driver=` + d.addr, `level=INFO msg="executor released by the driver" executor=1`} {
			if got := strings.Contains(out, want); got != announce {
				t.Errorf("Announce %v: the log has %q: %v, want %v; the log:\n%s", announce, want, got, announce, out)
			}
		}
	}
}
