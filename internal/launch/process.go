package launch

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
)

// Environment variables that make a process an executor.
const (
	// EnvDriver selects executor mode and names the driver's address.
	EnvDriver = "EMBER_DRIVER"
	// EnvSecret carries the application secret for standalone executors.
	EnvSecret = "EMBER_SECRET"
	// EnvCookie marks an executor started by a driver (local-cluster): it
	// exits when its driver's end of stdin closes.
	EnvCookie = "EMBER_EXECUTOR_COOKIE"
	// CookieValue is EnvCookie's value. It only guards against accidental
	// executor mode; it is not a secret.
	CookieValue = "d7c2f0b4e1a94c4f8b1f6a3e5c9d2b70"
)

// Processes runs executors as child processes of the driver's binary. The
// children get the driver's address in their environment and the read end
// of a pipe as stdin: when the driver dies, however abruptly, the pipe
// closes, and each kills its process group (KillOwnGroup): itself and the
// processes it started. When a child exits, however it ended, Processes
// kills what is left of its group.
type Processes struct {
	Path   string   // binary; when empty, this process's own (see Start)
	Args   []string // arguments after the program name
	Env    []string // extra KEY=value entries
	Stdout io.Writer
	Stderr io.Writer
	// Secret is written, hex-encoded and followed by a newline, on each
	// child's stdin: the private channel from the driver to its executors.
	Secret string

	wg sync.WaitGroup
	mu sync.Mutex // protects the following field
	// cmds are the executors still running: one that has ended is
	// dropped (its PID may be reused), so a local-cluster that replaces
	// executors for long keeps only the live ones.
	cmds []*exec.Cmd
	// killed are the executors Kill or KillUnreleased killed that have
	// yet to be reported ended, and which killed them: their ExitError
	// says so.
	killed map[*exec.Cmd]kill
	// reporting counts, by pid, the executors that have exited, dropped
	// from cmds, whose end is being reported (exited has not returned):
	// Exiting still says so of them.
	reporting map[int]int
}

// kill says why the driver killed an executor process.
type kill int

const (
	killLost       kill = iota + 1 // Kill: the driver lost it
	killUnreleased                 // KillUnreleased: shutting down, the driver had not released it
)

// Start implements Launcher: exited is given each executor's process ID.
// It may be called again, to start more executors, until Wait is called.
// Without Path, it runs the very binary this process runs, even if the
// file it was started from has since been replaced or deleted (on Linux:
// see execPath), with os.Executable() as the child's os.Args[0].
func (p *Processes) Start(ctx context.Context, n int, driverAddr string, exited func(int, error)) error {
	path, name := p.Path, p.Path
	if path == "" {
		var err error
		if name, err = os.Executable(); err != nil {
			return fmt.Errorf("local-cluster: cannot find this program's binary: %w", err)
		}
		path = execPath(name)
	}
	env := cleanEnv(os.Environ())
	env = append(env, p.Env...)
	env = append(env, EnvDriver+"="+driverAddr, EnvCookie+"="+CookieValue)
	for i := 1; i <= n; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		cmd := exec.Command(path, p.Args...)
		cmd.Args[0] = name // its os.Args[0]: the program's path, not /proc/self/exe
		cmd.Env = env
		cmd.Stdin = r
		cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
		cmd.SysProcAttr = sysProcAttr()
		if err := cmd.Start(); err != nil {
			r.Close()
			w.Close()
			return fmt.Errorf("local-cluster: start executor %d: %w", i, err)
		}
		r.Close()
		if _, err := io.WriteString(w, hex.EncodeToString([]byte(p.Secret))+"\n"); err != nil {
			w.Close()
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return fmt.Errorf("local-cluster: hand the secret to executor %d: %w", i, err)
		}
		p.mu.Lock()
		p.cmds = append(p.cmds, cmd)
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// Where it can, wait for the exit without reaping: the
			// unreaped process keeps its PID, and so its group's ID,
			// from reuse while the group is killed below.
			unreaped := waitExited(cmd.Process.Pid)
			var err error
			if !unreaped {
				err = cmd.Wait()
			}
			// What the executor started goes with it, however it
			// ended: a task's subprocess, say, that it killed with its
			// ctx's end but did not wait for, or that outlived an
			// executor killed outright (the OOM killer).
			p.mu.Lock()
			killExitedGroup(cmd.Process.Pid)
			p.cmds = slices.DeleteFunc(p.cmds, func(c *exec.Cmd) bool { return c == cmd })
			killed := p.killed[cmd]
			delete(p.killed, cmd)
			if p.reporting == nil {
				p.reporting = map[int]int{}
			}
			p.reporting[cmd.Process.Pid]++
			p.mu.Unlock()
			defer func() {
				p.mu.Lock()
				if p.reporting[cmd.Process.Pid]--; p.reporting[cmd.Process.Pid] == 0 {
					delete(p.reporting, cmd.Process.Pid)
				}
				p.mu.Unlock()
			}()
			if unreaped {
				err = cmd.Wait()
			}
			w.Close()
			if err != nil {
				// Ended by a signal (ExitCode -1) after Kill: the kill was
				// the driver's, not the OOM killer's, say.
				var ee *exec.ExitError
				bySignal := errors.As(err, &ee) && ee.ExitCode() == -1
				err = &ExitError{PID: cmd.Process.Pid, Err: err,
					Lost:       bySignal && killed == killLost,
					Unreleased: bySignal && killed == killUnreleased}
			}
			exited(cmd.Process.Pid, err)
		}()
	}
	return nil
}

// execPath is the path to start this process's own binary by, name being
// the file it was started from (os.Executable): name while that file is
// still the running binary, so that the child is named after the program
// (its comm: what ps, top, pgrep, killall and the OOM killer's log show);
// else SelfExe, which is the running binary whatever has become of the
// file: a binary rebuilt or deleted since the driver started (a redeploy)
// must not become a replacement executor that the handshake refuses. (A
// child started from /proc/self/exe is named "exe".) A file replaced
// between the check and the start makes an executor that the handshake
// refuses; a replacement started after that runs SelfExe.
func execPath(name string) string {
	self := SelfExe()
	if self == "" {
		return name
	}
	if a, err := os.Stat(name); err == nil {
		if b, err := os.Stat(self); err == nil && os.SameFile(a, b) {
			return name
		}
	}
	return self
}

// ExitError is how an executor process Processes started ended other than
// cleanly: a status other than 0 (a panic, the race detector's 66), or a
// signal.
type ExitError struct {
	PID int
	Err error // exec.Cmd.Wait's
	// Lost: Kill killed it, the driver having lost it (silent past the
	// heartbeat timeout), and it ended by that signal.
	Lost bool
	// Unreleased: KillUnreleased killed it, the driver shutting down
	// without having released it (a replacement not yet ready, say),
	// and it ended by that signal.
	Unreleased bool
}

// Error names the process by its pid, which the driver's logs give with
// the executor ID (the launch order, which executor IDs need not follow,
// would mislead), and says when the driver killed it: "signal: killed"
// alone reads as the OOM killer's.
func (e *ExitError) Error() string {
	switch {
	case e.Lost:
		return fmt.Sprintf("executor process (pid %d), killed by the driver, which had lost it: %v", e.PID, e.Err)
	case e.Unreleased:
		return fmt.Sprintf("executor process (pid %d), killed by the driver as it shut down, not having released it: %v", e.PID, e.Err)
	}
	return fmt.Sprintf("executor process (pid %d): %v", e.PID, e.Err)
}

func (e *ExitError) Unwrap() error { return e.Err }

// Wait implements Launcher.
func (p *Processes) Wait(ctx context.Context) error {
	return waitOrKill(ctx, &p.wg, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.cmds {
			killGroup(c.Process)
		}
	}, 0, "killed")
}

// KillUnreleased kills, with its process group, every executor process
// still running whose PID released does not report: once the driver has
// closed, an executor it did not release (one that never connected, was
// lost, or did not stop in time) has nothing left to do, and Wait need not
// wait the shutdown timeout for it. Released executors are left to exit
// by themselves. The ExitError of one it kills says so (Unreleased).
func (p *Processes) KillUnreleased(released func(pid int) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cmds {
		if !released(c.Process.Pid) {
			p.killLocked(c, killUnreleased)
		}
	}
}

// Kill kills, with its process group, the executor process pid if it is
// one of those Processes started and it is still running: the driver
// lost it (silent past the heartbeat timeout: frozen, say, or its
// runtime stuck), and it would otherwise hold its place until it exits,
// which a frozen process never does, instead of being replaced. Any
// other pid is left alone. The process's ExitError then says that the
// driver killed it (Lost), unless it had begun to exit already.
func (p *Processes) Kill(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cmds {
		if c.Process.Pid == pid {
			p.killLocked(c, killLost)
		}
	}
}

// Exiting reports whether the executor process pid, one Processes
// started that has not yet been reported ended, has begun to exit (on
// Linux; elsewhere it cannot tell before the process has exited). One
// that has exited counts until the report of its end (exited) has
// returned: the driver, whose stream broke as it exited, waits for that
// report only while Exiting says so. Any other pid reports false.
func (p *Processes) Exiting(pid int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitingLocked(pid)
}

// exitingLocked is Exiting with p.mu held.
func (p *Processes) exitingLocked(pid int) bool {
	if p.reporting[pid] > 0 {
		return true
	}
	for _, c := range p.cmds {
		if c.Process.Pid == pid {
			return exiting(pid)
		}
	}
	return false
}

// killLocked kills c with its process group, noting why, unless it was
// killed before (the first kill is what ended it: one lost, then not
// released at shutdown, was lost). p.mu is held.
func (p *Processes) killLocked(c *exec.Cmd, why kill) {
	if _, ok := p.killed[c]; ok {
		killGroup(c.Process)
		return
	}
	// One already exiting, killed by someone else (the OOM killer, kill
	// -9) or crashed, was lost for that: its connection ended as it
	// exited, before its exit was reported. The driver's kill is not
	// what ended it, and saying so hid the OOM killer's.
	if !exiting(c.Process.Pid) {
		if p.killed == nil {
			p.killed = map[*exec.Cmd]kill{}
		}
		p.killed[c] = why
	}
	killGroup(c.Process)
}

// cleanEnv drops Ember's role variables so a child never inherits a stale
// one.
func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == EnvDriver || k == EnvSecret || k == EnvCookie || k == "EMBER_SECRET_FILE" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// ReadSecretAndWatchParent reads the secret line the driver wrote on r
// (the executor's stdin), then watches r in the background and calls exit
// when it reaches EOF, which for an executor started by Processes means
// its driver is gone: the driver keeps the pipe's other end open until the
// executor has exited.
func ReadSecretAndWatchParent(r io.Reader, exit func()) (string, error) {
	br := bufio.NewReader(r)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no secret on stdin: %w", err)
	}
	secret, err := hex.DecodeString(strings.TrimSuffix(line, "\n"))
	if err != nil {
		return "", fmt.Errorf("malformed secret on stdin: %w", err)
	}
	go func() {
		_, _ = io.Copy(io.Discard, br)
		exit()
	}()
	return string(secret), nil
}
