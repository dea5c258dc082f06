package executor

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// gatedTasks is a RunTask whose attempts, named by their input, record
// that they started and wait for the test to release them (or for their
// ctx to end).
type gatedTasks struct {
	mu      sync.Mutex
	started []string
	gates   map[string]chan struct{}
}

func (g *gatedTasks) run(ctx context.Context, _ plugin.TaskInfo, in []byte, _ Plugins) ([]byte, error) {
	g.mu.Lock()
	g.started = append(g.started, string(in))
	gate := g.gate(string(in))
	g.mu.Unlock()
	select {
	case <-gate:
		return in, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// gate returns the channel that releases input in. g.mu is held.
func (g *gatedTasks) gate(in string) chan struct{} {
	if g.gates == nil {
		g.gates = map[string]chan struct{}{}
	}
	if g.gates[in] == nil {
		g.gates[in] = make(chan struct{})
	}
	return g.gates[in]
}

func (g *gatedTasks) release(in string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate(in))
}

func (g *gatedTasks) startedSoFar() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.started)
}

// waitStarted polls until the attempts started are want.
func (g *gatedTasks) waitStarted(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Equal(g.startedSoFar(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("attempts started: got %q, want %q", g.startedSoFar(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// result waits for the TASK_RESULT of run.
func (d *fakeDriver) result(run uint64) *wire.Frame {
	d.t.Helper()
	for i := 0; ; i++ {
		i = d.waitFor(wire.Kind_KIND_TASK_RESULT, i)
		d.mu.Lock()
		f := d.frames[i]
		d.mu.Unlock()
		if f.Call == run {
			return f
		}
	}
}

func taskFrame(run uint64, in string) *wire.Frame {
	return &wire.Frame{Kind: wire.Kind_KIND_TASK, Call: run, Payload: []byte(in), Task: &wire.Task{JobId: "1", Name: "t"}}
}

// TASKs that come with every slot taken (the driver sends short tasks
// ahead) wait for a slot, in order of arrival: one canceled while it
// waits is reported at once and never runs, and those still waiting at
// shutdown are reported with ExecutorStopping, to run elsewhere. Each
// result says how long its attempt held the slot.
func TestTasksBeyondTheSlotsWaitForOne(t *testing.T) {
	g := &gatedTasks{}
	d := newFakeDriver(t, []string{"p"}, 0)
	runErr := d.runWith(testPlugin{name: "p", ep: &funcExecutor{}}, func(cfg *Config) {
		cfg.Slots = 1
		cfg.RunTask = g.run
	})
	d.waitFor(wire.Kind_KIND_READY, 0)

	d.send(taskFrame(1, "a"))
	d.send(taskFrame(2, "b"))
	d.send(taskFrame(3, "c"))
	d.send(&wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 3, Code: uint32(plugin.CodeCanceled), Error: "job over"})
	if r := d.result(3); plugin.Code(r.Code) != plugin.CodeCanceled || r.ExecutorStopping || r.SlotMicros != 0 {
		t.Errorf("the result of an attempt canceled while waiting: got code %v, stopping %v, slot %dµs; want CodeCanceled, not stopping, 0µs", plugin.Code(r.Code), r.ExecutorStopping, r.SlotMicros)
	}
	// TASK 2 was handled before the cancel of 3, which has been answered.
	g.waitStarted(t, "a")
	if got := g.startedSoFar(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("attempts started while the one slot is taken: got %q, want only \"a\"", got)
	}

	held := time.Now()               // "a" holds the slot from before this
	time.Sleep(2 * time.Millisecond) // a measurable hold, not a wait for an event
	releasedAfter := time.Since(held)
	g.release("a")
	r := d.result(1)
	if r.Code != 0 || string(r.Payload) != "a" {
		t.Errorf("attempt 1: got code %d, payload %q; want its output", r.Code, r.Payload)
	}
	if got, want := time.Duration(r.SlotMicros)*time.Microsecond, releasedAfter.Truncate(time.Microsecond); got < want {
		t.Errorf("attempt 1's result says it held its slot for %v, want at least %v", got, want)
	}
	g.waitStarted(t, "a", "b") // the waiting TASK 2 has the slot; 3 never runs

	d.send(taskFrame(4, "d")) // waits behind 2
	d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
	if r := d.result(4); !r.ExecutorStopping || plugin.Code(r.Code) != plugin.CodeUnavailable {
		t.Errorf("the result of an attempt waiting at shutdown: got code %v, stopping %v; want CodeUnavailable, stopping", plugin.Code(r.Code), r.ExecutorStopping)
	}
	if r := d.result(2); r.Code == 0 || !r.ExecutorStopping {
		t.Errorf("the result of the attempt cut short by shutdown: got code %v, stopping %v; want an error, stopping", plugin.Code(r.Code), r.ExecutorStopping)
	}
	<-d.stopped()
	if got := g.startedSoFar(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("attempts started: got %q, want \"a\" and \"b\" (3 was canceled, 4 came at shutdown)", got)
	}
	d.release()
	if err := <-runErr; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// results counts the TASK_RESULTs received so far, by run ID.
func (d *fakeDriver) results() map[uint64]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := map[uint64]int{}
	for _, f := range d.frames {
		if f.Kind == wire.Kind_KIND_TASK_RESULT {
			n[f.Call]++
		}
	}
	return n
}

// A TASK whose run ID is that of an attempt holding a slot, or waiting
// for one, is dropped: the driver never reuses one, and the attempt
// already here gets the one result. Taken, it replaced the first
// attempt's cancel or queued TASK, and the second of the two attempts to
// end called a nil cancel: the executor's process died (FuzzHandleFrames).
func TestTaskReusingARunIDIsDropped(t *testing.T) {
	tests := []struct {
		name  string
		slots int
		// send sends the TASKs, releasing g's attempts and waiting for
		// them as it goes; then the executor is released.
		send        func(t *testing.T, d *fakeDriver, g *gatedTasks)
		wantStarted []string
		wantResults map[uint64]int
	}{
		{
			name:  "of an attempt holding a slot",
			slots: 2,
			send: func(t *testing.T, d *fakeDriver, g *gatedTasks) {
				t.Helper()
				d.send(taskFrame(1, "a"))
				g.waitStarted(t, "a")
				d.send(taskFrame(1, "b")) // a free slot, and the run ID of "a"
				d.send(&wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 1})
				if r := d.result(1); plugin.Code(r.Code) != plugin.CodeCanceled {
					t.Errorf("run 1's result: got code %v, want CodeCanceled (its TASK_CANCEL reached \"a\")", plugin.Code(r.Code))
				}
			},
			wantStarted: []string{"a"},
			wantResults: map[uint64]int{1: 1},
		},
		{
			name:  "of an attempt waiting for a slot",
			slots: 1,
			send: func(t *testing.T, d *fakeDriver, g *gatedTasks) {
				t.Helper()
				d.send(taskFrame(1, "a"))
				d.send(taskFrame(2, "b"))
				d.send(taskFrame(2, "c")) // waits behind "b", with its run ID
				d.send(taskFrame(3, "d")) // handled after "c"
				g.waitStarted(t, "a")
				g.release("a")
				g.waitStarted(t, "a", "b")
				g.release("b")
				g.waitStarted(t, "a", "b", "d")
				g.release("d")
				d.result(3)
			},
			wantStarted: []string{"a", "b", "d"},
			wantResults: map[uint64]int{1: 1, 2: 1, 3: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &gatedTasks{}
			d := newFakeDriver(t, []string{"p"}, 0)
			runErr := d.runWith(testPlugin{name: "p", ep: &funcExecutor{}}, func(cfg *Config) {
				cfg.Slots = tt.slots
				cfg.RunTask = g.run
			})
			d.waitFor(wire.Kind_KIND_READY, 0)
			tt.send(t, d, g)
			d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
			<-d.stopped()
			if got := g.startedSoFar(); !slices.Equal(got, tt.wantStarted) {
				t.Errorf("attempts started: got %q, want %q", got, tt.wantStarted)
			}
			if got := d.results(); !maps.Equal(got, tt.wantResults) {
				t.Errorf("TASK_RESULTs by run ID: got %v, want %v", got, tt.wantResults)
			}
			d.release()
			if err := <-runErr; err != nil {
				t.Errorf("Run: got %v, want nil (released)", err)
			}
		})
	}
}
