package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

type ctxKey struct{}

var (
	errParent         = errors.New("parent's cause")
	errParentDeadline = errors.New("parent's deadline")
)

// ctxPair is a handlerCtx and the contexts it stands for,
// context.WithCancelCause(context.WithDeadline(parent, deadline)), each
// under a parent of its own, given the same events.
type ctxPair struct {
	lazy                  *handlerCtx
	ref                   context.Context
	refCancel             context.CancelCauseFunc
	refStop               context.CancelFunc
	lazyParent, refParent context.CancelCauseFunc
	expires               time.Time // when the sooner of the two deadlines passes, if any
	parentExpires         bool      // that is the parent's
}

// newCtxPair returns a pair for an ask with deadline (zero: none) under a
// parent with parentDeadline (zero: none). early: the asker's cancel was
// read before the handler started.
func newCtxPair(t *testing.T, deadline, parentDeadline time.Time, early bool) *ctxPair {
	t.Helper()
	parent := func() (context.Context, context.CancelCauseFunc) {
		ctx := context.WithValue(context.Background(), ctxKey{}, "value")
		if !parentDeadline.IsZero() {
			var stop context.CancelFunc
			ctx, stop = context.WithDeadlineCause(ctx, parentDeadline, errParentDeadline)
			t.Cleanup(stop)
		}
		ctx, cancel := context.WithCancelCause(ctx)
		t.Cleanup(func() { cancel(nil) })
		return ctx, cancel
	}
	p := &ctxPair{expires: deadline}
	if !parentDeadline.IsZero() && (deadline.IsZero() || parentDeadline.Before(deadline)) {
		p.expires, p.parentExpires = parentDeadline, true
	}
	lp, lc := parent()
	rp, rc := parent()
	p.lazyParent, p.refParent = lc, rc
	p.lazy = newHandlerCtx(lp, 1, deadline, true)
	p.ref, p.refStop = rp, func() {}
	if !deadline.IsZero() {
		p.ref, p.refStop = context.WithDeadline(rp, deadline)
	}
	p.ref, p.refCancel = context.WithCancelCause(p.ref)
	t.Cleanup(func() { p.refCancel(nil); p.refStop() })
	if early {
		p.lazy.cancel(true)
		p.refCancel(plugin.ErrAskCanceled)
	}
	t.Cleanup(func() { p.lazy.cancel(false) })
	return p
}

// waitPast returns once the clock is past d.
func waitPast(t *testing.T, d time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(d))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-t.Context().Done():
		t.Fatal("test ended before the deadline passed")
	}
	for !time.Now().After(d) { // timers do not fire early; this is belt and braces
	}
}

// The events a handler's ctx can see, applied to both of a pair: waited
// on, canceled by the asker, ended by the handler's return, its parent
// (the connection's ask ctx) ending, and the sooner deadline passing.
var ctxEvents = map[string]func(t *testing.T, p *ctxPair){
	"arm":    func(t *testing.T, p *ctxPair) { p.lazy.Done(); p.ref.Done() },
	"asker":  func(t *testing.T, p *ctxPair) { p.lazy.cancel(true); p.refCancel(plugin.ErrAskCanceled) },
	"end":    func(t *testing.T, p *ctxPair) { p.lazy.cancel(false); p.refCancel(nil); p.refStop() },
	"parent": func(t *testing.T, p *ctxPair) { p.lazyParent(errParent); p.refParent(errParent) },
	"expire": func(t *testing.T, p *ctxPair) {
		waitPast(t, p.expires)
		// A timer fires after the deadline, not at it. (An armed
		// handlerCtx has one; waiting on one not armed would arm it.)
		<-p.ref.Done()
		if p.lazy.armed.Load() != nil {
			<-p.lazy.Done()
		}
		if p.parentExpires { // the parent's own timer ends it
			<-p.lazy.parent.Done()
		}
	},
	// The ask's own deadline passes too, after the parent's (parentFirst):
	// the parent's end, and its cause, still decide.
	"pass": func(t *testing.T, p *ctxPair) { waitPast(t, p.lazy.deadline) },
}

// state is what a ctx says of itself.
type state struct {
	err, cause error
	value      any
	deadline   time.Time
	done       bool
	childErr   error
	childCause error
}

func (s state) String() string {
	return fmt.Sprintf("err %v, cause %v, value %v, deadline %v, done %v, child err %v, child cause %v",
		s.err, s.cause, s.value, s.deadline.Format(time.StampMicro), s.done, s.childErr, s.childCause)
}

// observe reads ctx as a handler or its goroutines would, the calls
// that do not arm a handlerCtx first.
func observe(ctx context.Context) state {
	var s state
	s.err = ctx.Err()
	s.cause = context.Cause(ctx)
	s.value = ctx.Value(ctxKey{})
	s.deadline, _ = ctx.Deadline()
	select {
	case <-ctx.Done():
		s.done = true
	default:
	}
	child, cancel := context.WithCancel(ctx)
	s.childErr, s.childCause = child.Err(), context.Cause(child)
	cancel()
	return s
}

func TestHandlerCtxActsAsTheContextsItStandsFor(t *testing.T) {
	t.Parallel()
	// Events before "expire" must come before the deadline: long enough
	// for a loaded machine, short enough for a test (the rows run at once).
	const soon = 200 * time.Millisecond
	tests := []struct {
		name           string
		in             time.Duration // the ask's deadline from now; 0: none
		parentDeadline time.Duration // the parent's own deadline from now; 0: none
		early          bool          // canceled by the asker before the handler started
		events         []string
		// diverges: the deadline and the parent's end both came before
		// the ctx was first read, the parent's first; unarmed, it cannot
		// tell, and reports DeadlineExceeded where context.WithDeadline
		// reports the parent's error (documented on handlerCtx).
		diverges bool
	}{
		// An ask without a deadline, under a parent with one an hour away.
		{"no deadline, live", 0, time.Hour, false, nil, false},
		{"no deadline, armed", 0, time.Hour, false, []string{"arm"}, false},
		{"no deadline, canceled by the asker", 0, time.Hour, false, []string{"asker"}, false},
		{"no deadline, armed, canceled by the asker", 0, time.Hour, false, []string{"arm", "asker"}, false},
		{"no deadline, canceled before the handler started", 0, time.Hour, true, nil, false},
		{"no deadline, canceled before the handler started, armed", 0, time.Hour, true, []string{"arm"}, false},
		{"no deadline, canceled by the asker, then ended", 0, time.Hour, false, []string{"asker", "end"}, false},
		{"no deadline, ended", 0, time.Hour, false, []string{"end"}, false},
		{"no deadline, armed, ended", 0, time.Hour, false, []string{"arm", "end"}, false},
		{"no deadline, ended, then canceled by the asker", 0, time.Hour, false, []string{"end", "asker"}, false},
		{"no deadline, parent ended", 0, time.Hour, false, []string{"parent"}, false},
		{"no deadline, armed, parent ended", 0, time.Hour, false, []string{"arm", "parent"}, false},
		{"no deadline, parent ended, then canceled by the asker", 0, time.Hour, false, []string{"parent", "asker"}, false},
		{"no deadline, canceled by the asker, then parent ended", 0, time.Hour, false, []string{"asker", "parent"}, false},
		{"no deadline, armed, canceled by the asker, parent ended", 0, time.Hour, false, []string{"arm", "asker", "parent"}, false},
		{"no deadline, armed, parent ended, canceled by the asker", 0, time.Hour, false, []string{"arm", "parent", "asker"}, false},
		{"no deadline, parent ended, then ended", 0, time.Hour, false, []string{"parent", "end"}, false},
		{"no deadline, ended, then parent ended", 0, time.Hour, false, []string{"end", "parent"}, false},
		{"no deadline, no parent deadline", 0, 0, false, []string{"arm"}, false},
		{"no deadline, parent's deadline passed", 0, soon, false, []string{"expire"}, false},

		// An ask with a deadline.
		{"live", time.Hour, 0, false, nil, false},
		{"live, armed", time.Hour, 0, false, []string{"arm"}, false},
		{"parent ended", time.Hour, 0, false, []string{"parent"}, false},
		{"armed, parent ended", time.Hour, 0, false, []string{"arm", "parent"}, false},
		{"past deadline at the start", -time.Millisecond, 0, false, nil, false},
		{"past deadline at the start, canceled before the handler started", -time.Millisecond, 0, true, nil, false},
		{"canceled before the handler started", time.Hour, 0, true, nil, false},
		{"canceled before the handler started, then the deadline passed", soon, 0, true, []string{"expire"}, false},
		{"deadline passed", soon, 0, false, []string{"expire"}, false},
		{"armed, deadline passed", soon, 0, false, []string{"arm", "expire"}, false},
		{"ended", time.Hour, 0, false, []string{"end"}, false},
		{"armed, ended", time.Hour, 0, false, []string{"arm", "end"}, false},
		{"canceled by the asker", time.Hour, 0, false, []string{"asker"}, false},
		{"armed, canceled by the asker, then the deadline passed", soon, 0, false, []string{"arm", "asker", "expire"}, false},
		{"canceled by the asker, then the deadline passed", soon, 0, false, []string{"asker", "expire"}, false},
		{"deadline passed, then canceled by the asker", soon, 0, false, []string{"expire", "asker"}, false},
		{"armed, deadline passed, then canceled by the asker", soon, 0, false, []string{"arm", "expire", "asker"}, false},
		{"ended, then parent ended", time.Hour, 0, false, []string{"end", "parent"}, false},
		{"ended, then deadline passed", soon, 0, false, []string{"end", "expire"}, false},
		{"parent ended, then ended", time.Hour, 0, false, []string{"parent", "end"}, false},
		{"deadline passed, then ended", soon, 0, false, []string{"expire", "end"}, false},
		{"deadline passed, parent ended, ended", soon, 0, false, []string{"expire", "parent", "end"}, false},
		{"deadline passed, parent ended", soon, 0, false, []string{"expire", "parent"}, false},
		{"armed, parent ended, deadline passed", soon, 0, false, []string{"arm", "parent", "expire"}, false},
		{"parent ended, deadline passed", soon, 0, false, []string{"parent", "expire"}, true},
		{"parent ended, deadline passed, ended", soon, 0, false, []string{"parent", "expire", "end"}, true},
		{"parent's deadline sooner", time.Hour, time.Minute, false, nil, false},
		{"parent's deadline sooner, passed", time.Hour, soon, false, []string{"expire"}, false},
		{"parent's deadline sooner, passed, ended", time.Hour, soon, false, []string{"expire", "end"}, false},
		{"parent's deadline sooner, ended, passed", time.Hour, soon, false, []string{"end", "expire"}, false},
		{"parent's deadline sooner, parent ended, passed", time.Hour, soon, false, []string{"parent", "expire"}, false},
		{"parent's deadline sooner, passed, canceled by the asker", time.Hour, soon, false, []string{"expire", "asker"}, false},
		{"parent's deadline sooner, both passed, ended", soon + soon/2, soon, false, []string{"expire", "pass", "end"}, false},
		{"parent's deadline sooner, both passed, canceled by the asker", soon + soon/2, soon, false, []string{"expire", "pass", "asker"}, false},
		{"parent's deadline later", time.Minute, time.Hour, false, []string{"arm"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			var deadline, parentDeadline time.Time
			if tt.in != 0 {
				deadline = now.Add(tt.in)
			}
			if tt.parentDeadline != 0 {
				parentDeadline = now.Add(tt.parentDeadline)
			}
			p := newCtxPair(t, deadline, parentDeadline, tt.early)
			for _, e := range tt.events {
				ctxEvents[e](t, p)
			}
			p.lazy.Err()
			context.Cause(p.lazy)
			p.lazy.Value(ctxKey{})
			p.lazy.Deadline()
			armed := p.lazy.armed.Load() != nil

			got, want := observe(p.lazy), observe(p.ref)
			if tt.diverges {
				want.err, want.cause = context.DeadlineExceeded, context.DeadlineExceeded
				want.childErr, want.childCause = context.DeadlineExceeded, context.DeadlineExceeded
			}
			if got != want {
				t.Errorf("after %v:\n got %v\nwant %v", tt.events, got, want)
			}
			// A live ctx is read without arming it: Err, Cause, Value and
			// Deadline leave it unarmed (the point of the type).
			if wantArmed := slices.Contains(tt.events, "arm"); want.err == nil && armed != wantArmed {
				t.Errorf("after %v and reads of a live ctx: armed %v, want %v", tt.events, armed, wantArmed)
			}
		})
	}
}

// A handler's goroutines may wait on its ctx, derive from it and read it
// while the asker cancels or the handler returns: every one of them sees
// it end, with the cause of whichever came first.
func TestHandlerCtxConcurrentUse(t *testing.T) {
	t.Parallel()
	for _, asker := range []bool{true, false} {
		want := context.Canceled
		if asker {
			want = plugin.ErrAskCanceled
		}
		for range 50 {
			c := newHandlerCtx(t.Context(), 1, time.Now().Add(time.Hour), true)
			fired := make(chan struct{})
			stop := context.AfterFunc(c, func() { close(fired) })
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Go(func() {
					var ctx context.Context = c
					if i%2 == 0 {
						child, cancel := context.WithCancel(c)
						defer cancel()
						ctx = child
					}
					_ = ctx.Err()
					_ = ctx.Value(ctxKey{})
					<-ctx.Done()
					if err := context.Cause(ctx); err != want {
						t.Errorf("asker %v, goroutine %d: Cause() = %v once ended, want %v", asker, i, err, want)
					}
				})
			}
			c.cancel(asker)
			c.cancel(false) // the handler's return, after: changes nothing
			wg.Wait()
			select {
			case <-fired:
			case <-t.Context().Done():
				t.Fatal("AfterFunc registered on a live ctx never ran once it ended")
			}
			if stop() {
				t.Error("AfterFunc's stop reported it had not run")
			}
		}
	}
}

// The reader's cancel (an ASK_CANCEL read as the lane starts the
// handler) races the handler's first reads, its wait and its parent's
// end: what the handler reads, once ended, never changes.
func TestHandlerCtxAskerCancelRacesTheHandler(t *testing.T) {
	t.Parallel()
	for i := range 500 {
		parent, end := context.WithCancelCause(context.Background())
		var d time.Time
		if i%2 == 0 {
			d = time.Now().Add(time.Duration(i%5) * time.Microsecond)
		}
		c := newHandlerCtx(parent, 1, d, true)
		var wg sync.WaitGroup
		wg.Go(func() { c.cancel(true) })
		if i%3 == 0 {
			wg.Go(func() { end(errParent) })
		}
		wg.Go(func() { <-c.Done() })
		var first, firstCause error
		for range 3 {
			if err := c.Err(); err != nil {
				if cause := context.Cause(c); first == nil {
					first, firstCause = err, cause
				} else if err != first || cause != firstCause {
					t.Fatalf("the ctx said %v (cause %v), then %v (cause %v)", first, firstCause, err, cause)
				}
			}
		}
		c.cancel(false)
		wg.Wait()
		if err, cause := c.Err(), context.Cause(c); err == nil || first != nil && (err != first || cause != firstCause) {
			t.Fatalf("once its handler returned, the ctx says %v (cause %v); it said %v (cause %v)", err, cause, first, firstCause)
		}
		end(nil)
	}
}

// Dispatch ends the handler's ctx as its handler returns, as a deferred
// CancelFunc would: a goroutine the handler left waiting on it sees it
// end, and the connection's ask ctx keeps no child of it.
func TestDispatchEndsTheHandlersCtx(t *testing.T) {
	t.Parallel()
	c := New(nil, nil, allocsHandler{}, Options{})
	c.Close(nil) // the replies fail at once
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		name       string
		cancelable bool
		timeout    int64
	}{
		{"cancelable", true, 0},
		{"deadline", false, 3600e6},
		{"deadline, cancelable", true, 3600e6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &registry{done: make(chan struct{}), live: map[int]func(){}}
			it := Item{Conn: c, Decoded: true, Head: Head{Kind: wire.Kind_KIND_ASK, Call: 1, TimeoutMicros: tt.timeout}}
			it.handler = newHandlerCtx(r, 1, askDeadline(time.Now(), tt.timeout), tt.cancelable)
			if tt.cancelable {
				c.cancels.add(it.handler)
			}
			var hctx context.Context
			Dispatch(context.Background(), r, log, "p", it, 1<<20, false, func(ctx context.Context, _ any) (any, error) {
				hctx = ctx
				ctx.Done() // as a handler waiting on it would
				return nil, nil
			})
			select {
			case <-hctx.Done():
			default:
				t.Fatal("the handler's ctx is live once its handler returned")
			}
			if err := hctx.Err(); err != context.Canceled {
				t.Errorf("the handler's ctx once its handler returned: Err() = %v, want %v", err, context.Canceled)
			}
			if n := r.children(); n != 0 {
				t.Errorf("%d children still registered with the ask ctx once the handler returned, want 0", n)
			}
		})
	}
}

// cancelTable finds every ctx it holds by its ID, whether in its ring or
// spilled (an ID whose slot an older ask holds, or an ID the peer used
// twice), and holds nothing once each is removed, in any order.
func TestCancelTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ids    []uint64
		remove []int // indexes into ids, in removal order
	}{
		{"one after another", []uint64{1, 2, 3}, []int{0, 1, 2}},
		{"same slot, older removed first", []uint64{1, 1 + cancelSlots, 1 + 2*cancelSlots}, []int{0, 1, 2}},
		{"same slot, newer removed first", []uint64{1, 1 + cancelSlots, 1 + 2*cancelSlots}, []int{2, 1, 0}},
		{"an ID used twice", []uint64{5, 5}, []int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tab cancelTable
			if got := tab.find(1); got != nil {
				t.Fatalf("find in an empty table: got %v, want nil", got)
			}
			ctxs := make([]*handlerCtx, len(tt.ids))
			for i, id := range tt.ids {
				ctxs[i] = &handlerCtx{id: id, cancelable: true}
				tab.add(ctxs[i])
			}
			if got, want := tab.len(), len(tt.ids); got != want {
				t.Errorf("len after adding: got %d, want %d", got, want)
			}
			for i, hc := range ctxs {
				if got := tab.find(hc.id); got == nil || got.id != hc.id {
					t.Errorf("find(%d) (ctx %d): got %v, want a ctx with that ID", hc.id, i, got)
				}
			}
			removed := map[int]bool{}
			for _, i := range tt.remove {
				tab.remove(ctxs[i])
				removed[i] = true
				for j, hc := range ctxs {
					if !removed[j] && tab.find(hc.id) == nil {
						t.Errorf("after removing ctx %d: find(%d) (ctx %d, not removed) = nil", i, hc.id, j)
					}
				}
			}
			if n := tab.len(); n != 0 {
				t.Errorf("len after removing every ctx: got %d, want 0", n)
			}
			if got := tab.find(tt.ids[0]); got != nil {
				t.Errorf("find after removing every ctx: got %v, want nil", got)
			}
		})
	}
}

type allocsHandler struct{}

func (allocsHandler) HandleFrame(*Conn, *wire.Frame) {}
func (allocsHandler) HandleClose(*Conn, error)       {}

// An ask with a deadline, a cancel or both costs its one handlerCtx and
// nothing more when its handler never looks at its ctx, also when the
// deadline passed while the ask waited on its lane (it runs from when
// the reader took it): ending the ctx must not arm it.
func TestHandlerCtxAllocs(t *testing.T) {
	c := New(nil, nil, allocsHandler{}, Options{})
	c.Close(nil) // the replies fail at once, allocating nothing
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	receive := func(context.Context, any) (any, error) { return nil, nil }
	allocs := func(cancelable bool, timeout int64, received time.Time) float64 {
		return testing.AllocsPerRun(200, func() {
			it := Item{Conn: c, Decoded: true, Head: Head{Kind: wire.Kind_KIND_ASK, Call: 1, TimeoutMicros: timeout}}
			it.handler = newHandlerCtx(ctx, 1, askDeadline(received, timeout), cancelable)
			if cancelable {
				c.cancels.add(it.handler)
			}
			Dispatch(ctx, ctx, log, "p", it, 1<<20, false, receive)
		})
	}
	for _, tt := range []struct {
		name       string
		cancelable bool
		timeout    int64
		received   time.Time
	}{
		{"cancelable", true, 0, time.Now()},
		{"deadline", false, 1e9, time.Now()},
		{"deadline, cancelable", true, 1e9, time.Now()},
		{"deadline passed on the lane", false, 1, time.Now().Add(-time.Hour)},
		{"deadline passed on the lane, cancelable", true, 1, time.Now().Add(-time.Hour)},
	} {
		// One more than a plain ask's: the handlerCtx. The count is the
		// process's, and the reply's frame comes from wire's pool, which
		// frames that other tests' connections give back may fill: so
		// the two are measured side by side, up to three times.
		var got, plain float64
		for range 3 {
			plain = allocs(false, 0, time.Now())
			if got = allocs(tt.cancelable, tt.timeout, tt.received); got == plain+1 {
				break
			}
		}
		if got != plain+1 {
			t.Errorf("%s: an ask makes %v allocations, want one more than a plain one's %v", tt.name, got, plain)
		}
	}
	if n := c.cancels.len(); n != 0 {
		t.Errorf("%d ctxs left in the table", n)
	}
}

func TestAskDeadline(t *testing.T) {
	t.Parallel()
	const maxMicros = math.MaxInt64 / int64(time.Microsecond)
	now := time.Now()
	tests := []struct {
		name          string
		timeoutMicros int64
		want          time.Time // zero: no deadline
	}{
		{"none", 0, time.Time{}},
		{"negative", -5, time.Time{}},
		{"too large for a Duration", maxMicros + 1, time.Time{}},
		{"1.5 ms", 1500, now.Add(1500 * time.Microsecond)},
		{"the largest a Duration holds", maxMicros, now.Add(time.Duration(maxMicros) * time.Microsecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := askDeadline(now, tt.timeoutMicros)
			if !got.Equal(tt.want) {
				t.Errorf("askDeadline(now, %d) = %v; want %v", tt.timeoutMicros, got, tt.want)
			}
			// On the wall clock too, not only the monotonic one (which
			// Equal compares): ctx.Deadline() is read on the wall clock
			// wherever it is formatted or sent on.
			if !got.Round(0).Equal(tt.want.Round(0)) {
				t.Errorf("askDeadline(now, %d) on the wall clock = %v, want %v", tt.timeoutMicros, got.Round(0), tt.want.Round(0))
			}
		})
	}
}

// registry is a parent ctx that counts the children registered with it
// and not yet let go (context's propagation goes through its AfterFunc).
type registry struct {
	done chan struct{}
	mu   sync.Mutex
	next int
	live map[int]func()
}

func (r *registry) Deadline() (time.Time, bool) { return time.Time{}, false }
func (r *registry) Done() <-chan struct{}       { return r.done }
func (r *registry) Err() error                  { return nil }
func (r *registry) Value(any) any               { return nil }

func (r *registry) AfterFunc(f func()) (stop func() bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.next
	r.next++
	r.live[id] = f
	return func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		_, ok := r.live[id]
		delete(r.live, id)
		return ok
	}
}

func (r *registry) children() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// A handler that waited on its ctx (armed it) leaves nothing registered
// with the connection's ask ctx once it returns: no child, and no
// deadline timer, until a deadline possibly hours away.
func TestHandlerCtxLetsGoOfItsParent(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		deadline time.Duration // 0: none
		asker    bool          // the asker canceled before the handler returned
	}{
		{"no deadline", 0, false},
		{"deadline", time.Hour, false},
		{"deadline, canceled by the asker", time.Hour, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &registry{done: make(chan struct{}), live: map[int]func(){}}
			var d time.Time
			if tt.deadline != 0 {
				d = time.Now().Add(tt.deadline)
			}
			c := newHandlerCtx(r, 1, d, true)
			c.Done() // as a handler waiting on it would: arms it
			if r.children() == 0 {
				t.Fatal("an armed ctx registered nothing with its parent; the test cannot tell")
			}
			if tt.asker {
				c.cancel(true)
			}
			c.cancel(false)
			if n := r.children(); n != 0 {
				t.Errorf("%d children still registered with the parent once the handler returned, want 0", n)
			}
		})
	}
}
