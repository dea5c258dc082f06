package rpc

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
)

// cancelPair is a cancelCtx and the context.WithCancelCause it stands
// for, each under a parent of its own (with a deadline, which both must
// report), given the same events.
type cancelPair struct {
	lazy                  *cancelCtx
	ref                   context.Context
	refCancel             context.CancelCauseFunc
	lazyParent, refParent context.CancelCauseFunc
}

// The events a cancelable handler's ctx can see, applied to both of a
// pair: waited on, canceled by the asker, ended by the handler's return,
// and its parent (the connection's ctx) ending.
var cancelEvents = map[string]func(p *cancelPair){
	"arm":    func(p *cancelPair) { p.lazy.Done(); p.ref.Done() },
	"asker":  func(p *cancelPair) { p.lazy.cancel(true); p.refCancel(plugin.ErrAskCanceled) },
	"end":    func(p *cancelPair) { p.lazy.cancel(false); p.refCancel(nil) },
	"parent": func(p *cancelPair) { p.lazyParent(errParent); p.refParent(errParent) },
}

func TestCancelCtxActsAsWithCancelCause(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// early: the asker's cancel was read before the handler started
		// (before start gave the ctx its parent).
		early  bool
		events []string
	}{
		{"live", false, nil},
		{"live, armed", false, []string{"arm"}},
		{"canceled by the asker", false, []string{"asker"}},
		{"armed, canceled by the asker", false, []string{"arm", "asker"}},
		{"canceled by the asker before the handler started", true, nil},
		{"canceled by the asker before the handler started, armed", true, []string{"arm"}},
		{"canceled by the asker, then ended", false, []string{"asker", "end"}},
		{"ended", false, []string{"end"}},
		{"armed, ended", false, []string{"arm", "end"}},
		{"ended, then canceled by the asker", false, []string{"end", "asker"}},
		{"parent ended", false, []string{"parent"}},
		{"armed, parent ended", false, []string{"arm", "parent"}},
		{"parent ended, then canceled by the asker", false, []string{"parent", "asker"}},
		{"canceled by the asker, then parent ended", false, []string{"asker", "parent"}},
		{"armed, canceled by the asker, parent ended", false, []string{"arm", "asker", "parent"}},
		{"armed, parent ended, canceled by the asker", false, []string{"arm", "parent", "asker"}},
		{"parent ended, then ended", false, []string{"parent", "end"}},
		{"ended, then parent ended", false, []string{"end", "parent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			deadline := time.Now().Add(time.Hour)
			parent := func() (context.Context, context.CancelCauseFunc) {
				ctx := context.WithValue(context.Background(), deadlineKey{}, "value")
				ctx, stop := context.WithDeadline(ctx, deadline)
				t.Cleanup(stop)
				ctx, cancel := context.WithCancelCause(ctx)
				t.Cleanup(func() { cancel(nil) })
				return ctx, cancel
			}
			p := &cancelPair{lazy: &cancelCtx{}}
			lp, lc := parent()
			rp, rc := parent()
			p.lazyParent, p.refParent = lc, rc
			p.ref, p.refCancel = context.WithCancelCause(rp)
			t.Cleanup(func() { p.refCancel(nil) })
			if tt.early {
				p.lazy.cancel(true)
				p.refCancel(plugin.ErrAskCanceled)
			}
			p.lazy.start(lp)
			t.Cleanup(func() { p.lazy.cancel(false) })
			for _, e := range tt.events {
				cancelEvents[e](p)
			}
			p.lazy.Err()
			context.Cause(p.lazy)
			p.lazy.Value(deadlineKey{})
			p.lazy.Deadline()
			armed := p.lazy.armed.Load() != nil

			if got, want := observe(p.lazy), observe(p.ref); got != want {
				t.Errorf("after %v:\n got %v\nwant %v", tt.events, got, want)
			}
			// A live ctx is read without arming it.
			if wantArmed := len(tt.events) > 0 && tt.events[0] == "arm"; p.ref.Err() == nil && armed != wantArmed {
				t.Errorf("after %v and reads of a live ctx: armed %v, want %v", tt.events, armed, wantArmed)
			}
		})
	}
}

// A handler's goroutines may wait on its ctx, derive from it and read it
// while the asker cancels: every one of them sees the asker's cause.
func TestCancelCtxConcurrentUse(t *testing.T) {
	t.Parallel()
	for range 50 {
		c := &cancelCtx{}
		c.start(t.Context())
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
				<-ctx.Done()
				if err := context.Cause(ctx); !errors.Is(err, plugin.ErrAskCanceled) {
					t.Errorf("goroutine %d: Cause() = %v after the asker canceled, want ErrAskCanceled", i, err)
				}
			})
		}
		c.cancel(true)
		c.cancel(false) // the handler's return, after: changes nothing
		wg.Wait()
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
			ctxs := make([]*cancelCtx, len(tt.ids))
			for i, id := range tt.ids {
				ctxs[i] = &cancelCtx{id: id}
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

// A cancelable ask costs its cancelCtx and nothing more when its handler
// never looks at its ctx, with a deadline or without, and with one that
// passed while the ask waited on its lane (it runs from when the reader
// took it): ending the cancelCtx must not arm the deadlineCtx under it.
func TestCancelableAskAllocs(t *testing.T) {
	c := New(nil, nil, allocsHandler{}, Options{})
	c.Close(nil) // the replies fail at once, allocating nothing
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	receive := func(context.Context, any) (any, error) { return nil, nil }
	allocs := func(cancelable bool, timeout int64, received time.Duration) float64 {
		return testing.AllocsPerRun(200, func() {
			it := Item{Conn: c, Decoded: true, Head: Head{Kind: wire.Kind_KIND_ASK, Call: 1, TimeoutMicros: timeout}, received: received}
			if cancelable {
				it.cancel = c.trackCancel(1)
			}
			Dispatch(ctx, ctx, log, "p", it, 1<<20, false, receive)
		})
	}
	for _, tt := range []struct {
		timeout  int64
		received time.Duration // 0: now
	}{
		{0, 0},
		{1e9, 0},
		{1, 1}, // received as the process started: long past its deadline
	} {
		plain, cancelable := allocs(false, tt.timeout, tt.received), allocs(true, tt.timeout, tt.received)
		// One more: the cancelCtx. And one of slack either way: the
		// reply's frame comes from wire's pool, or not.
		if cancelable > plain+2 {
			t.Errorf("timeout %dµs, received at %v: a cancelable ask makes %v allocations, want one more than a plain one's %v", tt.timeout, tt.received, cancelable, plain)
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
		waited        time.Duration
		timeoutMicros int64
		want          time.Time // zero: no deadline
	}{
		{"none", 0, 0, time.Time{}},
		{"negative", 0, -5, time.Time{}},
		{"too large for a Duration", 0, maxMicros + 1, time.Time{}},
		{"not waited", 0, 1500, now.Add(1500 * time.Microsecond)},
		{"waited: less left", time.Millisecond, 1500, now.Add(500 * time.Microsecond)},
		{"waited past it", time.Second, 1500, now.Add(1500*time.Microsecond - time.Second)},
		{"the largest a Duration holds", time.Hour, maxMicros, now.Add(time.Duration(maxMicros)*time.Microsecond - time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := askDeadline(now, tt.waited, tt.timeoutMicros)
			if ok != !tt.want.IsZero() || !got.Equal(tt.want) {
				t.Errorf("askDeadline(now, %v, %d) = %v, %v; want %v", tt.waited, tt.timeoutMicros, got, ok, tt.want)
			}
			// From now on the wall clock too, not only the monotonic one
			// (which Equal compares): see askDeadline.
			if ok && !got.Round(0).Equal(tt.want.Round(0)) {
				t.Errorf("askDeadline(now, %v, %d) on the wall clock = %v, want %v", tt.waited, tt.timeoutMicros, got.Round(0), tt.want.Round(0))
			}
		})
	}
}
