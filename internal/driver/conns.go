package driver

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// conns is a listener that keeps the TCP connections it accepts by remote
// address, so that the driver can close the one of a peer that failed its
// handshake: gRPC gives a stream's handler no way to end its connection,
// and a peer refused on one stream could otherwise open the next on the
// same connection, for as long as it liked. Safe for concurrent use.
//
// It hands gRPC the connections as they are, not wrapped: gRPC reads a
// *net.TCPConn with read buffers from a pool, and sets its TCP user
// timeout, which a wrapper disables (measured: 30 to 50 MiB more for the
// driver of 1,000 executors). So it cannot see them close; it forgets the
// closed ones whenever it has doubled in size since it last looked.
//
// It also closes each connection that has not authenticated (see
// authenticated) within its deadline of being accepted. gRPC's own bounds
// do not end one whose peer keeps opening streams that never reach the
// driver (an unregistered method, a malformed path, an unknown
// compression): each resets its idle timer, so such a peer, proving
// nothing, kept its connections for as long as it liked.
type conns struct {
	net.Listener
	deadline time.Duration // 0: none
	mu       sync.Mutex
	byKey    map[string]*entry
	swept    int // len(byKey) after the last sweep
}

// entry is one accepted connection, with the timer that closes it unless
// it authenticates first (nil once it has, or with no deadline).
type entry struct {
	c     net.Conn
	timer *time.Timer
	// handshaking: a stream on it is in its handshake (see
	// beginHandshake). Guarded by conns.mu.
	handshaking bool
}

// newConns keeps lis's connections, closing those that have not
// authenticated within deadline of their accept (0: never).
func newConns(lis net.Listener, deadline time.Duration) *conns {
	return &conns{Listener: lis, deadline: deadline, byKey: make(map[string]*entry)}
}

// Accept implements net.Listener.
func (l *conns) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	// Only TCP connections: their remote addresses are unique among those
	// open, where a Unix socket's clients all share one (empty) address,
	// and dropping by it could close another peer's connection.
	if _, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		tc := &entry{c: c}
		if l.deadline > 0 {
			tc.timer = time.AfterFunc(l.deadline, func() { _ = c.Close() })
		}
		l.mu.Lock()
		if old := l.byKey[c.RemoteAddr().String()]; old != nil {
			old.stop() // closed (its address is c's now): nothing to time out
		}
		l.byKey[c.RemoteAddr().String()] = tc
		if n := len(l.byKey); n >= 64 && n >= 2*l.swept {
			for k, tc := range l.byKey {
				if closed(tc.c) {
					tc.stop()
					delete(l.byKey, k)
				}
			}
			l.swept = len(l.byKey)
		}
		l.mu.Unlock()
	}
	return c, nil
}

// stop stops tc's timer, if it has one.
func (tc *entry) stop() {
	if tc.timer != nil {
		tc.timer.Stop()
	}
}

// authenticated exempts the connection from addr from the deadline: its
// peer has proved the secret (or the driver requires none) and joined.
func (l *conns) authenticated(addr string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if tc := l.byKey[addr]; tc != nil {
		tc.stop()
		tc.timer = nil
	}
}

// beginHandshake claims the handshake of the connection from addr for one
// stream, and returns the func that releases it (its first call only; the
// driver calls it once the executor has joined, and as the stream ends).
// It reports false when another stream on that connection holds it: while
// a stream waits for its HELLO, gRPC lets the peer send up to the whole
// message limit on it (MaxMessageBytes + rpc.BatchOverhead), and a peer
// that has proved nothing held four of them on each connection, one per
// stream allowed (grpc.MaxConcurrentStreams). An executor opens one
// stream. Connections Serve did not accept (none, or not TCP) are not
// limited.
func (l *conns) beginHandshake(addr string) (end func(), ok bool) {
	if l == nil {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tc := l.byKey[addr]
	if tc == nil {
		return func() {}, true
	}
	if tc.handshaking {
		return nil, false
	}
	tc.handshaking = true
	ended := false
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if !ended { // once: a later stream's claim is not this one's
			ended = true
			tc.handshaking = false
		}
	}, true
}

// closed reports whether c has been closed.
func closed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	return err != nil || rc.Control(func(uintptr) {}) != nil
}

// drop closes the connection from addr, if there is one.
func (l *conns) drop(addr string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	tc := l.byKey[addr]
	delete(l.byKey, addr)
	l.mu.Unlock()
	if tc != nil {
		tc.stop()
		_ = tc.c.Close()
	}
}

// received returns the bytes the kernel has received on the connection
// from addr, and whether it can tell (see bytesReceived).
func (l *conns) received(addr string) (uint64, bool) {
	l.mu.Lock()
	tc := l.byKey[addr]
	l.mu.Unlock()
	if tc == nil {
		return 0, false
	}
	return bytesReceived(tc.c)
}
