package plugin

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
)

// Redacted replaces secret values wherever Ember prints configuration.
const Redacted = "[redacted]"

// secretWords mark configuration keys whose values are secret.
var secretWords = []string{"secret", "password", "token", "key", "credentials"}

// IsSecretKey reports whether a configuration key names a secret: its last
// dot-separated segment is, or ends with the word, secret, password,
// token, key or credentials (case-insensitive), the words of a segment
// being separated by '_', '-' or a change to upper case: "db.password",
// "vault.apiToken", "aws.secret_access_key" and "ssl.keyPassword" do, and
// "tokenizer.mode" and "db.monkey" do not. Ember never logs or prints such
// values.
func IsSecretKey(key string) bool {
	seg := key[strings.LastIndexByte(key, '.')+1:]
	// The last word of seg starts after its last '_' or '-', or at its last
	// upper-case letter that follows a lower-case letter or a digit, or
	// that follows an upper-case one and precedes a lower-case one
	// ("APIToken").
	start := 0
	for i := range len(seg) {
		c := seg[i]
		switch {
		case c == '_' || c == '-':
			start = i + 1
		case i > 0 && isUpper(c) && (isLower(seg[i-1]) || isDigit(seg[i-1])):
			start = i
		case i > 0 && isUpper(c) && isUpper(seg[i-1]) && i+1 < len(seg) && isLower(seg[i+1]):
			start = i
		}
	}
	return slices.Contains(secretWords, strings.ToLower(seg[start:]))
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Redact returns a copy of m with the values of secret keys replaced by
// Redacted, for printing configuration or extraConf.
func Redact(m map[string]string) map[string]string {
	out := maps.Clone(m)
	for k := range out {
		if IsSecretKey(k) {
			out[k] = Redacted
		}
	}
	return out
}

// String prints the entries in key order with secret values redacted.
func (c Conf) String() string {
	var b strings.Builder
	b.WriteString("map[")
	m := c.values()
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := m[k]
		if IsSecretKey(k) {
			v = Redacted
		}
		fmt.Fprintf(&b, "%s:%s", k, v)
	}
	b.WriteByte(']')
	return b.String()
}

// GoString makes %#v print a Conf as String does, secrets redacted.
func (c Conf) GoString() string { return c.String() }

// LogValue makes slog print a Conf as a group with secret values redacted.
func (c Conf) LogValue() slog.Value {
	m := c.values()
	attrs := make([]slog.Attr, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if IsSecretKey(k) {
			v = Redacted
		}
		attrs = append(attrs, slog.String(k, v))
	}
	return slog.GroupValue(attrs...)
}

var _ slog.LogValuer = Conf{}
