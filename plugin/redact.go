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

// secretSuffixes mark configuration keys whose values are secret.
var secretSuffixes = []string{".secret", ".password", ".token", ".key", ".credentials"}

// IsSecretKey reports whether a configuration key names a secret: it ends
// in .secret, .password, .token, .key or .credentials (case-insensitive),
// or is one of those words alone. Ember never logs or prints such values.
func IsSecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, s := range secretSuffixes {
		if strings.HasSuffix(k, s) || k == s[1:] {
			return true
		}
	}
	return false
}

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
