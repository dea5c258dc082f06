package driver

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/wire"
)

// A job of short tasks sends none ahead to an executor whose slots hold
// another job's attempt: that one may run for minutes (or, canceled,
// never return), and the attempts queued behind it would wait for it
// while another executor's slot stood free, holding their job open.
func TestNoneAheadBehindAnotherJobsAttempt(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	_, busy := schedExecutor(t, d, "busy", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", [][]byte{nil}, nil); long <- err }()
	waitInFlight(t, d, busy, 1) // job 1's attempt holds busy's one slot, and never returns

	_, free := schedExecutor(t, d, "free", 1)
	short := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", make([][]byte, 40), nil); short <- err }()
	waitInFlight(t, d, free, 1)
	// free runs job 2's attempts, each in 100µs, and reports them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case err := <-short:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("job 2 never ended: %d of its attempts wait on executor busy behind job 1's", inFlight(d, busy)-1)
		}
		d.sched.mu.Lock()
		var run uint64
		for r := range free.running {
			if run == 0 || r < run {
				run = r
			}
		}
		d.sched.mu.Unlock()
		if run == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		d.sched.result(free, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, SlotMicros: 100})
	}
}

// An attempt sent ahead goes to an executor with a free slot first, not
// to wait on the one with the most room: 4 slots' room ahead made the
// 1-slot executor's free slot stand idle while 7 attempts queued on the
// other.
func TestAheadPrefersAFreeSlot(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Tasks: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	_, big := schedExecutor(t, d, "big", 4)
	_, small := schedExecutor(t, d, "small", 1)
	ctx, cancel := context.WithCancel(context.Background())
	job := make(chan error, 1)
	go func() { _, err := d.RunJob(ctx, "t", make([][]byte, 12), nil); job <- err }()
	defer func() {
		cancel()
		<-job
	}()
	waitInFlight(t, d, small, 1)
	waitInFlight(t, d, big, 4)
	d.sched.mu.Lock()
	var run uint64
	for r := range small.running {
		run = r
	}
	d.sched.mu.Unlock()
	d.sched.result(small, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: run, SlotMicros: 100})
	if got := inFlight(d, small); got < 1 {
		t.Errorf("the 1-slot executor holds %d attempts, with its slot free; the 4-slot one holds %d", got, inFlight(d, big))
	}
}
