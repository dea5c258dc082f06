package ember_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember"
)

// echoBytes returns its input: a task whose input and output each cross
// the link as one large message.
var echoBytes = ember.NewTask("echoBytes", func(_ context.Context, _ ember.TaskContext, in []byte) ([]byte, error) {
	return in, nil
})

// slowLink forwards TCP connections to target, each way at about rate
// bytes a second, in order: a slow network link, on 127.0.0.1.
func slowLink(t *testing.T, target string, rate int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		defer dst.Close()
		const chunk = 4 << 10
		buf := make([]byte, chunk)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, d)
			mu.Unlock()
			wg.Add(2)
			go pipe(d, c)
			go pipe(c, d)
		}
	}()
	return ln.Addr().String()
}

// A message that takes longer than the heartbeat timeout to cross a slow
// link, its bytes arriving all along, is no silence: a task whose input
// (driver to executor) and output (executor to driver) each take about
// three timeouts to arrive succeeds, and its executor stays. The peer was
// heard from only once a whole batch had arrived, so each side in turn
// took the other for silent (peer silent for ...) and ended the
// connection: across machines, a 4 MiB message (the default
// MaxMessageBytes) on a link slower than about 3.4 Mbit/s lost its
// executor, and a task whose input or output did so failed its Map after
// ember.task.maxFailures executors.
func TestLargeMessageOnASlowLinkIsNotSilence(t *testing.T) {
	cfg := ember.Config{Master: "standalone", Secret: "test secret", BuildID: "test", Logger: quiet,
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: time.Second}
	if isChild() {
		_ = ember.Run(context.Background(), cfg, nil) // an executor process: exits from here
	}
	const rate, size = 256 << 10, 768 << 10 // three seconds each way
	d := standalone(t, cfg)
	link := slowLink(t, d.Addr(), rate)
	cmd := startSelf(t, ember.EnvDriver+"="+link, ember.EnvSecret+"=test secret")
	defer func() { _ = cmd.Process.Kill() }()
	ctx := testCtx(t)
	if err := d.WaitExecutors(ctx, 1); err != nil {
		t.Fatal(err)
	}
	id := d.Executors()[0].ID
	in := bytes.Repeat([]byte{7}, size)
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := ember.Map(mctx, d, echoBytes, [][]byte{in})
	if err != nil {
		t.Fatalf("Map over a slow link: %v", err)
	}
	if !bytes.Equal(out[0], in) {
		t.Errorf("Map returned %d bytes, want the %d sent", len(out[0]), len(in))
	}
	if ex := d.Executors(); len(ex) != 1 || ex[0].ID != id {
		t.Errorf("executors: got %v, want executor %s still there", ex, id)
	}
}
