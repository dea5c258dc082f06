//go:build !unix

package main

import "time"

// switches is unknown (-1) where getrusage is not available.
func switches() int64 { return -1 }

// cpuTime is unknown (-1) where getrusage is not available.
func cpuTime() time.Duration { return -1 }
