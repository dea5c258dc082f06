package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// The executor FuzzHandleFrames builds: small limits, so that a few bytes
// reach them.
const (
	fuzzMaxMessage = 4096
	fuzzWindow     = 2048 // each plugin's SEND window, both ways
	fuzzSlots      = 2
	fuzzShutdown   = 4 * time.Second
	fuzzWait       = 10 * time.Second // what the target waits for an event before failing
)

// fuzzPlugins are the executor's plugins: 0 receives on a serial lane and
// hears of late replies and tasks, 1 receives on a lane of two workers, 2
// has an executor side that receives nothing.
func fuzzPlugins() []plugin.Plugin {
	return []plugin.Plugin{
		testPlugin{name: "serial", ep: &fuzzReceiver{}},
		testPlugin{name: "concurrent", ep: &fuzzConcurrent{}},
		testPlugin{name: "deaf", ep: &funcExecutor{}},
	}
}

// fuzzReceiver answers a note with itself, panics on note{"panic"} and
// ends its goroutine on note{"goexit"}; it ignores its ctx, so that
// nothing it does waits on the driver.
type fuzzReceiver struct {
	plugin.BaseExecutorPlugin
	mu      sync.Mutex
	dropped int // late replies heard of
}

func (r *fuzzReceiver) Receive(_ context.Context, msg any) (any, error) {
	if n, ok := msg.(note); ok {
		switch n.Text {
		case "panic":
			panic("fuzz receiver panics")
		case "goexit":
			runtime.Goexit()
		}
	}
	return msg, nil
}

func (r *fuzzReceiver) OnReplyDropped(context.Context, any) {
	r.mu.Lock()
	r.dropped++
	r.mu.Unlock()
}

func (r *fuzzReceiver) OnTaskStart(context.Context, plugin.TaskInfo)         {}
func (r *fuzzReceiver) OnTaskSucceeded(context.Context, plugin.TaskInfo)     {}
func (r *fuzzReceiver) OnTaskFailed(context.Context, plugin.TaskInfo, error) {}

// fuzzConcurrent is fuzzReceiver on a lane of two workers.
type fuzzConcurrent struct{ fuzzReceiver }

func (r *fuzzConcurrent) MaxConcurrentReceives() int { return 2 }

// fuzzTask is the executor's RunTask, with one task registered, "echo":
// like a task made by ember.NewTask, it decodes its input (a note) and
// fails for good when it cannot, and answers the note encoded again. It
// waits for its ctx on note{"wait"}, panics on note{"panic"}, ends its
// goroutine on note{"goexit"}, and answers more than the message limit on
// note{"big"}.
func fuzzTask(ctx context.Context, t plugin.TaskInfo, in []byte, _ Plugins) ([]byte, error) {
	if t.TaskName != "echo" {
		return nil, plugin.Errorf(plugin.CodeNotFound, "no task %q on this executor", t.TaskName)
	}
	var n note
	if err := codec.Unmarshal(in, &n); err != nil {
		return nil, &PermanentError{plugin.Errorf(plugin.CodeInvalidArgument, "task %q: decode input: %v", t.TaskName, err)}
	}
	switch n.Text {
	case "wait":
		<-ctx.Done()
		return nil, context.Cause(ctx)
	case "panic":
		panic("fuzz task panics")
	case "goexit":
		runtime.Goexit()
	case "big":
		return make([]byte, fuzzMaxMessage+1), nil
	}
	return codec.Marshal(n)
}

// fuzzExecStream is the executor's end of the stream: its reader gets
// batches, decoded from the driver's bytes by wire.Codec as gRPC does,
// one at a time as the test lets it (release), and then waits for the
// stream to end (end); what the executor sends is encoded and decoded
// again, as it would reach the driver, and kept.
type fuzzExecStream struct {
	batches [][]byte
	ready   []chan struct{} // closed: batch i may be read
	handled []chan struct{} // closed when the reader comes back after batch i: it is handled
	ended   chan struct{}   // closed by end: RecvMsg returns io.EOF
	endOnce sync.Once
	reads   int // on the reader alone

	mu      sync.Mutex // protects the following
	sent    []*wire.Frame
	bad     error         // the first batch the driver could not have taken
	changed chan struct{} // a token when sent grows
}

func newFuzzExecStream(batches ...[]byte) *fuzzExecStream {
	s := &fuzzExecStream{batches: batches, ended: make(chan struct{}), changed: make(chan struct{}, 1)}
	for range batches {
		s.ready = append(s.ready, make(chan struct{}))
		s.handled = append(s.handled, make(chan struct{}))
	}
	return s
}

// end ends the stream, as a driver does, or the executor's cancel.
func (s *fuzzExecStream) end() { s.endOnce.Do(func() { close(s.ended) }) }

// deliver lets the reader read batch i and waits until it has handled
// it, or until the Conn ends (done); it reports whether it was handled.
func (s *fuzzExecStream) deliver(t *testing.T, i int, done <-chan struct{}) bool {
	t.Helper()
	close(s.ready[i])
	deadline := time.NewTimer(fuzzWait)
	defer deadline.Stop()
	select {
	case <-s.handled[i]:
		return true
	case <-done: // the reader ended it (a window overdrawn)
		return false
	case <-deadline.C:
		t.Fatalf("batch %d was not handled within %v", i, fuzzWait)
		return false
	}
}

func (s *fuzzExecStream) RecvMsg(m any) error {
	i := s.reads
	s.reads++
	if i > 0 {
		close(s.handled[i-1])
	}
	if i == len(s.batches) {
		<-s.ended
		return io.EOF
	}
	select {
	case <-s.ready[i]:
	case <-s.ended:
		return io.EOF
	}
	return wire.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(s.batches[i])}, m)
}

func (s *fuzzExecStream) Send(b *wire.Batch) error {
	bufs, err := wire.Codec{}.Marshal(b) // keeps nothing of b, like gRPC
	var data []byte
	if err == nil {
		data = bufs.Materialize()
		bufs.Free()
	}
	var got wire.Batch
	switch {
	case err != nil:
		err = fmt.Errorf("encoding a batch of %d frames: %w", len(b.Frames), err)
	case len(data) > fuzzMaxMessage+rpc.BatchOverhead:
		err = fmt.Errorf("a batch of %d bytes, over the %d the driver takes", len(data), fuzzMaxMessage+rpc.BatchOverhead)
	default:
		if uerr := (wire.Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &got); uerr != nil {
			err = fmt.Errorf("the driver cannot decode a batch of %d frames: %w", len(b.Frames), uerr)
		}
	}
	s.mu.Lock()
	if err != nil && s.bad == nil {
		s.bad = err
	}
	s.sent = append(s.sent, got.Frames...)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

// frames returns what the executor has sent so far.
func (s *fuzzExecStream) frames() []*wire.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent[:len(s.sent):len(s.sent)]
}

// waitSent waits until the executor has sent a frame of kind and call,
// or done closes; it reports whether the frame came.
func (s *fuzzExecStream) waitSent(t *testing.T, kind wire.Kind, call uint64, done <-chan struct{}) bool {
	t.Helper()
	deadline := time.NewTimer(fuzzWait)
	defer deadline.Stop()
	for {
		for _, f := range s.frames() {
			if f.Kind == kind && f.Call == call {
				return true
			}
		}
		select {
		case <-s.changed:
		case <-done:
			return false
		case <-deadline.C:
			t.Fatalf("no %v with call %d from the executor within %v", kind, call, fuzzWait)
		}
	}
}

// newFuzzExecutor builds an executor as Run does once the driver has
// welcomed it, over s, with its plugins initialised, logging to logs; the
// returned func ends its handlers' ctx, as Run's endHandlers.
func newFuzzExecutor(t *testing.T, s *fuzzExecStream, logs io.Writer) (*Executor, func(why string) context.CancelFunc) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, nil))
	cfg := Config{
		Plugins:         fuzzPlugins(),
		Logger:          log,
		Registry:        prometheus.NewRegistry(),
		MaxMessageBytes: fuzzMaxMessage,
		ShutdownTimeout: fuzzShutdown,
		Tasks:           []string{"echo"},
		RunTask:         fuzzTask,
		Slots:           fuzzSlots,
		LaneQueue:       4, // a few messages fill a lane
	}
	x := &Executor{cfg: cfg, log: log.With("executor", "1"), id: "1", appID: "app", conf: plugin.NewConf(nil),
		stop: make(chan struct{}), tasks: map[uint64]context.CancelCauseFunc{}}
	hctx, cancelHandlers := context.WithCancelCause(context.Background())
	endHandlers := func(why string) context.CancelFunc {
		return func() { cancelHandlers(fmt.Errorf("executor %s %s: %w", x.id, why, context.Canceled)) }
	}
	x.ctx = hctx
	if err := x.setupPlugins(&wire.Welcome{}); err != nil {
		t.Fatalf("setting up the plugins: %v", err)
	}
	x.conn = rpc.New(s, s.end, x, rpc.Options{
		MaxMessageBytes: cfg.MaxMessageBytes,
		OnLimit:         func(limit string) { x.limitHits.WithLabelValues(limit).Inc() },
		Plugins:         pluginNames(cfg.Plugins),
		SendWindow:      fuzzWindow,
	})
	x.conn.SetTypes(codec.Names())
	x.conn.Start()
	if err := x.init(context.Background()); err != nil {
		t.Fatalf("init: %v", err)
	}
	_ = x.conn.SendControl(&wire.Frame{Kind: wire.Kind_KIND_READY, Ready: x.ready()})
	x.stopWatching = x.watchStalls()
	return x, endHandlers
}

// executorKinds are the kinds of frame an executor may send once ready.
var executorKinds = map[wire.Kind]bool{
	wire.Kind_KIND_ASK: true, wire.Kind_KIND_SEND: true, wire.Kind_KIND_REPLY: true,
	wire.Kind_KIND_ASK_CANCEL: true, wire.Kind_KIND_CREDIT: true, wire.Kind_KIND_HEARTBEAT: true,
	wire.Kind_KIND_READY: true, wire.Kind_KIND_TASK_RESULT: true, wire.Kind_KIND_STOPPED: true,
	wire.Kind_KIND_LEAVING: true,
}

// noteType returns the type ID of note in the handshake's type table.
func noteType(tb testing.TB) uint32 {
	tb.Helper()
	for i, n := range codec.Names() {
		if n == "github.com/emberhq/ember/internal/executor.note" {
			return uint32(i + 1)
		}
	}
	tb.Fatal("note is not registered")
	return 0
}

// FuzzHandleFrames gives a ready executor's Conn a batch of arbitrary
// bytes from its driver, decoded as gRPC decodes them (wire.Codec): what a
// buggy or compromised driver can send once the handshake is over. The
// Conn's reader resolves type IDs, takes CREDIT and ASK_CANCEL, matches
// REPLYs (those for call 1, an ask plugin 0 made and gave up on, reach
// HandleFrame as late replies) and counts SENDs against their windows;
// HandleFrame routes ASKs and SENDs to the plugins' lanes or refuses them,
// runs and cancels TASKs of the registered task "echo" in two slots, and
// takes STOP. Then the executor shuts down as Run does: released (STOP,
// its lanes flushed, STOPPED; then a second batch, after, which the
// driver sent before it read STOPPED, and the stream ends) or, with lost,
// having lost its driver.
//
// It must never panic; what it sends must be batches the driver takes,
// of kinds an executor sends, and after STOPPED only the answers to the
// second batch (refusals) and CREDIT. While the stream is open each ASK
// must get one REPLY, and each TASK's run ID at least one TASK_RESULT
// and no more than it had TASKs (each TASK of the second batch exactly
// one, a refusal); at most that once it closed; and no REPLY or
// TASK_RESULT may answer what was never asked. A message REPLY must
// decode; shutdown must return well within its budget, with no attempt
// left, and every goroutine the executor started must end.
func FuzzHandleFrames(f *testing.F) {
	nt := noteType(f)
	enc := func(text string) []byte {
		b, err := codec.Marshal(note{text})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	task := func(run uint64, name string, in []byte) *wire.Frame {
		return &wire.Frame{Kind: wire.Kind_KIND_TASK, Call: run, Payload: in, Task: &wire.Task{JobId: "j", Name: name}}
	}
	msg := func(kind wire.Kind, call uint64, p uint32, text string) *wire.Frame {
		return &wire.Frame{Kind: kind, Call: call, Plugin: p, TypeId: nt, Payload: enc(text)}
	}
	marshal := func(frames ...*wire.Frame) []byte {
		data, err := (&wire.Batch{Frames: frames}).MarshalVT() // proto.Marshal refuses text that is not UTF-8
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	const (
		ask  = wire.Kind_KIND_ASK
		send = wire.Kind_KIND_SEND
	)
	batches := [][]byte{
		// Tasks: valid input, garbage input, an unknown task, one over
		// the message limit, a panic, a Goexit.
		marshal(task(1, "echo", enc("a")), task(2, "echo", []byte{0xff, 0x00}), task(3, "nope", nil)),
		marshal(task(1, "echo", enc("big")), task(2, "echo", enc("panic")), task(3, "echo", enc("goexit"))),
		// Cancels: of a running attempt, of one waiting for a slot, of
		// none; an attempt waiting at STOP.
		marshal(
			task(1, "echo", enc("wait")), task(2, "echo", enc("wait")), task(3, "echo", enc("a")), task(4, "echo", enc("a")),
			&wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 1, Code: uint32(plugin.CodeInternal), Error: "job failed"},
			&wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 3},
			&wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 77},
			&wire.Frame{Kind: wire.Kind_KIND_STOP},
		),
		// Run IDs reused, of an attempt running and of one waiting.
		marshal(task(5, "echo", enc("wait")), task(5, "echo", enc("a")), task(6, "echo", enc("wait")), task(7, "echo", enc("a")), task(7, "echo", enc("b"))),
		marshal(task(1<<64-1, "", nil), &wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 1<<64 - 1, Code: 1 << 31, Error: "\xff"},
			&wire.Frame{Kind: wire.Kind_KIND_STOP}, &wire.Frame{Kind: wire.Kind_KIND_STOP}),
		// ASKs and SENDs: to each plugin, one that receives nothing, and
		// none; cancelable, with deadlines, undecodable.
		marshal(
			msg(ask, 1, 0, "a"), msg(ask, 2, 1, "b"), msg(ask, 3, 2, "c"), msg(ask, 4, 3, "d"), msg(ask, 5, 1<<32-1, "e"),
			msg(send, 0, 0, "f"), msg(send, 0, 1, "g"), msg(send, 0, 2, "h"), msg(send, 0, 9, "i"),
		),
		marshal(
			&wire.Frame{Kind: ask, Call: 1, Plugin: 0, TypeId: nt, Payload: enc("x"), Cancelable: true},
			&wire.Frame{Kind: wire.Kind_KIND_ASK_CANCEL, Call: 1},
			&wire.Frame{Kind: ask, Call: 2, Plugin: 1, TypeId: nt, Payload: enc("y"), TimeoutMicros: 1},
			&wire.Frame{Kind: ask, Call: 3, Plugin: 0, TypeId: 1 << 30, Payload: enc("z")},
			&wire.Frame{Kind: ask, Call: 4, Plugin: 1, Type: "no such type", Payload: []byte{1}},
			&wire.Frame{Kind: ask, Call: 5, Plugin: 0, TypeId: nt, Payload: []byte{0xff}, TimeoutMicros: -1},
			&wire.Frame{Kind: wire.Kind_KIND_ASK_CANCEL, Call: 99},
		),
		marshal(msg(ask, 1, 0, "panic"), msg(ask, 2, 1, "goexit"), msg(send, 0, 0, "panic"), msg(ask, 1, 0, "a"),
			&wire.Frame{Kind: wire.Kind_KIND_STOP}, msg(ask, 3, 1, "late")),
		// More than a lane's queue holds (Config.LaneQueue).
		marshal(msg(ask, 1, 0, "a"), msg(ask, 2, 0, "b"), msg(ask, 3, 0, "c"), msg(ask, 4, 0, "d"), msg(ask, 5, 0, "e"), msg(ask, 6, 0, "f"),
			msg(send, 0, 1, "g"), msg(send, 0, 1, "h"), msg(send, 0, 1, "i"), msg(send, 0, 1, "j"), msg(send, 0, 1, "k"), msg(send, 0, 1, "l")),
		// REPLYs: late (call 1, which plugin 0 gave up on), a second one,
		// unknown, with errors and odd types.
		marshal(
			msg(wire.Kind_KIND_REPLY, 1, 7, "late"), msg(wire.Kind_KIND_REPLY, 1, 0, "again"),
			&wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: 99, TypeId: nt, Payload: enc("unknown")},
			&wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: 1, Code: 14, Error: "closed", Closed: true},
		),
		marshal(&wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: 1, TypeId: nt, Payload: []byte{0xff}}, &wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: 2, Type: ""}),
		// Flow control: CREDIT beyond any window, and SENDs overdrawing
		// plugin 0's window, by more than the one message a sender may
		// (the Conn closes).
		marshal(
			&wire.Frame{Kind: wire.Kind_KIND_CREDIT, Plugin: 0, Credit: 1 << 63}, &wire.Frame{Kind: wire.Kind_KIND_CREDIT, Plugin: 1 << 31, Credit: 1},
			&wire.Frame{Kind: wire.Kind_KIND_CREDIT, Plugin: 1, Credit: 5, Lent: true, Released: true},
			msg(ask, 2, 1, "before"),
			&wire.Frame{Kind: send, Plugin: 0, TypeId: nt, Payload: make([]byte, 4000)}, &wire.Frame{Kind: send, Plugin: 0, TypeId: nt, Payload: make([]byte, 4000)},
			&wire.Frame{Kind: send, Plugin: 0, TypeId: nt, Payload: make([]byte, 4000)},
			msg(ask, 1, 0, "after"),
		),
		// Frames no driver sends an executor once ready, and empty ones.
		marshal(
			&wire.Frame{Kind: wire.Kind_KIND_HELLO}, &wire.Frame{Kind: wire.Kind_KIND_WELCOME}, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: -1}},
			&wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT, Metrics: &wire.Metrics{Families: [][]byte{{1}}}}, &wire.Frame{Kind: wire.Kind_KIND_TASK_RESULT, Call: 1},
			&wire.Frame{Kind: wire.Kind_KIND_STOPPED}, &wire.Frame{Kind: wire.Kind_KIND_LEAVING}, &wire.Frame{Kind: wire.Kind(99)}, &wire.Frame{},
			&wire.Frame{Kind: wire.Kind_KIND_TASK}, &wire.Frame{Kind: ask}, &wire.Frame{Kind: send},
		),
	}
	for _, b := range batches {
		f.Add(b, false, []byte(nil))
		f.Add(b, true, []byte(nil))
	}
	// What the driver sent as the executor stopped: TASKs to refuse,
	// messages to plugins whose lanes are closed, a late REPLY.
	f.Add(batches[0], false, marshal(task(1, "echo", enc("a")), task(9, "echo", enc("wait")), task(9, "echo", enc("a")),
		msg(ask, 7, 0, "a"), msg(ask, 8, 2, "b"), msg(ask, 9, 5, "c"), msg(send, 0, 1, "d"), msg(wire.Kind_KIND_REPLY, 1, 0, "late"),
		&wire.Frame{Kind: wire.Kind_KIND_TASK_CANCEL, Call: 9}, &wire.Frame{Kind: wire.Kind_KIND_STOP}))
	f.Add(batches[2], false, marshal(&wire.Frame{Kind: send, Plugin: 1, Payload: make([]byte, 3000)}, msg(ask, 1, 1, "a")))
	f.Fuzz(func(t *testing.T, data []byte, lost bool, after []byte) {
		first, ok := countBatch(data)
		if !ok {
			return
		}
		second, ok := countBatch(after)
		if !ok {
			return
		}
		before := runtime.NumGoroutine()
		s := newFuzzExecStream(data, after)
		var logs logtest.Buffer
		x, endHandlers := newFuzzExecutor(t, s, &logs)
		c := x.conn

		// Plugin 0 asks, and gives up once its ASK is written: the
		// batch's REPLYs for call 1 come late.
		actx, acancel := context.WithCancel(context.Background())
		asked := make(chan error, 1)
		go func() {
			_, err := x.endpoints[0].Ask(actx, note{"will give up"})
			asked <- err
		}()
		s.waitSent(t, wire.Kind_KIND_ASK, 1, nil)
		acancel()
		if err := <-asked; plugin.CodeOf(err) != plugin.CodeCanceled {
			t.Fatalf("the ask given up: got %v, want CodeCanceled", err)
		}

		s.deliver(t, 0, c.Done())
		start := time.Now()
		budget := fuzzShutdown - fuzzShutdown/10
		var shutErr error
		if lost {
			s.end()
			<-c.Done()
			shutErr = x.shutdown(start.Add(budget), false, endHandlers("lost its driver"))
		} else {
			x.stopOnce.Do(func() { close(x.stop) }) // released, if STOP was not in the batch
			err := x.shutdown(start.Add(budget), true, endHandlers("is shutting down"))
			shutErr = err
			stopped := &wire.Frame{Kind: wire.Kind_KIND_STOPPED, Metrics: x.gatherMetrics()}
			if err != nil {
				code, msg := rpc.ErrorParts(err)
				stopped.Code, stopped.Error = uint32(code), msg
			}
			_ = c.SendLast(stopped, plugin.Errorf(plugin.CodeUnavailable, "executor %s has stopped: %w", x.id, plugin.ErrClosed))
			s.waitSent(t, wire.Kind_KIND_STOPPED, 0, c.Done())
		}
		// Nothing here ignores its ctx: shutdown abandons nothing.
		if errors.Is(shutErr, rpc.ErrAbandoned) || strings.Contains(logs.String(), "did not return at shutdown") {
			t.Errorf("shutdown abandoned code that returns as its ctx ends: %v\n%s", shutErr, logs.String())
		}
		afterOpen := false // the second batch was handled, and its answers all written
		if !c.Ended() {
			handled := s.deliver(t, 1, c.Done())
			c.CloseGracefully() // what is queued is written, then the Conn ends
			deadline := time.NewTimer(fuzzWait)
			select {
			case <-c.Done():
			case <-deadline.C:
				t.Fatalf("a graceful close took over %v", fuzzWait)
			}
			deadline.Stop()
			afterOpen = handled && !rpc.EndedHere(c.Err())
		}
		// What Run does as it returns, and the driver ending the stream.
		endHandlers("has stopped")()
		s.end()
		c.Close(nil)
		c.Wait()
		x.closeLanes(time.Now().Add(fuzzShutdown))

		x.mu.Lock()
		left, queued := len(x.tasks), len(x.queue.takeAll())
		x.mu.Unlock()
		if left != 0 || queued != 0 {
			t.Errorf("after shutdown: %d attempts hold slots and %d wait for one, want none", left, queued)
		}
		checkSent(t, s, first, second, lost, afterOpen)

		leakDeadline := time.Now().Add(fuzzWait)
		for runtime.NumGoroutine() > before {
			if time.Now().After(leakDeadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("goroutines: got %d, want at most %d as before the executor started\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(100 * time.Microsecond)
		}
	})
}

// batchCounts are a batch's ASKs by call ID and TASKs by run ID.
type batchCounts struct{ asks, tasks map[uint64]int }

// countBatch counts data's ASKs and TASKs; false if the executor's gRPC
// would not take data (over its size limit) or it does not decode (the
// Conn closes at once).
func countBatch(data []byte) (batchCounts, bool) {
	n := batchCounts{asks: map[uint64]int{}, tasks: map[uint64]int{}}
	if len(data) > fuzzMaxMessage+rpc.BatchOverhead { // MaxCallRecvMsgSize
		return n, false
	}
	var b wire.Batch
	if wire.UnmarshalBatch(data, &b) != nil {
		return n, false
	}
	for _, f := range b.Frames {
		switch f.Kind {
		case wire.Kind_KIND_ASK:
			n.asks[f.Call]++
		case wire.Kind_KIND_TASK:
			n.tasks[f.Call]++
		}
		wire.ReleaseFrame(f)
	}
	return n, true
}

// checkSent checks what the executor sent (see FuzzHandleFrames) for the
// first batch, before STOPPED, and the second, after it; afterOpen: the
// second was handled with the stream open, and all the executor queued
// was written.
func checkSent(t *testing.T, s *fuzzExecStream, first, second batchCounts, lost, afterOpen bool) {
	t.Helper()
	s.mu.Lock()
	bad := s.bad
	s.mu.Unlock()
	if bad != nil {
		t.Fatal(bad)
	}
	names := codec.Names()
	type counts struct{ replies, results map[uint64]int }
	answers := [2]counts{{map[uint64]int{}, map[uint64]int{}}, {map[uint64]int{}, map[uint64]int{}}}
	stopped := false
	for i, f := range s.frames() {
		if !executorKinds[f.Kind] {
			t.Fatalf("frame %d: an executor sent %v", i, f.Kind)
		}
		if stopped {
			switch {
			case f.Kind == wire.Kind_KIND_TASK_RESULT && (!f.ExecutorStopping || plugin.Code(f.Code) != plugin.CodeUnavailable):
				t.Fatalf("frame %d: a TASK_RESULT after STOPPED, of code %v and stopping %t; want a refusal, CodeUnavailable and stopping", i, plugin.Code(f.Code), f.ExecutorStopping)
			case f.Kind != wire.Kind_KIND_REPLY && f.Kind != wire.Kind_KIND_TASK_RESULT && f.Kind != wire.Kind_KIND_CREDIT:
				t.Fatalf("frame %d: %v follows STOPPED", i, f.Kind)
			}
		}
		a := &answers[0]
		if stopped {
			a = &answers[1]
		}
		switch f.Kind {
		case wire.Kind_KIND_STOPPED:
			stopped = true
		case wire.Kind_KIND_REPLY:
			a.replies[f.Call]++
			if !plugin.Code(f.Code).Valid() {
				t.Fatalf("frame %d: a REPLY of code %d", i, f.Code)
			}
			if f.Code == 0 && f.TypeId != 0 {
				if uint(f.TypeId) > uint(len(names)) {
					t.Fatalf("frame %d: a REPLY of type ID %d, of %d types", i, f.TypeId, len(names))
				}
				r := proto.CloneOf(f)
				r.Type = names[f.TypeId-1]
				if _, err := rpc.Result(r); err != nil {
					t.Fatalf("frame %d: the REPLY to call %d does not decode: %v", i, f.Call, err)
				}
			}
		case wire.Kind_KIND_TASK_RESULT:
			a.results[f.Call]++
			if !plugin.Code(f.Code).Valid() {
				t.Fatalf("frame %d: a TASK_RESULT of code %d", i, f.Code)
			}
		}
	}
	for i, b := range []batchCounts{first, second} {
		for call, n := range answers[i].replies {
			if n > b.asks[call] {
				t.Errorf("batch %d, call %d: %d REPLYs for %d ASKs", i, call, n, b.asks[call])
			}
		}
		for run, n := range answers[i].results {
			if n > b.tasks[run] {
				t.Errorf("batch %d, run %d: %d TASK_RESULTs for %d TASKs", i, run, n, b.tasks[run])
			}
		}
	}
	if !lost && stopped { // the stream carried all the executor had to say
		for call, n := range first.asks {
			if got := answers[0].replies[call]; got != n {
				t.Errorf("call %d: %d REPLYs for %d ASKs, with the stream open", call, got, n)
			}
		}
		for run := range first.tasks {
			if answers[0].results[run] == 0 {
				t.Errorf("run %d: no TASK_RESULT, with the stream open", run)
			}
		}
	}
	if afterOpen {
		for call, n := range second.asks {
			if got := answers[1].replies[call]; got != n {
				t.Errorf("after STOPPED, call %d: %d REPLYs for %d ASKs, with the stream open", call, got, n)
			}
		}
		for run, n := range second.tasks {
			if got := answers[1].results[run]; got != n {
				t.Errorf("after STOPPED, run %d: %d TASK_RESULTs for %d TASKs, with the stream open", run, got, n)
			}
		}
	}
}
