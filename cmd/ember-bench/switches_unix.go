//go:build unix

package main

import "syscall"

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
