package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
)

// runEvent is a lane run func that calls the item's Event.
func runEvent(it rpc.Item) { it.Event() }

// startLane returns a lane whose cleanup closes it.
func startLane(t *testing.T, workers int, run func(rpc.Item)) *rpc.Lane {
	t.Helper()
	l := rpc.NewLane(workers, 0, run)
	t.Cleanup(l.Close)
	return l
}

func TestLaneOrderOneWorker(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 0, -3} { // below 1 means 1
		l := startLane(t, workers, runEvent)
		const n = 5000
		var got []int // written only by the lane's one worker
		for i := range n {
			if !l.Push(rpc.Item{Event: func() { got = append(got, i) }}) {
				t.Fatalf("Push %d = false on an open lane", i)
			}
		}
		if err := l.Flush(testContext(t)); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if len(got) != n {
			t.Fatalf("workers=%d: ran %d items, want %d", workers, len(got), n)
		}
		for i, v := range got {
			if v != i {
				t.Fatalf("workers=%d: item %d ran as number %d, want push order", workers, v, i)
			}
		}
	}
}

func TestLaneNoConcurrencyWithOneWorker(t *testing.T) {
	t.Parallel()
	var running, maxRunning atomic.Int32
	l := startLane(t, 1, func(rpc.Item) {
		n := running.Add(1)
		if n > maxRunning.Load() {
			maxRunning.Store(n)
		}
		running.Add(-1)
	})
	// Push from many goroutines at once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				l.Push(rpc.Item{})
			}
		})
	}
	wg.Wait()
	if err := l.Flush(testContext(t)); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := maxRunning.Load(); got != 1 {
		t.Errorf("at most %d items ran at once, want 1", got)
	}
}

func TestLaneFlushWaitsForEarlierItems(t *testing.T) {
	t.Parallel()
	l := startLane(t, 1, runEvent)
	gate := make(chan struct{})
	started := make(chan struct{})
	var ran atomic.Bool
	l.Push(rpc.Item{Event: func() { close(started); <-gate }})
	l.Push(rpc.Item{Event: func() { ran.Store(true) }})
	recv(t, started, "first item")

	// While an earlier item is still running, Flush can only end with ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush with an item still running = %v, want context.DeadlineExceeded", err)
	}
	if got := l.Len(); got != 2 {
		t.Errorf("Len with one running and one queued = %d, want 2", got)
	}

	close(gate)
	if err := l.Flush(testContext(t)); err != nil {
		t.Fatalf("Flush after the items could run: %v", err)
	}
	if !ran.Load() {
		t.Errorf("Flush returned before the second item ran")
	}
	if got := l.Len(); got != 0 {
		t.Errorf("Len after Flush = %d, want 0", got)
	}
}

// enteredCtx reports when Done is first called, which Flush does once it
// has noted what it waits for.
type enteredCtx struct {
	context.Context
	once    sync.Once
	entered chan struct{}
}

func (c *enteredCtx) Done() <-chan struct{} {
	c.once.Do(func() { close(c.entered) })
	return c.Context.Done()
}

// TestLaneFlushIgnoresLaterItems pins Flush's documented contract: it
// waits for every item pushed before the call, not for items pushed after
// it. Regression: Flush waited for the lane to become idle, so a steady
// stream of later pushes kept it waiting until ctx ended (and
// Driver.flushLanes then reported undelivered messages although everything
// sent before the flush had been delivered).
func TestLaneFlushIgnoresLaterItems(t *testing.T) {
	t.Parallel()
	l := startLane(t, 1, runEvent)
	firstGate, laterGate := make(chan struct{}), make(chan struct{})
	l.Push(rpc.Item{Event: func() { <-firstGate }})

	flushed := make(chan error, 1)
	ctx := &enteredCtx{Context: testContext(t), entered: make(chan struct{})}
	go func() { flushed <- l.Flush(ctx) }()
	recv(t, ctx.entered, "Flush waiting")

	// Items pushed after Flush was called: the first one blocks until
	// Flush has returned (or the test gives up).
	l.Push(rpc.Item{Event: func() {
		select {
		case <-laterGate:
		case <-time.After(defaultTestTimeout):
		}
	}})
	close(firstGate)
	select {
	case err := <-flushed:
		if err != nil {
			t.Errorf("Flush = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("Flush still waiting after the items pushed before it ran: it waits for later items too")
	}
	close(laterGate)
}

func TestLaneCloseDrains(t *testing.T) {
	t.Parallel()
	l := rpc.NewLane(1, 0, runEvent)
	gate := make(chan struct{})
	started := make(chan struct{})
	var count atomic.Int32
	l.Push(rpc.Item{Event: func() { close(started); <-gate; count.Add(1) }})
	const n = 100
	for range n - 1 {
		l.Push(rpc.Item{Event: func() { count.Add(1) }})
	}
	recv(t, started, "first item")

	closed := make(chan struct{})
	go func() {
		l.Close()
		close(closed)
	}()
	// Once Close has marked the lane closed, Push refuses; pushes that
	// got in before that are drained too.
	accepted := 0
	poll(t, "Push refused after Close", func() bool {
		if l.Push(rpc.Item{Event: func() { count.Add(1) }}) {
			accepted++
			return false
		}
		return true
	})
	close(gate)
	waitClosed(t, closed, "Close")
	if got, want := count.Load(), int32(n+accepted); got != want {
		t.Errorf("Close ran %d items, want the %d accepted before it", got, want)
	}
	if l.Push(rpc.Item{Event: func() {}}) {
		t.Errorf("Push after Close = true, want false")
	}
	if err := l.Flush(testContext(t)); err != nil {
		t.Errorf("Flush after Close = %v, want nil", err)
	}
}

func TestLaneWorkersRunConcurrently(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{2, 4, 8} {
		// Each item waits at a barrier for all the others: with fewer than
		// workers items running at once, none would pass it.
		var arrived atomic.Int32
		all := make(chan struct{})
		var passed atomic.Int32
		l := startLane(t, workers, func(rpc.Item) {
			if arrived.Add(1) == int32(workers) {
				close(all)
			}
			select {
			case <-all:
				passed.Add(1)
			case <-time.After(defaultTestTimeout):
			}
		})
		for range workers {
			l.Push(rpc.Item{})
		}
		if err := l.Flush(testContext(t)); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if got := passed.Load(); got != int32(workers) {
			t.Errorf("workers=%d: %d items passed a %d-item barrier, want all (items did not run concurrently)", workers, got, workers)
		}
	}
}

func TestLaneItemFields(t *testing.T) {
	t.Parallel()
	got := make(chan rpc.Item, 1)
	l := startLane(t, 1, func(it rpc.Item) { got <- it })
	c := rpc.New(newFakeStream(), nil, newHandler(nil), rpc.Options{})
	f := sendFrame("x")
	l.Push(rpc.Item{Conn: c, Frame: f})
	it := recv(t, got, "item")
	if it.Conn != c || it.Frame != f || it.Event != nil {
		t.Errorf("run got %+v, want the pushed conn and frame", it)
	}
}

// Deliver decodes a small message on the calling reader and hands the lane
// the message and the frame's header, not the frame: the reader gives the
// frame back to wire's pool. A large one travels with its frame, to be
// decoded on the lane.
//
// Not parallel: it looks at the small frame after Deliver gave it back to
// wire's pool, which is safe only while no other test takes frames from
// the pool (one that did could get this frame and fill it).
func TestDeliverPredecodes(t *testing.T) {
	got := make(chan rpc.Item, 2)
	l := startLane(t, 1, func(it rpc.Item) { got <- it })
	c := rpc.New(newFakeStream(), nil, newHandler(nil), rpc.Options{})

	small := askFrame(t, 7, rpcMsg{N: 3, Text: "s"})
	if !rpc.Deliver(context.Background(), l, c, small, nil) {
		t.Fatal("Deliver(small) = false, want true")
	}
	it := recv(t, got, "small item")
	want := rpc.Head{Kind: wire.Kind_KIND_ASK, Call: 7, Plugin: 2, Type: rpcMsgName, TimeoutMicros: 10_000_000}
	if it.Frame != nil || !it.Decoded || it.Msg != (rpcMsg{N: 3, Text: "s"}) || it.Err != nil {
		t.Errorf("small: item frame %v, decoded %v, msg %#v, err %v; want no frame and the decoded message", it.Frame, it.Decoded, it.Msg, it.Err)
	}
	if h := it.Header(); h != want {
		t.Errorf("small: Header() = %+v, want %+v", h, want)
	}
	if small.Call != 0 || small.Payload != nil {
		t.Errorf("small: frame after Deliver = %v, want it released (emptied)", small)
	}

	big := askFrame(t, 8, rpcBig{Data: strings.Repeat("b", 100<<10)})
	if !rpc.Deliver(context.Background(), l, c, big, nil) {
		t.Fatal("Deliver(big) = false, want true")
	}
	it = recv(t, got, "big item")
	if it.Frame != big || it.Decoded {
		t.Errorf("big: item frame %p decoded %v, want the frame itself, undecoded", it.Frame, it.Decoded)
	}
	if h := it.Header(); h.Call != 8 || h.Type != rpcBigName {
		t.Errorf("big: Header() = %+v, want call 8 and type %q", h, rpcBigName)
	}
}

// In a lane of several workers, messages give up their order but a
// membership event keeps its place among its executor's items: it starts
// once that connection's items taken before it have returned, and that
// connection's items after it start once it has returned. Events used to
// run like messages, alongside them.
func TestLaneEventsKeepTheirPlace(t *testing.T) {
	t.Parallel()
	x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	eventStarted := make(chan struct{})
	var eventDone, firstDone atomic.Bool
	errs := make(chan string, 16)
	l := startLane(t, 4, func(it rpc.Item) {
		switch {
		case it.Event != nil:
			it.Event()
		case it.Frame.Call == 1:
			// Long enough for the event to start, were it free to.
			select {
			case <-eventStarted:
				errs <- "the event started while an item of its connection taken before it ran"
			case <-time.After(100 * time.Millisecond):
			}
			firstDone.Store(true)
		default:
			if !eventDone.Load() {
				errs <- "an item of the event's connection queued after it started before it returned"
			}
		}
	})
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 1}})
	l.Push(rpc.Item{Member: x, Event: func() {
		close(eventStarted)
		if !firstDone.Load() {
			errs <- "the event ran before the item of its connection taken before it returned"
		}
		eventDone.Store(true)
	}})
	for range 3 {
		l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 2}})
	}
	if err := l.Flush(testContext(t)); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// An event waits only for its own connection's items, and holds no
// worker while it waits: another executor's messages go on meanwhile. A
// handler waiting for a later message of its plugin (a long poll for
// work, the reason to run Receive concurrently) returns when that message
// comes, event or not, with two workers. A first version, in which an
// event waited for every item before it and held back every item after
// it, left such a lane stuck until the long poll's deadline; a second, in
// which the event's worker waited for the long poll, with two workers.
func TestLaneEventsHoldOnlyTheirConnection(t *testing.T) {
	t.Parallel()
	x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	y := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	work := make(chan struct{})
	polling := make(chan struct{})
	stuck := make(chan struct{})
	l := startLane(t, 2, func(it rpc.Item) {
		switch {
		case it.Event != nil:
			it.Event()
		case it.Frame.Call == 1: // x asks for work, and waits for it
			close(polling)
			select {
			case <-work:
			case <-time.After(defaultTestTimeout):
				close(stuck)
			}
		default: // y sends work
			close(work)
		}
	})
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 1}})
	<-polling
	l.Push(rpc.Item{Member: x, Event: func() {}}) // x leaving: waits for its long poll
	l.Push(rpc.Item{Member: y, Event: func() {}}) // y joining
	l.Push(rpc.Item{Conn: y, Frame: &wire.Frame{Call: 2}})
	if err := l.Flush(testContext(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
		t.Error("the long poll never saw the work sent after an event about another connection")
	default:
	}
}

// An AfterStart event (OnExecutorAdded) runs alongside its connection's
// items taken before it, once they have started, and its connection's
// later items still wait for it to return. A long poll from a goroutine
// an executor plugin's Init started, waiting for what only that
// executor's later message brings (a result that frees a job), used to
// hold the event, and so that message, until the poll's deadline.
func TestLaneAfterStartEventRunsAlongside(t *testing.T) {
	t.Parallel()
	x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	result := make(chan struct{})
	var eventDone atomic.Bool
	errs := make(chan string, 4)
	stuck := make(chan struct{})
	l := startLane(t, 2, func(it rpc.Item) {
		switch {
		case it.Event != nil:
			it.Event()
		case it.Frame.Call == 1: // x's poll, sent before x was ready
			select {
			case <-result:
			case <-time.After(defaultTestTimeout):
				close(stuck)
			}
		default: // x's result, sent once ready
			if !eventDone.Load() {
				errs <- "an item of the event's connection queued after it started before it returned"
			}
			close(result)
		}
	})
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 1}})
	l.Push(rpc.Item{Member: x, AfterStart: true, Event: func() { eventDone.Store(true) }})
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 2}})
	if err := l.Flush(testContext(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
		t.Error("the poll never saw the result sent after the event: the event waited for the poll to return")
	default:
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// An item whose run ends its goroutine (runtime.Goexit: a test's t.Fatal
// in a plugin) does not stop its lane: the items after it run, in order
// on a lane of one worker, and Flush returns once they have.
func TestLaneSurvivesGoexit(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			t.Parallel()
			l := startLane(t, workers, runEvent)
			gate := make(chan struct{})
			ran := make(chan int, 8)
			item := func(n int) rpc.Item {
				return rpc.Item{Event: func() {
					switch n {
					case 0:
						<-gate // the rest queue up behind it, in one batch
					case 1, 3:
						runtime.Goexit()
					}
					ran <- n
				}}
			}
			for n := range 5 {
				if !l.Push(item(n)) {
					t.Fatalf("Push(%d) = false, want true", n)
				}
			}
			close(gate)
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			if err := l.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v, want nil", err)
			}
			var got []int
			for range 3 {
				got = append(got, recv(t, ran, "an item after the Goexit"))
			}
			if workers > 1 {
				slices.Sort(got)
			}
			if want := []int{0, 2, 4}; !slices.Equal(got, want) {
				t.Errorf("ran %v, want %v", got, want)
			}
			// And it goes on taking items.
			if !l.Push(item(5)) {
				t.Fatal("Push(5) = false, want true")
			}
			if n := recv(t, ran, "an item pushed later"); n != 5 {
				t.Errorf("ran %d, want 5", n)
			}
		})
	}
}

// waitingPanic is a panic value whose Error, which the runtime calls to
// print it once the panicking goroutine's deferred calls have run, just
// before it ends the process, gives an item pushed after the panicking
// one a while to start, and says whether it did.
type waitingPanic struct{ started <-chan struct{} }

func (p waitingPanic) Error() string {
	select {
	case <-p.started:
		return "an item after the panicking one started"
	case <-time.After(500 * time.Millisecond):
		return "no item after the panicking one started"
	}
}

// A panic that escapes a lane's run (a bug in the run func itself: a
// plugin's is recovered by rpc.Call) ends the process, and no item that
// must come after the panicking one starts meanwhile, as it would on a
// worker replacing one ended by runtime.Goexit. Run in a child process,
// since the panic ends it.
func TestLanePanicStartsNoWorker(t *testing.T) {
	t.Parallel()
	for _, workers := range []int{1, 3} {
		name := fmt.Sprintf("workers=%d", workers)
		if os.Getenv("EMBER_TEST_LANE_PANIC") == name {
			x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
			started := make(chan struct{})
			l := rpc.NewLane(workers, 0, func(it rpc.Item) {
				if it.Event == nil {
					panic(waitingPanic{started})
				}
				it.Event()
			})
			// The event comes after the message on both lane kinds.
			l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 1}})
			l.Push(rpc.Item{Member: x, Event: func() { close(started) }})
			err := l.Flush(testContext(t)) // the panic ends the process first
			t.Fatalf("Flush returned %v after a panic in run, want the process ended", err)
		}
	}
	for _, workers := range []int{1, 3} {
		name := fmt.Sprintf("workers=%d", workers)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestLanePanicStartsNoWorker$")
			cmd.Env = append(os.Environ(), "EMBER_TEST_LANE_PANIC="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("child process: got no error, want it ended by the panic\n%s", out)
			}
			if want := "no item after the panicking one started"; !strings.Contains(string(out), want) {
				t.Errorf("child process output: got\n%s\nwant it to say %q", out, want)
			}
		})
	}
}

// A lane's workers are at least one and at most MaxLaneWorkers, whatever
// a plugin's MaxConcurrentReceives says: each, once started, is a
// goroutine for the lane's life.
func TestLaneWorkersBounded(t *testing.T) {
	tests := []struct{ asked, want int }{
		{-1, 1},
		{0, 1},
		{1, 1},
		{4, 4},
		{rpc.MaxLaneWorkers + 1, rpc.MaxLaneWorkers},
	}
	for _, tt := range tests {
		if got := rpc.WorkersFor(tt.asked); got != tt.want {
			t.Errorf("a lane asked for %d workers: got %d, want %d", tt.asked, got, tt.want)
		}
	}
}

// A lane of several workers starts them as its items need them, not all
// at once: a plugin that may run thousands of Receives at once (long
// polls) had that many goroutines from its start. Each item pushed while
// every worker started is busy starts another, up to the lane's maximum;
// workers left idle take the next items, and none is started for them.
func TestLaneStartsWorkersAsNeeded(t *testing.T) {
	t.Parallel()
	const max = 3
	var running atomic.Int32
	gate := make(chan struct{})
	l := startLane(t, max, func(rpc.Item) {
		running.Add(1)
		<-gate
		running.Add(-1)
	})
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	if w, _, _ := rpc.LaneWorkers(l); w != 0 {
		t.Fatalf("a new lane of %d workers started %d, want 0", max, w)
	}
	for range 2 {
		l.Push(rpc.Item{})
	}
	poll(t, "two items running", func() bool { return running.Load() == 2 })
	if w, _, _ := rpc.LaneWorkers(l); w != 2 {
		t.Errorf("two items running at once: got %d workers, want 2", w)
	}
	for range 3 {
		l.Push(rpc.Item{})
	}
	poll(t, "the maximum running", func() bool { return running.Load() == max })
	if w, _, _ := rpc.LaneWorkers(l); w != max {
		t.Errorf("five items pushed to a lane of at most %d workers: got %d workers, want %d", max, w, max)
	}
	if got := l.Len(); got != 5 {
		t.Errorf("Len = %d, want 5 (3 running, 2 queued)", got)
	}
	close(gate)
	if err := l.Flush(testContext(t)); err != nil {
		t.Fatal(err)
	}
	poll(t, "every worker idle", func() bool { _, idle, _ := rpc.LaneWorkers(l); return idle == max })
	gate = make(chan struct{})
	for range max {
		l.Push(rpc.Item{})
	}
	poll(t, "the maximum running again", func() bool { return running.Load() == max })
	if w, _, _ := rpc.LaneWorkers(l); w != max {
		t.Errorf("items for the idle workers: got %d workers, want %d (none started)", w, max)
	}
	close(gate)
	if err := l.Flush(testContext(t)); err != nil {
		t.Fatal(err)
	}
}

// Items held behind a membership event get workers of their own once it
// has run, while the workers started are busy: two held items that wait
// for each other (a handler waiting for another's message) must both run.
func TestLaneStartsWorkersForHeldItems(t *testing.T) {
	t.Parallel()
	x := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	y := rpc.New(nil, nil, newHandler(nil), rpc.Options{})
	first, others := make(chan struct{}), make(chan struct{})
	var pair sync.WaitGroup
	pair.Add(2)
	met := make(chan struct{})
	go func() { pair.Wait(); close(met) }()
	var running atomic.Int32
	l := startLane(t, 8, func(it rpc.Item) {
		if it.Event != nil {
			it.Event()
			return
		}
		running.Add(1)
		defer running.Add(-1)
		switch it.Frame.Call {
		case 1: // x's first message, before the event
			<-first
		case 2: // x's two after it: each waits for the other
			pair.Done()
			<-met
		default: // y's, keeping the workers started busy
			<-others
		}
	})
	released := false
	defer func() {
		close(others)
		if !released {
			close(first)
		}
	}()
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 1}})
	l.Push(rpc.Item{Conn: y, Frame: &wire.Frame{Call: 3}})
	poll(t, "two items running", func() bool { return running.Load() == 2 })
	l.Push(rpc.Item{Member: x, Event: func() {}})
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 2}})
	l.Push(rpc.Item{Conn: x, Frame: &wire.Frame{Call: 2}})
	// The event and x's two messages are taken and held; the workers that
	// took them wait. Keep them busy with y's messages, one for each idle
	// worker: a worker may go idle after another has been counted (it
	// was still taking its item), so count again until none is.
	poll(t, "x's items held", func() bool {
		_, idle, queued := rpc.LaneWorkers(l)
		return queued == 0 && idle > 0
	})
	var busy int32
	poll(t, "every worker busy", func() bool {
		_, idle, queued := rpc.LaneWorkers(l)
		if queued == 0 && idle > 0 {
			for range idle {
				l.Push(rpc.Item{Conn: y, Frame: &wire.Frame{Call: 3}})
			}
			busy += int32(idle)
			return false
		}
		return idle == 0 && queued == 0 && running.Load() == 2+busy
	})
	released = true
	close(first) // the event runs, then x's two messages
	select {
	case <-met:
	case <-time.After(defaultTestTimeout):
		t.Fatal("x's two messages held behind the event never ran at once: no worker was started for them")
	}
}

// FlushStarted, on a lane of several workers, waits until every item
// pushed before the call has started, not finished: a handler that runs
// until its ctx ends (which its owner ends after the flush) must not hold
// the flush to its deadline. An item that cannot start yet, every worker
// busy, holds it until one frees. On a lane of one worker it is Flush.
func TestLaneFlushStarted(t *testing.T) {
	t.Parallel()
	l := startLane(t, 2, runEvent)
	gates := []chan struct{}{make(chan struct{}), make(chan struct{}), make(chan struct{})}
	var once [3]sync.Once
	open := func(i int) { once[i].Do(func() { close(gates[i]) }) }
	t.Cleanup(func() { // before the lane's Close, which waits for its items
		for i := range gates {
			open(i)
		}
	})
	started := make(chan int, 3)
	for i, gate := range gates {
		l.Push(rpc.Item{Event: func() { started <- i; <-gate }})
	}
	recv(t, started, "an item started")
	recv(t, started, "a second item started")
	// Both workers are busy: the third item cannot start.
	flushed := make(chan error, 1)
	go func() { flushed <- l.FlushStarted(testContext(t)) }()
	select {
	case err := <-flushed:
		t.Fatalf("FlushStarted returned %v with an item not started", err)
	case <-started:
		t.Fatal("a third item started with both workers busy")
	default:
	}
	open(0) // frees a worker, which takes the third item
	open(1)
	recv(t, started, "the third item started")
	// The third runs until its gate opens, after FlushStarted returns.
	if err := recv(t, flushed, "FlushStarted's return once every item started"); err != nil {
		t.Fatalf("FlushStarted: %v", err)
	}
	open(2)

	// One worker: FlushStarted waits for items to finish, as Flush.
	one := startLane(t, 1, runEvent)
	gate := make(chan struct{})
	oneStarted := make(chan struct{})
	one.Push(rpc.Item{Event: func() { close(oneStarted); <-gate }})
	recv(t, oneStarted, "the one worker's item")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := one.FlushStarted(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("FlushStarted on one worker with an item still running = %v, want context.DeadlineExceeded", err)
	}
	close(gate)
}
