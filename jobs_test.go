package ember_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
)

var (
	probeJobs    atomic.Pointer[chan string] // gets the job ID of each attempt of jobProbe as it starts
	probeRelease atomic.Pointer[chan struct{}]
	jobProbe     = ember.NewTask("test.job-probe", func(_ context.Context, tc ember.TaskContext, n int) (int, error) {
		*probeJobs.Load() <- tc.JobID
		<-*probeRelease.Load()
		if n < 0 {
			return 0, ember.Permanent(errors.New("negative"))
		}
		return n, nil
	})
)

// Jobs lists the running jobs, oldest first, with the counts the console
// bar draws and the ID their tasks see, and none once they have returned.
func TestJobs(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[1]", Logger: quiet,
		Conf: map[string]string{ember.ConfExecutorSlots: "1", ember.ConfTaskPrefetch: "0"}})
	if got := c.Driver.Jobs(); got != nil {
		t.Fatalf("Jobs before any: got %+v, want nil", got)
	}
	release, started := make(chan struct{}), make(chan string, 5)
	probeRelease.Store(&release)
	probeJobs.Store(&started)
	ctx := testCtx(t)
	start := time.Now()
	mapErr, eachErr := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := ember.Map(ctx, c.Driver, jobProbe, []int{1, 2, 3})
		mapErr <- err
	}()
	var first string
	select {
	case first = <-started: // the Map's first attempt holds the one slot
	case err := <-mapErr:
		t.Fatalf("Map ended before its first task started: %v", err)
	}
	go func() {
		_, err := ember.MapEach(ctx, c.Driver, jobProbe, []int{-1, 4})
		eachErr <- err
	}()
	var got []ember.JobStatus
	deadline := time.Now().Add(20 * time.Second)
	for got = c.Driver.Jobs(); len(got) < 2; got = c.Driver.Jobs() {
		if time.Now().After(deadline) {
			t.Fatalf("Jobs with a Map and a MapEach running: got %+v, want two", got)
		}
		time.Sleep(time.Millisecond)
	}
	for i, j := range got {
		if j.Started.Before(start) || j.Started.After(time.Now()) {
			t.Errorf("job %d started at %v, want between %v and now", i, j.Started, start)
		}
		got[i].Started = time.Time{}
	}
	want := []ember.JobStatus{
		{ID: first, Task: "test.job-probe", Total: 3, Running: 1},
		{ID: got[1].ID, Task: "test.job-probe", Total: 2},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] || got[1].ID == first {
		t.Errorf("Jobs: got %+v, want %+v (the second with an ID of its own)", got, want)
	}

	close(release)
	if err := <-mapErr; err != nil {
		t.Errorf("Map: %v", err)
	}
	if err := <-eachErr; err != nil {
		t.Errorf("MapEach: %v", err)
	}
	if got := c.Driver.Jobs(); got != nil {
		t.Errorf("Jobs once both returned: got %+v, want nil", got)
	}
}
