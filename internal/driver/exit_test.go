package driver

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// The reason a ready local-cluster executor's loss is reported with
// carries how its process ended, when the launcher reports that (Ended)
// before, or while, the driver handles the broken stream, and Ended then
// tells the launcher so (ExitTold), which does not log it again. The
// driver waits for it only while the process exits (Config.Exiting),
// whatever the connection ended with, and not while it shuts down.
func TestLossReasonCarriesTheProcessExit(t *testing.T) {
	old := exitWait
	t.Cleanup(func() { exitWait = old })
	exitWait = time.Hour // a row that waits ends by Ended, or not at all
	broken := plugin.Errorf(plugin.CodeUnavailable, "stream receive: peer disconnected: %w", plugin.ErrClosed)
	silent := plugin.Errorf(plugin.CodeUnavailable, "peer silent for 10s (heartbeat timeout 10s)")
	killed := errors.New("executor process (pid 42): signal: killed")
	tests := []struct {
		name     string
		notReady bool
		stopping bool
		running  bool // its process has not begun to exit (Config.Exiting)
		reason   error
		exit     error
		when     string // Ended: "before" the stream's end is handled, "during" the wait, "after" it
		want     string // the reason's text after the stream's own
		wantTold bool   // Ended's ExitTold
	}{
		{name: "killed, reported during the wait", reason: broken, exit: killed, when: "during", want: "; executor process (pid 42): signal: killed", wantTold: true},
		{name: "killed, reported before", reason: broken, exit: killed, when: "before", want: "; executor process (pid 42): signal: killed", wantTold: true},
		{name: "exited 0, reported during the wait", reason: broken, when: "during", want: "; executor process (pid 42): exit status 0", wantTold: true},
		// Not waited for: a process that runs on (lost to a heartbeat
		// timeout, the driver's own reason), or the driver shutting down;
		// taken when reported before.
		{name: "the driver's own reason", running: true, reason: silent, exit: killed, when: "after"},
		{name: "the driver's own reason, its process exiting", reason: silent, exit: killed, when: "during", want: "; executor process (pid 42): signal: killed", wantTold: true},
		{name: "the driver's own reason, reported before", reason: silent, exit: killed, when: "before", want: "; executor process (pid 42): signal: killed", wantTold: true},
		{name: "the driver shutting down", stopping: true, reason: broken, exit: killed, when: "after"},
		{name: "its process not exiting", running: true, reason: broken, exit: killed, when: "after"},
		{name: "the driver shutting down, reported before", stopping: true, reason: broken, exit: killed, when: "before", want: "; executor process (pid 42): signal: killed", wantTold: true},
		// Not ready: its loss is not reported to listeners, and the
		// launcher says how it ended, as before.
		{name: "not ready", notReady: true, reason: broken, exit: killed, when: "after"},
		{name: "not ready, reported before", notReady: true, reason: broken, exit: killed, when: "before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Local: true,
				Exiting: func(pid int) bool { return pid == 42 && !tt.running }})
			if err != nil {
				t.Fatal(err)
			}
			es := listedExecutor(d)
			d.mu.Lock()
			es.ready = !tt.notReady
			d.stopping = tt.stopping
			d.mu.Unlock()

			var ended Process
			if tt.when == "before" {
				ended = d.Ended(42, tt.exit)
			}
			got := make(chan error, 1)
			go func() { got <- d.withExit(es, tt.reason) }()
			if tt.when == "during" {
				waitAwaited(t, d, es)
				ended = d.Ended(42, tt.exit)
			}
			reason := <-got
			if tt.when == "after" {
				ended = d.Ended(42, tt.exit)
			}

			if want := tt.reason.Error() + tt.want; reason.Error() != want {
				t.Errorf("reason: got %q, want %q", reason, want)
			}
			if errors.Is(reason, plugin.ErrClosed) != errors.Is(tt.reason, plugin.ErrClosed) || plugin.CodeOf(reason) != plugin.CodeUnavailable {
				t.Errorf("reason %v: got ErrClosed %v, code %v; want ErrClosed %v, CodeUnavailable", reason,
					errors.Is(reason, plugin.ErrClosed), plugin.CodeOf(reason), errors.Is(tt.reason, plugin.ErrClosed))
			}
			if tt.exit != nil && tt.want != "" && !errors.Is(reason, tt.exit) {
				t.Errorf("reason %v: does not wrap the exit %v", reason, tt.exit)
			}
			if ended.ExitTold != tt.wantTold {
				t.Errorf("Ended: got ExitTold %v, want %v", ended.ExitTold, tt.wantTold)
			}
		})
	}
}

// A broken stream whose process, though exiting, is not reported ended
// within exitWait (a launcher held up) keeps its reason, and the
// launcher's later report is not taken as told.
func TestLossReasonWithoutTheExitInTime(t *testing.T) {
	old := exitWait
	t.Cleanup(func() { exitWait = old })
	exitWait = time.Millisecond
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Local: true, Exiting: func(int) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	es := listedExecutor(d)
	d.mu.Lock()
	es.ready = true
	d.mu.Unlock()
	broken := plugin.Errorf(plugin.CodeUnavailable, "stream receive: peer disconnected: %w", plugin.ErrClosed)
	if got := d.withExit(es, broken); got != broken {
		t.Errorf("reason: got %v, want %v as it was", got, broken)
	}
	if p := d.Ended(42, errors.New("signal: killed")); p.ExitTold {
		t.Error("Ended after the wait gave up: got ExitTold, want the launcher to say how it ended")
	}
}

// waitAwaited waits until es's HandleClose waits for its process's end.
func waitAwaited(t *testing.T, d *Driver, es *execState) {
	t.Helper()
	waitUntil(t, "withExit to wait for the process's end", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return es.proc.awaited
	})
}

// A ready executor that stopped on its own (LEAVING) and ended its
// stream cleanly, whose process's end the launcher reported before the
// driver handled that end (an exit status 66 from the race detector,
// say): Ended told the launcher that the driver would say how it ended
// (ExitTold), and no loss's reason carries it, so the driver says it.
// It used to be logged nowhere.
func TestExitToldOfAnExecutorThatLeftIsLogged(t *testing.T) {
	var logs logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Local: true, Exiting: func(int) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	es := listedExecutor(d)
	d.mu.Lock()
	es.ready = true
	es.stoppingOwn = true
	d.mu.Unlock()

	p := d.Ended(42, errors.New("executor process (pid 42): exit status 66"))
	d.HandleClose(es.conn, plugin.Errorf(plugin.CodeUnavailable, "%w", rpc.ErrPeerClosed))
	s := logs.String()
	if !strings.Contains(s, "executor left") {
		t.Fatalf("logs: got %q, want the executor to have left", s)
	}
	if !p.ExitTold {
		t.Fatal("Ended: got ExitTold false for a ready executor still listed, want true")
	}
	if !strings.Contains(s, `msg="executor ended" executor=1 err="executor process (pid 42): exit status 66"`) {
		t.Errorf("logs: got %q; Ended said ExitTold, so the launcher does not log the exit, and the driver must", s)
	}
}

// An executor whose process died just after sending READY, reported ended
// (Ended) before the driver handled that READY: Ended, seeing it not
// ready, told the launcher to say how it ended (not ExitTold), so it
// must not become ready, whose loss's reason would say it again. It used
// to: the exit was logged twice, in the launcher's "executor ended" and
// in the "executor lost" of an executor ready after its process's end.
func TestProcessEndedBeforeItsReadyIsNotMadeReady(t *testing.T) {
	var logs logtest.Buffer
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Local: true, Exiting: func(int) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	es := listedExecutor(d)
	if p := d.Ended(42, errors.New("executor process (pid 42): signal: killed")); p.ExitTold {
		t.Fatal("Ended: got ExitTold for an executor not ready, want the launcher to say how it ended")
	}
	d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
	if got := d.Executors(); len(got) != 0 {
		t.Errorf("Executors after a READY handled once its process had ended: got %v, want none", got)
	}
	d.HandleClose(es.conn, plugin.Errorf(plugin.CodeUnavailable, "stream receive: peer disconnected: %w", plugin.ErrClosed))
	if s := logs.String(); strings.Contains(s, "signal: killed") || strings.Contains(s, "executor ready") {
		t.Errorf("logs: got %q; the launcher says how the process ended (not ExitTold), so the driver must not, nor make it ready", s)
	}
	d.sched.mu.Lock()
	n := len(d.sched.execs)
	d.sched.mu.Unlock()
	if n != 0 {
		t.Errorf("scheduler: got %d executors, want none", n)
	}
}
