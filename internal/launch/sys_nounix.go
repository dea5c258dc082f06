//go:build !unix

package launch

import "syscall"

// sysProcAttr: off Unix only the stdin pipe ends orphans.
func sysProcAttr() *syscall.SysProcAttr { return nil }
