// Package auth implements the executor handshake's challenge-response:
// both sides prove they know the application secret with HMAC-SHA256 over
// fresh nonces, so the secret never crosses the wire and a recorded
// handshake cannot be replayed.
//
//	driver   -> executor  CHALLENGE{nd}
//	executor -> driver    HELLO{ne, HMAC(secret, "ember executor v1" | nd | ne)}
//	driver   -> executor  WELCOME{HMAC(secret, "ember driver v1" | ne | nd | welcome)}
//
// where welcome is the deterministic encoding of the WELCOME without its
// proof. Later frames are protected only by TLS.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
)

// NonceSize is the size of the nonces each side draws.
const NonceSize = 32

// Roles, mixed into the MACs so that one side's proof is never valid as
// the other's.
const (
	Executor = "ember executor v1"
	Driver   = "ember driver v1"
)

// Nonce returns NonceSize fresh random bytes.
func Nonce() []byte {
	b := make([]byte, NonceSize)
	_, _ = rand.Read(b) // never fails (crypto/rand.Read panics on failure)
	return b
}

// Prove returns HMAC-SHA256(secret, role | first | second | bound). The
// nonces have a fixed size, so the concatenation is unambiguous. bound is
// message content the proof vouches for (the driver binds its WELCOME, so
// that a relay cannot rewrite the configuration it carries); it may be
// empty.
func Prove(secret, role string, first, second, bound []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(role))
	m.Write(first)
	m.Write(second)
	m.Write(bound)
	return m.Sum(nil)
}

// Verify reports, in constant time, whether proof is Prove(secret, role,
// first, second, bound). Nonces of the wrong size never verify.
func Verify(proof []byte, secret, role string, first, second, bound []byte) bool {
	if len(first) != NonceSize || len(second) != NonceSize {
		return false
	}
	return hmac.Equal(proof, Prove(secret, role, first, second, bound))
}
