package executor

import (
	"errors"
	"net"
	"testing"
)

// The first bytes a connection to the driver's address reads say whether
// the server speaks HTTP/2 (a SETTINGS frame: type 4, the fourth byte):
// anything else is named as ErrNotGRPC, and an HTTP/2 answer clears what
// an earlier connection met, which a later failure of another kind used
// to be blamed on.
func TestSniffConn(t *testing.T) {
	earlier := errors.New("earlier")
	tests := []struct {
		name   string
		first  []byte
		before error
		want   error // nil: no error left
	}{
		{"HTTP/1", []byte("HTTP/1.1 404 Not Found\r\n"), nil, ErrNotGRPC},
		{"HTTP/2 SETTINGS", []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}, nil, nil},
		{"HTTP/2 after a wrong server", []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}, ErrNotGRPC, nil},
		{"a first read too short to judge", []byte{0, 0}, earlier, earlier},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			s := new(handshakeState)
			last := &s.last
			if tt.before != nil {
				last.Store(&tt.before)
			}
			c := &sniffConn{Conn: client, s: s, plaintext: true}
			go func() { _, _ = server.Write(tt.first) }()
			buf := make([]byte, 64)
			if _, err := c.Read(buf); err != nil {
				t.Fatal(err)
			}
			var got error
			if p := last.Load(); p != nil {
				got = *p
			}
			if !errors.Is(got, tt.want) || (tt.want == nil) != (got == nil) {
				t.Errorf("after reading %q: got %v, want %v", tt.first, got, tt.want)
			}
		})
	}
}

// A server that resets the connection before sending a byte (a TLS server
// reached without TLS does so as often as it closes it) is named as one
// that closed it at once: only an orderly close was, and the warning then
// fell back to the generic text, now and then.
func TestSniffConnReset(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	dialed := make(chan struct{})
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		<-dialed
		_ = c.(*net.TCPConn).SetLinger(0) // close with RST
		_ = c.Close()
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	close(dialed)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	s := new(handshakeState)
	last := &s.last
	c := &sniffConn{Conn: raw, s: s, plaintext: true}
	if _, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatal("Read: got nil, want the reset (or end) of the connection")
	}
	if p := last.Load(); p == nil || !errors.Is(*p, ErrNotGRPC) {
		t.Errorf("after a reset: got %v, want ErrNotGRPC (closed before sending anything)", p)
	}
}
