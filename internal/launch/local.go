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
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		if l.cancel != nil {
			l.cancel()
		}
		<-done
		return ctx.Err()
	}
}
