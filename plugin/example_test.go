package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

// Chunk is a piece of a file that an executor ships to the driver.
type Chunk struct {
	Index int
	Data  []byte
}

func init() { plugin.RegisterMessage[Chunk]() }

type shipper struct{}

func (shipper) Name() string                          { return "shipper" }
func (shipper) DriverPlugin() plugin.DriverPlugin     { return &shipperDriver{} }
func (shipper) ExecutorPlugin() plugin.ExecutorPlugin { return &shipperExecutor{} }

type shipperDriver struct {
	plugin.BaseDriverPlugin
	chunks, bytes int
}

// SendWindow lets each executor have 16 chunks of 1 MiB in flight to this
// plugin, where the application's default window (1 MiB) would send them
// one at a time. The application's other plugins keep the default.
func (*shipperDriver) SendWindow() int { return 16 << 20 }

func (d *shipperDriver) Receive(_ context.Context, msg any) (any, error) {
	c, ok := msg.(Chunk)
	if !ok {
		return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected %T", msg)
	}
	d.chunks++ // one Receive at a time: no lock needed
	d.bytes += len(c.Data)
	return nil, nil
}

func (d *shipperDriver) Shutdown(context.Context) error {
	fmt.Printf("driver: %d chunks, %d MiB\n", d.chunks, d.bytes>>20)
	return nil
}

type shipperExecutor struct{ plugin.BaseExecutorPlugin }

func (*shipperExecutor) Init(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	for i := range 32 {
		if err := pc.Send(ctx, Chunk{Index: i, Data: make([]byte, 1<<20)}); err != nil {
			return err
		}
	}
	return nil
}

var _ plugin.SendWindowed = (*shipperDriver)(nil)

// A plugin that ships large messages sets a send window of its own. The
// driver plugin's Shutdown runs once every executor has stopped and every
// message it sent has been received.
func ExampleSendWindowed() {
	err := ember.Run(context.Background(), ember.Config{
		Master:  "local[1]",
		Plugins: []plugin.Plugin{shipper{}},
		Logger:  slog.New(slog.DiscardHandler),
	}, func(context.Context, *ember.Driver) error { return nil })
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// driver: 32 chunks, 32 MiB
}

// tally counts the chunks each executor has sent.
type tally struct {
	plugin.BaseDriverPlugin
	byExecutor map[string]int
}

func (t *tally) Receive(ctx context.Context, msg any) (any, error) {
	id, ok := plugin.SenderID(ctx)
	if !ok {
		return nil, plugin.Errorf(plugin.CodeInternal, "no sender")
	}
	t.byExecutor[id]++
	return nil, nil
}

// A driver plugin's Receive can be unit-tested by calling it with a ctx
// that names its sender, as the runtime's does.
func ExampleNewSenderContext() {
	t := &tally{byExecutor: map[string]int{}}
	for _, id := range []string{"1", "2", "1"} {
		ctx := plugin.NewSenderContext(context.Background(), id)
		if _, err := t.Receive(ctx, Chunk{}); err != nil {
			fmt.Println(err)
		}
	}
	fmt.Println(t.byExecutor)
	// Output:
	// map[1:2 2:1]
}

// stubDriver is a stub Asker, for unit-testing code that asks.
type stubDriver func(ctx context.Context, msg any) (any, error)

func (f stubDriver) Ask(ctx context.Context, msg any) (any, error) { return f(ctx, msg) }

// Ask returns the reply as the type the caller names; an ExecutorContext
// is an Asker, and so is a stub in a unit test.
func ExampleAsk() {
	driver := stubDriver(func(_ context.Context, msg any) (any, error) {
		return Chunk{Index: msg.(Chunk).Index + 1}, nil
	})
	next, err := plugin.Ask[Chunk](context.Background(), driver, Chunk{Index: 41})
	fmt.Println(next.Index, err)

	// A reply of another type is an error, not a panic.
	_, err = plugin.Ask[string](context.Background(), driver, Chunk{})
	fmt.Println(plugin.CodeOf(err))
	// Output:
	// 42 <nil>
	// invalid_argument
}

// stubExecutor is a stub ExecutorContext whose Go answers at once from a
// goroutine, as the runtime answers from its connection.
type stubExecutor struct {
	plugin.ExecutorContext
	answer func(msg any) (any, error)
}

func (s stubExecutor) Go(_ context.Context, msg any, done chan *plugin.Call) *plugin.Call {
	c := &plugin.Call{Msg: msg, Done: done}
	go func() {
		c.Reply, c.Err = s.answer(msg)
		c.Done <- c
	}()
	return c
}

// A load generator keeps a fixed number of asks in flight from one
// goroutine: it starts that many with Go, then one more as each
// completes.
func ExampleCall() {
	var pc plugin.ExecutorContext = stubExecutor{answer: func(msg any) (any, error) {
		return Chunk{Index: msg.(Chunk).Index * 2}, nil
	}}
	ctx := context.Background()
	const total, inFlight = 100, 8
	done := make(chan *plugin.Call, inFlight) // room for every ask in flight
	started, sum := 0, 0
	for ; started < inFlight; started++ {
		pc.Go(ctx, Chunk{Index: started}, done)
	}
	for range total {
		c := <-done
		reply, err := plugin.Reply[Chunk](c)
		if err != nil {
			fmt.Println(c.Msg, err)
			continue
		}
		sum += reply.Index
		if started < total {
			pc.Go(ctx, Chunk{Index: started}, done)
			started++
		}
	}
	fmt.Println(sum) // 2 × (0 + 1 + ... + 99)
	// Output:
	// 9900
}

// Errors keep their code through wrapping, and match the runtime's
// sentinels and context errors with errors.Is.
func ExampleCodeOf() {
	notFound := fmt.Errorf("lookup: %w", plugin.NewError(plugin.CodeNotFound, "no such key"))
	fmt.Println(plugin.CodeOf(notFound))

	closed := plugin.Errorf(plugin.CodeUnavailable, "driver: %w", plugin.ErrClosed)
	fmt.Println(plugin.CodeOf(closed), errors.Is(closed, plugin.ErrClosed))

	// A deadline that expired on the other side matches
	// context.DeadlineExceeded too.
	late := plugin.NewError(plugin.CodeDeadlineExceeded, "too slow")
	fmt.Println(errors.Is(late, context.DeadlineExceeded), plugin.IsRemote(late))

	fmt.Println(plugin.CodeOf(context.Canceled), plugin.CodeOf(errors.New("plain")), plugin.CodeOf(nil))
	// Output:
	// not_found
	// unavailable true
	// true false
	// canceled unknown ok
}

// Conf reads typed values with a default for keys that are not set, and
// prints secret values redacted.
func ExampleConf() {
	c := plugin.NewConf(map[string]string{"batch.size": "64", "flush": "250ms", "db.password": "hunter2"})
	size, err := c.Int("batch.size", 16)
	fmt.Println(size, err)
	retries, err := c.Int("retries", 3)
	fmt.Println(retries, err)
	flush, err := c.Duration("flush", time.Second)
	fmt.Println(flush, err)
	fmt.Println(c)
	// Output:
	// 64 <nil>
	// 3 <nil>
	// 250ms <nil>
	// map[batch.size:64 db.password:[redacted] flush:250ms]
}
