package driver

import (
	"testing"

	"github.com/emberhq/ember/internal/wire"
)

// A launcher may report a process's end (Ended) before the driver's
// reader has handled the last frames that process wrote: a READY or a
// LEAVING still in the socket when it crashed. Handled late, they must
// not bring back the record of a PID already reported (it would be kept
// for ever), nor hand it to the next process that gets the PID: a stale
// Leaving made a replacement's crash with status 0 pass for a stop, and
// a stale ReadyAt its failure to start for a crash after start-up.
func TestFramesAfterEndedLeaveNoRecord(t *testing.T) {
	const pid = 4242
	d := servedDriver(t, func(cfg *Config) { cfg.Local = true })
	t.Cleanup(func() { d.Close() })
	stream := handshake(t, d, func(h *wire.Hello) { h.Pid = pid })
	if b, err := stream.Recv(); err != nil || b.Frames[0].Welcome == nil || b.Frames[0].Welcome.Code != 0 {
		t.Fatalf("WELCOME: got %v, %v", b, err)
	}

	// The launcher reports the process's end first...
	if got := d.Ended(pid, nil); got.ID != "1" || got.Ready() || got.Leaving {
		t.Fatalf("Ended(%d): got %+v, want executor 1, neither ready nor leaving", pid, got)
	}
	// ...then the driver's reader handles what it wrote last.
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{
		{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}},
		{Kind: wire.Kind_KIND_LEAVING},
	}}); err != nil {
		t.Fatal(err)
	}
	// READY, handled after its process's end, does not make it ready
	// (TestProcessEndedBeforeItsReadyIsNotMadeReady): LEAVING handled
	// marks it stopping on its own.
	waitUntil(t, "READY and LEAVING handled", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		es := d.execs["1"]
		return es != nil && es.stoppingOwn
	})

	d.mu.Lock()
	n := len(d.procs)
	d.mu.Unlock()
	if n != 0 {
		t.Errorf("records kept after the process's end was reported: got %d, want 0", n)
	}
	// A later process given the same PID, which ends before it connects.
	if got := d.Ended(pid, nil); got != (Process{}) {
		t.Errorf("Ended(%d) for the next process with that PID: got ready %v, leaving %v, want nothing",
			pid, got.Ready(), got.Leaving)
	}
}
