package ember

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/logtest"
)

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/usr/bin/app", "/usr/bin/app"},
		{"--addr=127.0.0.1:7077", "--addr=127.0.0.1:7077"},
		{"two words", "'two words'"},
		{"", "''"},
		{"it's", `'it'\''s'`},
		{"$HOME", "'$HOME'"},
		{"a;b", "'a;b'"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// The documented sources of the standalone secret must agree on what the
// secret is: a file made by `openssl rand -hex 32 > secret` ends in a
// newline that EMBER_SECRET_FILE trims, and the same bytes handed over as
// EMBER_SECRET (a Kubernetes secretKeyRef of that file, an EnvironmentFile
// line with trailing blanks) must give the same secret, or the driver
// refuses the executor with "wrong proof".
func TestSecretFromEnvTrimsLikeTheFile(t *testing.T) {
	path := t.TempDir() + "/secret"
	const s = "9d8d1967c2e66ac34d25d437afa0cd10d79bce7dcefaa0212864b7c31441ef2a"
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvSecret, "")
	t.Setenv(EnvSecretFile, path)
	fromFile, err := secretFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvSecretFile, "")
	t.Setenv(EnvSecret, s+"\n")
	fromEnv, err := secretFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if fromEnv != fromFile {
		t.Errorf("EMBER_SECRET=%q gives %q, EMBER_SECRET_FILE with the same bytes gives %q", s+"\n", fromEnv, fromFile)
	}
}

// A client certificate without its key, or a key without its certificate,
// says which is missing: it used to be "open : no such file or directory".
func TestClientTLSHalfAKeyPair(t *testing.T) {
	tests := []struct {
		name string
		cfg  TLSConfig
		env  map[string]string
	}{
		{"certificate only", TLSConfig{ExecutorCertFile: "cert.pem"}, nil},
		{"key only", TLSConfig{ExecutorKeyFile: "key.pem"}, nil},
		{"certificate from the environment", TLSConfig{}, map[string]string{EnvTLSCertFile: "cert.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{EnvTLSCAFile, EnvTLSCertFile, EnvTLSKeyFile} {
				t.Setenv(k, tt.env[k])
			}
			_, err := clientTLS(&tt.cfg, "127.0.0.1:7077")
			if err == nil || !strings.Contains(err.Error(), "needs its key file") || !strings.Contains(err.Error(), EnvTLSKeyFile) {
				t.Errorf("clientTLS: got %v, want an error saying the pair is incomplete", err)
			}
		})
	}
}

// The start hint's address is one an executor could dial: a wildcard
// listening address gave "EMBER_DRIVER=[::]:7083".
func TestDialable(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	tests := []struct{ in, want string }{
		{"127.0.0.1:7077", "127.0.0.1:7077"},
		{"10.0.0.5:7077", "10.0.0.5:7077"},
		{"driver.example:7077", "driver.example:7077"},
		{"[::1]:7077", "[::1]:7077"},
		{"[::]:7083", net.JoinHostPort(host, "7083")},
		{"0.0.0.0:7083", net.JoinHostPort(host, "7083")},
		{":7083", net.JoinHostPort(host, "7083")},
	}
	for _, tt := range tests {
		if got := dialable(tt.in); got != tt.want {
			t.Errorf("dialable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// MetricsURL is one this host can open: a wildcard MetricsAddr gave
// "http://[::]:9185/metrics".
func TestLocal(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:9185", "127.0.0.1:9185"},
		{"10.0.0.5:9185", "10.0.0.5:9185"},
		{"0.0.0.0:9185", "127.0.0.1:9185"},
		{"[::]:9185", "[::1]:9185"},
	}
	for _, tt := range tests {
		if got := local(tt.in); got != tt.want {
			t.Errorf("local(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// /metrics beyond loopback is warned of: it has no authentication.
func TestLoopback(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"127.0.0.1:9185", true}, {"[::1]:9185", true}, {"localhost:9185", true},
		{"0.0.0.0:9185", false}, {"[::]:9185", false}, {"10.0.0.5:9185", false}, {"metrics.example:9185", false},
	}
	for _, tt := range tests {
		if got := loopback(tt.in); got != tt.want {
			t.Errorf("loopback(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// A secret file others can read is warned of (docs/security.md asks for
// mode 0600); it used to be accepted without a word.
func TestLooseSecretFileIsWarnedOf(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits")
	}
	tests := []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#o", tt.mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(path, []byte("0123456789abcdef0123456789abcdef\\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			t.Setenv(EnvSecret, "")
			t.Setenv(EnvSecretFile, path)
			var logs logtest.Buffer
			cfg := Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			if _, err := driverSecret(cfg, true); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "chmod 600"); got != tt.warn {
				t.Errorf("secret file of mode %#o: warned %v, want %v (logs: %q)", tt.mode, got, tt.warn, logs.String())
			}
		})
	}
}
