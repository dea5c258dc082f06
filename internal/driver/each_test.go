package driver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// runOf returns the run ID of the attempt of input index running on es.
func runOf(t *testing.T, d *Driver, es *execState, index int) uint64 {
	t.Helper()
	d.sched.mu.Lock()
	defer d.sched.mu.Unlock()
	for run, a := range es.running {
		if a.index == index {
			return run
		}
	}
	t.Fatalf("no attempt of inputs[%d] on executor %s", index, es.info.ID)
	return 0
}

// eachOutcome is what a RunJobEach returned.
type eachOutcome struct {
	results [][]byte
	errs    []error
	err     error
}

// startEach starts a RunJobEach of n inputs of task "t" on d under ctx,
// and waits until its n TASKs have gone to stream, the one executor
// ready, and are queued there. Its outcome comes on the channel returned.
func startEach(ctx context.Context, t *testing.T, d *Driver, stream *taskStream, n int, p *Progress) <-chan eachOutcome {
	t.Helper()
	out := make(chan eachOutcome, 1)
	go func() {
		r, errs, err := d.RunJobEach(ctx, "t", make([][]byte, n), p)
		out <- eachOutcome{r, errs, err}
	}()
	pollSent(t, stream, wire.Kind_KIND_TASK, n)
	waitQueued(t, d)
	return out
}

// In a job of RunJobEach, inputs that fail for good, by their task's
// error or by losing their executors, fail alone; the job ends once every
// input has, with one result or error each; late results are ignored.
func TestRunJobEachFailsInputsAlone(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, MaxTaskFailures: 2})
	if err != nil {
		t.Fatal(err)
	}
	stream1, es1 := schedExecutor(t, d, "1", 3)
	p := NewProgress(3)
	out := startEach(context.Background(), t, d, stream1, 3, p)
	d.sched.result(es1, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: runOf(t, d, es1, 0), Code: uint32(plugin.CodeInvalidArgument), Error: "bad", Permanent: true})
	d.sched.removeExecutor(es1, errors.New("EOF")) // inputs 1 and 2: 1 failure each
	stream2, es2 := schedExecutor(t, d, "2", 3)
	pollSent(t, stream2, wire.Kind_KIND_TASK, 2)
	waitQueued(t, d)
	d.sched.result(es2, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: runOf(t, d, es2, 1), Payload: []byte("ok")})
	late := runOf(t, d, es2, 2)
	d.sched.removeExecutor(es2, errors.New("peer silent")) // input 2: its second, fails for good
	o := waitEach(t, out)
	// A late result for the input already failed, and a close: no panic, nothing changes.
	d.sched.result(es2, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: late, Payload: []byte("late")})
	d.sched.send(d.sched.close(errors.New("closing")))
	if o.err != nil || len(o.results) != 3 || len(o.errs) != 3 {
		t.Fatalf("RunJobEach: got %v, want 3 results", o)
	}
	var tf *TaskFailure
	if !errors.As(o.errs[0], &tf) || !tf.Permanent || tf.Index != 0 {
		t.Errorf("errs[0]: got %v, want a permanent TaskFailure", o.errs[0])
	}
	if o.errs[1] != nil || string(o.results[1]) != "ok" {
		t.Errorf("inputs[1]: got %q, %v; want ok", o.results[1], o.errs[1])
	}
	if !errors.As(o.errs[2], &tf) || tf.Attempts != 2 || tf.ExecutorID != "2" || o.results[2] != nil {
		t.Errorf("inputs[2]: got %q, %v; want a TaskFailure after 2 attempts on executor 2", o.results[2], o.errs[2])
	}
	if done, running, total := p.Counts(); done != 3 || running != 0 || total != 3 {
		t.Errorf("progress: got %d done, %d running of %d; want 3, 0, 3", done, running, total)
	}
}

// A job of RunJobEach whose every input fails for good ends once, and its
// ctx ending afterwards changes nothing.
func TestRunJobEachWhoseEveryInputFails(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, MaxTaskFailures: 1, NoReplacements: true})
	if err != nil {
		t.Fatal(err)
	}
	stream, es := schedExecutor(t, d, "1", 2)
	ctx, cancel := context.WithCancel(context.Background())
	out := startEach(ctx, t, d, stream, 2, nil)
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: runOf(t, d, es, 0), Code: uint32(plugin.CodeInternal), Error: "boom"})
	d.sched.removeExecutor(es, errors.New("EOF")) // the last: no executors left, and the job's last input fails
	o := waitEach(t, out)
	cancel()
	if o.err != nil || len(o.errs) != 2 || o.errs[0] == nil || o.errs[1] == nil {
		t.Fatalf("RunJobEach: got %+v, want two failed inputs and no job error", o)
	}
}

// waitEach returns what the RunJobEach reporting to out returned,
// failing the test if it has not returned within 10 seconds.
func waitEach(t *testing.T, out <-chan eachOutcome) eachOutcome {
	t.Helper()
	select {
	case o := <-out:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("RunJobEach has not returned after 10s")
		return eachOutcome{}
	}
}

// A job of RunJobEach ended by its ctx keeps the outcomes of the inputs
// that had finished, an empty output included, and gives the others the
// job's error; results that come after are not kept.
func TestRunJobEachEndedKeepsWhatFinished(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}, MaxTaskFailures: 1})
	if err != nil {
		t.Fatal(err)
	}
	stream, es := schedExecutor(t, d, "1", 4)
	ctx, cancel := context.WithCancel(context.Background())
	out := startEach(ctx, t, d, stream, 4, nil)
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: runOf(t, d, es, 0), Payload: []byte("ok")})
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: runOf(t, d, es, 1)}) // an empty output
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: runOf(t, d, es, 2), Code: uint32(plugin.CodeInvalidArgument), Error: "bad"})
	late := runOf(t, d, es, 3)
	cancel()
	o := waitEach(t, out)
	d.sched.result(es, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: late, Payload: []byte("late")})
	if !errors.Is(o.err, context.Canceled) || len(o.results) != 4 || len(o.errs) != 4 {
		t.Fatalf("RunJobEach: got %+v, want 4 outcomes and context.Canceled", o)
	}
	if string(o.results[0]) != "ok" || o.errs[0] != nil {
		t.Errorf("inputs[0]: got %q, %v; want ok", o.results[0], o.errs[0])
	}
	if len(o.results[1]) != 0 || o.errs[1] != nil {
		t.Errorf("inputs[1]: got %q, %v; want its empty output", o.results[1], o.errs[1])
	}
	var tf *TaskFailure
	if !errors.As(o.errs[2], &tf) || tf.Index != 2 {
		t.Errorf("inputs[2]: got %v, want its TaskFailure", o.errs[2])
	}
	if o.errs[3] != o.err || o.results[3] != nil {
		t.Errorf("inputs[3]: got %q, %v; want the job's error, %v", o.results[3], o.errs[3], o.err)
	}
}
