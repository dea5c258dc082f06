package executor

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// note is a message type the tests' plugins send.
type note struct{ Text string }

func init() { plugin.RegisterMessage[note]() }

// fakeDriver accepts one executor at a time at a loopback address: it
// runs the handshake without authentication, announcing sendWindow, then
// records every frame the executor sends, in order, and grants no credit
// unless told to (grant): the executor's SENDs spend their window.
type fakeDriver struct {
	wire.UnimplementedEmberServer
	t          *testing.T
	plugins    []string
	sendWindow int
	addr       string
	conf       map[string]string // the WELCOME's conf

	mu     sync.Mutex
	conn   *rpc.Conn
	frames []*wire.Frame // received, in order (copies of the fields tests read)
}

func newFakeDriver(t *testing.T, plugins []string, sendWindow int) *fakeDriver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDriver{t: t, plugins: plugins, sendWindow: sendWindow, addr: lis.Addr().String()}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(wire.Codec{}))
	wire.RegisterEmberServer(srv, d)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return d
}

// run runs an executor of plugin p (and registry reg, if not nil)
// against d, and returns the channel Run's error arrives on.
func (d *fakeDriver) run(p plugin.Plugin, reg *prometheus.Registry) <-chan error {
	return d.runWith(p, func(cfg *Config) {
		if reg != nil {
			cfg.Registry = reg
		}
	})
}

// runWith is run with the executor's Config set by set.
func (d *fakeDriver) runWith(p plugin.Plugin, set func(*Config)) <-chan error {
	return d.runIn(context.Background(), p, set)
}

// runIn is runWith under ctx: ending it stops the executor on its own.
func (d *fakeDriver) runIn(ctx context.Context, p plugin.Plugin, set func(*Config)) <-chan error {
	cfg := Config{DriverAddr: d.addr, Plugins: []plugin.Plugin{p}, Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 2 * time.Second}
	set(&cfg)
	runErr := make(chan error, 1)
	go func() { runErr <- Run(ctx, cfg) }()
	return runErr
}

func (d *fakeDriver) Connect(stream wire.Ember_ConnectServer) error {
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_CHALLENGE, Challenge: &wire.Challenge{Nonce: make([]byte, 32)}}}}); err != nil {
		return err
	}
	hello := new(wire.FirstBatch)
	if err := stream.RecvMsg(hello); err != nil {
		return err
	}
	welcome := &wire.Welcome{ExecutorId: "1", AppId: "app", SendWindow: uint64(d.sendWindow), Conf: d.conf}
	for range d.plugins {
		welcome.ExtraConf = append(welcome.ExtraConf, &wire.ExtraConf{})
	}
	// Published before WELCOME, as the driver does: the executor's Init
	// may run, and a test send to it, before this goroutine runs again.
	// Frames sent meanwhile are queued, and written once it starts.
	c := rpc.New(stream, nil, d, rpc.Options{Plugins: d.plugins, SendWindow: d.sendWindow})
	c.SetTypes(codec.Names())
	d.mu.Lock()
	d.conn = c
	d.mu.Unlock()
	if err := stream.Send(&wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_WELCOME, Welcome: welcome}}}); err != nil {
		return err
	}
	c.Start()
	<-c.Done()
	c.Wait()
	return nil
}

func (d *fakeDriver) HandleFrame(_ *rpc.Conn, f *wire.Frame) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.frames = append(d.frames, &wire.Frame{Kind: f.Kind, Call: f.Call, Plugin: f.Plugin, Code: f.Code, Error: f.Error,
		Payload: f.Payload, ExecutorStopping: f.ExecutorStopping, Permanent: f.Permanent, Ready: f.Ready, SlotMicros: f.SlotMicros,
		Metrics: proto.CloneOf(f.Metrics)})
}

func (d *fakeDriver) HandleClose(*rpc.Conn, error) {}

// closeConn closes the driver's end of the executor's connection with
// err, once it has one: the executor may be in its plugins' Init, having
// read WELCOME, before Connect has kept the connection it made.
func (d *fakeDriver) closeConn(err error) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		d.mu.Lock()
		c := d.conn
		d.mu.Unlock()
		if c != nil {
			c.Close(err)
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no connection from the executor within 20s")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitFor polls, until a deadline, for the first frame of kind from
// index from on, and returns its index.
func (d *fakeDriver) waitFor(kind wire.Kind, from int) int {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		d.mu.Lock()
		for i := from; i < len(d.frames); i++ {
			if d.frames[i].Kind == kind {
				d.mu.Unlock()
				return i
			}
		}
		d.mu.Unlock()
		if time.Now().After(deadline) {
			d.t.Fatalf("no %v from the executor within 20s", kind)
		}
		time.Sleep(time.Millisecond)
	}
}

// stopped returns a channel closed once STOPPED has arrived, or after
// 20s, failing the test.
func (d *fakeDriver) stopped() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			d.mu.Lock()
			for _, f := range d.frames {
				if f.Kind == wire.Kind_KIND_STOPPED {
					d.mu.Unlock()
					return
				}
			}
			d.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
		d.t.Errorf("no STOPPED from the executor within 20s")
	}()
	return ch
}

// kinds returns the kinds of the frames received so far, in order.
func (d *fakeDriver) kinds() []wire.Kind {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ks []wire.Kind
	for _, f := range d.frames {
		ks = append(ks, f.Kind)
	}
	return ks
}

// grant gives plugin p the cost of every SEND received so far back.
func (d *fakeDriver) grant(p uint32) {
	d.mu.Lock()
	var cost int64
	for _, f := range d.frames {
		if f.Kind == wire.Kind_KIND_SEND && f.Plugin == p {
			cost += rpc.SendCost(f)
		}
	}
	c := d.conn
	d.mu.Unlock()
	c.Consumed(p, cost)
}

// send queues a control frame to the executor.
func (d *fakeDriver) send(f *wire.Frame) {
	d.mu.Lock()
	c := d.conn
	d.mu.Unlock()
	if err := c.SendControl(f); err != nil {
		d.t.Fatalf("send %v: %v", f.Kind, err)
	}
}

// release ends the stream, as a driver does once the executor stopped.
func (d *fakeDriver) release() {
	d.mu.Lock()
	c := d.conn
	d.mu.Unlock()
	c.CloseGracefully()
}

// testPlugin is a plugin with an executor side made of funcs.
type testPlugin struct {
	name string
	ep   plugin.ExecutorPlugin
}

func (p testPlugin) Name() string                          { return p.name }
func (p testPlugin) DriverPlugin() plugin.DriverPlugin     { return nil }
func (p testPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return p.ep }

// contextPlugin returns a plugin of the given name whose executor side
// hands its ExecutorContext, at Init, to the channel returned.
func contextPlugin(name string) (testPlugin, <-chan plugin.ExecutorContext) {
	initialised := make(chan plugin.ExecutorContext, 1)
	return testPlugin{name: name, ep: &funcExecutor{InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
		initialised <- pc
		return nil
	}}}, initialised
}

type funcExecutor struct {
	plugin.BaseExecutorPlugin
	InitF     func(ctx context.Context, pc plugin.ExecutorContext, conf map[string]string) error
	ShutdownF func(ctx context.Context) error
}

func (e *funcExecutor) Init(ctx context.Context, pc plugin.ExecutorContext, conf map[string]string) error {
	if e.InitF != nil {
		return e.InitF(ctx, pc, conf)
	}
	return nil
}

func (e *funcExecutor) Shutdown(ctx context.Context) error {
	if e.ShutdownF != nil {
		return e.ShutdownF(ctx)
	}
	return nil
}
