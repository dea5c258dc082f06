package driver

import (
	"net"
	"sync"
	"syscall"
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
type conns struct {
	net.Listener
	mu    sync.Mutex
	byKey map[string]net.Conn
	swept int // len(byKey) after the last sweep
}

func newConns(lis net.Listener) *conns {
	return &conns{Listener: lis, byKey: make(map[string]net.Conn)}
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
		l.mu.Lock()
		l.byKey[c.RemoteAddr().String()] = c
		if n := len(l.byKey); n >= 64 && n >= 2*l.swept {
			for k, c := range l.byKey {
				if closed(c) {
					delete(l.byKey, k)
				}
			}
			l.swept = len(l.byKey)
		}
		l.mu.Unlock()
	}
	return c, nil
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
	c := l.byKey[addr]
	delete(l.byKey, addr)
	l.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}
