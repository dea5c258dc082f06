//go:build unix

package main

import (
	"syscall"
	"time"
)

// switches returns how many times this process's threads have given up a
// CPU so far, voluntarily (to wait) or not: getrusage's ru_nvcsw +
// ru_nivcsw. -1 if unknown.
func switches() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return int64(ru.Nvcsw) + int64(ru.Nivcsw)
}

// cpuTime returns the CPU time this process has used so far, user plus
// system: getrusage's ru_utime + ru_stime. -1 if unknown.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
