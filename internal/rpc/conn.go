// Package rpc runs one driver-executor stream: a batching writer, a reader
// that routes replies to waiting callers, call bookkeeping for asks,
// heartbeats, and the per-plugin dispatch lanes that both sides use.
//
// Both ends of the stream use the same Conn; only the handshake and what
// they do with incoming frames differ.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emberhq/ember/internal/stamp"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Stream is one end of the gRPC bidirectional stream. Conn calls Send from
// one goroutine and RecvMsg from another, as gRPC allows. Send must not
// keep the batch or its frames once it returns (gRPC encodes them before
// returning): Conn recycles them. RecvMsg decodes the next batch into m, a
// *wire.Batch that Conn reuses for every batch: it hands the frames on
// before it calls RecvMsg again.
type Stream interface {
	Send(*wire.Batch) error
	RecvMsg(m any) error
}

// Handler receives the frames that are not replies to this side's asks.
type Handler interface {
	// HandleFrame is called on the reader goroutine, in stream order. It
	// must not block for long: hand plugin work to a Lane. It also gets
	// each REPLY with a message (not an error, nor a nil message) that
	// came for one of this side's asks after that ask had given up (its
	// ctx ended first), for the asking plugin to be told: the reply was
	// dropped (see Conn.ask).
	HandleFrame(c *Conn, f *wire.Frame)
	// HandleClose is called once, after the connection has ended; err says
	// why (ErrClosed wrapped in an *Error for a local, graceful close).
	HandleClose(c *Conn, err error)
}

// Options tune a Conn. Zero values take the defaults.
type Options struct {
	// MaxMessageBytes bounds one encoded payload.
	MaxMessageBytes int
	// QueueFrames bounds the frames waiting to be written; Send and Ask
	// block (backpressure) while it is full. Replies and control frames
	// never block: see OverflowFrames.
	QueueFrames int
	// OverflowFrames is how far past QueueFrames the frames that never
	// wait (replies, control) may fill the queue. Past it the peer is taken
	// to have stopped reading, its asks being answered but the answers not
	// read, and the Conn closes with CodeResourceExhausted (OnLimit
	// "queue_overflow"). Zero or less: DefaultOverflowFrames.
	OverflowFrames int
	// HeartbeatInterval is how often a heartbeat is sent when the stream is
	// otherwise idle; HeartbeatTimeout is how long the peer may stay silent
	// before the connection is declared lost. Zero interval: no heartbeats.
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	// Received, if set, reports how many bytes the transport has taken in
	// from the peer so far, and whether it can tell. Bytes arriving count
	// as a sign of life, as a whole batch does: a batch larger than what a
	// slow link carries in a heartbeat timeout (a large message across
	// machines) takes that long to arrive, and its peer, sending all
	// along, is not silent. Called once per heartbeat interval.
	Received func() (n uint64, ok bool)
	// OnLimit, if set, is called when a limit is hit ("send_queue": a
	// Send or Ask had to wait for room; "send_window": a Send had to wait
	// for its plugin's window).
	OnLimit func(limit string)
	// Plugins is the plugin list both ends agreed on, by name. SENDs to
	// these plugins are flow-controlled, per plugin and per direction: see
	// Send and Consumed. Empty: no flow control (tests).
	Plugins []string
	// SendWindow is the SEND bytes (as SendCost counts them) that one
	// plugin may have outstanding in each direction: sent and not yet
	// granted back by the receiver. Both ends must use the same value.
	// Zero or less: DefaultSendWindow; more than MaxSendWindow counts as
	// MaxSendWindow.
	SendWindow int
	// PluginSendWindows sets the window of each plugin that has one of its
	// own, indexed like Plugins: zero or less, or no entry, keeps
	// SendWindow; more than MaxSendWindow counts as MaxSendWindow. Both ends
	// must use the same values.
	PluginSendWindows []int
}

// Defaults.
const (
	DefaultMaxMessageBytes = 4 << 20
	DefaultQueueFrames     = 64 << 10
	DefaultOverflowFrames  = 64 << 10
	// DefaultSendWindow is the default Options.SendWindow: with 32-byte
	// messages, about ten thousand of them per plugin in flight.
	DefaultSendWindow = 1 << 20
	// MaxSendWindow is the largest Options.SendWindow: 1 GiB of messages
	// in flight for one plugin on one connection.
	MaxSendWindow = 1 << 30
	// maxBatchBytes caps the payload bytes packed in one Batch.
	maxBatchBytes = 1 << 20
)

// The gRPC flow-control windows the driver and executors set on their
// transports (grpc.InitialWindowSize and InitialConnWindowSize): what one
// stream, and one connection, may have in flight unread.
const (
	StreamWindow = 1 << 20
	ConnWindow   = 4 << 20
)

// directMax bounds the bytes a peer may not have read for an ask to be
// written on its caller's goroutine (see Conn.ask): a quarter of
// StreamWindow, so that with the quarter the peer may have read without
// giving it back yet, the window is never spent.
const directMax = StreamWindow / 4

// MaxHeaderListSize bounds the HTTP/2 header fields (as HTTP/2 counts
// them: name, value and 32 bytes each) that the driver and executors take
// on a stream, set on both transports. Ember sends none of its own beyond
// gRPC's, whose largest is a refusal's status message in the trailers
// (MaxErrorBytes of text, percent-encoded); gRPC's default of 16 MiB let a
// peer that proved nothing make the driver decode and keep millions of
// one-byte indexed fields.
const MaxHeaderListSize = 64 << 10

// BatchOverhead is the headroom added to MaxMessageBytes for the gRPC
// receive limit, covering the frame and batch envelopes.
const BatchOverhead = 64 << 10

// Conn is one end of a driver-executor stream. All methods are safe for
// concurrent use. No lock is held across a network write: callers queue
// frames and one writer goroutine sends everything queued as one Batch.
//
// A frame passed to Send, SendControl, Ask or Reply belongs to the Conn
// from then on: once written it is released to wire's frame pool, so the
// caller must not touch it again.
type Conn struct {
	stream Stream
	cancel context.CancelFunc // ends the stream (client side); may be nil
	h      Handler
	opts   Options

	wake     chan struct{} // capacity 1: frames are queued
	done     chan struct{} // closed by close
	ctx      context.Context
	ctxStop  context.CancelCauseFunc
	wg       sync.WaitGroup
	received atomic.Bool  // a batch arrived since the heartbeat loop last looked
	lastSend atomic.Int64 // unix nanos of the last batch written
	// sendEnded: a write found the client stream ended by the server; the
	// reader closes the Conn with its status (see send).
	sendEnded sync.Once
	handling  atomic.Bool // the reader is inside HandleFrame
	// delivering: the reader is handing a batch's replies to their askers;
	// the writer leaves the queue alone until it is done (see readLoop).
	delivering atomic.Bool
	// lastReplies is how many replies the last batch with any carried.
	lastReplies atomic.Int32
	// ended is set as the connection closes, before the owner's
	// HandleClose runs (see Lane.push).
	ended atomic.Bool
	// written counts the bytes handed to the stream, roughly (frameSize);
	// the writer adds each batch before writing it.
	written atomic.Int64

	// Peer is free for the owner's use (executor record, endpoint list).
	Peer any

	// The message-type table agreed in the handshake (see SetTypes); read
	// only after Start.
	types   []string
	typeIDs map[string]uint32

	mu      sync.Mutex // protects the following fields
	out     []*wire.Frame
	spare   []*wire.Frame
	space   chan struct{} // closed when the writer takes the queue and senders wait
	waiters int           // senders waiting for room
	calls   map[uint64]pending
	// gaveUp holds the asks sent and given up on (their ctx ended
	// first) whose reply has not come, by call ID, with the plugin that
	// asked: the reply, when it does, is handed to the handler as
	// dropped (see claim), once, marked as that plugin's, whatever
	// plugin the peer put in it. An ask is moved here from calls in one
	// lock round, so that a reply is never found in neither. Nil when
	// empty: a burst of give-ups does not keep its map's size.
	gaveUp   map[uint64]uint32
	nextCall uint64
	closing  bool // no new frames; writer closes when the queue is empty
	closed   bool
	writing  bool           // a goroutine is in stream.Send (the writer, or a caller writing directly)
	direct   *wire.Batch    // the batch of a direct write; used only while writing
	one      [1]*wire.Frame // its frame
	err      error
	// refuse, once set (SendLast), fails every later SEND, ASK and TASK at
	// the call: they would follow the last frame the peer takes them after.
	refuse error
	// windows is each plugin's send window (Options.SendWindow or its own
	// PluginSendWindows entry), read-only after New.
	windows []int64
	// credit is what each plugin may still send, in bytes (it goes
	// negative by at most one message: see Send); creditReady is closed
	// and replaced when credit arrives and Sends wait for it.
	credit        []int64
	creditReady   chan struct{}
	creditWaiters int
	// reserved is, of each plugin's credit, what only the Sends of this
	// end's handlers may spend: what the peer lent (see Conn.Lent), kept
	// until the peer releases it (Conn.Release), once the messages it was
	// lent for have run there. Were it anyone's when the loan ended, this
	// end's other goroutines (a flood of reports) would spend it, and
	// fill the peer's lane with messages lent for until it could lend no
	// more, while its handler waited on this end's handler, which waited
	// for what the peer could no longer lend.
	reserved []int64
	// drawn is, of each plugin's credit lent and not yet released, what
	// has left reserved all the same: spent by this end's handlers, or
	// overdrawn. A release covers that first, and frees reserved credit
	// only for the rest, so that reserved plus drawn stays what the peer
	// has lent and not released: a handler's spending of one loan must
	// not free a later loan before its messages have run.
	drawn []int64
	// watchers cancel the asks sharing a ctx, by its Done channel;
	// lastDone is the Done channel of the last ask registered.
	watchers map[<-chan struct{}]*watcher
	lastDone <-chan struct{}
	// read is a count of written that the peer is known to have read:
	// the largest written at the registration of an ask since answered.
	// written - read bounds what the peer may not have read yet.
	read int64

	// recv is the flow control of the SENDs this end receives, by plugin
	// (see Consumed); not under mu.
	recv []window

	// cancels holds the handler's ctx of each cancelable ASK from the
	// peer taken and not yet answered, for ASK_CANCEL to find (see
	// handlerCtx).
	cancels cancelTable
}

// New returns a Conn over s. cancel, if not nil, is called when the Conn
// closes, to end the stream. Call Start to run it.
func New(s Stream, cancel context.CancelFunc, h Handler, opts Options) *Conn {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.QueueFrames <= 0 {
		opts.QueueFrames = DefaultQueueFrames
	}
	if opts.OverflowFrames <= 0 {
		opts.OverflowFrames = DefaultOverflowFrames
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = 10 * opts.HeartbeatInterval
	}
	opts.SendWindow = EffectiveSendWindow(opts.SendWindow)
	c := &Conn{
		stream: s,
		cancel: cancel,
		h:      h,
		opts:   opts,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		space:  make(chan struct{}),
		calls:  make(map[uint64]pending),
		direct: &wire.Batch{},
		// Every plugin starts with a full window each way.
		windows:     make([]int64, len(opts.Plugins)),
		credit:      make([]int64, len(opts.Plugins)),
		reserved:    make([]int64, len(opts.Plugins)),
		drawn:       make([]int64, len(opts.Plugins)),
		creditReady: make(chan struct{}),
		recv:        make([]window, len(opts.Plugins)),
	}
	for i := range c.windows {
		c.windows[i] = int64(opts.SendWindow)
		if i < len(opts.PluginSendWindows) && opts.PluginSendWindows[i] > 0 {
			c.windows[i] = int64(EffectiveSendWindow(opts.PluginSendWindows[i]))
		}
		c.credit[i] = c.windows[i]
	}
	c.ctx, c.ctxStop = context.WithCancelCause(context.Background())
	c.lastSend.Store(time.Now().UnixNano())
	return c
}

// SetTypes installs the message-type names both sides agreed on in the
// handshake (sorted, identical on both ends). Frames then carry a type's
// index instead of its name. Call before Start.
func (c *Conn) SetTypes(names []string) {
	c.types = names
	c.typeIDs = make(map[string]uint32, len(names))
	for i, n := range names {
		c.typeIDs[n] = uint32(i + 1)
	}
}

// invalidType names no registered type: a frame whose type ID is out of
// range decodes to an unknown-type error.
const invalidType = "\x00invalid type id"

// MaxMessageBytes is the payload limit of this connection.
func (c *Conn) MaxMessageBytes() int { return c.opts.MaxMessageBytes }

// Start runs the reader, writer and heartbeat goroutines.
//
// Wait waits for the reader and the writer only when the Conn can end its
// stream itself (cancel != nil): ending it releases a reader blocked in
// RecvMsg and a writer blocked in Send. A server ends its stream by
// returning from its handler, so it must not wait for them: the reader may
// be waiting for a peer that sends nothing, and the writer, after a close,
// for a peer that has stopped reading.
func (c *Conn) Start() {
	if c.cancel != nil {
		c.wg.Add(2)
		go func() {
			defer c.wg.Done()
			c.writeLoop()
		}()
		go func() {
			defer c.wg.Done()
			c.readLoop()
		}()
	} else {
		go c.writeLoop()
		go c.readLoop()
	}
	if c.opts.HeartbeatInterval > 0 {
		c.wg.Add(1)
		go c.heartbeatLoop()
	}
}

// Context is canceled when the connection ends; its cause (context.Cause)
// then says why, in its text, and wraps context.Canceled.
func (c *Conn) Context() context.Context { return c.ctx }

// endedError is the cause of a Conn's Context once it has ended with err:
// what a handler running under it, or a ctx derived from it, finds with
// context.Cause. It says why, but wraps context.Canceled alone, not err:
// a handler returning it answers with CodeCanceled, as for the other
// causes of its ctx's end (plugin.ErrAskCanceled), and not with err's code
// (a peer's deadline, say, which this side's handler did not pass).
type endedError struct{ err error }

func (e endedError) Error() string { return "the connection ended: " + describe(e.err) }
func (e endedError) Unwrap() error { return context.Canceled }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Ended reports whether the connection has ended; its owner's HandleClose
// may still be running.
func (c *Conn) Ended() bool { return c.ended.Load() }

// Err returns why the connection ended, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Wait blocks until the heartbeat goroutine has stopped and, when the Conn
// can end its stream itself (cancel != nil), the reader and writer too. A
// server handler calls Wait after Done and then returns, which ends the
// stream and releases the reader, and a writer still in Send. By Done a
// graceful close has written everything: the writer closes the Conn once
// the queue is empty.
func (c *Conn) Wait() { c.wg.Wait() }

// Close ends the connection at once with err: queued frames are dropped,
// waiting asks fail with CodeUnavailable.
func (c *Conn) Close(err error) { c.close(err) }

// CloseGracefully stops accepting new frames and ends the connection once
// every queued frame has been written.
func (c *Conn) CloseGracefully() {
	c.mu.Lock()
	c.closing = true
	c.wakeCreditLocked() // waiting Sends see closing
	// And so do those waiting for room in the queue. Once closed, space
	// is closed already, and waiters woken by it may not have counted
	// themselves out yet.
	if c.waiters > 0 && !c.closed {
		close(c.space)
		c.space = make(chan struct{})
	}
	c.mu.Unlock()
	c.signal()
}

var errGraceful = plugin.Errorf(plugin.CodeUnavailable, "connection closed: %w", plugin.ErrClosed)

// EndedHere reports whether err, a Conn's Err, says that this side ended
// the connection for a reason its peer has not heard (the peer silent past
// the heartbeat timeout, not reading, overdrawing its window; a Close
// with an error), as opposed to a graceful close or the peer ending its
// end. A stream that broke counts too: the peer hears nothing more either
// way.
func EndedHere(err error) bool {
	return err != nil && err != errGraceful && !errors.Is(err, ErrPeerClosed)
}

func (c *Conn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closing = true
	c.ended.Store(true)
	if err == nil {
		err = c.err // one set on the way to closing (overflowLocked)
	}
	if err == nil {
		err = errGraceful
	}
	c.err = err
	calls := c.calls
	c.calls, c.gaveUp = nil, nil
	c.out = nil
	close(c.space)
	close(c.creditReady) // waiting Sends see closing
	c.mu.Unlock()
	c.ctxStop(endedError{err})
	if c.cancel != nil {
		c.cancel()
	}
	for id, p := range calls {
		c.put(id, p, reply{}) // the connection is gone; Ask reports it locally
	}
	// The owner learns of the close before Done fires, so whoever waits on
	// Done sees its consequences (membership events already queued).
	c.h.HandleClose(c, err)
	close(c.done)
	c.signal() // the writer waits on wake alone
}

// describe returns err's message without a redundant code prefix.
func describe(err error) string {
	var e *plugin.Error
	if errors.As(err, &e) {
		return e.Message()
	}
	return err.Error()
}

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// errQueueClosed is returned when frames are queued after close.
func (c *Conn) closedError() error {
	if c.err != nil {
		var e *plugin.Error
		if errors.As(c.err, &e) && errors.Is(e, plugin.ErrClosed) {
			return e
		}
		return plugin.Errorf(plugin.CodeUnavailable, "connection lost (%s): %w", describe(c.err), plugin.ErrClosed)
	}
	return errGraceful
}

// enqueue queues f, waiting for room unless noWait. It returns an error if
// the Conn is closed or ctx ends while waiting.
func (c *Conn) enqueue(ctx context.Context, f *wire.Frame, noWait bool) error {
	c.mu.Lock()
	return c.enqueueLocked(ctx, f, noWait, false)
}

// enqueueLocked is enqueue with c.mu held (it unlocks it) that, when direct
// is set and nothing is queued or being written, writes f on the calling
// goroutine instead of handing it to the writer: one goroutine hand-off
// less for a lone ask, whose caller is about to wait anyway. Everything
// else goes through the queue, so that streams of frames are batched.
func (c *Conn) enqueueLocked(ctx context.Context, f *wire.Frame, noWait, direct bool) error {
	waited := false
	for {
		if c.closing {
			err := c.closedError()
			c.mu.Unlock()
			return err
		}
		if c.refuse != nil && (!noWait || f.Kind == wire.Kind_KIND_TASK) {
			err := c.refuse
			c.mu.Unlock()
			return err
		}
		if waited && f.Kind == wire.Kind_KIND_ASK {
			if _, ok := c.calls[f.Call]; !ok {
				// Its ctx ended while it waited, and its watcher took it
				// out of the call table and canceled it (an ASK_CANCEL,
				// the ASK being nowhere in the queue): queued now, it
				// would follow that cancel, which the peer ignores, and
				// its handler would run uncanceled.
				err := ctx.Err()
				if err == nil { // a Context whose Done closed before its Err was set
					err = context.Canceled
				}
				c.mu.Unlock()
				return plugin.Errorf(plugin.CodeOf(err), "waiting for room in the send queue (%d frames): %w", c.opts.QueueFrames, err)
			}
		}
		if noWait {
			if len(c.out) >= c.opts.QueueFrames+c.opts.OverflowFrames {
				return c.overflowLocked()
			}
			break
		}
		if len(c.out) < c.opts.QueueFrames {
			break
		}
		if c.opts.OnLimit != nil && !waited {
			c.opts.OnLimit("send_queue")
		}
		waited = true
		if err := c.waitLocked(ctx, c.space, &c.waiters); err != nil {
			return plugin.Errorf(plugin.CodeOf(err), "waiting for room in the send queue (%d frames): %w", c.opts.QueueFrames, err)
		}
	}
	// A direct write was judged safe before the wait; meanwhile the writer
	// may have written what the peer has not read (see Conn.ask).
	c.pushLocked(f, direct && !waited)
	return nil
}

// overflowLocked closes the Conn because frames that never wait (replies,
// control) have filled the queue OverflowFrames past its bound: the peer
// has stopped reading, and its asks would otherwise grow the queue without
// limit. c.mu is held; overflowLocked unlocks it.
func (c *Conn) overflowLocked() error {
	err := c.overflowingLocked()
	c.close(err)
	return err
}

// overflowingLocked is overflowLocked but for the close itself: it
// refuses further frames, counts the limit hit and returns the error to
// close the Conn with. c.mu is held; overflowingLocked unlocks it.
func (c *Conn) overflowingLocked() error {
	err := plugin.Errorf(plugin.CodeResourceExhausted,
		"the peer is not reading: %d frames wait to be written (send queue %d + overflow %d)", len(c.out), c.opts.QueueFrames, c.opts.OverflowFrames)
	// Refuse further frames at once, with this error: the limit is hit,
	// and counted, once.
	c.closing, c.err = true, err
	c.mu.Unlock()
	if c.opts.OnLimit != nil {
		c.opts.OnLimit("queue_overflow")
	}
	return err
}

// waitLocked waits until ch is closed or ctx ends, counted in *waiters
// meanwhile; c.mu is held, and released while waiting. It returns nil
// with c.mu held again, or ctx's error with c.mu released.
func (c *Conn) waitLocked(ctx context.Context, ch <-chan struct{}, waiters *int) error {
	*waiters++
	c.mu.Unlock()
	select {
	case <-ch:
		c.mu.Lock()
		*waiters--
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		*waiters--
		c.mu.Unlock()
		return ctx.Err()
	}
}

// pushLocked queues f, or with direct writes it at once when nothing is
// queued or being written. c.mu is held, the queue has room and the Conn
// is not closing; pushLocked unlocks it.
func (c *Conn) pushLocked(f *wire.Frame, direct bool) {
	if direct && len(c.out) == 0 && !c.writing {
		c.writing = true
		c.mu.Unlock()
		c.writeDirect(f)
		return
	}
	c.out = append(c.out, f)
	first := len(c.out) == 1
	c.mu.Unlock()
	if first {
		c.signal()
	}
}

// writeDirect sends f as a batch of its own. The caller has set writing;
// no lock is held across the write. A failed write closes the connection,
// which fails any ask waiting for a reply.
func (c *Conn) writeDirect(f *wire.Frame) {
	c.one[0] = f
	ok := c.send(c.direct, c.one[:], frameSize(f))
	c.mu.Lock()
	c.writing = false
	wake := len(c.out) > 0 || c.closing
	c.mu.Unlock()
	if ok && wake {
		c.signal()
	}
}

// send writes frames, of size bytes (frameSize), as batch b, then gives
// them back to wire's pool and clears the slice. It reports whether the
// write succeeded; a failed write closes the connection, but for a client
// write that found the stream ended by the server, which leaves that to
// the reader (closeSendWait at most). The caller holds the writing flag.
func (c *Conn) send(b *wire.Batch, frames []*wire.Frame, size int) bool {
	for _, f := range frames {
		c.compress(f)
	}
	c.written.Add(int64(size))
	b.Frames = frames
	if stamp.Enabled {
		markWrite(frames, false)
	}
	err := c.stream.Send(b)
	if stamp.Enabled {
		markWrite(frames, true)
	}
	for _, f := range frames {
		wire.ReleaseFrame(f)
	}
	clear(frames)
	b.Frames = nil
	if err != nil {
		if errors.Is(err, io.EOF) && c.cancel != nil {
			// A client stream that the server has ended: Send says only
			// io.EOF, and the server's status, which may say why (the
			// driver dropping this executor), is the reader's to read,
			// and close the Conn with. A write after a freeze used to
			// close it first, as "peer closed the stream".
			c.sendEnded.Do(func() {
				time.AfterFunc(closeSendWait, func() { c.close(streamError("send", err)) })
			})
			return false
		}
		c.close(streamError("send", err))
		return false
	}
	c.lastSend.Store(time.Now().UnixNano())
	return true
}

// frameSize is f's size on the wire, estimated: exactly for a frame
// carrying a sub-message (HELLO, WELCOME, READY, TASK, metrics), else its
// payload, type name and error text plus 32 bytes for its small fields and
// its envelope in the batch. It cuts batches (split) and counts what the
// peer may not have read (Conn.ask), whose margin, three quarters of the
// window, is far beyond what the estimate can miss.
func frameSize(f *wire.Frame) int {
	if f.Hello != nil || f.Welcome != nil || f.Metrics != nil || f.Ready != nil || f.Task != nil {
		return f.SizeVT()
	}
	return len(f.Payload) + len(f.Type) + len(f.Error) + 32
}

// markWrite stamps the asks and replies of a batch being written (done:
// the write returned) for ember-bench -breakdown.
func markWrite(frames []*wire.Frame, done bool) {
	for _, f := range frames {
		switch {
		case f.Kind == wire.Kind_KIND_ASK && done:
			stamp.Mark(stamp.AskWritten, f.Call)
		case f.Kind == wire.Kind_KIND_REPLY && done:
			stamp.Mark(stamp.ReplyWritten, f.Call)
		case f.Kind == wire.Kind_KIND_REPLY:
			stamp.Mark(stamp.ReplyWriting, f.Call)
		}
	}
}

// markRead stamps the asks and replies of a batch just read.
func markRead(frames []*wire.Frame) {
	for _, f := range frames {
		switch f.Kind {
		case wire.Kind_KIND_ASK:
			stamp.Mark(stamp.AskRead, f.Call)
		case wire.Kind_KIND_REPLY:
			stamp.Mark(stamp.ReplyRead, f.Call)
		}
	}
}

// compress replaces f's type name with its index in the agreed table.
func (c *Conn) compress(f *wire.Frame) {
	if f.Type == "" {
		return
	}
	if id, ok := c.typeIDs[f.Type]; ok {
		f.TypeId, f.Type = id, ""
	}
}

// compressCall is compress for a plugin message (SEND, ASK) as it is
// queued: one whose type the peer did not list in the handshake, a type
// registered since, fails at the call. The peer could not decode it.
func (c *Conn) compressCall(f *wire.Frame) error {
	if f.Type == "" || c.typeIDs == nil {
		return nil
	}
	id, ok := c.typeIDs[f.Type]
	if !ok {
		return plugin.Errorf(plugin.CodeInvalidArgument,
			"message type %q was registered after this connection's handshake, so the other side cannot decode it (register message types in init(), in every process): %w", f.Type, plugin.ErrUnregisteredMessage)
	}
	f.TypeId, f.Type = id, ""
	return nil
}

// Send queues a fire-and-forget frame, honouring backpressure: it waits
// while the send queue is full and, for a SEND to a plugin under flow
// control (see Options.Plugins), first while that plugin's window is
// spent, until the receiver has delivered enough of what it was sent. A
// plugin whose receiver falls behind thus holds up its own senders and
// nobody else. A SEND may overdraw the window by one message, so that a
// message larger than the window still goes. A Send made by a lane's
// handler, under the ctx it was given (see WithLane), has that lane lend
// to this Conn while it waits, and may spend what the peer lent; no other
// Send may.
func (c *Conn) Send(ctx context.Context, f *wire.Frame) error {
	if err := c.compressCall(f); err != nil {
		return err
	}
	p, ok := c.flowControlled(f)
	if !ok {
		return c.enqueue(ctx, f, false)
	}
	cost := SendCost(f)
	c.mu.Lock()
	var stop func()
	if c.credit[p] <= c.reserved[p] && !c.closing && c.refuse == nil {
		var err error
		if stop, err = c.waitCreditLocked(ctx, p); err != nil {
			return err
		}
	}
	// Only a handler's Send gets past the wait with no more than what was
	// lent: it spends that.
	r := c.reserved[p]
	if c.credit[p] <= r {
		c.reserved[p] -= cost
		c.drawn[p] += cost
	}
	c.credit[p] -= cost
	c.clampReservedLocked(p)
	drew := r - c.reserved[p] // of what was lent, not released: now in drawn
	err := c.enqueueLocked(ctx, f, false, false)
	if stop != nil {
		stop() // without c.mu, which the lane's lock comes before (see Lane.Lend)
	}
	if err != nil {
		c.mu.Lock()
		c.grantLocked(p, cost) // not sent after all
		// And what it drew of the reserve is reserved again, unless a
		// release has covered it meanwhile.
		d := min(drew, c.drawn[p])
		c.drawn[p] -= d
		c.reserved[p] += d
		c.clampReservedLocked(p)
		c.mu.Unlock()
		return err
	}
	return nil
}

// clampReservedLocked keeps plugin p's reserved credit within its credit
// (and not below zero), counting what that takes off in drawn. c.mu is
// held.
func (c *Conn) clampReservedLocked(p int) {
	r := max(0, min(c.reserved[p], c.credit[p]))
	c.drawn[p] += c.reserved[p] - r
	c.reserved[p] = r
}

// waitCreditLocked waits while plugin p's window has nothing the Send
// under ctx may spend (and the Conn neither closes nor refuses), counting
// the wait as a limit hit: a handler's Send (see WithLane) may spend all
// the credit, any other only what the peer did not lend. The handler's
// lane lends to c meanwhile, until the caller calls stop (nil when it did
// not lend), without c.mu. c.mu is held, and still is on return, unless
// ctx ended: then it returns the error Send gives, unlocked, and has
// stopped lending.
func (c *Conn) waitCreditLocked(ctx context.Context, p int) (stop func(), err error) {
	l := laneOf(ctx)
	spent := func() bool {
		if l != nil {
			return c.credit[p] <= 0
		}
		return c.credit[p] <= c.reserved[p]
	}
	if !spent() {
		return nil, nil // a handler's Send, and what was lent is left
	}
	if c.opts.OnLimit != nil {
		c.opts.OnLimit("send_window")
	}
	if l != nil {
		c.mu.Unlock() // the lane's lock comes before c.mu (see Lane.Lend)
		stop = l.Lend(c)
		c.mu.Lock()
	}
	for spent() && !c.closing && c.refuse == nil {
		if err := c.waitLocked(ctx, c.creditReady, &c.creditWaiters); err != nil {
			if stop != nil {
				stop()
			}
			return nil, plugin.Errorf(plugin.CodeOf(err), "plugin %q: waiting for the receiving side to take in the messages already sent (send window %d bytes): %w", c.opts.Plugins[p], c.windows[p], err)
		}
	}
	return stop, nil
}

// flowControlled reports whether f counts against a window of this end's
// (a SEND to a plugin under flow control), and whose.
func (c *Conn) flowControlled(f *wire.Frame) (p int, ok bool) {
	// Compared unsigned: a peer's index converted to int can be negative
	// on 32-bit platforms.
	return int(f.Plugin), f.Kind == wire.Kind_KIND_SEND && uint(f.Plugin) < uint(len(c.credit))
}

// sendOverhead is what a SEND costs its plugin's window besides its
// payload: the frame's own memory at the receiver, roughly, so that a
// flood of tiny messages is bounded too.
const sendOverhead = 64

// TrySend is Send that never waits: it queues f and reports true when f
// can go at once, and otherwise reports false and leaves f to the caller
// (its plugin's window is spent, or the send queue is full). The error is
// the Conn's, once it is closing.
func (c *Conn) TrySend(f *wire.Frame) (bool, error) {
	if err := c.compressCall(f); err != nil {
		return false, err
	}
	p, credited := c.flowControlled(f)
	c.mu.Lock()
	if c.closing || c.refuse != nil {
		err := c.refuse
		if c.closing {
			err = c.closedError()
		}
		c.mu.Unlock()
		return false, err
	}
	if (credited && c.credit[p] <= c.reserved[p]) || len(c.out) >= c.opts.QueueFrames {
		c.mu.Unlock()
		return false, nil
	}
	if credited {
		c.credit[p] -= SendCost(f)
	}
	c.pushLocked(f, false)
	return true, nil
}

// EffectiveSendWindow is the window an Options.SendWindow of w gives: w
// itself, DefaultSendWindow for zero or less, MaxSendWindow at most.
func EffectiveSendWindow(w int) int {
	if w <= 0 {
		return DefaultSendWindow
	}
	return min(w, MaxSendWindow)
}

// SendCost is what SEND f counts against its plugin's window, the same at
// both ends: what the receiver reports to Consumed once f is delivered.
func SendCost(f *wire.Frame) int64 { return int64(len(f.Payload)) + sendOverhead }

// grantLocked gives plugin p n bytes of window back and wakes the Sends
// waiting for it. c.mu is held.
func (c *Conn) grantLocked(p int, n int64) {
	c.credit[p] = min(c.credit[p]+n, c.windows[p])
	if c.credit[p] > 0 {
		c.wakeCreditLocked()
	}
}

// wakeCreditLocked wakes the Sends waiting for window to look again.
// c.mu is held.
func (c *Conn) wakeCreditLocked() {
	if c.creditWaiters > 0 && !c.closed {
		close(c.creditReady)
		c.creditReady = make(chan struct{})
	}
}

// window is the receiving end of one plugin's flow control.
type window struct {
	received atomic.Int64 // SEND bytes received and not yet granted back
	owed     atomic.Int64 // of those, the bytes delivered or dropped
}

// admit counts received SEND f against its plugin's window. It reports
// false when the peer has overdrawn the window, beyond the one message
// a sender may overdraw it by.
func (c *Conn) admit(f *wire.Frame) bool {
	if uint(f.Plugin) >= uint(len(c.recv)) {
		return true // refused by the handler: no such plugin
	}
	p := int(f.Plugin)
	return c.recv[p].received.Add(SendCost(f)) <= c.windows[p]+int64(c.opts.MaxMessageBytes)+sendOverhead
}

// Consumed reports that a received SEND for plugin p, of cost bytes (see
// SendCost), has been delivered or dropped, so that its sender may send
// as much again. Every SEND received must be reported once, whatever
// became of it, or its sender's window shrinks for good. Grants are
// gathered: one CREDIT frame per quarter window. Safe for concurrent use.
func (c *Conn) Consumed(p uint32, cost int64) {
	if uint(p) >= uint(len(c.recv)) || cost <= 0 {
		return
	}
	w := &c.recv[p]
	if w.owed.Add(cost) < c.windows[p]/4 {
		return
	}
	n := w.owed.Swap(0)
	if n <= 0 {
		return // another goroutine granted it
	}
	w.received.Add(-n)
	_ = c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_CREDIT, Plugin: p, Credit: uint64(n)})
}

// Lent reports that received SENDs for plugin p, of cost bytes in all,
// are given back before they have run: this end's lane lends (see
// Lane.Lend), and they must not be reported to Consumed as well. The
// grant goes at once, marked lent: the peer keeps it for its handlers'
// Sends (see Send) until Release, so that it frees a handler of the
// peer's waiting on this end, and not a flood from the peer's other
// goroutines. Safe for concurrent use.
func (c *Conn) Lent(p uint32, cost int64) {
	if uint(p) >= uint(len(c.recv)) || cost <= 0 {
		return
	}
	c.recv[p].received.Add(-cost)
	c.sendUnderLaneLock(&wire.Frame{Kind: wire.Kind_KIND_CREDIT, Plugin: p, Credit: uint64(cost), Lent: true})
}

// Release reports that received SENDs for plugin p whose credit was lent
// (Lent), cost bytes in all, have run: the peer may spend those bytes on
// any Send from now on. Safe for concurrent use.
func (c *Conn) Release(p uint32, cost int64) {
	if uint(p) >= uint(len(c.recv)) || cost <= 0 {
		return
	}
	c.sendUnderLaneLock(&wire.Frame{Kind: wire.Kind_KIND_CREDIT, Plugin: p, Credit: uint64(cost), Lent: true, Released: true})
}

// sendUnderLaneLock is SendControl for a frame queued under a lane's lock
// (Lent, Release): should it overflow the queue, the Conn is closed on a
// goroutine of its own, not on the caller's. Closing runs the owner's
// HandleClose, which queues events on lanes (the driver's, under its own
// lock, which it also pushes to lanes under): on the caller's goroutine
// it would wait for the lane's lock the caller holds.
func (c *Conn) sendUnderLaneLock(f *wire.Frame) {
	c.mu.Lock()
	if !c.closing && len(c.out) >= c.opts.QueueFrames+c.opts.OverflowFrames {
		go c.close(c.overflowingLocked()) // f is refused, as by enqueueLocked
		return
	}
	_ = c.enqueueLocked(context.Background(), f, true, false)
}

// LoanCap is the most a lane lends of plugin p's SENDs from c that have
// not yet run: four windows and one message of the largest size. An honest
// peer's handlers spend a loan on what they send for the messages they
// take in from this end, and four windows let them send up to about
// sixteen for each (a quarter window of them taken in frees this end's
// handler); the cap bounds what a peer that spends it on anything can
// make a lane hold.
func (c *Conn) LoanCap(p uint32) int64 {
	if uint(p) >= uint(len(c.windows)) {
		return 0
	}
	return 4*c.windows[p] + int64(c.opts.MaxMessageBytes) + sendOverhead
}

// takeCredit takes in a CREDIT frame from the peer.
func (c *Conn) takeCredit(f *wire.Frame) {
	if uint(f.Plugin) >= uint(len(c.credit)) {
		return
	}
	p := int(f.Plugin)
	if f.Credit == 0 {
		return
	}
	// The most ever owed: a window overdrawn by one message of the largest
	// size (see Send and admit). Capping lower loses credit for good.
	n := int64(min(f.Credit, uint64(c.windows[p])+uint64(c.opts.MaxMessageBytes)+sendOverhead))
	c.mu.Lock()
	switch {
	case f.Lent && f.Released:
		// What was lent has run at the peer: anyone's now. What this
		// end's handlers spent of the loans (drawn) is released first:
		// the rest of the reserve may be lent for messages yet to run.
		d := min(n, c.drawn[p])
		c.drawn[p] -= d
		c.reserved[p] -= min(n-d, c.reserved[p])
		if c.credit[p] > c.reserved[p] {
			c.wakeCreditLocked()
		}
	case f.Lent:
		c.reserved[p] += n
		c.grantLocked(p, n)
	default:
		c.grantLocked(p, n)
	}
	c.clampReservedLocked(p)
	c.mu.Unlock()
}

// SendLast queues control frame f, like SendControl, and from then on fails
// every SEND, ASK and TASK with err, in the same lock round: one that
// checked before f was queued could otherwise follow it (the driver's
// STOP, after which the executor's plugins take nothing and it runs no
// more tasks). Replies and other control frames still go.
func (c *Conn) SendLast(f *wire.Frame, err error) error {
	c.mu.Lock()
	if c.refuse == nil {
		c.refuse = err
		c.wakeCreditLocked() // Sends waiting for window see it
	}
	return c.enqueueLocked(context.Background(), f, true, false)
}

// SendControl queues a frame without waiting for room (replies, control).
func (c *Conn) SendControl(f *wire.Frame) error {
	return c.enqueue(context.Background(), f, true)
}

// pending is an ask waiting for its reply.
type pending struct {
	ch      chan reply // nil for an async ask
	async   Async      // an ask made with AskAsync
	w       *watcher   // cancels the ask when its ctx ends; nil: the asker watches its ctx itself
	written int64      // Conn.written when the ask was registered: all of it precedes the ask
	plugin  uint32     // the plugin that asked
	decode  bool       // the reader decodes the reply (AskMessage)
	// gaveUp marks, in claim's answer, the reply to an ask this side sent
	// and gave up on (Conn.gaveUp): the reply is dropped, and the handler
	// told.
	gaveUp bool
}

// put hands r to the ask p: its waiting caller, or (async) its
// completion. The ask, id, has been taken out of the call table, and c.mu
// is not held.
func (c *Conn) put(id uint64, p pending, r reply) {
	if p.async != nil {
		c.finishAsync(id, p.async, r)
		return
	}
	p.ch <- r // buffered, and nobody else sends to it now
}

// reply is what the reader hands a waiting ask: the REPLY frame, or its
// decoded value or error (decoded), or nothing when the connection closed
// or (canceled) the ask's ctx ended.
type reply struct {
	f        *wire.Frame
	v        any
	err      error
	decoded  bool
	canceled bool
}

// watcher waits on one ctx Done channel for all the asks that share it and
// cancels them when it is closed, so that each of them waits on its reply
// alone. Many goroutines asking under one ctx otherwise each wait in a
// select on that ctx's channel, and contend for its lock on every ask
// (measured: 7% of the executors' CPU in ember-bench's ask-throughput
// scenario, 64 askers per executor).
type watcher struct {
	done <-chan struct{}
}

// maxWatchers bounds the watchers of one Conn: past it, asks watch their
// ctx themselves.
const maxWatchers = 16

// watcherLocked returns the watcher for done, starting one when asks seem
// to share it: the last ask registered had the same Done channel and
// another ask is waiting. A lone asker, or asks under contexts of their
// own, get nil and watch their ctx themselves (an async ask with
// context.AfterFunc), and so do all asks once maxWatchers are running: a
// watcher lives until its ctx ends, long after the asks it was started
// for when that ctx is theirs alone (a timeout per ask, or a ctx never
// canceled). c.mu is held.
func (c *Conn) watcherLocked(done <-chan struct{}) *watcher {
	if w, ok := c.watchers[done]; ok {
		return w
	}
	shared := done == c.lastDone && len(c.calls) > 0
	c.lastDone = done
	if !shared || len(c.watchers) >= maxWatchers {
		return nil
	}
	w := &watcher{done: done}
	if c.watchers == nil {
		c.watchers = make(map[<-chan struct{}]*watcher)
	}
	c.watchers[done] = w
	c.wg.Add(1)
	go c.watch(w)
	return w
}

// watch cancels w's asks when their ctx ends. It ends then, or when the
// connection closes (which fails every ask itself).
func (c *Conn) watch(w *watcher) {
	defer c.wg.Done()
	select {
	case <-w.done:
	case <-c.done:
		return
	}
	c.mu.Lock()
	delete(c.watchers, w.done)
	if c.lastDone == w.done {
		c.lastDone = nil
	}
	type asyncAsk struct {
		id uint64
		a  Async
	}
	var async []asyncAsk // completed once c.mu is released: that sends their cancels
	for id, p := range c.calls {
		if p.w != w {
			continue
		}
		c.giveUpLocked(id)
		if p.async != nil {
			async = append(async, asyncAsk{id, p.async})
			continue
		}
		p.ch <- reply{canceled: true} // buffered, and nobody else sends to it now
	}
	c.mu.Unlock()
	for _, t := range async {
		c.finishAsync(t.id, t.a, reply{canceled: true})
	}
}

var chanPool = sync.Pool{New: func() any { return make(chan reply, 1) }}

// Ask queues f as an ASK and waits for its REPLY. The reply frame is
// returned as is; the caller decodes it. ctx's deadline travels with the
// ask so the handler sees it too.
func (c *Conn) Ask(ctx context.Context, f *wire.Frame) (*wire.Frame, error) {
	r, err := c.ask(ctx, f, false)
	return r.f, err
}

// AskMessage is Ask returning the reply's message (see Result). A small
// reply is decoded on the connection's reader, where the codec's state is
// warm and which is running anyway, rather than on the waiting caller
// after it wakes up: measured, that halved the cost of decoding a reply.
func (c *Conn) AskMessage(ctx context.Context, f *wire.Frame) (any, error) {
	r, err := c.ask(ctx, f, true)
	if err != nil {
		return nil, err
	}
	if r.decoded {
		return r.v, r.err
	}
	return Result(r.f)
}

func (c *Conn) ask(ctx context.Context, f *wire.Frame, decode bool) (reply, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, plugin.Errorf(plugin.CodeOf(err), "%w", err)
	}
	ch := chanPool.Get().(chan reply)
	p := f.Plugin // f belongs to the writer once queued
	id, w, err := c.start(ctx, f, pending{ch: ch, decode: decode})
	if err != nil {
		if id != 0 {
			c.forget(id)
		}
		return reply{}, err
	}
	if w != nil {
		// Its watcher answers for ctx.
		r, err := c.answered(ctx, id, ch, <-ch)
		if r.canceled {
			c.cancelAsk(id, p)
		}
		return r, err
	}
	select {
	case r := <-ch:
		return c.answered(ctx, id, ch, r)
	case <-ctx.Done():
		if !c.giveUp(id) {
			// The reply (or the close) won the race: the reader has
			// taken the ask out of the table, and nobody else is told
			// of a reply it hands over. It is returned, not dropped.
			if r := <-ch; r.f != nil || r.decoded {
				return c.answered(ctx, id, ch, r)
			}
			chanPool.Put(ch)
		} else {
			c.cancelAsk(id, p)
		}
		err := ctx.Err()
		return reply{}, plugin.Errorf(plugin.CodeOf(err), "ask: %w", err)
	}
}

// start registers f as an ASK with p in the call table and queues it
// (writing it at once when it is alone, see below). It returns the call's
// ID (0 if it was never registered) and the watcher that answers for ctx,
// if any (see watcherLocked). On an error after registration the call is
// still in the table, for the caller to forget.
func (c *Conn) start(ctx context.Context, f *wire.Frame, p pending) (uint64, *watcher, error) {
	if err := c.compressCall(f); err != nil {
		return 0, nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		us := time.Until(d).Microseconds()
		if us < 1 {
			us = 1
		}
		f.TimeoutMicros = us
	}
	f.Kind = wire.Kind_KIND_ASK
	done := ctx.Done()
	// A ctx that can end makes the ask cancelable (see handlerCtx).
	f.Cancelable = done != nil
	c.mu.Lock()
	if c.calls == nil {
		err := c.closedError()
		c.mu.Unlock()
		return 0, nil, err
	}
	if done != nil {
		p.w = c.watcherLocked(done)
	}
	c.nextCall++
	id := c.nextCall
	p.written, p.plugin = c.written.Load(), f.Plugin
	c.calls[id] = p
	f.Call = id
	if stamp.Enabled {
		stamp.Mark(stamp.AskQueued, id)
	}
	// A lone ask is written directly (latency); with others in flight it
	// is queued, so that concurrent asks share batches (throughput). Being
	// the only ask in flight is not enough: when the reader has just
	// answered every ask at once, the first of their callers to ask again
	// finds itself alone with the others about to follow (measured: 1.4%
	// of the asks under load were written alone, 5% of the executors'
	// CPU). The replies having come one at a time is the other sign.
	//
	// And a direct write must not block: the caller would be stuck in
	// stream.Send, deaf to its ctx, for as long as the peer does not read
	// (a peer that is paused, or cut off until the heartbeat timeout).
	// gRPC's Send blocks only once the peer's stream window (1 MiB, set by
	// both ends) is spent and 64 KiB more wait; the peer's transport gives
	// window back once a quarter of it has been read. So while the bytes
	// the peer may not have read, with this ask's, stay under directMax,
	// the write cannot block. Otherwise the writer goroutine writes it and
	// the caller waits for the reply or its ctx.
	lone := len(c.calls) == 1 && c.lastReplies.Load() <= 1 &&
		c.written.Load()-c.read+int64(frameSize(f)) <= directMax
	// Still under the lock that registered the call: one lock round per
	// ask when the queue has room.
	if err := c.enqueueLocked(ctx, f, false, lone); err != nil {
		return id, nil, err
	}
	return id, p.w, nil
}

// answered is what ask id returns once r has arrived on its channel ch,
// which it gives back to the pool. A reply{canceled: true} is returned
// with its error.
func (c *Conn) answered(ctx context.Context, id uint64, ch chan reply, r reply) (reply, error) {
	if stamp.Enabled {
		stamp.Mark(stamp.ReplyDelivered, id)
	}
	chanPool.Put(ch)
	switch {
	case r.canceled:
		err := ctx.Err()
		if err == nil { // a Context whose Done closed before its Err was set
			err = context.Canceled
		}
		return reply{canceled: true}, plugin.Errorf(plugin.CodeOf(err), "ask: %w", err)
	case r.f == nil && !r.decoded:
		c.mu.Lock()
		err := c.closedError()
		c.mu.Unlock()
		return reply{}, err
	}
	return r, nil
}

// giveUp moves call id, whose ctx has ended, from the call table to
// gaveUp (its cancel, cancelAsk, takes it out again if the ask was never
// written), and reports whether it was still waiting.
func (c *Conn) giveUp(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.giveUpLocked(id)
}

// giveUpLocked is giveUp with c.mu held.
func (c *Conn) giveUpLocked(id uint64) bool {
	p, ok := c.calls[id]
	if !ok {
		return false
	}
	delete(c.calls, id)
	if c.gaveUp == nil {
		c.gaveUp = make(map[uint64]uint32)
	}
	c.gaveUp[id] = p.plugin
	return true
}

// ungiveLocked forgets ask id in gaveUp: its reply has come, or none
// will. c.mu is held.
func (c *Conn) ungiveLocked(id uint64) {
	delete(c.gaveUp, id)
	if len(c.gaveUp) == 0 {
		c.gaveUp = nil
	}
}

// forget removes call id, which failed to be queued, and reports whether
// it was still waiting. Its ctx's watcher may have given it up first
// (an ask waiting for room, see enqueueLocked): never written, it gets no
// reply, so it leaves gaveUp too.
func (c *Conn) forget(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ungiveLocked(id)
	if _, ok := c.calls[id]; !ok {
		return false
	}
	delete(c.calls, id)
	return true
}

// Reply answers the ASK with call ID id.
func (c *Conn) Reply(f *wire.Frame) error {
	f.Kind = wire.Kind_KIND_REPLY
	// Replies are queued, never written directly: under load a lane writing
	// each reply itself would defeat batching (measured: ask throughput
	// fell by a third).
	return c.SendControl(f)
}

func (c *Conn) writeLoop() {
	batch := &wire.Batch{}
	last := 0 // frames in the last batch written
	for {
		// One channel to wait on, not a select with done: close signals
		// wake after closing done.
		<-c.wake
		select {
		case <-c.done:
			return
		default:
		}
		if c.delivering.Load() {
			continue // the reader wakes us when it is done
		}
		c.mu.Lock()
		if last > 1 || len(c.calls) > 1 {
			c.mu.Unlock()
			c.gather()
			c.mu.Lock()
		}
		for {
			if c.closed {
				c.mu.Unlock()
				return
			}
			if c.writing {
				// A caller is writing directly; it wakes us when done.
				c.mu.Unlock()
				break
			}
			frames, rest, size := split(c.out, min(maxBatchBytes, c.opts.MaxMessageBytes))
			if len(frames) == 0 {
				closing := c.closing
				c.mu.Unlock()
				if closing {
					c.finishGraceful()
					return
				}
				break
			}
			if len(rest) == 0 {
				// Swap buffers: the queue reuses the spare backing array.
				c.out, c.spare = c.spare[:0], c.out
			} else {
				c.out = append(c.spare[:0], rest...)
				c.spare = frames[:len(frames):len(frames)]
			}
			if c.waiters > 0 {
				close(c.space)
				c.space = make(chan struct{})
			}
			c.writing = true
			c.mu.Unlock()

			last = len(frames)
			if !c.send(batch, frames, size) {
				return
			}
			c.mu.Lock()
			c.writing = false
		}
	}
}

// gatherRounds bounds how many times the writer yields to let more frames
// be queued before it writes, and gatherEnough is a queue long enough not
// to yield for: the cost of one batch is spread thin enough already.
const (
	gatherRounds = 4
	gatherEnough = 64
)

// gather yields the processor while doing so lets more frames be queued.
//
// The writer is woken by the first frame queued; the goroutines that are
// about to queue more are often runnable right then (a reader that has
// just handed a batch of replies to waiting askers made them so, and each
// asks again at once). Yielding lets them run first, so their frames share
// one batch instead of costing one gRPC message (and one write) each:
// measured, executors went from 1.1 to about 20 frames per batch and ask
// throughput rose by a third. With nothing else runnable, Gosched returns
// at once.
//
// The writer does not call it when nothing suggests more frames are
// coming: the last batch held one frame and at most one ask of ours is
// waiting (one ask at a time, each way), where yielding would only add to
// the round trip.
func (c *Conn) gather() {
	for range gatherRounds {
		c.mu.Lock()
		n := len(c.out)
		c.mu.Unlock()
		if n >= gatherEnough {
			return
		}
		runtime.Gosched()
		c.mu.Lock()
		grew := len(c.out) > n
		c.mu.Unlock()
		if !grew {
			return
		}
	}
}

// closeSendWait bounds how long a graceful close waits for the peer to end
// the stream after this side has half-closed it.
const closeSendWait = 5 * time.Second

// finishGraceful ends the connection once everything queued is written.
// The side that owns the stream half-closes it and waits for the peer to
// end it: canceling at once would reset the stream and could discard
// frames gRPC has accepted but not yet sent.
func (c *Conn) finishGraceful() {
	cs, ok := c.stream.(interface{ CloseSend() error })
	if c.cancel == nil || !ok {
		c.close(nil)
		return
	}
	if err := cs.CloseSend(); err != nil {
		c.close(nil)
		return
	}
	t := time.NewTimer(closeSendWait)
	defer t.Stop()
	select {
	case <-c.done: // the reader saw the peer end the stream
	case <-t.C:
		c.close(nil)
	}
}

// split returns the longest prefix of q whose frames fit in limit bytes
// (at least one frame), the rest, and the prefix's size. The peer accepts
// batches up to MaxMessageBytes + BatchOverhead, so a lone frame of the
// maximum size fits, and so does any prefix the estimate (frameSize) keeps
// under limit.
func split(q []*wire.Frame, limit int) (head, rest []*wire.Frame, size int) {
	for i, f := range q {
		n := frameSize(f)
		if size+n > limit && i > 0 {
			return q[:i], q[i:], size
		}
		size += n
	}
	return q, nil, size
}

func (c *Conn) readLoop() {
	var claimed []pending // the asks that a run of REPLYs answer
	b := &wire.Batch{}    // reused: its frames are handed on before the next read
	for {
		if err := c.stream.RecvMsg(b); err != nil {
			c.close(streamError("receive", err))
			return
		}
		if stamp.Enabled {
			markRead(b.Frames)
		}
		c.received.Store(true)
		c.handling.Store(true)
		replies := 0
		run := 0 // replies left in the claimed run
		for i, f := range b.Frames {
			if f.TypeId != 0 {
				f.Type = invalidType
				if uint(f.TypeId) <= uint(len(c.types)) { // unsigned: see flowControlled
					f.Type = c.types[f.TypeId-1]
				}
			}
			switch f.Kind {
			case wire.Kind_KIND_REPLY:
				// While a run of replies is handed out, the askers they
				// wake queue their next asks; holding the writer until
				// the run ends lets more of those share one batch (under
				// ask load, executors went from about 24 to 32 frames per
				// batch).
				// Delivering never blocks, so the hold is short.
				c.delivering.Store(true)
				if run == 0 {
					claimed = c.claim(b.Frames[i:], claimed[:0])
					run = len(claimed)
				}
				c.deliver(f, claimed[len(claimed)-run])
				run--
				replies++
			case wire.Kind_KIND_HEARTBEAT:
				if f.Metrics != nil {
					c.endDelivering()
					c.h.HandleFrame(c, f)
				}
			case wire.Kind_KIND_CREDIT:
				c.takeCredit(f)
				wire.ReleaseFrame(f)
			case wire.Kind_KIND_ASK_CANCEL:
				c.peerCanceled(f.Call)
				wire.ReleaseFrame(f)
			case wire.Kind_KIND_SEND:
				if !c.admit(f) {
					c.close(plugin.Errorf(plugin.CodeResourceExhausted, "the peer sent plugin %q more than its send window (%d bytes) allows", c.opts.Plugins[f.Plugin], c.windows[f.Plugin]))
					return
				}
				c.endDelivering()
				c.h.HandleFrame(c, f)
			default:
				// The owner's handler may take a while; never while
				// holding the writer.
				c.endDelivering()
				c.h.HandleFrame(c, f)
			}
		}
		c.endDelivering()
		clear(claimed[:cap(claimed)])
		if replies > 0 {
			c.lastReplies.Store(int32(replies))
		}
		c.handling.Store(false)
		// Time spent in a handler is not the peer's silence.
		c.received.Store(true)
	}
}

// endDelivering releases the writer held by a run of replies, waking it
// if it has work: frames queued meanwhile, or a graceful close to finish.
func (c *Conn) endDelivering() {
	if !c.delivering.Load() {
		return
	}
	c.delivering.Store(false)
	c.mu.Lock()
	work := len(c.out) > 0 || c.closing
	c.mu.Unlock()
	if work {
		c.signal()
	}
}

// claim takes the asks answered by the run of REPLYs that starts frames
// out of the call table, in one lock round, and appends them to buf (for
// a reply whose ask gave up, a pending with only gaveUp set; the zero
// pending for one that answers no ask waiting or given up: a second
// reply, or one for an ask never made). Only a run is claimed: its
// replies are delivered at once, while a frame after it goes to a handler
// first, and an ask still in the table can give up meanwhile.
func (c *Conn) claim(frames []*wire.Frame, buf []pending) []pending {
	c.mu.Lock()
	for _, f := range frames {
		if f.Kind != wire.Kind_KIND_REPLY {
			break
		}
		p, ok := c.calls[f.Call]
		if ok {
			delete(c.calls, f.Call)
			// The peer has read the ask, so all that preceded it.
			c.read = max(c.read, p.written)
		} else if pl, gaveUp := c.gaveUp[f.Call]; gaveUp {
			c.ungiveLocked(f.Call)
			p.gaveUp = true
			f.Plugin = pl // the asker's, whatever the peer says
		}
		buf = append(buf, p)
	}
	c.mu.Unlock()
	return buf
}

// deliver hands f to the ask p that it answers (see claim).
func (c *Conn) deliver(f *wire.Frame, p pending) {
	if p.ch == nil && p.async == nil {
		// A reply for a call that gave up is dropped, and its handler
		// told when there is a message to tell of.
		if p.gaveUp && f.Code == 0 && (f.TypeId != 0 || f.Type != "") {
			c.endDelivering()
			c.h.HandleFrame(c, f)
			return
		}
		wire.ReleaseFrame(f)
		return
	}
	id := f.Call // f is released once decoded
	if p.decode && len(f.Payload) <= predecodeMax {
		v, err := Result(f)
		c.put(id, p, reply{v: v, err: err, decoded: true})
		return
	}
	c.put(id, p, reply{f: f})
}

func (c *Conn) heartbeatLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.HeartbeatInterval)
	defer t.Stop()
	// The reader only raises a flag per batch (no clock read on the hot
	// path); the last time it was seen raised, at tick resolution, is when
	// the peer was last heard.
	hb := NewSilence(c.opts.HeartbeatInterval, time.Now())
	// The bytes the transport had taken in at the last tick (see
	// Options.Received): more since then, a batch on its way, is the
	// peer heard from too.
	var bytesIn uint64
	bytesKnown := false
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			heard := c.received.Swap(false) || c.handling.Load()
			if c.opts.Received != nil {
				if n, ok := c.opts.Received(); ok {
					heard = heard || (bytesKnown && n != bytesIn)
					bytesIn, bytesKnown = n, true
				}
			}
			if silent := hb.Tick(now, heard); silent > c.opts.HeartbeatTimeout {
				c.close(plugin.Errorf(plugin.CodeUnavailable, "peer silent for %v (heartbeat timeout %v)", silent.Round(time.Millisecond), c.opts.HeartbeatTimeout))
				return
			}
			if now.Sub(time.Unix(0, c.lastSend.Load())) >= c.opts.HeartbeatInterval/2 {
				_ = c.SendControl(&wire.Frame{Kind: wire.Kind_KIND_HEARTBEAT})
			}
		}
	}
}

// Silence measures how long the peer has not been heard from, in the time
// this side ran: a process stopped for a while (SIGSTOP, a debugger, a VM
// paused or migrated, a machine starved of CPU) holds its own stall
// against nobody. Its first tick after the stall, which the ticker
// delivers at once, could otherwise find the peer silent for the whole
// stall if it ran before the reader had taken in what the peer sent
// meanwhile, and close the connection. (An executor process stopped with
// SIGSTOP did not show it: its reader ran first.) A Silence is not safe
// for concurrent use.
type Silence struct {
	interval            time.Duration
	lastTick, lastHeard time.Time
}

// NewSilence returns a Silence ticked every interval, the peer last heard
// from at now.
func NewSilence(interval time.Duration, now time.Time) Silence {
	return Silence{interval: interval, lastTick: now, lastHeard: now}
}

// Interval is the interval s is ticked at.
func (s *Silence) Interval() time.Duration { return s.interval }

// Tick records a tick at now, with heard telling whether the peer was
// heard from since the last one, and returns how long it has been
// silent. A tick more than two intervals after the last means this side
// did not run meanwhile: the time it lost is not counted.
func (s *Silence) Tick(now time.Time, heard bool) time.Duration {
	if gap := now.Sub(s.lastTick); gap > 2*s.interval {
		s.lastHeard = s.lastHeard.Add(gap - s.interval)
	}
	s.lastTick = now
	if heard {
		s.lastHeard = now
	}
	return now.Sub(s.lastHeard)
}

// ErrPeerClosed is in the error a Conn ends with when its peer ended the
// stream itself, after its last frame (io.EOF), rather than the stream
// breaking or this side closing it. It wraps plugin.ErrClosed.
var ErrPeerClosed = fmt.Errorf("peer closed the stream: %w", plugin.ErrClosed)

// streamError turns a gRPC stream error into an *plugin.Error.
func streamError(op string, err error) error {
	if errors.Is(err, io.EOF) {
		return plugin.Errorf(plugin.CodeUnavailable, "%w", ErrPeerClosed)
	}
	if s, ok := status.FromError(err); ok {
		code := plugin.Code(s.Code())
		switch s.Code() {
		case codes.Canceled:
			// The peer's end of the stream went away (process died,
			// connection reset) or ours was canceled.
			return plugin.Errorf(plugin.CodeUnavailable, "stream %s: peer disconnected: %w", op, plugin.ErrClosed)
		case codes.OK:
			code = plugin.CodeUnavailable
		}
		if !code.Valid() {
			code = plugin.CodeUnavailable
		}
		return plugin.Errorf(code, "stream %s: %s", op, s.Message())
	}
	return plugin.Errorf(plugin.CodeUnavailable, "stream %s: %v", op, err)
}

// String names the connection in logs.
func (c *Conn) String() string { return fmt.Sprintf("conn(%v)", c.Peer) }
