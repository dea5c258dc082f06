package ember

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Environment variables for standalone executors (and drivers).
const (
	// EnvSecretFile names a file holding the application secret; safer
	// than EMBER_SECRET, which other processes of the same user can read.
	EnvSecretFile = "EMBER_SECRET_FILE"
	// EnvTLSCAFile, EnvTLSCertFile and EnvTLSKeyFile override Config.TLS's
	// files on an executor, for hosts that keep them elsewhere.
	EnvTLSCAFile   = "EMBER_TLS_CA_FILE"
	EnvTLSCertFile = "EMBER_TLS_CERT_FILE"
	EnvTLSKeyFile  = "EMBER_TLS_KEY_FILE"
)

// TLSConfig encrypts and authenticates the driver-executor connections
// with TLS. Issue the driver's and the executors' certificates from one CA
// and give every process the same TLSConfig (docs/security.md shows how to
// make test certificates with Go's own tooling).
type TLSConfig struct {
	// CertFile and KeyFile are PEM files: the driver's server certificate
	// on the driver; on executors, a client certificate for mutual TLS
	// (optional unless the driver requires one).
	CertFile, KeyFile string
	// CAFile is a PEM bundle. Executors verify the driver's certificate
	// against it (default: the system roots). When set on the driver,
	// executors must present a client certificate that chains to it
	// (mutual TLS).
	CAFile string
	// ServerName is the name executors expect in the driver's certificate;
	// default: the host of the driver's address.
	ServerName string
}

// minSecretLen is the length below which a standalone secret draws a
// warning.
const minSecretLen = 16

// driverSecret returns the secret the driver requires of executors.
func driverSecret(cfg Config, standalone bool) (string, error) {
	if !standalone && cfg.Secret == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b), nil
	}
	s := cfg.Secret
	if s == "" {
		var err error
		if s, err = secretFromEnv(); err != nil {
			return "", err
		}
	}
	if s != "" {
		if standalone && len(s) < minSecretLen {
			cfg.Logger.Warn("the application secret is short; use at least 32 random characters (e.g. openssl rand -hex 32)", "length", len(s))
		}
		return s, nil
	}
	if cfg.InsecureNoAuth {
		cfg.Logger.Warn("AUTHENTICATION IS OFF (Config.InsecureNoAuth): any process that can reach the driver's address can join as an executor and exchange messages with its plugins",
			"addr", cfg.ListenAddr)
		return "", nil
	}
	return "", fmt.Errorf("standalone driver: no application secret: set Config.Secret, %s or %s (or Config.InsecureNoAuth to run without authentication)", EnvSecret, EnvSecretFile)
}

// secretFromEnv reads EMBER_SECRET, else the file EMBER_SECRET_FILE.
func secretFromEnv() (string, error) {
	if s := os.Getenv(EnvSecret); s != "" {
		return s, nil
	}
	if path := os.Getenv(EnvSecretFile); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", EnvSecretFile, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("%s: %s is empty", EnvSecretFile, path)
		}
		return s, nil
	}
	return "", nil
}

// serverTLS returns the gRPC server option for cfg.TLS, if any.
func serverTLS(c *TLSConfig) ([]grpc.ServerOption, error) {
	if c == nil {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS: driver certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tc))}, nil
}

// clientTLS returns the gRPC dial option for an executor, from cfg.TLS
// and the EMBER_TLS_* overrides; nil when TLS is off.
func clientTLS(c *TLSConfig, driverAddr string) ([]grpc.DialOption, error) {
	var eff TLSConfig
	if c != nil {
		eff = *c
	}
	for env, field := range map[string]*string{EnvTLSCAFile: &eff.CAFile, EnvTLSCertFile: &eff.CertFile, EnvTLSKeyFile: &eff.KeyFile} {
		if v := os.Getenv(env); v != "" {
			*field = v
		}
	}
	if c == nil && eff == (TLSConfig{}) {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: eff.ServerName}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(driverAddr)
		if err != nil {
			return nil, fmt.Errorf("TLS: driver address %q: %w", driverAddr, err)
		}
		tc.ServerName = host
	}
	if eff.CAFile != "" {
		pool, err := loadPool(eff.CAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if eff.CertFile != "" || eff.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(eff.CertFile, eff.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS: executor client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TLS: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("TLS: CA file " + path + " holds no PEM certificate")
	}
	return pool, nil
}
