package driver

import (
	"net"
	"path/filepath"
	"testing"
)

// conns tracks TCP connections only: a Unix socket's clients share one
// address, and dropping by it closed another peer's connection.
func TestConnsTracksTCPOnly(t *testing.T) {
	tests := []struct {
		network, addr string
		want          int // connections tracked, of two
	}{
		{"tcp", "127.0.0.1:0", 2},
		{"unix", filepath.Join(t.TempDir(), "s"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			lis, err := net.Listen(tt.network, tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			l := newConns(lis)
			defer l.Close()
			for range 2 {
				c, err := net.Dial(tt.network, lis.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				a, err := l.Accept()
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
			}
			l.mu.Lock()
			got := len(l.byKey)
			l.mu.Unlock()
			if got != tt.want {
				t.Errorf("tracked: got %d, want %d", got, tt.want)
			}
			l.drop("") // a Unix client's address: closes nothing
		})
	}
}
