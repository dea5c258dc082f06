package driver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// report is one attempt's result, as the scheduler's test feeds it.
type report struct {
	slot time.Duration
	ok   bool
}

// A job's attempts go to an executor ahead of its free slots (to wait
// there for one) once an attempt has succeeded in less than ShortTask, as
// many as make about ShortTask of work per slot (at most maxAheadPerSlot),
// up to Config.TaskPrefetch; never for a job of which an attempt ran
// long, nor on quick failures alone (a job whose every task fails would
// run its other inputs before its retries had failed it), nor for inputs
// over maxAheadInput.
func TestTasksSentAheadOfFreeSlots(t *testing.T) {
	const slots = 2
	short, long := report{100 * time.Microsecond, true}, report{10 * time.Millisecond, true}
	tests := []struct {
		name     string
		prefetch int // Config.TaskPrefetch
		input    int // bytes of each input
		reports  []report
		want     int // attempts sent to the executor and not reported
	}{
		{name: "before any report", want: slots},
		{name: "short", reports: []report{short}, want: slots + maxAheadPerSlot*slots},
		{name: "long", reports: []report{long}, want: slots},
		{name: "a quick failure", reports: []report{{100 * time.Microsecond, false}}, want: slots},
		{name: "a long failure after a short success", reports: []report{short, {10 * time.Millisecond, false}},
			want: slots + maxAheadPerSlot*slots - 1}, // sends no more
		{name: "short, then long", reports: []report{short, long}, want: slots + maxAheadPerSlot*slots - 1},
		{name: "2ms tasks", reports: []report{{2 * time.Millisecond, true}}, want: slots + 2*slots},
		{name: "TaskPrefetch 3", prefetch: 3, reports: []report{short}, want: slots + 3},
		{name: "TaskPrefetch none", prefetch: -1, reports: []report{short}, want: slots},
		{name: "inputs at the limit", input: maxAheadInput, reports: []report{short}, want: slots + maxAheadPerSlot*slots},
		{name: "inputs over the limit", input: maxAheadInput + 1, reports: []report{short}, want: slots},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, TaskPrefetch: tt.prefetch})
			if err != nil {
				t.Fatal(err)
			}
			_, es := schedExecutor(t, d, "1", slots)
			inputs := make([][]byte, 50)
			for i := range inputs {
				inputs[i] = make([]byte, tt.input)
			}
			ctx, cancel := context.WithCancel(context.Background())
			job := make(chan error, 1)
			go func() { _, err := d.RunJob(ctx, "t", inputs, nil); job <- err }()
			defer func() {
				cancel()
				<-job
			}()
			waitInFlight(t, d, es, slots)
			for _, r := range tt.reports {
				f := &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: heldRuns(d, es)[0], SlotMicros: uint64(r.slot.Microseconds())}
				if !r.ok {
					f.Code, f.Error = uint32(plugin.CodeUnknown), "failed"
				}
				d.sched.result(es, f)
			}
			if got := inFlight(d, es); got != tt.want {
				t.Errorf("attempts sent to the executor and not reported: got %d, want %d", got, tt.want)
			}
		})
	}
}

// inFlight returns how many attempts es holds: running, or waiting there
// for a slot.
func inFlight(d *Driver, es *execState) int {
	d.sched.mu.Lock()
	defer d.sched.mu.Unlock()
	return len(es.running)
}

// heldRuns returns the run IDs of the attempts es holds, in run order.
func heldRuns(d *Driver, es *execState) []uint64 {
	d.sched.mu.Lock()
	defer d.sched.mu.Unlock()
	return slices.Sorted(maps.Keys(es.running))
}

// waitInFlight polls until es holds n attempts.
func waitInFlight(t *testing.T, d *Driver, es *execState, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for inFlight(d, es) != n {
		if time.Now().After(deadline) {
			t.Fatalf("attempts sent to the executor: got %d, want %d", inFlight(d, es), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// How many attempts go ahead per slot follows the mean time the job's
// successful attempts held their slots, weighted to the recent ones.
func TestAheadPerSlot(t *testing.T) {
	tests := []struct {
		name    string
		reports []report
		want    int
	}{
		{"none", nil, 0},
		{"1µs", []report{{time.Microsecond, true}}, maxAheadPerSlot},
		{"0µs", []report{{0, true}}, maxAheadPerSlot},
		{"1ms", []report{{time.Millisecond, true}}, maxAheadPerSlot},
		{"2ms", []report{{2 * time.Millisecond, true}}, 2},
		{"4.9ms", []report{{4900 * time.Microsecond, true}}, 1},
		{"5ms", []report{{ShortTask, true}}, 0},
		{"quick failures", []report{{time.Microsecond, false}, {time.Microsecond, false}}, 0},
		{"quick failures after a success", []report{{2 * time.Millisecond, true}, {time.Microsecond, false}}, 2},
		{"a long failure", []report{{time.Microsecond, true}, {time.Second, false}}, 0},
		{"slower by degrees", []report{{100 * time.Microsecond, true}, {4 * time.Millisecond, true}, {4 * time.Millisecond, true}, {4 * time.Millisecond, true}, {4 * time.Millisecond, true}, {4 * time.Millisecond, true}, {4 * time.Millisecond, true}, {4 * time.Millisecond, true}, {4 * time.Millisecond, true}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := &job{}
			for _, r := range tt.reports {
				j.ran(r.slot, r.ok)
			}
			if got := j.aheadPerSlot(); got != tt.want {
				t.Errorf("got %d, want %d (mean %v)", got, tt.want, j.slotMean)
			}
		})
	}
}

// ember_tasks_running and the job's Progress count the attempts running
// on executors: one sent into a free slot at once, one sent ahead of the
// slots once an attempt ahead of it on its executor ends, and none after
// the executor is lost. A task that never returns shows there, where
// ember_tasks_total, counting ends, does not. (They counted the attempts
// sent ahead as running too: "5 running" on an executor of one slot.)
func TestTasksRunningGauge(t *testing.T) {
	d, _, es := schedDriver(t, 1)
	progress := NewProgress(20)
	counts := func() (gauge float64, running int) {
		t.Helper()
		var m dto.Metric
		if err := d.builtin.TasksRunning.WithLabelValues("t").Write(&m); err != nil {
			t.Fatal(err)
		}
		_, running, _ = progress.Counts()
		return m.GetGauge().GetValue(), running
	}
	check := func(when string, want int) {
		t.Helper()
		if gauge, running := counts(); gauge != float64(want) || running != want {
			t.Errorf("%s: got ember_tasks_running %v and Progress running %d, want %d", when, gauge, running, want)
		}
	}
	result := func(run uint64) {
		d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, SlotMicros: 100})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	job := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", make([][]byte, 20), progress); job <- err }()
	waitInFlight(t, d, es, 1)
	check("one attempt sent, into the free slot", 1)

	result(heldRuns(d, es)[0]) // short: the next are sent ahead
	waitInFlight(t, d, es, 1+maxAheadPerSlot)
	check("attempts sent ahead of the slot", 1)

	// One waiting reports first (its cancel, say): the slot's attempt
	// still runs, and none is counted in its place.
	held := heldRuns(d, es)
	result(held[len(held)-1])
	waitInFlight(t, d, es, 1+maxAheadPerSlot)
	check("after a waiting attempt's result", 1)

	result(heldRuns(d, es)[0]) // the running one: the next takes its slot
	waitInFlight(t, d, es, 1+maxAheadPerSlot)
	check("after the running attempt's result", 1)

	d.sched.removeExecutor(es, errors.New("gone"))
	check("after the executor was lost", 0)
	cancel()
	<-job
	check("after the job ended", 0)
}

// An executor lost with attempts sent ahead of its slots counts a failure
// only for those that may have been running: the first of its slots in
// run order. The others were waiting for a slot; they run again without
// a failure counted, and only into a free slot, where a task that killed
// the executor as it started would be counted at its next loss. Counted
// all, the attempts queued behind a crashing build each lost an attempt,
// and in a MapEach could fail for good with the crasher.
func TestLostExecutorCountsOnlyWhatMayHaveRun(t *testing.T) {
	d, _, es := schedDriver(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	job := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", make([][]byte, 20), nil); job <- err }()
	waitInFlight(t, d, es, 1)
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: heldRuns(d, es)[0], SlotMicros: 100})
	waitInFlight(t, d, es, 1+maxAheadPerSlot)
	d.sched.mu.Lock()
	runs := slices.Sorted(maps.Keys(es.running))
	indexes := make([]int, len(runs))
	for i, run := range runs {
		indexes[i] = es.running[run].index
	}
	d.sched.mu.Unlock()
	waitQueued(t, d) // every TASK queued on the connection: a.sent

	d.sched.removeExecutor(es, errors.New("killed"))

	d.sched.mu.Lock()
	retries := slices.Clone(d.sched.retries.queued())
	d.sched.mu.Unlock()
	if len(retries) != len(runs) {
		t.Fatalf("attempts to run again: got %d, want %d", len(retries), len(runs))
	}
	j := retries[0].job
	for i, a := range retries {
		wantFailures, wantNoAhead := 0, true
		if i == 0 {
			wantFailures, wantNoAhead = 1, false // the one in the executor's slot
		}
		if a.index != indexes[i] || j.failures[a.index] != wantFailures || a.noAhead != wantNoAhead {
			t.Errorf("retry %d: got inputs[%d], %d failures, noAhead %v; want inputs[%d], %d, %v",
				i, a.index, j.failures[a.index], a.noAhead, indexes[i], wantFailures, wantNoAhead)
		}
	}

	// The next executor gets the counted one, which may go ahead of a
	// free slot, and then none: the next in line goes only into one.
	_, es2 := schedExecutor(t, d, "2", 1)
	if got := inFlight(d, es2); got != 1 {
		t.Errorf("attempts sent to the next executor: got %d, want 1", got)
	}
}

// A TASK_RESULT's slot time past what a Duration holds is the longest one,
// not a negative that would make the task short.
func TestSlotTime(t *testing.T) {
	for _, tt := range []struct {
		micros uint64
		want   time.Duration
	}{
		{0, 0},
		{5000, 5 * time.Millisecond},
		{math.MaxUint64, time.Duration(math.MaxInt64/1000) * time.Microsecond},
	} {
		if got := slotTime(&wire.Frame{SlotMicros: tt.micros}); got != tt.want || got < 0 {
			t.Errorf("slot_micros %d: got %v, want %v", tt.micros, got, tt.want)
		}
	}
}
