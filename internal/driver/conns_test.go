package driver

import (
	"net"
	"path/filepath"
	"testing"
)

// accept makes n connections to l and returns the accepted ends.
func accept(t *testing.T, l *conns, network string, n int) []net.Conn {
	t.Helper()
	var out []net.Conn
	for range n {
		c, err := net.Dial(network, l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		a, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		out = append(out, a)
	}
	return out
}

func tracked(l *conns) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byKey)
}

// conns tracks TCP connections only (a Unix socket's clients share one
// address, and dropping by it closed another peer's connection), hands
// them to gRPC unwrapped, and forgets those closed since.
func TestConns(t *testing.T) {
	t.Run("unix", func(t *testing.T) {
		lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
		if err != nil {
			t.Fatal(err)
		}
		l := newConns(lis, 0)
		defer l.Close()
		accept(t, l, "unix", 2)
		if got := tracked(l); got != 0 {
			t.Errorf("Unix connections tracked: got %d, want 0", got)
		}
		l.drop("") // a Unix client's address: closes nothing
	})
	t.Run("tcp", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := newConns(lis, 0)
		defer l.Close()
		cs := accept(t, l, "tcp", 2)
		if _, ok := cs[0].(*net.TCPConn); !ok {
			t.Errorf("accepted connection: got %T, want *net.TCPConn, unwrapped", cs[0])
		}
		if got := tracked(l); got != 2 {
			t.Errorf("tracked: got %d, want 2", got)
		}
		l.drop(cs[0].RemoteAddr().String())
		if !closed(cs[0]) || closed(cs[1]) {
			t.Errorf("after drop: closed %v and %v, want true and false", closed(cs[0]), closed(cs[1]))
		}
		// Closed connections are forgotten as the map grows.
		for _, c := range accept(t, l, "tcp", 100) {
			c.Close()
		}
		accept(t, l, "tcp", 100)
		if got := tracked(l); got > 150 {
			t.Errorf("tracked after 100 closed and 101 open: got %d, want the closed ones forgotten", got)
		}
	})
}
