package codec

// Unseal undoes Seal, for a test that seals the registry to leave it as
// it found it.
func Unseal() {
	mu.Lock()
	defer mu.Unlock()
	sealed = ""
}
