package launch

import "golang.org/x/sys/unix"

// waitExited blocks until process pid, a child of this one, has exited,
// and reports true, without reaping it (WNOWAIT): until exec.Cmd.Wait
// reaps it, its PID, and so its process group's ID, cannot be reused. It
// reports false if the wait failed; the caller then reaps first.
func waitExited(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		switch err {
		case nil:
			return true
		case unix.EINTR:
		default:
			return false
		}
	}
}
