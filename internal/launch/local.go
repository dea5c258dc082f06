package launch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Local runs executors as goroutines of the driver's process. They still
// connect through the real transport.
type Local struct {
	// Run serves one executor until it is released; id counts from 1. It
	// calls welcomed once the driver has admitted the executor.
	Run func(ctx context.Context, id int, driverAddr string, welcomed func()) error
	// Grace is how long Wait waits for executors once it has canceled
	// their ctx, before it abandons those still running (a goroutine
	// cannot be killed). Zero: 10 seconds.
	Grace time.Duration

	wg     sync.WaitGroup
	cancel context.CancelFunc

	mu         sync.Mutex
	unwelcomed map[int]context.CancelFunc // by id, until welcomed
	closed     bool                       // KillUnreleased has run
}

// Start implements Launcher.
func (l *Local) Start(ctx context.Context, n int, driverAddr string, exited func(int, error)) error {
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.mu.Lock()
	l.unwelcomed = make(map[int]context.CancelFunc, n)
	l.mu.Unlock()
	for i := 1; i <= n; i++ {
		ctx, cancel := context.WithCancel(ctx)
		l.mu.Lock()
		if l.closed {
			cancel()
		} else {
			l.unwelcomed[i] = cancel
		}
		l.mu.Unlock()
		welcomed := func() {
			l.mu.Lock()
			delete(l.unwelcomed, i)
			l.mu.Unlock()
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer cancel()
			exited(i, l.Run(ctx, i, driverAddr, welcomed))
		}()
	}
	return nil
}

// KillUnreleased stops at once the executors the driver never admitted:
// it cannot release them, and they would dial it until their start
// timeout. (Admitted ones are released, or stopped by Wait.) In-process
// executors share the driver's pid, so released is not needed.
func (l *Local) KillUnreleased(released func(pid int) bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for id, cancel := range l.unwelcomed {
		cancel()
		delete(l.unwelcomed, id)
	}
}

// Wait implements Launcher. Executors still running when ctx ends have
// their ctx canceled; those still running Grace later (code that ignores
// its ctx) are abandoned, and Wait returns an error saying so.
func (l *Local) Wait(ctx context.Context) error {
	grace := l.Grace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	return waitOrKill(ctx, &l.wg, func() {
		if l.cancel != nil {
			l.cancel()
		}
	}, grace, "canceled")
}

// errAbandoned ends the error of a Wait whose executors outlived their
// cancellation.
var errAbandoned = errors.New("abandoned, still running")

// waitOrKill waits for wg. When ctx ends first it calls kill, then waits
// up to grace more (forever when grace is 0), and returns an error naming
// what it did (killed, in its words) and, if they outlived it, that the
// executors were abandoned.
func waitOrKill(ctx context.Context, wg *sync.WaitGroup, kill func(), grace time.Duration, killed string) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	kill()
	if grace <= 0 {
		<-done
		return errors.New(killed)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return errors.New(killed)
	case <-t.C:
		return fmt.Errorf("%s, and %w %v later", killed, errAbandoned, grace)
	}
}
