package ember_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/executor"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// testPKI writes a CA, a driver certificate for 127.0.0.1, an executor
// client certificate and an expired server certificate ("expired"), all
// made now, and returns the directory.
func testPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ember test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage, notAfter time.Time) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(dir, name+"-key.pem"), "EC PRIVATE KEY", keyDER)
	}
	issue("driver", 2, x509.ExtKeyUsageServerAuth, time.Now().Add(time.Hour))
	issue("executor", 3, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
	issue("expired", 4, x509.ExtKeyUsageServerAuth, time.Now().Add(-time.Minute))
	return dir
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Mutual TLS: an executor with a client certificate from the CA joins;
// one without a certificate, or speaking plaintext, does not.
func TestMutualTLS(t *testing.T) {
	dir := testPKI(t)
	file := func(name string) string { return filepath.Join(dir, name) }
	d := standalone(t, ember.Config{
		Secret:  "tls secret",
		BuildID: "test",
		TLS:     &ember.TLSConfig{DriverCertFile: file("driver.pem"), DriverKeyFile: file("driver-key.pem"), CAFile: file("ca.pem"), MutualTLS: true},
	})
	clientCreds := func(t *testing.T, withCert bool) grpc.DialOption {
		t.Helper()
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(file("ca.pem"))
		pool.AppendCertsFromPEM(pem)
		tc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		if withCert {
			cert, err := tls.LoadX509KeyPair(file("executor.pem"), file("executor-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		return grpc.WithTransportCredentials(credentials.NewTLS(tc))
	}
	tests := []struct {
		name string
		opt  func(t *testing.T) grpc.DialOption
		ok   bool
	}{
		{"client certificate", func(t *testing.T) grpc.DialOption { return clientCreds(t, true) }, true},
		{"no client certificate", func(t *testing.T) grpc.DialOption { return clientCreds(t, false) }, false},
		{"plaintext", func(*testing.T) grpc.DialOption { return grpc.WithTransportCredentials(insecure.NewCredentials()) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := joinErr(t, d.Addr(), "tls secret", tt.opt(t))
			if (err == nil) != tt.ok {
				t.Errorf("join: got %v, want success %v", err, tt.ok)
			}
		})
	}
}

// Config.TLS on a local-cluster: executors are real processes that verify
// the driver's certificate and present their own.
func TestTLSLocalCluster(t *testing.T) {
	dir := os.Getenv(dirEnv)
	if dir == "" {
		dir = testPKI(t)
	}
	file := func(name string) string { return filepath.Join(dir, name) }
	// One Config for every process: the driver reads its files, the
	// executors theirs.
	cfg := ember.Config{
		Master:       "local-cluster[1]",
		Plugins:      []plugin.Plugin{named("tls-check")},
		ExecutorArgs: embertest.ExecutorArgs(t),
		TLS: &ember.TLSConfig{
			CAFile:         file("ca.pem"),
			DriverCertFile: file("driver.pem"), DriverKeyFile: file("driver-key.pem"),
			ExecutorCertFile: file("executor.pem"), ExecutorKeyFile: file("executor-key.pem"),
			MutualTLS: true,
		},
	}
	if isChild() {
		runChild(cfg, nil)
	}
	t.Setenv(dirEnv, dir)
	c := embertest.Start(t, cfg)
	if got := len(c.Driver.Executors()); got != 1 {
		t.Errorf("executors over TLS: got %d, want 1", got)
	}
}

// A process given an expired certificate says so when it starts: every
// handshake with it would fail, and the driver used to start and leave
// its executors retrying for StartTimeout.
func TestExpiredCertificateFailsAtStart(t *testing.T) {
	dir := testPKI(t)
	tlsCfg := &ember.TLSConfig{
		CAFile:         filepath.Join(dir, "ca.pem"),
		DriverCertFile: filepath.Join(dir, "expired.pem"), DriverKeyFile: filepath.Join(dir, "expired-key.pem"),
	}
	err := ember.Run(testCtx(t), ember.Config{Master: "local[1]", TLS: tlsCfg, Logger: quiet},
		func(context.Context, *ember.Driver) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "TLS: driver certificate: expired on") {
		t.Errorf("Run with an expired driver certificate: got %v, want it refused at start, saying so", err)
	}
}

// An executor whose TLS handshake with the driver fails in a way that
// retrying cannot mend (it reads its TLS files once) fails at once, saying
// why: it used to warn and retry until ConnectTimeout (a minute), then
// ask whether the driver was running.
func TestTLSMisconfiguredFailsAtOnce(t *testing.T) {
	dir := testPKI(t)
	file := func(name string) string { return filepath.Join(dir, name) }
	trusting := x509.NewCertPool()
	pem, err := os.ReadFile(file("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	trusting.AppendCertsFromPEM(pem)
	driverCert := &ember.TLSConfig{DriverCertFile: file("driver.pem"), DriverKeyFile: file("driver-key.pem")}
	mutual := &ember.TLSConfig{DriverCertFile: file("driver.pem"), DriverKeyFile: file("driver-key.pem"), CAFile: file("ca.pem"), MutualTLS: true}
	tests := []struct {
		name       string
		driverTLS  *ember.TLSConfig
		roots      *x509.CertPool
		serverName string
		clientCert string // the executor's certificate, if any
		want       string
		// mayRetry: the driver refuses after the executor's side of the
		// handshake has succeeded (TLS 1.3), with an alert that the
		// executor reads on its first read; when its first write meets
		// the closed connection first, it warns and retries.
		mayRetry bool
	}{
		{"plaintext driver", nil, trusting, "127.0.0.1", "", "first record does not look like a TLS handshake", false},
		{"untrusted driver certificate", driverCert, x509.NewCertPool(), "127.0.0.1", "", "certificate signed by unknown authority", false},
		{"certificate for another name", driverCert, trusting, "driver.example", "", "wanted to match driver.example", false},
		{"no client certificate", mutual, trusting, "127.0.0.1", "", "EMBER_TLS_KEY_FILE): remote error: tls: certificate required", true},
		{"a server certificate as client certificate", mutual, trusting, "127.0.0.1", "driver", "EMBER_TLS_KEY_FILE): remote error: tls: bad certificate", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var driverLogs logtest.Buffer
			d := standalone(t, ember.Config{Secret: "tls secret", BuildID: "test", TLS: tt.driverTLS, MetricsAddr: "127.0.0.1:0",
				Logger: slog.New(slog.NewTextHandler(&driverLogs, nil))})
			tc := &tls.Config{RootCAs: tt.roots, ServerName: tt.serverName}
			if tt.clientCert != "" {
				cert, err := tls.LoadX509KeyPair(file(tt.clientCert+".pem"), file(tt.clientCert+"-key.pem"))
				if err != nil {
					t.Fatal(err)
				}
				tc.Certificates = []tls.Certificate{cert}
			}
			var logs logtest.Buffer
			done := make(chan error, 1)
			go func() {
				done <- executor.Run(testCtx(t), executor.Config{DriverAddr: d.Addr(), Secret: "tls secret", BuildID: "test",
					Logger: slog.New(slog.NewTextHandler(&logs, nil)), ConnectTimeout: time.Hour,
					Creds: credentials.NewTLS(tc)})
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(embertest.DefaultTimeout):
				t.Fatalf("executor still waiting for its handshake after %v; logs: %s", embertest.DefaultTimeout, logs.String())
			}
			if err == nil || !strings.Contains(err.Error(), "the TLS handshake with driver") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("executor.Run: got %v, want it to fail saying the TLS handshake failed: %s", err, tt.want)
			}
			if !errors.Is(err, executor.ErrMisconfigured) { // the process exits with ember.ExitMisconfigured
				t.Errorf("executor.Run: got %v, want an error matching executor.ErrMisconfigured", err)
			}
			if line := logs.String(); strings.Contains(line, "retrying") && (!tt.mayRetry || !strings.Contains(line, "client certificate")) {
				t.Errorf("logs: got %q, want no word of retrying (or, where the alert can be missed, a warning naming the client certificate)", line)
			}
			if tt.driverTLS != nil {
				// The driver's side: gRPC drops the connection before
				// any of Ember's code sees it, which left no trace.
				tlsRefusedOnTheDriver(t, d, &driverLogs)
			}
		})
	}
}

// tlsRefusedOnTheDriver waits until d has counted a failed TLS handshake
// in ember_auth_failures_total{reason="tls"} and has logged it.
func tlsRefusedOnTheDriver(t *testing.T, d *ember.Driver, logs *logtest.Buffer) {
	t.Helper()
	embertest.WaitFor(t, `ember_auth_failures_total{reason="tls"} at 1 or more`, func() bool {
		v, _ := value(scrape(t, d.MetricsURL()), "ember_auth_failures_total", map[string]string{"reason": "tls"})
		return v >= 1
	})
	if !strings.Contains(logs.String(), `level=WARN msg="refused a connection: its TLS handshake failed`) {
		t.Errorf("the driver's log does not say it refused a connection for its TLS handshake:\n%s", logs.String())
	}
}

// A plaintext client at a TLS driver (an executor started without
// EMBER_TLS_CA_FILE, say, which retries for StartTimeout) is counted and
// logged by the driver; a connection closed or reset before it sent
// anything (a port probe, a load balancer's check) is not.
func TestTLSDriverCountsPlaintextClients(t *testing.T) {
	dir := testPKI(t)
	var logs logtest.Buffer
	d := standalone(t, ember.Config{Secret: "tls secret", BuildID: "test", MetricsAddr: "127.0.0.1:0",
		TLS:    &ember.TLSConfig{DriverCertFile: filepath.Join(dir, "driver.pem"), DriverKeyFile: filepath.Join(dir, "driver-key.pem")},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	tlsFailures := func() float64 {
		v, ok := value(scrape(t, d.MetricsURL()), "ember_auth_failures_total", map[string]string{"reason": "tls"})
		if !ok {
			t.Fatal(`no ember_auth_failures_total{reason="tls"} series`)
		}
		return v
	}
	if v := tlsFailures(); v != 0 {
		t.Fatalf(`ember_auth_failures_total{reason="tls"} at start: got %v, want 0`, v)
	}
	probe, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	embertest.WaitFor(t, "the probe's connection logged at Debug", func() bool {
		return strings.Contains(logs.String(), "connection closed before its TLS handshake completed")
	})
	if v := tlsFailures(); v != 0 {
		t.Errorf(`ember_auth_failures_total{reason="tls"} after a probe: got %v, want 0`, v)
	}
	// A probe that resets its connection (SO_LINGER 0: HAProxy's and
	// many load balancers' TCP checks) is no TLS failure either.
	reset, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := reset.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	reset.Close()
	embertest.WaitFor(t, "the reset probe's connection logged at Debug, or counted", func() bool {
		return strings.Count(logs.String(), "connection closed before its TLS handshake completed") >= 2 || tlsFailures() != 0
	})
	if v := tlsFailures(); v != 0 {
		t.Errorf(`ember_auth_failures_total{reason="tls"} after a probe that reset its connection: got %v, want 0`, v)
	}
	plain, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil { // gRPC's first bytes
		t.Fatal(err)
	}
	tlsRefusedOnTheDriver(t, d, &logs)
	if !strings.Contains(logs.String(), "first record does not look like a TLS handshake") {
		t.Errorf("the driver's warning does not say why the handshake failed:\n%s", logs.String())
	}
}

// The start-up line of a driver with TLS says what its executors need: an
// executor built without it fails its handshake and retries, and the
// line was silent on TLS.
func TestTLSStartHint(t *testing.T) {
	dir := testPKI(t)
	serverTLS := &ember.TLSConfig{DriverCertFile: filepath.Join(dir, "driver.pem"), DriverKeyFile: filepath.Join(dir, "driver-key.pem")}
	mutual := *serverTLS
	mutual.CAFile, mutual.MutualTLS = filepath.Join(dir, "ca.pem"), true
	tests := []struct {
		name      string
		tls       *ember.TLSConfig
		want, not []string
	}{
		{"no TLS", nil, nil, []string{"tls="}},
		{"TLS", serverTLS, []string{`tls="on: executors verify this driver's certificate against Config.TLS.CAFile or EMBER_TLS_CA_FILE"`}, []string{"EMBER_TLS_CERT_FILE"}},
		{"mutual TLS", &mutual, []string{"EMBER_TLS_CA_FILE, and present a client certificate", "EMBER_TLS_CERT_FILE and EMBER_TLS_KEY_FILE"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logtest.Buffer
			standalone(t, ember.Config{Secret: "tls secret", BuildID: "test", TLS: tt.tls,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			var line string
			for l := range strings.Lines(logs.String()) {
				if strings.Contains(l, "driver listening for executors") {
					line = l
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("start-up line %q: want it to say %q", line, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(line, n) {
					t.Errorf("start-up line %q: want no %q", line, n)
				}
			}
		})
	}
}
