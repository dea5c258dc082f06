package main

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

// With polls that time out every millisecond, many jobs come just after
// their poll gave up. Each is given back by its worker (OnReplyDropped)
// and handed out again at once, as the same attempt: no job waits for its
// lease to run out but slowJob, whose first attempt taken overruns it,
// and every job is done.
// Before Ember told the worker of a reply that came too late, such jobs
// each waited a whole lease.
func TestJobsWhosePollGaveUpAreGivenBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := newQueue()
	const jobs = 200
	want := 0
	var js []Job
	for i := 1; i <= jobs; i++ {
		js = append(js, Job{ID: i, N: i})
		for k := 1; k <= i; k++ {
			want += k * k
		}
	}
	err := ember.Run(ctx, ember.Config{
		AppName: "workqueue-test",
		Master:  "local[2]",
		Logger:  slog.New(slog.DiscardHandler),
		Plugins: []plugin.Plugin{workqueue{q: q, poll: time.Millisecond}},
	}, func(ctx context.Context, _ *ember.Driver) error {
		q.add(js)
		results, err := q.wait(ctx)
		if err != nil {
			return err
		}
		if got := sum(results); len(results) != jobs || got != want {
			t.Errorf("got %d results summing to %d, want %d summing to %d", len(results), got, jobs, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	t.Logf("leases run out, by job ID: %v", q.expired)
	if n := q.expired[slowJob]; n != 1 {
		t.Errorf("job %d's lease ran out %d times, want once: its first attempt taken overruns it", slowJob, n)
	}
	delete(q.expired, slowJob)
	if len(q.expired) > 0 {
		t.Errorf("leases ran out for jobs %v (times by job ID: %v), want none but job %d's: a job that came after its poll gave up should be given back at once",
			slices.Sorted(maps.Keys(q.expired)), q.expired, slowJob)
	}
	t.Logf("jobs handed out again: %d, given back by their worker: %d", q.reissued, q.returned)
}
