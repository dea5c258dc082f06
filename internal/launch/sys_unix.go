//go:build unix

package launch

import (
	"os"
	"syscall"
)

// sysProcAttr puts the child in a process group of its own, which it
// leads: a terminal's ^C reaches only the driver, which then releases its
// executors in order, and the executor can take the processes it starts
// with it (killGroup, KillOwnGroup).
//
// No Pdeathsig: on Linux it would kill the executor the moment the driver
// died, before the executor could take its own children, and it fires when
// the driver's thread that started the child exits, not only the process.
// The stdin pipe tells the executor of its driver's death instead (see
// ReadSecretAndWatchParent).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills p's process group, which p leads (see sysProcAttr): an
// executor killed at the shutdown timeout takes the processes it started
// (a task's subprocesses, a discovery command) with it.
func killGroup(p *os.Process) {
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	_ = p.Kill() // should it have left its group
}

// killExitedGroup kills what is left of the process group of pid, an
// executor that has exited: the processes it started. The group's ID
// cannot be reused while any of them lives, nor, on Linux, while the
// executor is not yet reaped (waitExited); elsewhere, once all are gone
// and the executor reaped, a new group leader given the same number in
// the meantime would be hit.
func killExitedGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// KillOwnGroup kills, when this process leads its process group (an
// executor started by Processes), the whole group: this process and the
// processes it started. An executor whose driver has died calls it so that
// its children do not outlive it. Otherwise it does nothing.
func KillOwnGroup() {
	if syscall.Getpgrp() == os.Getpid() {
		_ = syscall.Kill(0, syscall.SIGKILL) // 0: the caller's process group
	}
}
