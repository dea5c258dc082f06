package launch

import (
	"context"
	"sync"
)

// Local runs executors as goroutines of the driver's process. They still
// connect through the real transport.
type Local struct {
	// Run serves one executor until it is released; id counts from 1.
	Run func(ctx context.Context, id int, driverAddr string) error

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// Start implements Launcher.
func (l *Local) Start(ctx context.Context, n int, driverAddr string, exited func(int, error)) error {
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for i := 1; i <= n; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			exited(i, l.Run(ctx, i, driverAddr))
		}()
	}
	return nil
}

// Wait implements Launcher.
func (l *Local) Wait(ctx context.Context) error {
	return waitOrKill(ctx, &l.wg, func() {
		if l.cancel != nil {
			l.cancel()
		}
	})
}

// waitOrKill waits for wg; when ctx ends first it calls kill and still
// waits, then returns ctx's error.
func waitOrKill(ctx context.Context, wg *sync.WaitGroup, kill func()) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		kill()
		<-done
		return ctx.Err()
	}
}
