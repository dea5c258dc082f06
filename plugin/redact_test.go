package plugin

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestIsSecretKey(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		"db.password": true, "api.token": true, "app.secret": true, "TLS.KEY": true, "password": true,
		"cloud.credentials": true, "db.host": false, "tokenizer.mode": false, "secretary.name": false,
		// Compound last segments: the last word counts.
		"vault.apiToken": true, "vault.api_token": true, "vault.api-token": true, "aws.secret_access_key": true,
		"spark.ssl.keyPassword": true, "vault.secretKey": true, "gh.APIToken": true, "DB_PASSWORD": true,
		"s3.accessKey2": false, "db.monkey": false, "vault.token.file": false, "vault.tokenTTL": false,
		"db.passwordless": false, "api.tokens": false, "": false, "_token": true,
	}
	for key, want := range tests {
		if got := IsSecretKey(key); got != want {
			t.Errorf("IsSecretKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// Secrets never show in printed or logged configuration, nor in errors.
func TestConfRedaction(t *testing.T) {
	t.Parallel()
	c := NewConf(map[string]string{"db.password": "hunter2", "db.host": "h", "n.token": "tok"})
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("conf", "conf", c)
	_, intErr := c.Int("db.password", 0)
	type exported struct{ Conf Conf }
	type unexported struct{ conf Conf }
	outputs := map[string]string{
		"String":                     c.String(),
		"%v":                         fmt.Sprintf("%v", c),
		"%#v":                        fmt.Sprintf("%#v", c),
		"%+v of a struct holding it": fmt.Sprintf("%+v", exported{c}),
		"slog":                       logged.String(),
		"Redact":                     fmt.Sprint(Redact(c.Map())),
		"Int err":                    intErr.Error(),
	}
	for name, out := range outputs {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "tok\"") || strings.Contains(out, ":tok") {
			t.Errorf("%s leaks a secret: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s does not show %s: %s", name, Redacted, out)
		}
	}
	// In an unexported field fmt cannot call String: it prints an address
	// (it used to print the values, secrets included).
	for _, verb := range []string{"%v", "%+v", "%#v"} {
		if out := fmt.Sprintf(verb, unexported{c}); strings.Contains(out, "hunter2") {
			t.Errorf("%s of a struct holding it unexported leaks a secret: %s", verb, out)
		}
	}
	if !strings.Contains(c.String(), "db.host:h") {
		t.Errorf("String hides a non-secret value: %s", c.String())
	}
}
