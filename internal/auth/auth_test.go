package auth

import (
	"bytes"
	"testing"
)

func TestProveVerify(t *testing.T) {
	nd, ne := Nonce(), Nonce()
	proof := Prove("s3cret", Executor, nd, ne, []byte("body"))
	tests := []struct {
		name         string
		secret, role string
		first, sec   []byte
		want         bool
	}{
		{"right", "s3cret", Executor, nd, ne, true},
		{"wrong secret", "guess", Executor, nd, ne, false},
		{"other role", "s3cret", Driver, nd, ne, false},
		{"replayed against a new challenge", "s3cret", Executor, Nonce(), ne, false},
		{"swapped nonces", "s3cret", Executor, ne, nd, false},
		{"short nonce", "s3cret", Executor, nd[:8], ne, false},
	}
	for _, tt := range tests {
		if got := Verify(proof, tt.secret, tt.role, tt.first, tt.sec, []byte("body")); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if Verify(proof, "s3cret", Executor, nd, ne, []byte("tampered")) {
		t.Error("a proof verified for other bound content")
	}
	if a, b := Nonce(), Nonce(); bytes.Equal(a, b) {
		t.Errorf("two nonces are equal: %x", a)
	}
}
