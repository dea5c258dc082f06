package launch

import (
	"os"
	"syscall"
)

// sysProcAttr puts the child in its own process group (a terminal's ^C
// reaches only the driver, which then releases its executors in order) and
// asks the kernel to kill it when the driver dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills p's process group, which p leads (see sysProcAttr): an
// executor killed at the shutdown timeout takes the processes it started
// (a task's subprocesses, a discovery command) with it.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	_ = p.Kill() // should it have left its group
}
