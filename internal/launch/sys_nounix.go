//go:build !unix

package launch

import (
	"os"
	"syscall"
)

// sysProcAttr: off Unix only the stdin pipe ends orphans.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// killGroup kills p; off Unix there is no process group to kill with it.
func killGroup(p *os.Process) { _ = p.Kill() }

// killExitedGroup does nothing off Unix: there is no process group.
func killExitedGroup(int) {}

// waitExited cannot wait without reaping here: it reports false at once.
func waitExited(int) bool { return false }

// KillOwnGroup does nothing off Unix: there is no process group.
func KillOwnGroup() {}
