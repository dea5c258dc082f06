package driver

import (
	"errors"
	"testing"
)

// A job's failure says which task and input failed, how often, where and
// why; a permanent one says it was not retried, and, after earlier
// failures that were, that it was not retried further: the text used to
// say "not retried" of a task retried once already. One attempt allowed
// is said so, not "failed 1 times".
func TestFailureText(t *testing.T) {
	cause := errors.New("compile error")
	tests := []struct {
		attempts  int
		permanent bool
		want      string
	}{
		{4, false, `task "build" failed 4 times on inputs[3]; last attempt on executor 2: compile error`},
		{1, false, `task "build" failed on inputs[3], its one attempt allowed (ember.task.maxFailures), on executor 2: compile error`},
		{1, true, `task "build" failed permanently on inputs[3], not retried; on executor 2: compile error`},
		{2, true, `task "build" failed permanently on inputs[3] after 2 failed attempts, not retried further; last attempt on executor 2: compile error`},
	}
	for _, tt := range tests {
		if got := FailureText("build", 3, tt.attempts, "2", cause, tt.permanent); got != tt.want {
			t.Errorf("FailureText(%d attempts, permanent %v):\n got %q\nwant %q", tt.attempts, tt.permanent, got, tt.want)
		}
	}
}
