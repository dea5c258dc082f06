//go:build unix && !linux

package launch

import "syscall"

// sysProcAttr puts the child in its own process group; without Pdeathsig,
// the stdin pipe alone ends orphans.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
