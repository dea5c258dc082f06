package launch

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// helperEnv makes this test binary, started by Processes, the child of
// TestStartNamesTheProgram (TestHelperExecutor).
const helperEnv = "LAUNCH_TEST_HELPER_EXECUTOR"

// TestHelperExecutor is not a test: it is the executor process that
// TestStartNamesTheProgram starts, which waits for its stdin to end.
func TestHelperExecutor(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the child of TestStartNamesTheProgram")
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// An executor started from the driver's own file, unchanged since the
// driver started, is named after the program (its comm, which ps, top,
// pgrep, killall and the OOM killer's log show). Started from
// /proc/self/exe, every executor was named "exe".
func TestStartNamesTheProgram(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &Processes{Args: []string{"-test.run=^TestHelperExecutor$"}, Env: []string{helperEnv + "=1"}}
	exited := make(chan int, 1)
	if err := p.Start(context.Background(), 1, "127.0.0.1:1", func(pid int, _ error) { exited <- pid }); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	pid := p.cmds[0].Process.Pid
	p.mu.Unlock()
	// Start returns once the child has run exec, which sets its comm.
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	p.KillUnreleased(func(int) bool { return false })
	if werr := p.Wait(context.Background()); werr != nil {
		t.Errorf("Wait: %v", werr)
	}
	<-exited
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Base(self)
	if len(want) > 15 { // TASK_COMM_LEN, less its NUL
		want = want[:15]
	}
	if got := strings.TrimSuffix(string(comm), "\n"); got != want {
		t.Errorf("executor's comm: got %q, want %q", got, want)
	}
}

// execPath starts the driver's file while it is still the running
// binary, and the running binary itself (SelfExe) once the file is
// another (rebuilt) or gone.
func TestExecPath(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := filepath.Join(t.TempDir(), filepath.Base(self))
	if err := os.WriteFile(rebuilt, b, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, want string
	}{
		{"the running binary", self, self},
		{"another file", rebuilt, SelfExe()},
		{"gone", filepath.Join(t.TempDir(), "deleted"), SelfExe()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := execPath(tt.file); got != tt.want {
				t.Errorf("execPath(%q): got %q, want %q", tt.file, got, tt.want)
			}
		})
	}
}
