package driver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"

	"github.com/emberhq/ember/internal/rpc"
	"google.golang.org/grpc/credentials"
)

// watchedCreds is the driver's TLS credentials, counting and logging the
// connections whose TLS handshake fails: an executor without a client
// certificate, with one the driver does not trust, or speaking plaintext.
// gRPC drops such a connection before any of the driver's code sees it,
// so under mutual TLS a misconfigured or hostile client left no trace
// (its own log said why, the driver's nothing). A connection closed or
// reset before it sent anything (a port probe, a load balancer's check:
// many close theirs with a reset) or that timed out is logged at Debug,
// not counted.
type watchedCreds struct {
	credentials.TransportCredentials
	failed func(addr net.Addr, err error)
}

// ServerHandshake implements credentials.TransportCredentials.
func (c watchedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.failed(conn.RemoteAddr(), err)
	}
	return out, info, err
}

// Clone implements credentials.TransportCredentials.
func (c watchedCreds) Clone() credentials.TransportCredentials {
	return watchedCreds{TransportCredentials: c.TransportCredentials.Clone(), failed: c.failed}
}

// tlsRefused counts and logs a failed TLS handshake (see watchedCreds);
// the Warn lines are bounded by budget.
func (d *Driver) tlsRefused(budget *rpc.LogBudget) func(net.Addr, error) {
	return func(addr net.Addr, err error) {
		var ne net.Error
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
			errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
			errors.As(err, &ne) && ne.Timeout() {
			d.log.Debug("connection closed before its TLS handshake completed", "peer", addr, "err", err)
			return
		}
		// Logged before counted: whoever reads the count finds the line.
		budget.Log(d.log, slog.LevelWarn, "warnings of failed TLS handshakes",
			"refused a connection: its TLS handshake failed (an executor without TLS, or without a certificate this driver trusts?)",
			func() []any { return []any{"peer", addr, "err", err} })
		d.builtin.AuthFailures.WithLabelValues("tls").Inc()
	}
}
