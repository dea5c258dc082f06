package executor

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// alert is a TLS alert as crypto/tls gives the peer's: its own type is
// not exported, only its text.
type alert string

func (a alert) Error() string { return string(a) }

// Which TLS handshake failures end an executor's wait at once: those that
// retrying cannot mend. A driver certificate not valid yet is mended by
// waiting (a clock a little behind the issuer's), and a connection that
// ends says nothing of TLS.
func TestTLSMisconfigured(t *testing.T) {
	cert := func(notBefore, notAfter time.Time) *x509.Certificate {
		return &x509.Certificate{NotBefore: notBefore, NotAfter: notAfter}
	}
	now := time.Now()
	verify := func(err error) error { return &tls.CertificateVerificationError{Err: err} }
	remote := func(text string) error { return &net.OpError{Op: "remote error", Err: alert(text)} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"unknown authority", verify(x509.UnknownAuthorityError{}), true},
		{"another name", verify(x509.HostnameError{Certificate: cert(now, now), Host: "driver.example"}), true},
		{"expired", verify(x509.CertificateInvalidError{Cert: cert(now.Add(-2*time.Hour), now.Add(-time.Hour)), Reason: x509.Expired}), true},
		{"not valid yet", verify(x509.CertificateInvalidError{Cert: cert(now.Add(time.Minute), now.Add(time.Hour)), Reason: x509.Expired}), false},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true},
		{"client certificate required", fmt.Errorf("read: %w", remote("tls: certificate required")), true},
		{"client certificate refused", remote("tls: bad certificate"), true},
		{"another alert", remote("tls: internal error"), false},
		{"a read error", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, false},
		{"EOF", io.EOF, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := tlsMisconfigured(tt.err); got != tt.want {
			t.Errorf("%s: tlsMisconfigured(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
