package ember

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/prometheus/client_golang/prometheus"
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

// EMBER_DRIVER values that no dial can use are refused at once (exit
// status 2), instead of an executor retrying them for StartTimeout.
func TestDriverAddrProblem(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:7077", "[::1]:7077", "localhost:7077", ":7077", "driver.example:http", "10.0.0.5:65535"} {
		if p := driverAddrProblem(addr); p != "" {
			t.Errorf("driverAddrProblem(%q) = %q, want none", addr, p)
		}
	}
	for _, addr := range []string{"", "yes", "127.0.0.1", "http://127.0.0.1:7077", "127.0.0.1:", "127.0.0.1:0",
		"127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:notaport", "127.0.0.1:7077 ", "127.0.0.1:7077\n", " 127.0.0.1:7077"} {
		if p := driverAddrProblem(addr); p == "" {
			t.Errorf("driverAddrProblem(%q) found no problem", addr)
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

// EMBER_SECRET and EMBER_SECRET_FILE both set: EMBER_SECRET wins, and
// the process says so. A driver or executor given both, holding
// different secrets, was refused ("check EMBER_SECRET or
// EMBER_SECRET_FILE") without a word of which one it had used.
func TestShadowedSecretFileIsWarnedOf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("file secret 0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		secret        string // Config.Secret
		env, file     string
		want, wantLog string // the secret; a part of the warning, or "" for none
	}{
		{"both", "", "env secret 0123456789abcdef", path, "env secret 0123456789abcdef", "ignoring the file"},
		{"the file only", "", "", path, "file secret 0123456789abcdef", ""},
		{"the variable only", "", "env secret 0123456789abcdef", "", "env secret 0123456789abcdef", ""},
		{"a blank variable", "", "  ", path, "file secret 0123456789abcdef", ""},
		{"Config.Secret over both", "config secret 0123456789abcdef", "env secret 0123456789abcdef", path, "config secret 0123456789abcdef", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvSecret, tt.env)
			t.Setenv(EnvSecretFile, tt.file)
			var logs logtest.Buffer
			got, err := driverSecret(Config{Secret: tt.secret, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got secret %q, want %q", got, tt.want)
			}
			warned := strings.Contains(logs.String(), "both EMBER_SECRET and EMBER_SECRET_FILE are set")
			if tt.wantLog == "" && warned {
				t.Errorf("got warning %q, want none", logs.String())
			}
			if tt.wantLog != "" && (!warned || !strings.Contains(logs.String(), tt.wantLog) || !strings.Contains(logs.String(), tt.file)) {
				t.Errorf("got logs %q, want a warning that both are set, naming the file and saying %q", logs.String(), tt.wantLog)
			}
		})
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

// What the driver makes of a listening address: the start hint gives one
// an executor could dial (a wildcard gave "EMBER_DRIVER=[::]:7083"),
// MetricsURL one this host can open (it gave "http://[::]:9185/metrics"),
// and /metrics beyond loopback is warned of (it has no authentication).
func TestListeningAddresses(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	// The host's name resolves to an address of its own; see
	// TestDialableAvoidsALoopbackName for one that resolves to loopback.
	lookupHost = func(string) ([]string, error) { return []string{"10.0.0.9"}, nil }
	t.Cleanup(func() { lookupHost = net.LookupHost })
	tests := []struct {
		addr, dialable, local string
		loopback              bool
	}{
		{"127.0.0.1:7077", "127.0.0.1:7077", "127.0.0.1:7077", true},
		{"[::1]:7077", "[::1]:7077", "[::1]:7077", true},
		{"localhost:7077", "localhost:7077", "localhost:7077", true},
		{"10.0.0.5:7077", "10.0.0.5:7077", "10.0.0.5:7077", false},
		{"driver.example:7077", "driver.example:7077", "driver.example:7077", false},
		{"0.0.0.0:7083", net.JoinHostPort(host, "7083"), "127.0.0.1:7083", false},
		{"[::]:7083", net.JoinHostPort(host, "7083"), "[::1]:7083", false},
		{":7083", net.JoinHostPort(host, "7083"), "127.0.0.1:7083", false},
	}
	for _, tt := range tests {
		if got := dialable(tt.addr); got != tt.dialable {
			t.Errorf("dialable(%q) = %q, want %q", tt.addr, got, tt.dialable)
		}
		if got := local(tt.addr); got != tt.local {
			t.Errorf("local(%q) = %q, want %q", tt.addr, got, tt.local)
		}
		if got := loopback(tt.addr); got != tt.loopback {
			t.Errorf("loopback(%q) = %v, want %v", tt.addr, got, tt.loopback)
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

// Run keeps the executors' exits only from shutdown on, when they may be
// of released executors: those before were lost, and a local-cluster
// replacing executors for long would keep them all (and a released
// replacement could get the PID of one, and be blamed for its end).
func TestExitErrorsKeptOnlyFromShutdown(t *testing.T) {
	var e exitErrors
	e.add(fmt.Errorf("executor process (pid 10): signal: killed"))
	e.releasing()
	e.add(fmt.Errorf("executor process (pid 11): exit status 66"))
	e.add(nil)
	if len(e.errs) != 1 || !strings.Contains(e.errs[0].Error(), "pid 11") {
		t.Errorf("exits kept: got %v, want only pid 11's, reported after releasing", e.errs)
	}
	var none *exitErrors
	none.releasing()
	none.add(fmt.Errorf("exit status 1"))
}

// A client of /metrics that keeps its connection idle after a scrape is
// cut off after metricsLimits.idle: such connections used to stay open
// for ever, so any local process could pile them up.
func TestMetricsIdleConnectionsEnd(t *testing.T) {
	saved := metricsLimits
	metricsLimits.idle = 100 * time.Millisecond
	metricsLimits.read = time.Hour // a zero IdleTimeout falls back to it
	t.Cleanup(func() { metricsLimits = saved })
	url, stop, err := serveMetrics("127.0.0.1:0", prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	// Idle now: the server closes the connection, long before the deadline.
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("reading the idle connection: got %v, want io.EOF (closed by the server)", err)
	}
}

// EMBER_EXECUTOR_SLOTS gives an executor process its own task slots, 1 to
// MaxSlots; anything else is refused, saying what it wants.
func TestOwnSlots(t *testing.T) {
	const want = `EMBER_EXECUTOR_SLOTS=%q: want a whole number from 1 to 16384`
	tests := []struct {
		value   string // "unset": not set
		want    int
		wantErr bool
	}{
		{value: "unset", want: 0},
		{value: "1", want: 1},
		{value: " 8\n", want: 8},
		{value: "16384", want: 16384},
		{value: "", wantErr: true},
		{value: "0", wantErr: true},
		{value: "-2", wantErr: true},
		{value: "16385", wantErr: true},
		{value: "four", wantErr: true},
	}
	t.Setenv(EnvExecutorSlots, "") // restored at the end, whatever the loop does
	for _, tt := range tests {
		if tt.value == "unset" {
			os.Unsetenv(EnvExecutorSlots)
		} else {
			t.Setenv(EnvExecutorSlots, tt.value)
		}
		got, err := ownSlots()
		switch {
		case tt.wantErr && (err == nil || err.Error() != fmt.Sprintf(want, tt.value)):
			t.Errorf("%s=%q: got %d, %v; want the error %q", EnvExecutorSlots, tt.value, got, err, fmt.Sprintf(want, tt.value))
		case !tt.wantErr && (err != nil || got != tt.want):
			t.Errorf("%s=%q: got %d, %v; want %d", EnvExecutorSlots, tt.value, got, err, tt.want)
		}
	}
}

// A gather error that comes on every scrape (a family two executors
// disagree on) is logged at Warn the first time, then at Debug, and at
// Warn again once gatherWarnEvery has passed, saying how many times it
// came meanwhile: a scraper every 15 s made it 240 warnings an hour.
// Another message is its own.
func TestGatherErrorsWarnedOncePerPeriod(t *testing.T) {
	var buf strings.Builder
	now := time.Unix(0, 0)
	r := &repeatLimiter{
		log:   slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		every: time.Minute,
		now:   func() time.Time { return now },
	}
	type line struct {
		at  time.Duration // after the start
		msg string
	}
	for _, l := range []line{{0, "boom"}, {time.Second, "boom"}, {2 * time.Second, "other"}, {30 * time.Second, "boom"}, {61 * time.Second, "boom"}, {62 * time.Second, "boom"}} {
		now = time.Unix(0, 0).Add(l.at)
		stdlog.New(r, "", 0).Println(l.msg) // as promhttp's ErrorLog does
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		_, l, _ = strings.Cut(l, "level=") // drop the time
		got = append(got, l)
	}
	want := []string{
		"WARN msg=boom",
		"DEBUG msg=boom",
		"WARN msg=other",
		"DEBUG msg=boom",
		"WARN msg=boom repeated=2",
		"DEBUG msg=boom",
	}
	if !slices.Equal(got, want) {
		t.Errorf("logged:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// EMBER_SECRET set to blanks alone counts as no secret, as it did, but
// the standalone driver's "no application secret" says it is blank: that
// alone sent an operator looking for a variable that was there.
func TestBlankSecretVariableSaysSo(t *testing.T) {
	t.Setenv(EnvSecretFile, "")
	t.Setenv(EnvSecret, "  \n")
	if s, err := secretFromEnv(); s != "" || err != nil {
		t.Errorf("EMBER_SECRET blank: got %q, %v; want no secret and no error", s, err)
	}
	_, err := driverSecret(Config{Logger: slog.New(slog.DiscardHandler)}, true)
	if err == nil || !strings.Contains(err.Error(), "no application secret (EMBER_SECRET is set, but to 3 characters of white space)") {
		t.Errorf("driverSecret: got %v, want no application secret, saying EMBER_SECRET is blank", err)
	}
	if _, err := driverSecret(Config{Logger: slog.New(slog.DiscardHandler), InsecureNoAuth: true}, true); err != nil {
		t.Errorf("driverSecret with InsecureNoAuth and a blank EMBER_SECRET: %v, want none (no secret, as before)", err)
	}
	t.Setenv(EnvSecret, "")
	if _, err := driverSecret(Config{Logger: slog.New(slog.DiscardHandler)}, true); err == nil || strings.Contains(err.Error(), "white space") {
		t.Errorf("driverSecret with EMBER_SECRET empty: got %v, want no application secret, without a word of white space", err)
	}
}

// An executor that cannot start for its own configuration exits
// ExitMisconfigured, but 1 for a file it cannot read (a secret or TLS file
// not there yet at boot), which starting again may mend.
func TestExitStatus(t *testing.T) {
	_, missing := os.ReadFile(filepath.Join(t.TempDir(), "no-such-secret"))
	tests := []struct {
		err  error
		want int
	}{
		{errors.New("EMBER_EXECUTOR_SLOTS=\"x\": want a whole number"), ExitMisconfigured},
		{fmt.Errorf("%s: %w", EnvSecretFile, missing), 1},
		{fmt.Errorf("TLS: executor client certificate: %w", missing), 1},
		{fmt.Errorf("%s: /run/secret is empty", EnvSecretFile), ExitMisconfigured},
	}
	for _, tt := range tests {
		if got := exitStatus(tt.err); got != tt.want {
			t.Errorf("exitStatus(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// A wildcard listening address whose host name resolves to loopback alone
// (an /etc/hosts line "127.0.1.1 vm") gives a start hint with an address
// of this host's interfaces: executors elsewhere given the name dialed
// their own host, and retried for a minute behind a warning blaming the
// driver.
func TestDialableAvoidsALoopbackName(t *testing.T) {
	t.Cleanup(func() { lookupHost, interfaceAddrs = net.LookupHost, net.InterfaceAddrs })
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	ipnet := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	tests := []struct {
		name     string
		resolves []string
		ifaces   []net.Addr
		want     string
	}{
		{"a name of the host's own", []string{"10.0.0.9"}, []net.Addr{ipnet("10.77.0.1/24")}, net.JoinHostPort(host, "7078")},
		{"loopback: the first IPv4", []string{"127.0.1.1"}, []net.Addr{ipnet("127.0.0.1/8"), ipnet("fd00::5/64"), ipnet("10.77.0.1/24")}, "10.77.0.1:7078"},
		{"loopback, IPv6 alone", []string{"127.0.1.1", "::1"}, []net.Addr{ipnet("::1/128"), ipnet("fd00::5/64")}, "[fd00::5]:7078"},
		{"loopback, no other address", []string{"127.0.0.1"}, []net.Addr{ipnet("127.0.0.1/8")}, net.JoinHostPort(host, "7078")},
		{"unresolved", nil, []net.Addr{ipnet("10.77.0.1/24")}, net.JoinHostPort(host, "7078")},
	}
	for _, tt := range tests {
		lookupHost = func(string) ([]string, error) {
			if tt.resolves == nil {
				return nil, errors.New("no such host")
			}
			return tt.resolves, nil
		}
		interfaceAddrs = func() ([]net.Addr, error) { return tt.ifaces, nil }
		if got := dialable(":7078"); got != tt.want {
			t.Errorf("%s: dialable(\":7078\") = %q, want %q", tt.name, got, tt.want)
		}
	}
}
