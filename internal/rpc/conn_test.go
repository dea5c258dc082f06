package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
)

// defaultTestTimeout bounds every wait in these tests.
const defaultTestTimeout = 10 * time.Second

// testContext returns a ctx that ends after defaultTestTimeout or with the test.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitClosed waits for ch to be closed (or to yield a value).
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("%s: not done after %v", what, defaultTestTimeout)
	}
}

// recv waits for a value from ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(defaultTestTimeout):
		t.Fatalf("%s: nothing after %v", what, defaultTestTimeout)
		panic("unreachable")
	}
}

// poll calls cond until it reports true, failing after defaultTestTimeout.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after %v", what, defaultTestTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// wantCode fails unless err is non-nil with code want.
func wantCode(t *testing.T, what string, err error, want plugin.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got nil error, want code %v", what, want)
	}
	if got := plugin.CodeOf(err); got != want {
		t.Errorf("%s: got %q with code %v, want code %v", what, err, got, want)
	}
}

// askResult asks on c and returns the caller's error as an endpoint sees
// it: Ask's own error, or the error a REPLY carries.
func askResult(ctx context.Context, c *rpc.Conn, f *wire.Frame) error {
	r, err := c.Ask(ctx, f)
	if err != nil {
		return err
	}
	_, err = rpc.Result(r)
	return err
}

// handler is a stub rpc.Handler with func fields; with FrameF nil it
// records frames.
type handler struct {
	FrameF func(c *rpc.Conn, f *wire.Frame)

	closed chan struct{} // closed by the first HandleClose

	mu       sync.Mutex // protects the following fields
	frames   []*wire.Frame
	closes   int
	closeErr error
}

func newHandler(frameF func(c *rpc.Conn, f *wire.Frame)) *handler {
	return &handler{FrameF: frameF, closed: make(chan struct{})}
}

func (h *handler) HandleFrame(c *rpc.Conn, f *wire.Frame) {
	if h.FrameF != nil {
		h.FrameF(c, f)
		return
	}
	h.mu.Lock()
	h.frames = append(h.frames, f)
	h.mu.Unlock()
}

func (h *handler) HandleClose(c *rpc.Conn, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closes++
	h.closeErr = err
	if h.closes == 1 {
		close(h.closed)
	}
}

func (h *handler) Frames() []*wire.Frame {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.frames)
}

func (h *handler) NumFrames() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.frames)
}

func (h *handler) CloseResult() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closes, h.closeErr
}

// echo answers every ASK with its own type and payload.
func echo(c *rpc.Conn, f *wire.Frame) {
	if f.Kind == wire.Kind_KIND_ASK {
		_ = c.Reply(&wire.Frame{Call: f.Call, Plugin: f.Plugin, Type: f.Type, Payload: f.Payload})
	}
}

// ---- Real gRPC in memory (bufconn) ----

type emberServer struct {
	wire.UnimplementedEmberServer
	h     rpc.Handler
	opts  rpc.Options
	conns chan *rpc.Conn
}

// Connect serves the stream as the driver does.
func (s *emberServer) Connect(stream wire.Ember_ConnectServer) error {
	c := rpc.New(stream, nil, s.h, s.opts)
	s.conns <- c
	c.Start()
	<-c.Done()
	c.Wait()
	return nil
}

// pair is the two ends of one stream: client plays the executor (it can
// cancel its stream), server the driver.
type pair struct {
	client, server *rpc.Conn
}

// newPair connects a client Conn to a server Conn over gRPC on bufconn.
// Cleanup closes both and stops gRPC.
func newPair(t *testing.T, clientH, serverH rpc.Handler, clientOpts, serverOpts rpc.Options) *pair {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	// The flow-control windows the driver and executors set.
	srv := grpc.NewServer(grpc.InitialWindowSize(rpc.StreamWindow), grpc.InitialConnWindowSize(rpc.ConnWindow))
	es := &emberServer{h: serverH, opts: serverOpts, conns: make(chan *rpc.Conn, 1)}
	wire.RegisterEmberServer(srv, es)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(rpc.StreamWindow), grpc.WithInitialConnWindowSize(rpc.ConnWindow))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	streamCtx, cancel := context.WithCancel(context.Background())
	stream, err := wire.NewEmberClient(cc).Connect(streamCtx)
	if err != nil {
		cancel()
		t.Fatalf("Connect: %v", err)
	}
	p := &pair{client: rpc.New(stream, cancel, clientH, clientOpts)}
	p.client.Start()
	p.server = recv(t, es.conns, "server side of the stream")
	t.Cleanup(func() {
		p.client.Close(nil)
		p.client.Wait()
		waitClosed(t, p.server.Done(), "server conn after the client closed")
		p.server.Wait()
		srv.Stop()
		_ = cc.Close()
		waitClosed(t, served, "grpc Serve")
	})
	return p
}

func TestConnAsk(t *testing.T) {
	t.Parallel()
	p := newPair(t, newHandler(echo), newHandler(echo), rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	for _, dir := range []struct {
		name string
		c    *rpc.Conn
	}{{"client asks server", p.client}, {"server asks client", p.server}} {
		t.Run(dir.name, func(t *testing.T) {
			r, err := dir.c.Ask(ctx, &wire.Frame{Plugin: 3, Type: "t", Payload: []byte("hi")})
			if err != nil {
				t.Fatalf("Ask: %v", err)
			}
			if r.Kind != wire.Kind_KIND_REPLY || string(r.Payload) != "hi" || r.Plugin != 3 || r.Type != "t" || r.Code != 0 {
				t.Errorf("Ask reply = %v, want a REPLY for plugin 3 with payload hi", r)
			}
			if r.Call == 0 {
				t.Errorf("reply call ID = 0, want the ask's non-zero ID")
			}
		})
	}
}

func TestConnConcurrentAsksRouted(t *testing.T) {
	t.Parallel()
	const callers, asks = 8, 250
	// The server holds asks until every caller has one outstanding, then
	// answers them in reverse order, so that replies never arrive in the
	// order the asks were sent.
	p := newPair(t, newHandler(nil), reversing(callers), rpc.Options{}, rpc.Options{})
	ctx := testContext(t)

	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := range asks {
				want := fmt.Sprintf("%d/%d", g, i)
				r, err := p.client.Ask(ctx, &wire.Frame{Payload: []byte(want)})
				if err != nil {
					t.Errorf("caller %d: Ask %d: %v", g, i, err)
					return
				}
				if got := string(r.Payload); got != want {
					t.Errorf("caller %d: got reply %q, want %q", g, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// reversing is a server handler that holds ASKs until it has n, then
// echoes them in reverse order, so that replies never arrive in the order
// the asks were sent.
func reversing(n int) *handler {
	var mu sync.Mutex
	var held []*wire.Frame
	return newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind != wire.Kind_KIND_ASK {
			return
		}
		mu.Lock()
		held = append(held, f)
		batch := held
		if len(held) == n {
			held = nil
		}
		mu.Unlock()
		if len(batch) < n {
			return
		}
		for i := len(batch) - 1; i >= 0; i-- {
			echo(c, batch[i])
		}
	})
}

// holder is a server handler that keeps the ASKs of type "hold" without
// answering and echoes the rest.
type holder struct {
	held chan *wire.Frame
}

func newHolder() *holder { return &holder{held: make(chan *wire.Frame, 16)} }

func (h *holder) frame(c *rpc.Conn, f *wire.Frame) {
	if f.Kind == wire.Kind_KIND_ASK && f.Type == "hold" {
		h.held <- f
		return
	}
	echo(c, f)
}

func TestConnAskDeadline(t *testing.T) {
	t.Parallel()
	h := newHolder()
	p := newPair(t, newHandler(nil), newHandler(h.frame), rpc.Options{}, rpc.Options{})

	// Long enough that the ask is sent before its deadline on a loaded
	// machine: one past it is not sent at all, and nothing is held.
	const timeout = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := p.client.Ask(ctx, &wire.Frame{Type: "hold"})
	if r != nil {
		t.Errorf("Ask after its deadline returned reply %v, want nil", r)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ask error %v, want one matching context.DeadlineExceeded", err)
	}
	wantCode(t, "Ask past its deadline", err, plugin.CodeDeadlineExceeded)

	// The deadline travelled with the ask.
	f := recv(t, h.held, "held ask")
	if f.TimeoutMicros <= 0 || f.TimeoutMicros > timeout.Microseconds() {
		t.Errorf("ask TimeoutMicros = %d, want in (0, %d]", f.TimeoutMicros, timeout.Microseconds())
	}

	// A late reply is dropped and does not reach the next caller.
	echo(p.server, f)
	r, err = p.client.Ask(testContext(t), &wire.Frame{Type: "echo", Payload: []byte("next")})
	if err != nil || string(r.Payload) != "next" {
		t.Errorf("Ask after a late reply = %v, %v; want payload next", r, err)
	}

	// Without a deadline no timeout travels.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done := make(chan error, 1)
	go func() {
		_, err := p.client.Ask(ctx2, &wire.Frame{Type: "hold"})
		done <- err
	}()
	if f := recv(t, h.held, "held ask without deadline"); f.TimeoutMicros != 0 {
		t.Errorf("ask without a deadline has TimeoutMicros = %d, want 0", f.TimeoutMicros)
	}
	cancel2()
	err = recv(t, done, "canceled Ask")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Ask whose ctx was canceled: error %v, want one matching context.Canceled", err)
	}
	wantCode(t, "canceled Ask", err, plugin.CodeCanceled)
}

func TestConnAskContextDoneBeforeCall(t *testing.T) {
	t.Parallel()
	p := newPair(t, newHandler(nil), newHandler(echo), rpc.Options{}, rpc.Options{})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	tests := []struct {
		name string
		ctx  context.Context
		is   error
		code plugin.Code
	}{
		{"canceled", canceled, context.Canceled, plugin.CodeCanceled},
		{"expired", expired, context.DeadlineExceeded, plugin.CodeDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.client.Ask(tt.ctx, &wire.Frame{})
			if !errors.Is(err, tt.is) {
				t.Errorf("Ask error %v, want one matching %v", err, tt.is)
			}
			wantCode(t, "Ask", err, tt.code)
		})
	}
}

func TestConnAskPeerCloses(t *testing.T) {
	t.Parallel()
	serverH := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Type == "close" {
			c.Close(plugin.NewError(plugin.CodeUnavailable, "server going away"))
		}
	})
	clientH := newHandler(nil)
	p := newPair(t, clientH, serverH, rpc.Options{}, rpc.Options{})

	// The ask must end well before the test ctx: the connection loss, not
	// the deadline, ends it.
	err := askResult(testContext(t), p.client, &wire.Frame{Type: "close"})
	wantCode(t, "ask pending while the peer closed", err, plugin.CodeUnavailable)

	waitClosed(t, p.client.Done(), "client conn after the server closed")
	wantCode(t, "client Err", p.client.Err(), plugin.CodeUnavailable)
	waitClosed(t, clientH.closed, "client HandleClose")
	if n, cerr := clientH.CloseResult(); n != 1 || plugin.CodeOf(cerr) != plugin.CodeUnavailable {
		t.Errorf("client HandleClose called %d times with %v, want once with code unavailable", n, cerr)
	}

	// Everything after the loss fails at once with ErrClosed.
	_, err = p.client.Ask(testContext(t), &wire.Frame{})
	wantCode(t, "Ask after the loss", err, plugin.CodeUnavailable)
	if !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("Ask after the loss: %v, want it to wrap plugin.ErrClosed", err)
	}
	err = p.client.Send(testContext(t), &wire.Frame{Kind: wire.Kind_KIND_SEND})
	wantCode(t, "Send after the loss", err, plugin.CodeUnavailable)
	if !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("Send after the loss: %v, want it to wrap plugin.ErrClosed", err)
	}
}

func TestConnCloseFailsPendingAsks(t *testing.T) {
	t.Parallel()
	h := newHolder()
	p := newPair(t, newHandler(nil), newHandler(h.frame), rpc.Options{}, rpc.Options{})
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() { errs <- askResult(testContext(t), p.client, &wire.Frame{Type: "hold"}) }()
	}
	for range n {
		recv(t, h.held, "held ask")
	}
	p.client.Close(plugin.NewError(plugin.CodeUnavailable, "test closes the client"))
	for range n {
		err := recv(t, errs, "pending ask after Close")
		wantCode(t, "pending ask after Close", err, plugin.CodeUnavailable)
	}
}

// TestConnLostAskIsLocal pins that an ask failed by a connection loss is a
// local failure: plugin.IsRemote is documented as false for "a failure
// detected locally", and ErrClosed is the sentinel for a closed
// connection. Regression: Conn.close answered pending asks with a
// synthetic REPLY frame, which rpc.Result turned into a remote error
// (hook.WireError sets remote) that did not wrap ErrClosed.
func TestConnLostAskIsLocal(t *testing.T) {
	t.Parallel()
	h := newHolder()
	p := newPair(t, newHandler(nil), newHandler(h.frame), rpc.Options{}, rpc.Options{})
	done := make(chan error, 1)
	go func() { done <- askResult(testContext(t), p.client, &wire.Frame{Type: "hold"}) }()
	recv(t, h.held, "held ask")
	p.client.Close(nil)
	err := recv(t, done, "pending ask")
	wantCode(t, "lost ask", err, plugin.CodeUnavailable)
	if plugin.IsRemote(err) {
		t.Errorf("IsRemote(%v) = true, want false: the loss was detected locally", err)
	}
	if !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("lost ask error %v does not wrap plugin.ErrClosed", err)
	}
}

func TestConnSendOrder(t *testing.T) {
	t.Parallel()
	const n = 10000
	tests := []struct {
		name string
		opts rpc.Options
	}{
		{"default queue", rpc.Options{}},
		{"small queue (backpressure)", rpc.Options{QueueFrames: 16}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			serverH := newHandler(nil)
			p := newPair(t, newHandler(nil), serverH, tt.opts, rpc.Options{})
			ctx := testContext(t)
			for i := 1; i <= n; i++ {
				if err := p.client.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: 1, Payload: []byte(strconv.Itoa(i))}); err != nil {
					t.Fatalf("Send %d: %v", i, err)
				}
			}
			poll(t, "all frames received", func() bool { return serverH.NumFrames() >= n })
			frames := serverH.Frames()
			if len(frames) != n {
				t.Fatalf("server got %d frames, want %d", len(frames), n)
			}
			for i, f := range frames {
				if got, want := string(f.Payload), strconv.Itoa(i+1); got != want || f.Kind != wire.Kind_KIND_SEND {
					t.Fatalf("frame %d: got %s %q, want SEND %q", i, f.Kind, got, want)
				}
			}
		})
	}
}

func TestConnSendOrderPerGoroutine(t *testing.T) {
	t.Parallel()
	const senders, n = 4, 2500
	serverH := newHandler(nil)
	p := newPair(t, newHandler(nil), serverH, rpc.Options{QueueFrames: 64}, rpc.Options{})
	ctx := testContext(t)
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range n {
				if err := p.client.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Plugin: uint32(g), Payload: []byte(strconv.Itoa(i))}); err != nil {
					t.Errorf("sender %d: Send %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	poll(t, "all frames received", func() bool { return serverH.NumFrames() >= senders*n })
	next := make([]int, senders)
	for _, f := range serverH.Frames() {
		if got := string(f.Payload); got != strconv.Itoa(next[f.Plugin]) {
			t.Fatalf("sender %d: got frame %s, want %d", f.Plugin, got, next[f.Plugin])
		}
		next[f.Plugin]++
	}
}

// TestConnServerCloseGracefullyDelivers is the driver's release of an
// executor: frames queued before CloseGracefully reach the peer before it
// sees the stream end.
func TestConnServerCloseGracefullyDelivers(t *testing.T) {
	t.Parallel()
	const n = 2000
	clientH := newHandler(nil)
	p := newPair(t, clientH, newHandler(nil), rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	for i := range n {
		if err := p.server.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, 512)}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	p.server.CloseGracefully()
	waitClosed(t, p.server.Done(), "server after CloseGracefully")
	waitClosed(t, clientH.closed, "client HandleClose")
	if atClose := clientH.NumFrames(); atClose != n {
		t.Errorf("client had %d frames when the stream ended, want %d", atClose, n)
	}
	_, err := clientH.CloseResult()
	wantCode(t, "client close reason", err, plugin.CodeUnavailable)
	if !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("client close reason %v, want it to wrap ErrClosed (peer closed the stream)", err)
	}
	// Neither end has a reason to tell the other (the driver ends an
	// executor's stream with one when EndedHere).
	for _, err := range []error{p.server.Err(), err} {
		if rpc.EndedHere(err) {
			t.Errorf("EndedHere(%q) = true after a graceful close, want false", err)
		}
	}
}

// ---- Fake stream: a writer that can be blocked ----

// fakeStream is an in-memory rpc.Stream. Recv returns what the test puts in
// in; Send records frames and, when gate is not nil, waits for a token from
// gate first. cancel ends both.
type fakeStream struct {
	in      chan *wire.Batch
	gate    chan struct{}
	entered chan struct{} // a token each time Send is entered
	onSend  func(*wire.Batch)
	sendErr error
	recvErr error // returned once in is closed; nil: io.EOF

	done chan struct{}
	once sync.Once

	mu   sync.Mutex // protects sent
	sent []*wire.Frame
}

func newFakeStream() *fakeStream {
	return &fakeStream{
		in:      make(chan *wire.Batch, 1024),
		entered: make(chan struct{}, 1024),
		done:    make(chan struct{}),
	}
}

func (s *fakeStream) Send(b *wire.Batch) error {
	s.entered <- struct{}{}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-s.done:
			return status.Error(codes.Canceled, "stream canceled")
		}
	}
	if s.sendErr != nil {
		return s.sendErr
	}
	s.mu.Lock()
	for _, f := range b.Frames {
		// Like gRPC, keep nothing of b: Conn recycles the frames.
		s.sent = append(s.sent, proto.Clone(f).(*wire.Frame))
	}
	s.mu.Unlock()
	if s.onSend != nil {
		s.onSend(b)
	}
	return nil
}

func (s *fakeStream) RecvMsg(m any) error {
	select {
	case b, ok := <-s.in:
		if !ok {
			if s.recvErr != nil {
				return s.recvErr
			}
			return io.EOF
		}
		dst := m.(*wire.Batch)
		dst.Frames = append(dst.Frames[:0], b.Frames...)
		return nil
	case <-s.done:
		return status.Error(codes.Canceled, "stream canceled")
	}
}

func (s *fakeStream) cancel() { s.once.Do(func() { close(s.done) }) }

func (s *fakeStream) Sent() []*wire.Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sent)
}

func (s *fakeStream) count(kind wire.Kind) int {
	n := 0
	for _, f := range s.Sent() {
		if f.Kind == kind {
			n++
		}
	}
	return n
}

// startFake returns a started Conn over s whose cleanup closes it and waits.
func startFake(t *testing.T, s *fakeStream, h rpc.Handler, opts rpc.Options) *rpc.Conn {
	t.Helper()
	c := rpc.New(s, s.cancel, h, opts)
	c.Start()
	t.Cleanup(func() {
		c.Close(nil)
		c.Wait()
	})
	return c
}

func payloads(frames []*wire.Frame) []string {
	var out []string
	for _, f := range frames {
		out = append(out, string(f.Payload))
	}
	return out
}

// fullQueue returns a Conn whose queue, of one frame, is full: its writer
// holds a first SEND in stream.Send until gate lets it through (a token
// per write), and second waits in the queue. Limits hit arrive on waiting.
func fullQueue(t *testing.T, gate chan struct{}, second *wire.Frame) (c *rpc.Conn, waiting <-chan string) {
	t.Helper()
	s := newFakeStream()
	s.gate = gate
	limits := make(chan string, 4)
	c = startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 1, OnLimit: func(l string) { limits <- l }})
	ctx := testContext(t)
	if err := c.Send(ctx, sendFrame("first")); err != nil {
		t.Fatal(err)
	}
	recv(t, s.entered, "the writer in Send")
	if err := c.Send(ctx, second); err != nil {
		t.Fatal(err)
	}
	return c, limits
}

func sendFrame(p string) *wire.Frame {
	return &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: []byte(p)}
}

// A graceful close refuses new frames at once, including those of callers
// already waiting for room in a full queue: they used to wait on, for a
// writer that a peer not reading might never let drain.
func TestCloseGracefullyReleasesWaitingSenders(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	defer close(gate) // lets the writer finish, so cleanup can
	c, waiting := fullQueue(t, gate, sendFrame("2"))
	ctx := testContext(t)
	errc := make(chan error, 2)
	go func() { errc <- c.Send(ctx, sendFrame("3")) }()
	go func() {
		_, err := c.Ask(ctx, &wire.Frame{Payload: []byte("q")})
		errc <- err
	}()
	for range 2 {
		recv(t, waiting, "a caller waiting for room")
	}
	c.CloseGracefully()
	for range 2 {
		err := recv(t, errc, "a caller waiting for room, after CloseGracefully")
		wantCode(t, "a caller waiting for room, after CloseGracefully", err, plugin.CodeUnavailable)
		if !errors.Is(err, plugin.ErrClosed) {
			t.Errorf("got %v, want it to wrap ErrClosed", err)
		}
	}
}

func TestConnBackpressure(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	s.gate = make(chan struct{})
	c := startFake(t, s, newHandler(nil), rpc.Options{QueueFrames: 2})
	ctx := testContext(t)

	// Frame 1 is taken by the writer, which blocks in Send; 2 and 3 fill
	// the queue.
	if err := c.Send(ctx, sendFrame("1")); err != nil {
		t.Fatalf("Send 1: %v", err)
	}
	recv(t, s.entered, "writer in Send")
	for _, p := range []string{"2", "3"} {
		if err := c.Send(ctx, sendFrame(p)); err != nil {
			t.Fatalf("Send %s: %v", p, err)
		}
	}

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		is   error
		code plugin.Code
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded, plugin.CodeDeadlineExceeded},
		{"canceled", func() (context.Context, context.CancelFunc) { return canceled, func() {} }, context.Canceled, plugin.CodeCanceled},
	}
	for _, tt := range tests {
		t.Run("Send "+tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			err := c.Send(ctx, sendFrame("dropped"))
			if !errors.Is(err, tt.is) {
				t.Errorf("Send on a full queue: %v, want one matching %v", err, tt.is)
			}
			wantCode(t, "Send on a full queue", err, tt.code)
		})
		t.Run("Ask "+tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err := c.Ask(ctx, &wire.Frame{Payload: []byte("dropped")})
			if !errors.Is(err, tt.is) {
				t.Errorf("Ask on a full queue: %v, want one matching %v", err, tt.is)
			}
			wantCode(t, "Ask on a full queue", err, tt.code)
		})
	}

	// Replies and control frames never wait for room.
	if err := c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_REPLY, Payload: []byte("ctrl")}); err != nil {
		t.Errorf("SendControl on a full queue: %v, want nil", err)
	}

	// A waiting Send goes through once the writer takes the queue.
	res := make(chan error, 1)
	go func() { res <- c.Send(ctx, sendFrame("4")) }()
	s.gate <- struct{}{} // the write of frame 1 completes
	if err := recv(t, res, "Send waiting for room"); err != nil {
		t.Errorf("Send after room was made: %v, want nil", err)
	}

	close(s.gate)
	want := []string{"1", "2", "3", "ctrl", "4"}
	poll(t, "all frames written", func() bool { return len(s.Sent()) >= len(want) })
	if got := payloads(s.Sent()); !slices.Equal(got, want) {
		t.Errorf("written frames %q, want %q (frames that timed out are not sent)", got, want)
	}
}

func TestConnCloseGracefullyFlushes(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	s.gate = make(chan struct{})
	h := newHandler(nil)
	c := startFake(t, s, h, rpc.Options{})
	ctx := testContext(t)

	const n = 100
	if err := c.Send(ctx, sendFrame("1")); err != nil {
		t.Fatalf("Send 1: %v", err)
	}
	recv(t, s.entered, "writer in Send")
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, strconv.Itoa(i))
		if i == 1 {
			continue
		}
		if err := c.Send(ctx, sendFrame(strconv.Itoa(i))); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	c.CloseGracefully()

	// No new frames once closing.
	for name, err := range map[string]error{
		"Send":        c.Send(ctx, sendFrame("late")),
		"SendControl": c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT}),
		"Ask":         func() error { _, err := c.Ask(ctx, &wire.Frame{}); return err }(),
	} {
		wantCode(t, name+" after CloseGracefully", err, plugin.CodeUnavailable)
		if !errors.Is(err, plugin.ErrClosed) {
			t.Errorf("%s after CloseGracefully: %v, want it to wrap plugin.ErrClosed", name, err)
		}
	}
	select {
	case <-c.Done():
		t.Fatalf("Done before the queued frames were written")
	default:
	}

	close(s.gate)
	waitClosed(t, c.Done(), "conn after CloseGracefully")
	if got := payloads(s.Sent()); !slices.Equal(got, want) {
		t.Errorf("written frames %q, want 1..%d in order", got, n)
	}
	err := c.Err()
	wantCode(t, "Err after CloseGracefully", err, plugin.CodeUnavailable)
	if !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("Err after CloseGracefully = %v, want it to wrap plugin.ErrClosed", err)
	}
	waitClosed(t, h.closed, "HandleClose")
	if n, cerr := h.CloseResult(); n != 1 || cerr != err {
		t.Errorf("HandleClose called %d times with %v, want once with %v", n, cerr, err)
	}
}

func TestConnCloseGracefullyIdle(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	c := startFake(t, s, newHandler(nil), rpc.Options{})
	c.CloseGracefully()
	waitClosed(t, c.Done(), "idle conn after CloseGracefully")
}

func TestConnClose(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	h := newHandler(nil)
	c := startFake(t, s, h, rpc.Options{})
	if err := c.Err(); err != nil {
		t.Errorf("Err of an open conn = %v, want nil", err)
	}
	reason := plugin.NewError(plugin.CodeUnauthenticated, "bad secret")
	c.Close(reason)
	c.Close(plugin.NewError(plugin.CodeInternal, "second close is ignored"))
	waitClosed(t, c.Done(), "Done after Close")
	c.Wait()
	if err := c.Err(); err != reason {
		t.Errorf("Err = %v, want the first Close reason %v", err, reason)
	}
	if n, err := h.CloseResult(); n != 1 || err != reason {
		t.Errorf("HandleClose called %d times with %v, want once with %v", n, err, reason)
	}
	// The Context says why, for the handlers running under it: a cancel
	// still, and the reason.
	// Classified as the cancel it is, as the other causes of a handler's
	// ctx ending are (ErrAskCanceled, an executor stopping): a handler
	// returning it answers with CodeCanceled, not the connection's code.
	cause := context.Cause(c.Context())
	if !errors.Is(cause, context.Canceled) || cause.Error() != "the connection ended: bad secret" {
		t.Errorf("the Context's cause: got %v, want Canceled, saying the connection ended and why", cause)
	}
	if code := plugin.CodeOf(cause); code != plugin.CodeCanceled {
		t.Errorf("CodeOf(the Context's cause %v) = %v, want %v", cause, code, plugin.CodeCanceled)
	}
	select {
	case <-s.done:
	default:
		t.Errorf("Close did not call the cancel func")
	}
	err := c.Send(testContext(t), sendFrame("x"))
	wantCode(t, "Send after Close", err, plugin.CodeUnavailable)
	if !errors.Is(err, plugin.ErrClosed) || !strings.Contains(err.Error(), "bad secret") {
		t.Errorf("Send after Close: %v, want it to wrap ErrClosed and give the reason", err)
	}
}

func TestConnStreamErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		recvErr   error // Recv fails with it
		sendErr   error // Send fails with it
		want      plugin.Code
		wantText  string
		wantClose bool // wraps ErrClosed
	}{
		{"peer ended the stream", io.EOF, nil, plugin.CodeUnavailable, "peer closed the stream", true},
		{"canceled", status.Error(codes.Canceled, "ctx canceled"), nil, plugin.CodeUnavailable, "stream receive: peer disconnected", true},
		{"unauthenticated", status.Error(codes.Unauthenticated, "bad token"), nil, plugin.CodeUnauthenticated, "bad token", false},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "too big"), nil, plugin.CodeResourceExhausted, "too big", false},
		{"code outside the set", status.Error(codes.PermissionDenied, "no"), nil, plugin.CodeUnavailable, "stream receive", false},
		{"plain error", errors.New("broken pipe"), nil, plugin.CodeUnavailable, "broken pipe", false},
		{"send fails", nil, status.Error(codes.Internal, "write failed"), plugin.CodeInternal, "stream send: write failed", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeStream()
			s.sendErr = tt.sendErr
			c := startFake(t, s, newHandler(nil), rpc.Options{})

			// An ask pending when the stream fails is answered with
			// CodeUnavailable.
			asked := make(chan error, 1)
			go func() { asked <- askResult(testContext(t), c, &wire.Frame{Type: "hold"}) }()
			if tt.recvErr != nil {
				// Wait until the ask is written so that it is pending.
				poll(t, "ask written", func() bool { return s.count(wire.Kind_KIND_ASK) == 1 })
				s.recvErr = tt.recvErr
				close(s.in)
			}
			waitClosed(t, c.Done(), "conn after a stream error")
			err := c.Err()
			wantCode(t, "Err", err, tt.want)
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Err = %q, want it to contain %q", err, tt.wantText)
			}
			if got := errors.Is(err, plugin.ErrClosed); got != tt.wantClose {
				t.Errorf("errors.Is(%v, ErrClosed) = %v, want %v", err, got, tt.wantClose)
			}
			wantCode(t, "pending ask", recv(t, asked, "pending ask"), plugin.CodeUnavailable)
		})
	}
}

func TestConnRoutesFrames(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	h := newHandler(nil)
	c := startFake(t, s, h, rpc.Options{})
	// Heartbeats and replies to no caller never reach the handler; every
	// other kind does, in stream order.
	s.in <- &wire.Batch{Frames: []*wire.Frame{
		{Kind: wire.Kind_KIND_HEARTBEAT},
		{Kind: wire.Kind_KIND_REPLY, Call: 999, Payload: []byte("stray")},
		{Kind: wire.Kind_KIND_SEND, Payload: []byte("a")},
		{Kind: wire.Kind_KIND_ASK, Call: 1, Payload: []byte("b")},
	}}
	s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_STOP, Payload: []byte("c")}}}
	poll(t, "frames handled", func() bool { return h.NumFrames() >= 3 })
	if got, want := payloads(h.Frames()), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("handled frames %q, want %q", got, want)
	}
	select {
	case <-c.Done():
		t.Errorf("conn closed by a stray reply: %v", c.Err())
	default:
	}
}

func TestConnHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     rpc.Options
		wantText string
	}{
		{"explicit timeout", rpc.Options{HeartbeatInterval: 10 * time.Millisecond, HeartbeatTimeout: 50 * time.Millisecond}, "heartbeat timeout 50ms"},
		{"default timeout is ten intervals", rpc.Options{HeartbeatInterval: 5 * time.Millisecond}, "heartbeat timeout 50ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFakeStream() // the peer never sends anything
			h := newHandler(nil)
			c := startFake(t, s, h, tt.opts)
			waitClosed(t, c.Done(), "conn with a silent peer")
			err := c.Err()
			wantCode(t, "Err", err, plugin.CodeUnavailable)
			if !strings.Contains(err.Error(), tt.wantText) || !strings.Contains(err.Error(), "silent") {
				t.Errorf("Err = %q, want it to mention a silent peer and %q", err, tt.wantText)
			}
			if !rpc.EndedHere(err) {
				t.Errorf("EndedHere(%q) = false, want true: this side ended it, and the peer should hear why", err)
			}
			waitClosed(t, h.closed, "HandleClose")
			c.Wait()
		})
	}
}

func TestConnSendsHeartbeats(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	c := startFake(t, s, newHandler(nil), rpc.Options{HeartbeatInterval: 5 * time.Millisecond, HeartbeatTimeout: time.Hour})
	poll(t, "heartbeat sent on an idle conn", func() bool { return s.count(wire.Kind_KIND_HEARTBEAT) >= 2 })
	select {
	case <-c.Done():
		t.Errorf("conn closed: %v", c.Err())
	default:
	}
}

func TestConnHeartbeatKeepsAlive(t *testing.T) {
	t.Parallel()
	// A timeout of 1s, not less: with one processor on a loaded machine
	// the process can be descheduled for 200ms, and the heartbeat loop,
	// first to run again, then takes its own stall for the peer's silence.
	const interval, timeout = 20 * time.Millisecond, time.Second
	s := newFakeStream()
	// The peer answers every heartbeat with one of its own.
	s.onSend = func(b *wire.Batch) {
		for _, f := range b.Frames {
			if f.Kind == wire.Kind_KIND_HEARTBEAT {
				select {
				case s.in <- &wire.Batch{Frames: []*wire.Frame{{Kind: wire.Kind_KIND_HEARTBEAT}}}:
				default:
				}
			}
		}
	}
	c := startFake(t, s, newHandler(nil), rpc.Options{HeartbeatInterval: interval, HeartbeatTimeout: timeout})
	// 100 heartbeats take at least 100 intervals, twice the timeout.
	const beats = 100
	poll(t, "heartbeats exchanged", func() bool {
		select {
		case <-c.Done():
			t.Fatalf("conn with a live peer closed after %d heartbeats: %v", s.count(wire.Kind_KIND_HEARTBEAT), c.Err())
		default:
		}
		return s.count(wire.Kind_KIND_HEARTBEAT) >= beats
	})
}

func TestConnMaxMessageBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		opts rpc.Options
		want int
	}{
		{rpc.Options{}, rpc.DefaultMaxMessageBytes},
		{rpc.Options{MaxMessageBytes: -1}, rpc.DefaultMaxMessageBytes},
		{rpc.Options{MaxMessageBytes: 1234}, 1234},
	}
	for _, tt := range tests {
		c := rpc.New(newFakeStream(), nil, newHandler(nil), tt.opts)
		if got := c.MaxMessageBytes(); got != tt.want {
			t.Errorf("MaxMessageBytes with %+v = %d, want %d", tt.opts, got, tt.want)
		}
	}
}

// TestConnClientCloseGracefullyDelivers is the executor's drain: the side
// that owns the stream (cancel != nil) queues frames, closes gracefully,
// and the peer must receive every one. Conn.close cancels the stream as
// soon as the last stream.Send returns, but gRPC's Send only hands the
// message to the transport: frames still in flight can be discarded with
// the RST_STREAM that the cancel sends. It fails (most runs, 26 of 30 with
// -race) until the owning side half-closes and waits for the peer instead.
func TestConnClientCloseGracefullyDelivers(t *testing.T) {
	t.Parallel()
	const n = 2000
	serverH := newHandler(nil)
	p := newPair(t, newHandler(nil), serverH, rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	for i := range n {
		if err := p.client.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Payload: make([]byte, 512)}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	p.client.CloseGracefully()
	waitClosed(t, p.client.Done(), "client after CloseGracefully")
	waitClosed(t, serverH.closed, "server HandleClose")
	if got := serverH.NumFrames(); got != n {
		t.Errorf("server received %d of the %d frames queued before CloseGracefully", got, n)
	}
}

func TestConnAskMessage(t *testing.T) {
	t.Parallel()
	// The server echoes asks; an ask of type "fail" gets an error reply.
	serverH := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_ASK && f.Type == "fail" {
			_ = c.Reply(&wire.Frame{Call: f.Call, Code: uint32(plugin.CodeNotFound), Error: "no such thing"})
			return
		}
		echo(c, f)
	})
	p := newPair(t, newHandler(nil), serverH, rpc.Options{}, rpc.Options{})
	ctx := testContext(t)
	// Over predecodeMax (64 KiB), the reply is decoded by the caller
	// instead of the reader; the result must be the same.
	big := rpcBig{Data: strings.Repeat("b", 100<<10)}
	tests := []struct {
		name     string
		msg      any
		typ      string // overrides the encoded frame's type
		want     any
		wantCode plugin.Code
	}{
		{name: "small", msg: rpcMsg{N: 3, Text: "hi"}, want: rpcMsg{N: 3, Text: "hi"}},
		{name: "big", msg: big, want: big},
		{name: "error reply", msg: rpcMsg{}, typ: "fail", wantCode: plugin.CodeNotFound},
		{name: "undecodable reply", msg: rpcMsg{}, typ: "rpc_test.nobody", wantCode: plugin.CodeInvalidArgument},
	}
	// AskAsync completes with what AskMessage returns.
	forms := []struct {
		name string
		ask  func(f *wire.Frame) (any, error)
	}{
		{"AskMessage", func(f *wire.Frame) (any, error) { return p.client.AskMessage(ctx, f) }},
		{"AskAsync", func(f *wire.Frame) (any, error) {
			out := make(chan outcome, 1)
			p.client.AskAsync(ctx, f, &collector{t: t, out: out})
			o := recv(t, out, "the ask's outcome")
			return o.v, o.err
		}},
	}
	for _, form := range forms {
		for _, tt := range tests {
			t.Run(form.name+"/"+tt.name, func(t *testing.T) {
				f, err := rpc.Encode(0, tt.msg, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				if tt.typ != "" {
					f.Type = tt.typ
				}
				got, err := form.ask(f)
				if tt.wantCode != plugin.CodeOK {
					wantCode(t, form.name, err, tt.wantCode)
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", form.name, err)
				}
				if got != tt.want {
					t.Errorf("got %.40v, want %.40v", got, tt.want)
				}
			})
		}
	}
}

// An ask whose reply arrives behind a frame whose handler blocks
// (backpressure) can still give up when its ctx ends: the reader claims
// a reply from the call table only when it reaches it.
func TestConnAskGivesUpBehindBlockedHandler(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	release := make(chan struct{})
	entered := make(chan struct{})
	h := newHandler(func(c *rpc.Conn, f *wire.Frame) {
		if f.Kind == wire.Kind_KIND_SEND {
			close(entered)
			<-release
		}
	})
	c := startFake(t, s, h, rpc.Options{})
	defer close(release)

	ctx, cancel := context.WithCancel(testContext(t))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Ask(ctx, &wire.Frame{Payload: []byte("q")})
		errc <- err
	}()
	poll(t, "ask written", func() bool { return s.count(wire.Kind_KIND_ASK) == 1 })
	call := s.Sent()[0].Call
	s.in <- &wire.Batch{Frames: []*wire.Frame{
		{Kind: wire.Kind_KIND_SEND, Payload: []byte("blocks")},
		{Kind: wire.Kind_KIND_REPLY, Call: call, Payload: []byte("late")},
	}}
	<-entered
	cancel()
	select {
	case err := <-errc:
		wantCode(t, "Ask after its ctx ended", err, plugin.CodeCanceled)
	case <-time.After(defaultTestTimeout):
		t.Fatal("Ask did not return after its ctx ended while the reader was blocked")
	}
}

// A plugin message whose type is not in the table both sides agreed on in
// the handshake (a type registered since, in a plugin's Init, say) fails
// at the call, naming the type: the peer may not know it. Send used to
// return nil, and the driver dropped the message as undecodable. Types in
// the table travel as their index; replies are not refused.
func TestTypeOutsideTheHandshakeFailsAtTheCall(t *testing.T) {
	s := newFakeStream()
	c := rpc.New(s, s.cancel, newHandler(nil), rpc.Options{})
	c.SetTypes([]string{"agreed"})
	c.Start()
	t.Cleanup(func() { c.Close(nil); c.Wait() })
	ctx := testContext(t)
	late := func() *wire.Frame { return &wire.Frame{Kind: wire.Kind_KIND_SEND, Type: "registered.later"} }
	_, tryErr := c.TrySend(late())
	askErr := askResult(ctx, c, late())
	for name, err := range map[string]error{"Send": c.Send(ctx, late()), "TrySend": tryErr, "Ask": askErr} {
		if plugin.CodeOf(err) != plugin.CodeInvalidArgument || !errors.Is(err, plugin.ErrUnregisteredMessage) ||
			!strings.Contains(err.Error(), `"registered.later" was registered after this connection's handshake`) {
			t.Errorf("%s of a type outside the handshake's table: got %v, want InvalidArgument naming it", name, err)
		}
	}
	if err := c.Send(ctx, &wire.Frame{Kind: wire.Kind_KIND_SEND, Type: "agreed"}); err != nil {
		t.Fatalf("Send of an agreed type: %v", err)
	}
	if err := c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_REPLY, Call: 1, Type: "registered.later"}); err != nil {
		t.Fatalf("a reply of a type outside the table: %v", err)
	}
	poll(t, "two frames written", func() bool { return len(s.Sent()) == 2 })
	sent := s.Sent()
	if f := sent[0]; f.TypeId != 1 || f.Type != "" {
		t.Errorf("the agreed type went as type %q, index %d; want index 1", f.Type, f.TypeId)
	}
	if f := sent[1]; f.Type != "registered.later" {
		t.Errorf("the reply went as type %q, index %d; want its name", f.Type, f.TypeId)
	}
}

// A write that finds the client stream ended by the server (Send says
// io.EOF) leaves the close to the reader, which reads the server's status
// and why: an executor frozen past the driver's heartbeat timeout wrote a
// heartbeat first when it ran again, and closed as "peer closed the
// stream", not with the driver's reason.
func TestConnSendEOFLeavesTheStatusToTheReader(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	s.sendErr = io.EOF
	c := startFake(t, s, newHandler(nil), rpc.Options{})
	if err := c.Send(testContext(t), sendFrame("x")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	<-s.entered // the write that finds the stream ended
	s.recvErr = status.Error(codes.Unavailable, "the driver dropped this executor: peer silent for 11s")
	close(s.in)
	waitClosed(t, c.Done(), "conn after the server ended the stream")
	if err := c.Err(); !strings.Contains(err.Error(), "the driver dropped this executor: peer silent for 11s") {
		t.Errorf("Err = %q, want the server's status", err)
	}
}

// A write that finds the client stream ended leaves the close to the
// reader, but not for ever: a reader that does not end (inside a handler,
// say) is cut short after closeSendWait, and the Conn closes as the peer's
// end of the stream.
func TestConnSendEOFClosesWithoutTheReader(t *testing.T) {
	t.Parallel()
	s := newFakeStream()
	s.sendErr = io.EOF
	c := startFake(t, s, newHandler(nil), rpc.Options{})
	start := time.Now()
	if err := c.Send(testContext(t), sendFrame("x")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	<-s.entered
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the Conn is still open 30s after its write found the stream ended, its reader silent")
	}
	if err := c.Err(); !errors.Is(err, rpc.ErrPeerClosed) {
		t.Errorf("Err = %v, want it to wrap ErrPeerClosed", err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("closed after %v, want the reader given its time (closeSendWait)", waited)
	}
}
