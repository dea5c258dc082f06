package driver

import (
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/plugin"
)

// The TASK_CANCELs of a job that fails with a long error carry its start,
// not all of it: there is one per running attempt, up to MaxSlots per
// executor, and at rpc.MaxErrorBytes each one executor's slots took 256
// MiB of frames, built (the error's text made again for each) in about a
// second under the scheduler's lock.
func TestTaskCancelTextBounded(t *testing.T) {
	s := &scheduler{runs: map[uint64]*attempt{}}
	j := &job{left: MaxSlots, done: make(chan struct{})}
	for run := range uint64(MaxSlots) {
		s.runs[run] = &attempt{run: run, job: j, sent: true, exec: &execState{}}
	}
	cause := plugin.NewError(plugin.CodeInvalidArgument, "compile error in pkg/x: "+strings.Repeat("x", rpc.MaxErrorBytes))
	out := s.failJobLocked(j, &TaskFailure{Task: "t", Index: 1, Attempts: 1, ExecutorID: "2", Cause: cause, Permanent: true})
	if len(out) != MaxSlots {
		t.Fatalf("TASK_CANCELs: got %d, want %d", len(out), MaxSlots)
	}
	total := 0
	for _, o := range out {
		f := o.f
		total += len(f.Error)
		if plugin.Code(f.Code) != plugin.CodeInvalidArgument || !strings.Contains(f.Error, "compile error in pkg/x") || len(f.Error) > maxCancelText+64 {
			t.Fatalf("TASK_CANCEL: code %v, %d bytes of text starting %.80q; want InvalidArgument, the error's start, at most %d bytes", plugin.Code(f.Code), len(f.Error), f.Error, maxCancelText+64)
		}
	}
	t.Logf("%d TASK_CANCELs: %d KiB of error text", len(out), total>>10)
}
