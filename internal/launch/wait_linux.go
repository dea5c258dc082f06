package launch

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

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

// pfExiting is the kernel's PF_EXITING, in the flags of /proc/<pid>/stat:
// the process has begun to exit.
const pfExiting = 0x4

// exiting reports whether process pid, a child of this one, has begun to
// exit or has exited (a zombie not yet reaped), by /proc/<pid>/stat: its
// flags say PF_EXITING from the moment it starts to exit, before it
// closes its files, its connection to the driver among them, and so
// before the driver can have lost it for that. No such process counts.
func exiting(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return os.IsNotExist(err)
	}
	// pid (comm) state ppid pgrp session tty_nr tpgid flags ...: the
	// comm may hold anything, so count from the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 7 {
		return false
	}
	if f[0] == "Z" || f[0] == "X" {
		return true
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	return err == nil && flags&pfExiting != 0
}
