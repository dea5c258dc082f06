package embertest

import (
	"os/exec"
	"runtime"
	"testing"
)

// Kill of an executor process that has ended and been reaped, still
// listed because the driver has not yet seen its connection end (a second
// Kill, say), kills nothing and returns nil, as Kill's doc says. It used
// to return "os: process already finished".
func TestKillProcessAlreadyReaped(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGKILL")
	}
	t.Parallel()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil { // started, ended and reaped
		t.Skipf("cannot run true: %v", err)
	}
	if err := killProcess(cmd.Process.Pid); err != nil {
		t.Errorf("killProcess of a reaped process: got %v, want nil", err)
	}
}
