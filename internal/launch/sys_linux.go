package launch

import "syscall"

// sysProcAttr puts the child in its own process group (a terminal's ^C
// reaches only the driver, which then releases its executors in order) and
// asks the kernel to kill it when the driver dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
