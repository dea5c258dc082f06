package launch

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseMaster(t *testing.T) {
	tests := []struct {
		in   string
		want Master
		str  string // want.String()
	}{
		{"", Master{Kind: "local-cluster", N: 2}, "local-cluster[2]"},
		{"local", Master{Kind: "local", N: 1}, "local[1]"},
		{"local[1]", Master{Kind: "local", N: 1}, "local[1]"},
		{"local[16]", Master{Kind: "local", N: 16}, "local[16]"},
		{"local-cluster[4]", Master{Kind: "local-cluster", N: 4}, "local-cluster[4]"},
		{"  local-cluster[3]\n", Master{Kind: "local-cluster", N: 3}, "local-cluster[3]"},
		{"standalone", Master{Kind: "standalone"}, "standalone"},
	}
	for _, tt := range tests {
		got, err := ParseMaster(tt.in)
		if err != nil {
			t.Errorf("ParseMaster(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseMaster(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseMaster(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		// What String prints parses back to the same master.
		if again, err := ParseMaster(got.String()); err != nil || again != got {
			t.Errorf("ParseMaster(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

func TestParseMasterRejects(t *testing.T) {
	for _, in := range []string{
		"local[0]",
		"local[-1]",
		"local[]",
		"local[x]",
		"local[2",
		"local[2]x",
		"local-cluster",
		"local-cluster[0]",
		"local-cluster[1.5]",
		"cluster[2]",
		"standalone[2]",
		"yarn",
		"Local[2]",
	} {
		got, err := ParseMaster(in)
		if err == nil {
			t.Errorf("ParseMaster(%q) = %+v, want an error", in, got)
			continue
		}
		if want := "want local[N], local-cluster[N] or standalone"; !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMaster(%q): got error %q, want it to contain %q", in, err, want)
		}
	}
}

// Local.Wait cancels the executors still running when its ctx ends, and
// gives up on those that ignore it after Grace, instead of waiting for
// ever (a goroutine cannot be killed).
//
// The executor that stops when canceled gets a Grace far longer than it
// needs: with 50ms, a loaded machine that kept its goroutine (or Wait's)
// off the CPU that long after the cancel had Wait abandon it. The one
// that ignores its ctx never returns in time, so a short Grace only ends
// its case sooner.
func TestLocalWaitGivesUp(t *testing.T) {
	tests := []struct {
		name       string
		ignoresCtx bool
		grace      time.Duration
		want       string // in Wait's error
	}{
		{"executor that stops when canceled", false, time.Minute, "canceled"},
		{"executor that ignores its ctx", true, 50 * time.Millisecond, "canceled, and abandoned, still running 50ms later"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			started := make(chan struct{})
			l := &Local{Grace: tt.grace, Run: func(ctx context.Context, _ int, _ string, _ func()) error {
				close(started)
				if tt.ignoresCtx {
					<-release
					return nil
				}
				<-ctx.Done()
				return ctx.Err()
			}}
			if err := l.Start(context.Background(), 1, "127.0.0.1:1", func(int, error) {}); err != nil {
				t.Fatal(err)
			}
			<-started
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- l.Wait(ctx) }()
			select {
			case err := <-done:
				if err == nil || err.Error() != tt.want {
					t.Errorf("Wait: got %v, want %q", err, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Wait has not returned 10s after its ctx ended")
			}
		})
	}
}

// KillUnreleased stops at once the in-process executors the driver never
// welcomed (it cannot release them; they would dial it until their start
// timeout, holding Run's shutdown for a ShutdownTimeout) and leaves the
// welcomed ones to be released, or stopped by Wait.
func TestLocalKillUnreleased(t *testing.T) {
	exited := make(chan int, 2)
	l := &Local{Run: func(ctx context.Context, id int, _ string, welcomed func()) error {
		if id == 1 {
			welcomed()
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	if err := l.Start(context.Background(), 2, "127.0.0.1:1", func(id int, _ error) { exited <- id }); err != nil {
		t.Fatal(err)
	}
	// Executor 1 may not have called welcomed yet: wait until it has.
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		_, waiting := l.unwelcomed[1]
		l.mu.Unlock()
		if !waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("executor 1 not welcomed after 10s")
		}
		time.Sleep(time.Millisecond)
	}
	l.KillUnreleased(nil)
	select {
	case id := <-exited:
		if id != 2 {
			t.Fatalf("executor %d ended on KillUnreleased, want 2 (never welcomed)", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the executor never welcomed still runs 10s after KillUnreleased")
	}
	select {
	case id := <-exited:
		t.Fatalf("executor %d (welcomed) ended on KillUnreleased", id)
	default:
	}
	if err := l.Wait(canceled()); err == nil {
		t.Error("Wait: got nil, want the welcomed executor canceled")
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
