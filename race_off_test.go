//go:build !race

package ember_test

// raceEnabled reports whether the race detector is on: executor processes
// then exit with status 66 if they saw a race.
const raceEnabled = false
