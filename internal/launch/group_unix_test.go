//go:build unix

package launch

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gone reports whether pid has ended: no such process, or a zombie
// waiting for a parent that reaps it.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return os.IsNotExist(err)
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// An executor killed at the shutdown timeout takes the processes it
// started with it: they are in its process group.
func TestKillGroupTakesTheChildren(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child pid %q: %v", line, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	killGroup(cmd.Process)
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for !gone(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the executor's child (pid %d) outlived it", child)
		}
		time.Sleep(time.Millisecond)
	}
}

// An executor that exits, however it ended (here cleanly, leaving a
// subprocess behind), takes the processes it started with it. Before, they
// were left to init, still running.
func TestExitedExecutorLeavesNoOrphans(t *testing.T) {
	pidFile := t.TempDir() + "/pid"
	p := &Processes{Path: "/bin/sh", Args: []string{"-c", `read secret; sleep 60 & echo $! > "$0"; exit 0`, pidFile}}
	exited := make(chan error, 1)
	if err := p.Start(context.Background(), 1, "127.0.0.1:1", func(_ int, err error) { exited <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("executor: %v", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("child pid %q: %v", b, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	deadline := time.Now().Add(10 * time.Second)
	for !gone(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the exited executor's child (pid %d) outlived it", child)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

// exit is an executor's end, as Start's exited reports it.
type exit struct {
	pid int
	err error
}

// waitingShells returns Processes whose executors are shells that read
// the secret and wait for stdin to close, and the exited func to give
// Start, which reports up to n ends on the channel.
func waitingShells(n int) (*Processes, chan exit, func(pid int, err error)) {
	exited := make(chan exit, n)
	return &Processes{Path: "/bin/sh", Args: []string{"-c", `read secret; read eof`}}, exited,
		func(pid int, err error) { exited <- exit{pid, err} }
}

// Start may be called again to start more executors (a local-cluster
// replacing lost ones): exited names each by its process ID, and an
// executor that has ended is no longer kept, so KillUnreleased, asked
// about every live one, is not asked about it.
func TestStartAgainReportsPIDs(t *testing.T) {
	p, exited, report := waitingShells(2)
	for range 2 {
		if err := p.Start(context.Background(), 1, "127.0.0.1:1", report); err != nil {
			t.Fatal(err)
		}
	}
	p.mu.Lock()
	first, second := p.cmds[0].Process.Pid, p.cmds[1].Process.Pid
	p.mu.Unlock()
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := <-exited; e.pid != first || e.err == nil {
		t.Fatalf("exited: got pid %d, err %v; want %d, killed", e.pid, e.err, first)
	}
	var asked []int
	p.KillUnreleased(func(pid int) bool { asked = append(asked, pid); return false })
	if !slices.Equal(asked, []int{second}) {
		t.Errorf("KillUnreleased asked about %v, want only the live executor %d", asked, second)
	}
	if e := <-exited; e.pid != second {
		t.Errorf("exited: got pid %d, want %d", e.pid, second)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

// Kill kills the executor the driver lost, and that one only, and its
// exit says who killed it: "signal: killed" alone read as the OOM
// killer's, in the start-up error of a local-cluster whose executor froze,
// and in the driver's "executor ended" line.
func TestKillSaysTheDriverKilledIt(t *testing.T) {
	p, exited, report := waitingShells(2)
	if err := p.Start(context.Background(), 2, "127.0.0.1:1", report); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	lost, other := p.cmds[0].Process.Pid, p.cmds[1].Process.Pid
	p.mu.Unlock()
	p.Kill(lost)
	e := <-exited
	const note = "killed by the driver, which had lost it"
	var xe *ExitError
	if e.pid != lost || !errors.As(e.err, &xe) || !xe.Lost || !strings.Contains(e.err.Error(), note) {
		t.Errorf("exit of the executor Kill was given: got pid %d, err %v; want pid %d, an ExitError saying %q", e.pid, e.err, lost, note)
	}
	p.KillUnreleased(func(int) bool { return false })
	e = <-exited
	if e.pid != other || !errors.As(e.err, &xe) || xe.Lost || strings.Contains(e.err.Error(), note) {
		t.Errorf("exit of an executor killed otherwise: got pid %d, err %v; want pid %d, an ExitError not saying %q", e.pid, e.err, other, note)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Errorf("Wait: %v", err)
	}
}
