package launch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An executor that was killed by someone else (the OOM killer, kill -9)
// ends its connection as it exits, and the driver, losing it, calls Kill
// before the process's exit is reported: its exit said "killed by the
// driver, which had lost it", hiding the OOM killer's kill behind the
// driver's.
func TestKillOfAnExitingExecutorDoesNotClaimIt(t *testing.T) {
	p, exited, pid := startShell(t)
	p.mu.Lock()
	// Held, p.mu keeps the exit from being reported (Start's goroutine
	// takes it first), as when the driver loses the executor first.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		p.mu.Unlock()
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			p.mu.Unlock()
			t.Fatalf("process %d has not exited 10s after SIGKILL", pid)
		}
		time.Sleep(time.Millisecond)
	}
	p.killLocked(p.cmds[0], killLost) // the driver, having lost it
	p.mu.Unlock()
	e := <-exited
	var xe *ExitError
	if !errors.As(e.err, &xe) || xe.Lost || strings.Contains(e.err.Error(), "killed by the driver") {
		t.Errorf("exit of an executor killed by someone else: got %v, want an ExitError not saying the driver killed it", e.err)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

// An executor process the driver kills as it shuts down, not having
// released it, ends with an ExitError that says so (Unreleased), so that
// the driver does not log it as an executor that ended by a signal. One
// it had killed before, having lost it, stays lost.
func TestKillUnreleasedSaysSo(t *testing.T) {
	tests := []struct {
		name           string
		lost           bool // the driver killed it before, having lost it
		wantUnreleased bool
		wantText       string
	}{
		{"not released", false, true, "killed by the driver as it shut down"},
		{"lost, then not released", true, false, "killed by the driver, which had lost it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, exited, _ := startShell(t)
			if tt.lost {
				// Noted as Kill notes it, without the signal: the process
				// must not be exiting yet when KillUnreleased comes.
				p.mu.Lock()
				p.killed = map[*exec.Cmd]kill{p.cmds[0]: killLost}
				p.mu.Unlock()
			}
			p.KillUnreleased(func(int) bool { return false })
			e := <-exited
			xe, ok := errors.AsType[*ExitError](e.err)
			if !ok || xe.Unreleased != tt.wantUnreleased || xe.Lost == tt.wantUnreleased || !strings.Contains(e.err.Error(), tt.wantText) {
				t.Errorf("exit of an executor KillUnreleased killed: got %v, want an ExitError saying %q", e.err, tt.wantText)
			}
			if err := p.Wait(context.Background()); err != nil {
				t.Errorf("Wait: %v", err)
			}
		})
	}
}

func TestExiting(t *testing.T) {
	p, exited, pid := startShell(t)
	if exiting(pid) {
		t.Errorf("exiting(%d) of a running process: got true", pid)
	}
	p.KillUnreleased(func(int) bool { return false })
	<-exited
	if err := p.Wait(context.Background()); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if !exiting(pid) {
		t.Errorf("exiting(%d) of a reaped process: got false", pid)
	}
}

// Processes.Exiting tells an executor process of its own that has begun
// to exit, not yet reported, from one running, or from any other process.
func TestProcessesExiting(t *testing.T) {
	p, exited, pid := startShell(t)
	if p.Exiting(pid) {
		t.Errorf("Exiting(%d) of a running executor: got true", pid)
	}
	if p.Exiting(os.Getpid()) {
		t.Errorf("Exiting(%d) of a process not its own: got true", os.Getpid())
	}
	// Killed, and held unreported: its report waits for p.mu.
	p.mu.Lock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		p.mu.Unlock()
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !p.exitingLocked(pid) {
		if time.Now().After(deadline) {
			p.mu.Unlock()
			t.Fatalf("Exiting(%d) of a killed executor not yet reported: still false", pid)
		}
		time.Sleep(time.Millisecond)
	}
	p.mu.Unlock()
	<-exited
	if err := p.Wait(context.Background()); err != nil { // the report has returned
		t.Fatal(err)
	}
	if p.Exiting(pid) {
		t.Errorf("Exiting(%d) of an executor reported ended: got true, want false (its pid may be another's)", pid)
	}
}

// Processes.Exiting still tells an executor process that has exited while
// its end is being reported: the driver, whose stream broke as it
// exited, asks then whether to wait for that report (Ended, called from
// exited). Dropped from the running ones before the report, it was said
// not to be exiting, and the loss's reason went without how it ended.
func TestProcessesExitingWhileReported(t *testing.T) {
	p := &Processes{Path: "/bin/sh", Args: []string{"-c", `read secret; read eof`}}
	during := make(chan bool, 1)
	if err := p.Start(context.Background(), 1, "127.0.0.1:1", func(pid int, _ error) { during <- p.Exiting(pid) }); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	pid := p.cmds[0].Process.Pid
	p.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !<-during {
		t.Errorf("Exiting(%d) while its end is reported: got false, want true", pid)
	}
	if err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.Exiting(pid) {
		t.Errorf("Exiting(%d) once its end has been reported: got true, want false", pid)
	}
}

// startShell starts one waiting shell as an executor process and returns
// its Processes, the channel its exit is reported on, and its pid.
func startShell(t *testing.T) (*Processes, chan exit, int) {
	t.Helper()
	p, exited, report := waitingShells(1)
	if err := p.Start(context.Background(), 1, "127.0.0.1:1", report); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p, exited, p.cmds[0].Process.Pid
}
