package driver

import (
	"net"
	"sync"
)

// conns is a listener that keeps the TCP connections it accepts by remote
// address, so that the driver can close the one of a peer that failed its
// handshake: gRPC gives a stream's handler no way to end its connection,
// and a peer refused on one stream could otherwise open the next on the
// same connection, for as long as it liked. Safe for concurrent use.
type conns struct {
	net.Listener
	mu    sync.Mutex
	byKey map[string]*trackedConn
}

func newConns(lis net.Listener) *conns {
	return &conns{Listener: lis, byKey: make(map[string]*trackedConn)}
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
	if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
		return c, nil
	}
	tc := &trackedConn{Conn: c, l: l, key: c.RemoteAddr().String()}
	l.mu.Lock()
	l.byKey[tc.key] = tc
	l.mu.Unlock()
	return tc, nil
}

// drop closes the connection from addr, if there is one.
func (l *conns) drop(addr string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	c := l.byKey[addr]
	l.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// trackedConn is a connection conns keeps until it is closed.
type trackedConn struct {
	net.Conn
	l    *conns
	key  string
	once sync.Once
}

// Close implements net.Conn.
func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.byKey[c.key] == c {
			delete(c.l.byKey, c.key)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
