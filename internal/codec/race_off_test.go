//go:build !race

package codec_test

// raceEnabled reports whether the race detector is on.
const raceEnabled = false
