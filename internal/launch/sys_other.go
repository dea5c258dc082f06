//go:build unix && !linux

package launch

import (
	"os"
	"syscall"
)

// sysProcAttr puts the child in its own process group; without Pdeathsig,
// the stdin pipe alone ends orphans.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills p's process group, which p leads (see sysProcAttr): an
// executor killed at the shutdown timeout takes the processes it started
// with it.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	_ = p.Kill() // should it have left its group
}
