package ember

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// Environment variables for standalone executors (and drivers).
const (
	// EnvSecretFile names a file holding the application secret; safer
	// than EMBER_SECRET, which other processes of the same user can read.
	EnvSecretFile = "EMBER_SECRET_FILE"
	// EnvTLSCAFile, EnvTLSCertFile and EnvTLSKeyFile override an
	// executor's CAFile, ExecutorCertFile and ExecutorKeyFile, for hosts
	// that keep them elsewhere (setting one turns TLS on).
	EnvTLSCAFile   = "EMBER_TLS_CA_FILE"
	EnvTLSCertFile = "EMBER_TLS_CERT_FILE"
	EnvTLSKeyFile  = "EMBER_TLS_KEY_FILE"
)

// TLSConfig encrypts and authenticates driver-executor connections with
// TLS. Every process of an application builds the same Config, so the
// driver's and the executors' files are separate fields: the driver reads
// only the Driver files, executors only the Executor files (and
// EMBER_TLS_* overrides them per host). docs/security.md shows how to make
// certificates.
type TLSConfig struct {
	// CAFile is a PEM bundle of the CA that issued the certificates.
	// Executors verify the driver's certificate against it (default: the
	// system roots); with MutualTLS, the driver verifies executors'
	// client certificates against it.
	CAFile string
	// DriverCertFile and DriverKeyFile are the driver's server
	// certificate and key (PEM). Only the driver reads them.
	DriverCertFile, DriverKeyFile string
	// ExecutorCertFile and ExecutorKeyFile are the executors' client
	// certificate and key (PEM), needed with MutualTLS. Only executors read
	// them.
	ExecutorCertFile, ExecutorKeyFile string
	// MutualTLS makes the driver require a client certificate issued by
	// CAFile from every executor.
	MutualTLS bool
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
		warnLooseSecretFile(cfg.Logger, secretFileUsed())
		if secretFileShadowed() {
			warnSecretFileShadowed(cfg.Logger, os.Getenv(EnvSecretFile))
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
	return "", fmt.Errorf("standalone driver: no application secret%s: set Config.Secret, %s or %s (or Config.InsecureNoAuth to run without authentication)", blankSecret(), EnvSecret, EnvSecretFile)
}

// blankSecret says, for an error or warning about a missing secret, that
// EMBER_SECRET is set to blanks alone, which count as no secret: "no
// application secret" alone sent an operator looking for a variable that
// was there. It is "" otherwise.
func blankSecret() string {
	if v := os.Getenv(EnvSecret); v != "" && strings.TrimSpace(v) == "" {
		return fmt.Sprintf(" (%s is set, but to %d characters of white space)", EnvSecret, len(v))
	}
	return ""
}

// secretFileUsed is the file secretFromEnv reads the secret from, if any.
func secretFileUsed() string {
	if strings.TrimSpace(os.Getenv(EnvSecret)) != "" {
		return ""
	}
	return os.Getenv(EnvSecretFile)
}

// secretFileShadowed reports whether EMBER_SECRET and EMBER_SECRET_FILE
// are both set: EMBER_SECRET wins, and the file is not read.
func secretFileShadowed() bool {
	return strings.TrimSpace(os.Getenv(EnvSecret)) != "" && os.Getenv(EnvSecretFile) != ""
}

// warnSecretFileShadowed says that EMBER_SECRET_FILE is ignored for
// EMBER_SECRET: a process given both, holding different secrets, was
// refused ("check EMBER_SECRET or EMBER_SECRET_FILE") without a word of
// which it had used.
func warnSecretFileShadowed(log *slog.Logger, file string) {
	log.Warn("both "+EnvSecret+" and "+EnvSecretFile+" are set: using "+EnvSecret+" and ignoring the file; unset one of them",
		"file", file)
}

// warnLooseSecretFile warns when the secret file path can be read by
// others than its owner (docs/security.md asks for mode 0600). Unix
// permission bits say nothing on Windows.
func warnLooseSecretFile(log *slog.Logger, path string) {
	if path == "" || runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	log.Warn("the secret file can be read by others than its owner: chmod 600 it", "file", path, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
}

// secretFromEnv reads EMBER_SECRET, else the file EMBER_SECRET_FILE.
func secretFromEnv() (string, error) {
	// Trimmed as the file is: the same bytes must give the same secret
	// whichever of the two carries them.
	if s := strings.TrimSpace(os.Getenv(EnvSecret)); s != "" {
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

// serverTLS returns the driver's TLS credentials for c, if any.
func serverTLS(c *TLSConfig) (credentials.TransportCredentials, error) {
	if c == nil {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.DriverCertFile, c.DriverKeyFile)
	if err == nil {
		err = unexpired(cert, time.Now())
	}
	if err != nil {
		return nil, fmt.Errorf("TLS: driver certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.MutualTLS {
		if c.CAFile == "" {
			return nil, errors.New("TLS: MutualTLS needs CAFile to verify executors' certificates")
		}
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}

// clientTLS returns the transport credentials of an executor, from c and the
// EMBER_TLS_* overrides; nil when TLS is off.
func clientTLS(c *TLSConfig, driverAddr string) (credentials.TransportCredentials, error) {
	var eff TLSConfig
	if c != nil {
		eff = *c
	}
	overrides := map[string]*string{EnvTLSCAFile: &eff.CAFile, EnvTLSCertFile: &eff.ExecutorCertFile, EnvTLSKeyFile: &eff.ExecutorKeyFile}
	overridden := false
	for env, field := range overrides {
		if v := os.Getenv(env); v != "" {
			*field, overridden = v, true
		}
	}
	if c == nil && !overridden {
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
	if eff.ExecutorCertFile != "" || eff.ExecutorKeyFile != "" {
		if eff.ExecutorCertFile == "" || eff.ExecutorKeyFile == "" {
			return nil, fmt.Errorf("TLS: executor client certificate: a certificate file (ExecutorCertFile or %s) needs its key file (ExecutorKeyFile or %s), and the other way round", EnvTLSCertFile, EnvTLSKeyFile)
		}
		cert, err := tls.LoadX509KeyPair(eff.ExecutorCertFile, eff.ExecutorKeyFile)
		if err == nil {
			err = unexpired(cert, time.Now())
		}
		if err != nil {
			return nil, fmt.Errorf("TLS: executor client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(tc), nil
}

// unexpired fails for a certificate past its NotAfter at now: every
// handshake with it would fail ("certificate has expired"), and the
// process had better say so when it starts than leave its peers retrying.
func unexpired(cert tls.Certificate, now time.Time) error {
	if leaf := cert.Leaf; leaf != nil && now.After(leaf.NotAfter) {
		return fmt.Errorf("expired on %s (subject %s)", leaf.NotAfter.UTC().Format(time.RFC3339), leaf.Subject)
	}
	return nil
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
