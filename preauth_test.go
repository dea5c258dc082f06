package ember_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/internal/executor"
)

// A peer without the secret cannot keep a connection by opening streams
// that never reach the driver's handler (an unregistered method): each
// reset gRPC's idle timer, so nothing closed the connection, and a slow
// trickle of such peers could hold every file descriptor. The connection
// is closed once it has gone 3 x HandshakeTimeout without an executor joining on
// it, while an executor that joined keeps its own.
func TestUnauthenticatedConnectionsEnd(t *testing.T) {
	const ht = 300 * time.Millisecond
	d := standalone(t, ember.Config{Secret: "right secret", BuildID: "test", HandshakeTimeout: ht})

	// An honest executor joins first, and must outlive the attacker's
	// connection, accepted after it.
	ctx, cancel := context.WithCancel(testCtx(t))
	joined, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- executor.Run(ctx, executor.Config{DriverAddr: d.Addr(), Secret: "right secret", Logger: quiet,
			BuildID: "test", Tasks: ember.Tasks(), OnWelcome: func(string) { close(joined) }})
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-joined:
	case err := <-done:
		t.Fatalf("executor: %v", err)
	}

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true) // h2c: gRPC without TLS
	cc, err := tr.NewClientConn(ctx, "http", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	start := time.Now()
	limit := 100 * ht // far past any bound the driver sets
	streams := 0
	for ; time.Since(start) < limit; streams++ {
		req, _ := http.NewRequest("POST", "http://"+d.Addr()+"/x.Y/Z", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
		req.Header.Set("content-type", "application/grpc")
		req.Header.Set("te", "trailers")
		resp, err := cc.RoundTrip(req)
		if err != nil {
			break // closed
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if held := time.Since(start); held >= limit {
		t.Fatalf("a connection that never authenticated was kept %v (%d streams to an unregistered method), want it closed after 3 x HandshakeTimeout (%v)", held, streams, 3*ht)
	}
	if n := len(d.Executors()); n != 1 {
		t.Errorf("executors after the attacker's connection closed: got %d, want the one that joined before it", n)
	}
}
