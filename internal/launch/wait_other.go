//go:build unix && !linux

package launch

// waitExited cannot wait without reaping here: it reports false at once,
// and the caller reaps first.
func waitExited(int) bool { return false }
