package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

type deadlineKey struct{}

var (
	errParent         = errors.New("parent's cause")
	errParentDeadline = errors.New("parent's deadline")
)

// ctxPair is a deadlineCtx and the context.WithDeadline it stands for,
// each under a parent of its own, given the same events.
type ctxPair struct {
	lazy                  *deadlineCtx
	ref                   context.Context
	refEnd                context.CancelFunc
	lazyParent, refParent context.CancelCauseFunc
	deadline              time.Time
}

func newCtxPair(t *testing.T, deadline time.Time, parentDeadline time.Time) *ctxPair {
	t.Helper()
	parent := func() (context.Context, context.CancelCauseFunc) {
		ctx := context.WithValue(context.Background(), deadlineKey{}, "value")
		if !parentDeadline.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadlineCause(ctx, parentDeadline, errParentDeadline)
			t.Cleanup(cancel)
		}
		ctx, cancel := context.WithCancelCause(ctx)
		t.Cleanup(func() { cancel(nil) })
		return ctx, cancel
	}
	p := &ctxPair{deadline: deadline}
	lp, lc := parent()
	rp, rc := parent()
	p.lazyParent, p.refParent = lc, rc
	p.lazy = withDeadline(lp, deadline)
	p.ref, p.refEnd = context.WithDeadline(rp, deadline)
	t.Cleanup(p.refEnd)
	t.Cleanup(p.lazy.end)
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

// The events a handler's ctx can see, applied to both of a pair.
var deadlineEvents = map[string]func(t *testing.T, p *ctxPair){
	"arm":    func(t *testing.T, p *ctxPair) { p.lazy.Done(); p.ref.Done() },
	"end":    func(t *testing.T, p *ctxPair) { p.lazy.end(); p.refEnd() },
	"parent": func(t *testing.T, p *ctxPair) { p.lazyParent(errParent); p.refParent(errParent) },
	"expire": func(t *testing.T, p *ctxPair) {
		waitPast(t, p.deadline)
		// A timer fires after the deadline, not at it. (An armed
		// deadlineCtx has one; waiting on one not armed would arm it.)
		<-p.ref.Done()
		if p.lazy.armed.Load() != nil {
			<-p.lazy.Done()
		}
		if p.lazy.parentFirst { // the parent's own timer ends it
			<-p.lazy.parent.Done()
		}
	},
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
// that do not arm a deadlineCtx first.
func observe(ctx context.Context) state {
	var s state
	s.err = ctx.Err()
	s.cause = context.Cause(ctx)
	s.value = ctx.Value(deadlineKey{})
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

func TestDeadlineCtxActsAsWithDeadline(t *testing.T) {
	t.Parallel()
	// Events before "expire" must come before the deadline: long enough
	// for a loaded machine, short enough for a test (the rows run at once).
	const soon = 200 * time.Millisecond
	tests := []struct {
		name           string
		in             time.Duration // deadline from now
		parentDeadline time.Duration // the parent's own deadline from now, if any
		events         []string
		// diverges: the deadline and the parent's end both came before
		// the ctx was first read, the parent's first; unarmed, it cannot
		// tell, and reports DeadlineExceeded where context.WithDeadline
		// reports the parent's error (documented on deadlineCtx).
		diverges bool
	}{
		{"live", time.Hour, 0, nil, false},
		{"live, armed", time.Hour, 0, []string{"arm"}, false},
		{"parent ended", time.Hour, 0, []string{"parent"}, false},
		{"armed, parent ended", time.Hour, 0, []string{"arm", "parent"}, false},
		{"past deadline at the start", -time.Millisecond, 0, nil, false},
		{"deadline passed", soon, 0, []string{"expire"}, false},
		{"armed, deadline passed", soon, 0, []string{"arm", "expire"}, false},
		{"ended", time.Hour, 0, []string{"end"}, false},
		{"armed, ended", time.Hour, 0, []string{"arm", "end"}, false},
		{"ended, then parent ended", time.Hour, 0, []string{"end", "parent"}, false},
		{"ended, then deadline passed", soon, 0, []string{"end", "expire"}, false},
		{"parent ended, then ended", time.Hour, 0, []string{"parent", "end"}, false},
		{"deadline passed, then ended", soon, 0, []string{"expire", "end"}, false},
		{"deadline passed, parent ended, ended", soon, 0, []string{"expire", "parent", "end"}, false},
		{"deadline passed, parent ended", soon, 0, []string{"expire", "parent"}, false},
		{"armed, parent ended, deadline passed", soon, 0, []string{"arm", "parent", "expire"}, false},
		{"parent ended, deadline passed", soon, 0, []string{"parent", "expire"}, true},
		{"parent ended, deadline passed, ended", soon, 0, []string{"parent", "expire", "end"}, true},
		{"parent's deadline sooner", time.Hour, time.Minute, nil, false},
		{"parent's deadline sooner, passed", time.Hour, soon, []string{"expire"}, false},
		{"parent's deadline sooner, passed, ended", time.Hour, soon, []string{"expire", "end"}, false},
		{"parent's deadline sooner, ended, passed", time.Hour, soon, []string{"end", "expire"}, false},
		{"parent's deadline sooner, parent ended, passed", time.Hour, soon, []string{"parent", "expire"}, false},
		{"parent's deadline later", time.Minute, time.Hour, []string{"arm"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			var parentDeadline time.Time
			if tt.parentDeadline != 0 {
				parentDeadline = now.Add(tt.parentDeadline)
			}
			p := newCtxPair(t, now.Add(tt.in), parentDeadline)
			if !parentDeadline.IsZero() && parentDeadline.Before(p.deadline) {
				p.deadline = parentDeadline // what "expire" waits for
			}
			for _, e := range tt.events {
				deadlineEvents[e](t, p)
			}
			p.lazy.Err()
			context.Cause(p.lazy)
			p.lazy.Value(deadlineKey{})
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
			// Deadline leave the timer unset (the point of the type).
			if wantArmed := slices.Contains(tt.events, "arm"); want.err == nil && armed != wantArmed {
				t.Errorf("after %v and reads of a live ctx: armed %v, want %v", tt.events, armed, wantArmed)
			}
		})
	}
}

// A handler's goroutines may wait on its ctx, derive from it and read it
// while the handler returns: every one of them sees it end.
func TestDeadlineCtxConcurrentUse(t *testing.T) {
	t.Parallel()
	for range 50 {
		c := withDeadline(t.Context(), time.Now().Add(time.Hour))
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
				_ = ctx.Value(deadlineKey{})
				<-ctx.Done()
				if err := ctx.Err(); !errors.Is(err, context.Canceled) {
					t.Errorf("goroutine %d: Err() = %v after the handler returned, want Canceled", i, err)
				}
			})
		}
		c.end()
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
