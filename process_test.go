package ember_test

// Tests with real executor processes: the test binary re-executed. A child
// runs the same test function; ember.Run makes it an executor (EMBER_DRIVER
// set) or, for the tests that need the driver in its own process, the
// driver (roleEnv=driver).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	roleEnv = "EMBER_TEST_ROLE"
	dirEnv  = "EMBER_TEST_DIR"
	dirConf = "test.dir"
)

// isChild reports whether this process is a child started by a process
// test (a driver or an executor).
func isChild() bool {
	return os.Getenv(roleEnv) != "" || os.Getenv(ember.EnvDriver) != ""
}

// runChild runs cfg in a child process and never returns: executors exit
// inside ember.Run; a driver child runs fn and exits.
func runChild(cfg ember.Config, fn func(context.Context, *ember.Driver) error) {
	err := ember.Run(context.Background(), cfg, fn)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child driver:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// sharedDir returns the directory the processes of a test share: the one
// passed in dirEnv to a driver child, a new temporary directory in the test
// process, and "" in an executor child. An executor reads the directory
// from the driver's configuration, and a temporary directory of its own
// would be left behind: ember.Run ends an executor process without running
// the test's cleanups.
func sharedDir(t *testing.T) string {
	if dir := os.Getenv(dirEnv); dir != "" || isChild() {
		return dir
	}
	return t.TempDir()
}

// startSelf starts this test in a child process with env added. The child
// exits when this process does, however it ends (see watchParent): a test
// binary that times out runs no cleanups, and a driver child waiting in
// select {} for its kill, or a standalone executor connected to it, would
// otherwise outlive it, holding go test's output open.
func startSelf(t *testing.T, env ...string) *exec.Cmd {
	t.Helper()
	return startBinary(t, os.Args[0], env...)
}

// startBinary is startSelf with the test binary at path (a copy).
func startBinary(t *testing.T, path string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, embertest.ExecutorArgs(t)...)
	cmd.Env = append(append(os.Environ(), env...), parentPipeEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		w.Close()
	})
	return cmd
}

// parentPipeEnv marks a child started by startSelf: its stdin is a pipe
// whose other end only the test process holds.
const parentPipeEnv = "EMBER_TEST_PARENT_PIPE"

// watchParent makes a child started by startSelf exit when its stdin
// reaches EOF: the test process that started it has ended. It unsets
// parentPipeEnv first, so that the child's own children (a local-cluster
// driver's executors, whose stdin carries the secret) do not watch theirs.
func watchParent() {
	if os.Getenv(parentPipeEnv) == "" {
		return
	}
	os.Unsetenv(parentPipeEnv)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
}

func writeFile(dir, name, content string) error {
	tmp := filepath.Join(dir, "."+name)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

func waitFile(t *testing.T, dir, name string) string {
	t.Helper()
	var b []byte
	embertest.WaitFor(t, "file "+name, func() bool {
		var err error
		b, err = os.ReadFile(filepath.Join(dir, name))
		return err == nil
	})
	return string(b)
}

// fileRecorder is a plugin that records, in files under the conf's test
// dir, where each side ran; executors also do an ask round trip.
func fileRecorder() plugin.Plugin {
	return fakePlugin{
		name: "files",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{
				InitF: func(_ context.Context, pc plugin.DriverContext) (map[string]string, error) {
					err := writeFile(pc.Conf().Get(dirConf), "DRIVER_FILE", strconv.Itoa(os.Getpid()))
					return map[string]string{"greeting": "hello"}, err
				},
				ReceiveF: func(_ context.Context, msg any) (any, error) {
					return text("pong:" + string(msg.(text))), nil
				},
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(ctx context.Context, pc plugin.ExecutorContext, extra map[string]string) error {
				reply, err := plugin.Ask[text](ctx, pc, text(pc.ExecutorID()))
				if err != nil {
					return err
				}
				var gpus []string
				if r, ok := pc.Resources()["gpu"]; ok {
					gpus = r.Addresses
				}
				line := fmt.Sprintf("pid=%d reply=%s extra=%s gpu=%s", os.Getpid(), reply, extra["greeting"], strings.Join(gpus, ","))
				return writeFile(pc.Conf().Get(dirConf), "EXECUTOR_FILE_"+pc.ExecutorID(), line)
			}}
		},
	}
}

// Spark: "plugin initialization in non-local mode" and "... with
// resources": every process writes its file; executors are real processes
// that discovered their GPUs with a script and talked to the driver.
func TestLocalClusterProcesses(t *testing.T) {
	dir := sharedDir(t)
	script := filepath.Join(dir, "gpus.sh")
	cfg := ember.Config{
		Master:       "local-cluster[2]",
		Plugins:      []plugin.Plugin{fileRecorder()},
		ExecutorArgs: embertest.ExecutorArgs(t),
		Conf: map[string]string{
			dirConf: dir,
			"ember.executor.resource.gpu.discoveryScript": script,
		},
	}
	if isChild() {
		runChild(cfg, nil)
	}
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho '{\"name\":\"gpu\",\"addresses\":[\"3\",\"4\"]}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := embertest.Start(t, cfg)
	execs := c.Driver.Executors()
	if len(execs) != 2 {
		t.Fatalf("executors: got %d, want 2", len(execs))
	}
	for _, e := range execs {
		if e.PID == os.Getpid() || e.PID == 0 {
			t.Errorf("executor %s has pid %d; want a child process", e.ID, e.PID)
		}
		if got := e.Resources["gpu"].Addresses; !slices.Equal(got, []string{"3", "4"}) {
			t.Errorf("executor %s gpu addresses seen by the driver: got %v, want [3 4]", e.ID, got)
		}
		want := fmt.Sprintf("pid=%d reply=pong:%s extra=hello gpu=3,4", e.PID, e.ID)
		if got := waitFile(t, dir, "EXECUTOR_FILE_"+e.ID); got != want {
			t.Errorf("executor %s file: got %q, want %q", e.ID, got, want)
		}
	}
	if got := waitFile(t, dir, "DRIVER_FILE"); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("driver file: got %q, want this process's pid", got)
	}
}

// The handshake refuses an executor whose plugin list differs, and the
// error names the plugins.
func TestHandshakeMismatchAcrossProcesses(t *testing.T) {
	plugins := []plugin.Plugin{named("alpha"), named("beta")}
	if os.Getenv(ember.EnvDriver) != "" {
		plugins = []plugin.Plugin{named("alpha"), named("gamma")} // a stale executor build
	}
	cfg := ember.Config{Master: "local-cluster[1]", Plugins: plugins, ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet}
	if isChild() {
		runChild(cfg, nil)
	}
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error {
		t.Error("driver function ran with a mismatched executor")
		return nil
	})
	for _, want := range []string{"handshake mismatch", `missing on the executor: ["beta"]`, `only on the executor: ["gamma"]`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: got %v, want an error containing %q", err, want)
		}
	}
}

// An executor process that stops cleanly and then exits other than
// cleanly fails Run: here the race detector, which makes a process that
// saw a data race exit with status 66 (so a test on a local-cluster passed
// while its executors raced). Needs -race, as CI runs the tests.
func TestExecutorProcessFailingAfterItStoppedFailsRun(t *testing.T) {
	if !raceEnabled {
		t.Skip("needs -race: the race detector sets the executor's exit status")
	}
	racy := fakePlugin{name: "racy", newExecutor: func() plugin.ExecutorPlugin {
		return &fakeExecutor{InitF: func(context.Context, plugin.ExecutorContext, map[string]string) error {
			x := 0
			done := make(chan struct{})
			go func() { x = 1; close(done) }()
			x = 2 // races with the goroutine's write
			<-done
			_ = x
			return nil
		}}
	}}
	cfg := ember.Config{Master: "local-cluster[1]", Plugins: []plugin.Plugin{racy}, ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet}
	if isChild() {
		runChild(cfg, nil)
	}
	// The executor's race report goes to a file, not this test's output.
	t.Setenv("GORACE", "log_path="+filepath.Join(t.TempDir(), "race"))
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { return nil })
	if want := "exit status 66, after it had stopped cleanly"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: got %v, want an error containing %q", err, want)
	}
}

// An executor that stops early waits for the driver to release it for as
// long as the driver may take: through its wait for the other executors
// and its delivery of what they sent. It used to give up after one
// ShutdownTimeout and exit with status 1, which Run then reported as a
// failure after a clean stop.
func TestEarlyExecutorWaitsForItsRelease(t *testing.T) {
	p := fakePlugin{
		name: "slow",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(context.Context, any) (any, error) {
				time.Sleep(time.Second) // delivering the last message takes a while
				return nil, nil
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			var pc plugin.ExecutorContext
			return &fakeExecutor{
				InitF: func(_ context.Context, c plugin.ExecutorContext, _ map[string]string) error { pc = c; return nil },
				ShutdownF: func(ctx context.Context) error {
					if pc.ExecutorID() == "1" {
						return nil // stops at once
					}
					time.Sleep(1200 * time.Millisecond)
					return pc.Send(ctx, text("last"))
				},
			}
		},
	}
	cfg := ember.Config{Master: "local-cluster[2]", Plugins: []plugin.Plugin{p}, ExecutorArgs: embertest.ExecutorArgs(t),
		Logger: quiet, ShutdownTimeout: 2 * time.Second}
	if isChild() {
		runChild(cfg, nil)
	}
	if err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error { return nil }); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// A standalone executor process stopped by a SIGTERM that its program
// turns into the end of Run's ctx (signal.NotifyContext) stops cleanly:
// its plugins' final sends reach the driver, and it exits with status 0.
// Before, its stream ended with the ctx at once, so the final sends failed,
// and it exited with status 1, a failure to its supervisor. The driver
// logs that it left, and its listeners get a nil reason.
func TestExecutorStoppedBySIGTERMExitsCleanly(t *testing.T) {
	var finals recorder
	removed := make(chan error, 1)
	p := fakePlugin{
		name: "final",
		newDriver: func() plugin.DriverPlugin {
			return &listeningDriver{
				fakeDriver: fakeDriver{ReceiveF: func(_ context.Context, msg any) (any, error) {
					finals.add(string(msg.(text)))
					return nil, nil
				}},
				AddedF:   func(context.Context, plugin.ExecutorInfo) {},
				RemovedF: func(_ context.Context, _ plugin.ExecutorInfo, reason error) { removed <- reason },
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			var pc plugin.ExecutorContext
			return &fakeExecutor{
				InitF:     func(_ context.Context, c plugin.ExecutorContext, _ map[string]string) error { pc = c; return nil },
				ShutdownF: func(ctx context.Context) error { return pc.Send(ctx, text("final values")) },
			}
		},
	}
	var logs logtest.Buffer
	cfg := ember.Config{Master: "standalone", Secret: "test secret", Plugins: []plugin.Plugin{p}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	_, cmd := standaloneWithOneExecutor(t, cfg)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("executor process stopped by SIGTERM: got %v, want exit status 0", err)
	}
	embertest.WaitFor(t, "the executor's final send", func() bool { return slices.Contains(finals.get(), "final values") })
	// The driver says the executor left, not that it was lost.
	embertest.WaitFor(t, "the driver's log of the executor leaving", func() bool {
		return strings.Contains(logs.String(), "executor left: it stopped on its own")
	})
	if strings.Contains(logs.String(), "executor lost") {
		t.Errorf("driver logs: got %q, want no executor lost", logs.String())
	}
	// A clean removal, as the driver's release is: it used to be the
	// "peer closed the stream" error a crash gives too.
	select {
	case reason := <-removed:
		if reason != nil {
			t.Errorf("OnExecutorRemoved: got reason %v, want nil (it left cleanly)", reason)
		}
	case <-testCtx(t).Done():
		t.Error("OnExecutorRemoved was not called")
	}
}

// An executor process that never connected does not hold Run once the
// driver has closed: it is killed then, not waited for until the shutdown
// timeout. Before, a start-up that failed (or was interrupted) while
// executors were still starting took a whole ShutdownTimeout more, and
// then failed with "executors did not exit".
func TestUnconnectedExecutorDoesNotHoldRun(t *testing.T) {
	if isChild() {
		// An executor that never connects. It ends when its driver does
		// (its stdin, the driver's pipe, reaches EOF) if the driver never
		// kills it: a test binary that timed out, say. It used to sleep an
		// hour, outliving the test binary.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(1)
	}
	cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet,
		StartTimeout: 500 * time.Millisecond, ShutdownTimeout: time.Minute}
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error {
		t.Error("the driver function ran without executors")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "not ready within") || strings.Contains(err.Error(), "did not exit") {
		t.Errorf("Run: got %v, want the start-up timeout alone", err)
	}
}

// A start-up that times out kills the executor processes that never
// connected, and says so in its error; it does not also log that they
// ended, killed by a signal, as if they had crashed (an OOM kill, say):
// the driver killed them itself. That log is for processes ending after
// start-up.
func TestStartUpTimeoutDoesNotLogItsOwnKillsAsExits(t *testing.T) {
	if isChild() {
		time.Sleep(time.Hour) // an executor that never connects
	}
	var logs logtest.Buffer
	cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t),
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), StartTimeout: 500 * time.Millisecond}
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error {
		t.Error("the driver function ran without executors")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "not ready within") {
		t.Errorf("Run: got %v, want the start-up timeout", err)
	}
	if strings.Contains(logs.String(), `msg="executor ended"`) {
		t.Errorf("driver logs: got %q, want no \"executor ended\" for the process it killed itself", logs.String())
	}
}

// A local[N] executor runs in the driver's process, and says so: its PID
// is the driver's, which ExecutorInfo's doc warns of (a load generator
// that SIGKILLed an executor by its PID under local[4] killed itself).
func TestLocalExecutorsHaveTheDriversPID(t *testing.T) {
	c := embertest.Start(t, ember.Config{Master: "local[2]"})
	for _, e := range c.Driver.Executors() {
		if e.PID != os.Getpid() {
			t.Errorf("executor %s: got pid %d, want the driver's, %d", e.ID, e.PID, os.Getpid())
		}
	}
}

// Nor does shutdown: a replacement executor still starting when the
// driver shuts down is killed by the driver, which logged it, at Warn, as
// an executor that had ended by a signal ("executor process (pid N):
// signal: killed", as the OOM killer's kill reads).
func TestShutdownDoesNotLogItsOwnKillOfAReplacement(t *testing.T) {
	const replaceDirEnv = "EMBER_TEST_REPLACE_DIR"
	dir := os.Getenv(replaceDirEnv)
	if isChild() {
		// The first executor joins; its replacement never reaches Run.
		f, err := os.OpenFile(filepath.Join(dir, "FIRST"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			_ = writeFile(dir, "REPLACEMENT", strconv.Itoa(os.Getpid()))
			time.Sleep(time.Hour)
		}
		f.Close()
	} else {
		dir = t.TempDir()
		t.Setenv(replaceDirEnv, dir)
	}
	var logs logtest.Buffer
	c := embertest.Start(t, ember.Config{Master: "local-cluster[1]", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	pid := waitFile(t, dir, "REPLACEMENT")
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, `msg="executor ended"`) && strings.Contains(line, "(pid "+pid+")") {
			t.Errorf("driver logs: got %q, want no \"executor ended\" for the replacement it killed as it shut down", line)
		}
	}
}

// Executors die with their driver, and take the processes they started
// with them: SIGKILL the driver process, and its executor processes and
// theirs are gone soon after. (The executors' own children used to be
// left running.)
func TestDriverKilledLeavesNoOrphans(t *testing.T) {
	dir := os.Getenv(dirEnv)
	// An executor plugin that starts a process and never finishes shutting
	// down: only the runtime's death-of-parent handling can end these
	// processes in time.
	stuck := fakePlugin{
		name: "stuck",
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{
				InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
					sleep := exec.Command("sleep", "600")
					if err := sleep.Start(); err != nil {
						return err
					}
					return writeFile(dir, "child-"+pc.ExecutorID(), strconv.Itoa(sleep.Process.Pid))
				},
				ShutdownF: func(context.Context) error { select {} },
			}
		},
	}
	cfg := ember.Config{
		Master:          "local-cluster[2]",
		Plugins:         []plugin.Plugin{stuck},
		ExecutorArgs:    embertest.ExecutorArgs(t),
		ShutdownTimeout: time.Hour,
	}
	if isChild() {
		runChild(cfg, func(ctx context.Context, d *ember.Driver) error {
			var pids []string
			for _, e := range d.Executors() {
				pids = append(pids, strconv.Itoa(e.PID))
			}
			if err := writeFile(dir, "pids", strings.Join(pids, " ")); err != nil {
				return err
			}
			select {} // until killed
		})
	}
	dir = t.TempDir()
	driver := startSelf(t, roleEnv+"=driver", dirEnv+"="+dir)
	var pids []int
	for _, f := range strings.Fields(waitFile(t, dir, "pids")) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
	}
	if len(pids) != 2 {
		t.Fatalf("executor pids: got %v, want 2", pids)
	}
	for _, id := range []string{"1", "2"} {
		pid, _ := strconv.Atoi(waitFile(t, dir, "child-"+id))
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("process %d (executors, then their children) not running before the driver was killed", pid)
		}
	}
	if err := driver.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		embertest.WaitFor(t, fmt.Sprintf("process %d to exit", pid), func() bool { return !alive(pid) })
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	// The state follows the parenthesised command name.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// A standalone executor whose driver dies while it asks gets
// CodeUnavailable within its deadline, and then exits.
func TestDriverDiesWhileExecutorAsks(t *testing.T) {
	dir := os.Getenv(dirEnv)
	p := fakePlugin{
		name: "hang",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(ctx context.Context, msg any) (any, error) {
				if err := writeFile(dir, "blocked", "yes"); err != nil {
					return nil, err
				}
				<-ctx.Done()
				return nil, ctx.Err()
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			done := make(chan struct{})
			return &fakeExecutor{
				InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
					go func() {
						defer close(done)
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						defer cancel()
						start := time.Now()
						_, err := pc.Ask(ctx, block{})
						_ = writeFile(pc.Conf().Get(dirConf), "ask-result", fmt.Sprintf("%v in %v: %v", plugin.CodeOf(err), time.Since(start).Round(time.Second), err))
					}()
					return nil
				},
				// Shutdown runs when the executor loses its driver, too.
				ShutdownF: func(context.Context) error { <-done; return nil },
			}
		},
	}
	cfg := ember.Config{
		Master:       "standalone",
		Secret:       "test secret",
		ListenAddr:   os.Getenv("EMBER_TEST_LISTEN"),
		MinExecutors: 1,
		Plugins:      []plugin.Plugin{p},
		Conf:         map[string]string{dirConf: dir},
	}
	if isChild() {
		runChild(cfg, func(context.Context, *ember.Driver) error {
			select {} // until killed
		})
	}
	dir = t.TempDir()
	addr := freeAddr(t)
	driver := startSelf(t, roleEnv+"=driver", dirEnv+"="+dir, "EMBER_TEST_LISTEN="+addr)
	executor := startSelf(t, ember.EnvDriver+"="+addr)
	waitFile(t, dir, "blocked")
	if err := driver.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got := waitFile(t, dir, "ask-result")
	if !strings.HasPrefix(got, "unavailable") {
		t.Errorf("executor's ask after the driver died: got %q, want unavailable", got)
	}
	wantExit(t, executor, 1, "after losing its driver")
}

// wantExit waits, up to embertest.DefaultTimeout, for cmd to exit, and
// fails t unless it exited with status want, not 0; when says when it
// should have.
func wantExit(t *testing.T, cmd *exec.Cmd, want int, when string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != want {
			t.Errorf("executor exit %s: got %v, want exit status %d", when, err, want)
		}
	case <-time.After(embertest.DefaultTimeout):
		t.Fatalf("the executor did not exit %s", when)
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A process with a stray EMBER_DRIVER that is not an address refuses to
// become an executor, with a message saying why and what to do.
func TestAccidentalExecutorModeRefused(t *testing.T) {
	if isChild() {
		runChild(ember.Config{Master: "local[1]"}, func(context.Context, *ember.Driver) error {
			fmt.Println("driver function ran")
			return nil
		})
	}
	// "yes": not an address at all; the others pass net.SplitHostPort
	// but no dial can use them, and used to be retried for StartTimeout.
	for _, value := range []string{"yes", "127.0.0.1:99999", "127.0.0.1:7077 "} {
		cmd := exec.Command(os.Args[0], embertest.ExecutorArgs(t)...)
		cmd.Env = append(os.Environ(), ember.EnvDriver+"="+value)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%s=%q: got %v after %v, want exit status 2; output:\n%s", ember.EnvDriver, value, err, time.Since(start), out)
		}
		for _, want := range []string{fmt.Sprintf("EMBER_DRIVER=%q", value), "that is not a driver's address (want EMBER_DRIVER=host:port: ", "unset EMBER_DRIVER"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output does not mention %q:\n%s", want, out)
			}
		}
		if strings.Contains(string(out), "driver function ran") {
			t.Error("the driver function ran in a process with EMBER_DRIVER set")
		}
	}
}

// An executor process killed while the driver asks it fails the ask with
// CodeUnavailable at once, and the driver's listener hears of the crash,
// with how the process ended ("signal: killed", as Spark's removal
// reason carries the exit code): before, the reason said only that the
// stream broke, and how the process ended came in a log line of its own.
func TestExecutorProcessKilledDuringAsk(t *testing.T) {
	dir := sharedDir(t)
	var logs logtest.Buffer
	var dc plugin.DriverContext
	removed := make(chan error, 1)
	p := fakePlugin{
		name: "victim",
		newDriver: func() plugin.DriverPlugin {
			return &listeningDriver{
				fakeDriver: fakeDriver{InitF: keepDriverContext(&dc)},
				AddedF:     func(context.Context, plugin.ExecutorInfo) {},
				RemovedF:   func(_ context.Context, _ plugin.ExecutorInfo, reason error) { removed <- reason },
			}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			var pc plugin.ExecutorContext
			return &receivingExecutor{
				fakeExecutor: fakeExecutor{InitF: func(_ context.Context, c plugin.ExecutorContext, _ map[string]string) error {
					pc = c
					return nil
				}},
				ReceiveF: func(ctx context.Context, _ any) (any, error) {
					if err := writeFile(pc.Conf().Get(dirConf), "in-receive", "yes"); err != nil {
						return nil, err
					}
					<-ctx.Done()
					return nil, ctx.Err()
				},
			}
		},
	}
	cfg := ember.Config{
		Master:       "local-cluster[1]",
		Plugins:      []plugin.Plugin{p},
		ExecutorArgs: embertest.ExecutorArgs(t),
		Conf:         map[string]string{dirConf: dir},
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		// Longer than the ask's ctx: the ask fails of the broken
		// connection, or of its deadline, never of the heartbeat.
		HeartbeatTimeout: 10 * time.Minute,
	}
	if isChild() {
		runChild(cfg, nil)
	}
	c := embertest.Start(t, cfg)
	ctx := testCtx(t)
	askErr := make(chan error, 1)
	go func() {
		_, err := dc.AskExecutor(ctx, "1", text("hang"))
		askErr <- err
	}()
	waitFile(t, dir, "in-receive")
	if err := c.Kill("1"); err != nil {
		t.Fatal(err)
	}
	// CodeUnavailable, not its ctx's DeadlineExceeded: the kill failed it.
	if err := <-askErr; plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("ask: got %v, want CodeUnavailable", err)
	}
	reason := <-removed
	if reason == nil || !strings.Contains(reason.Error(), "peer disconnected") || !strings.Contains(reason.Error(), "; executor process (pid ") ||
		!strings.Contains(reason.Error(), "signal: killed") {
		t.Errorf("OnExecutorRemoved: got reason %v, want the broken stream's and how the process ended (signal: killed)", reason)
	}
	if !errors.Is(reason, plugin.ErrClosed) || plugin.CodeOf(reason) != plugin.CodeUnavailable {
		t.Errorf("OnExecutorRemoved: got reason %v (code %v), want one matching plugin.ErrClosed with CodeUnavailable", reason, plugin.CodeOf(reason))
	}
	// The driver logs the loss once, with the executor, its pid and how
	// its process ended.
	embertest.WaitFor(t, "the log of the killed executor's loss, with how its process ended", func() bool {
		s := logs.String()
		return strings.Contains(s, `msg="executor lost" executor=1 `) && strings.Contains(s, "pid=") && strings.Contains(s, "signal: killed")
	})
	c.Close()
	if s := logs.String(); strings.Contains(s, `msg="executor ended"`) {
		t.Errorf("driver logs: got %q, want no \"executor ended\": the \"executor lost\" line said how it ended", s)
	}
}

// An executor that stops on its own (SIGTERM turned into the end of Run's
// ctx) leaves cleanly: its plugins' final sends reach the driver, and so
// must its final metrics ("Executors ship their metrics ... once more when
// they stop"), served for a while after it has gone. Before, it shipped
// none and the driver deleted every series of such an executor at once, so
// a farm worker scaled down with SIGTERM took its whole contribution (here
// a counter bumped in Shutdown) out of /metrics before a scrape saw it.
func TestExecutorStoppedOnItsOwnKeepsItsFinalMetrics(t *testing.T) {
	p := fakePlugin{
		name:      "final-metrics",
		newDriver: func() plugin.DriverPlugin { return &fakeDriver{} },
		newExecutor: func() plugin.ExecutorPlugin {
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "farm_builds_total", Help: "Builds."})
			return &fakeExecutor{
				InitF: func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
					c.Add(3) // shipped with the heartbeats
					return pc.Metrics().Register(c)
				},
				ShutdownF: func(context.Context) error { c.Add(4); return nil }, // only the final values carry it
			}
		},
	}
	cfg := ember.Config{Master: "standalone", Secret: "test secret", Plugins: []plugin.Plugin{p}, Logger: quiet,
		Conf: map[string]string{ember.ConfMetricsInterval: "20ms"}}
	d, cmd := standaloneWithOneExecutor(t, cfg)
	id := d.Executors()[0].ID
	labels := map[string]string{"plugin": "final-metrics", "executor": id}
	embertest.WaitFor(t, "the executor's heartbeat metrics", func() bool {
		v, ok := value(scrape(t, d.MetricsURL()), "farm_builds_total", labels)
		return ok && v == 3
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("executor process stopped by SIGTERM: %v", err)
	}
	embertest.WaitFor(t, "the executor gone", func() bool { return len(d.Executors()) == 0 })
	if v, ok := value(scrape(t, d.MetricsURL()), "farm_builds_total", labels); !ok || v != 7 {
		t.Errorf("farm_builds_total of executor %s after it stopped on its own: got %v (present %v), want its final value 7", id, v, ok)
	}
}

// standaloneWithOneExecutor starts cfg (Master "standalone", Secret "test
// secret") as a driver in this process and one executor process that stops
// on its own when sent SIGTERM, and waits until the executor is ready. In
// the executor process it runs the executor and exits.
func standaloneWithOneExecutor(t *testing.T, cfg ember.Config) (*ember.Driver, *exec.Cmd) {
	t.Helper()
	if isChild() {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		_ = ember.Run(ctx, cfg, nil) // an executor process: exits from here
	}
	d := standalone(t, cfg)
	cmd := startSelf(t, ember.EnvDriver+"="+d.Addr(), ember.EnvSecret+"=test secret")
	if err := d.WaitExecutors(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	return d, cmd
}

// An executor process whose ask gives up cancels the driver's handler
// across the process boundary: each executor's Init asks, then cancels.
// With one lane, the second ask's cancel arrives while the first holds
// the lane, so its handler starts with its ctx canceled already.
func TestAskCancelAcrossProcesses(t *testing.T) {
	causes := make(chan error, 2)
	p := fakePlugin{
		name: "longpoll",
		newDriver: func() plugin.DriverPlugin {
			return &fakeDriver{ReceiveF: func(ctx context.Context, _ any) (any, error) {
				<-ctx.Done()
				causes <- context.Cause(ctx)
				return nil, ctx.Err()
			}}
		},
		newExecutor: func() plugin.ExecutorPlugin {
			return &fakeExecutor{InitF: func(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
				ctx, cancel := context.WithCancel(ctx)
				stop := time.AfterFunc(100*time.Millisecond, cancel)
				defer stop.Stop()
				if _, err := pc.Ask(ctx, text("wait")); !errors.Is(err, context.Canceled) {
					return fmt.Errorf("Ask: got %v, want an error matching context.Canceled", err)
				}
				return nil
			}}
		},
	}
	cfg := ember.Config{Master: "local-cluster[2]", Plugins: []plugin.Plugin{p}, ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet}
	if isChild() {
		runChild(cfg, nil)
	}
	err := ember.Run(testCtx(t), cfg, func(ctx context.Context, _ *ember.Driver) error {
		for i := range 2 {
			select {
			case cause := <-causes:
				if !errors.Is(cause, plugin.ErrAskCanceled) {
					t.Errorf("handler %d: its ctx ended with the cause %v, want ErrAskCanceled", i, cause)
				}
			case <-ctx.Done():
				return fmt.Errorf("handler %d: its ctx did not end once its asker had given up", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("Run: %v", err)
	}
}

// A standalone executor whose Config leaves HeartbeatTimeout at zero waits
// ten of the driver's heartbeat intervals (those WELCOME announces), as
// docs/internals.md says, not ten of its own Config's: an executor built
// with a shorter HeartbeatInterval than the driver's (or the default 1s
// against a driver's 10s) declared its idle driver lost at the first
// quiet interval, over and over, though the driver accepts its own
// settings.
func TestStandaloneExecutorHeartbeatTimeoutFollowsTheDriver(t *testing.T) {
	cfg := ember.Config{Master: "standalone", Secret: "test secret", Logger: quiet,
		HeartbeatInterval: 300 * time.Millisecond, HeartbeatTimeout: 3 * time.Second}
	if isChild() {
		// The executor's own Config: a ten times shorter interval, and
		// so, by default, a timeout shorter than the driver's interval.
		cfg.HeartbeatInterval, cfg.HeartbeatTimeout = 20*time.Millisecond, 0
	}
	d, _ := standaloneWithOneExecutor(t, cfg)
	id := d.Executors()[0].ID
	// Idle for five of the driver's intervals: the executor stays.
	for end := time.Now().Add(15 * cfg.HeartbeatInterval); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if ex := d.Executors(); len(ex) != 1 || ex[0].ID != id {
			t.Fatalf("executors: got %v, want executor %s still there (idle, not lost)", ex, id)
		}
	}
}

// An executor process that its driver refuses for its secret exits with
// ExitMisconfigured (78), so that a service manager restarting executors
// can be told not to restart it; one that loses its driver still exits 1
// (TestDriverDiesWhileExecutorAsks). Both exited 1: under
// Restart=always, a host with the wrong secret was refused every few
// seconds for ever.
func TestMisconfiguredExecutorProcessExits78(t *testing.T) {
	if isChild() {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		_ = ember.Run(ctx, ember.Config{Master: "standalone", BuildID: "test", Logger: quiet}, nil) // exits
	}
	d := standalone(t, ember.Config{Secret: "the driver's secret 0123456789", BuildID: "test"})
	cmd := startSelf(t, ember.EnvDriver+"="+d.Addr(), ember.EnvSecret+"=another secret 0123456789")
	wantExit(t, cmd, ember.ExitMisconfigured, "once refused")
}

// An executor frozen (SIGSTOP) past the driver's heartbeat timeout is
// dropped by the driver; once it runs again it reads why, and says so as
// it exits: it said "peer closed the stream", as if the driver had ended
// it cleanly.
func TestFrozenExecutorSaysWhyItWasDropped(t *testing.T) {
	cfg := ember.Config{Master: "standalone", Secret: "test secret", BuildID: "test", Logger: quiet,
		HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 2 * time.Second}
	if isChild() {
		// Its own timeout far longer than the driver's, so that it hears
		// the driver's reason before it could give up on its own.
		cfg.HeartbeatTimeout = time.Hour
		f, err := os.Create(filepath.Join(os.Getenv(dirEnv), "executor.log"))
		if err != nil {
			os.Exit(4)
		}
		cfg.Logger = slog.New(slog.NewTextHandler(f, nil))
		_ = ember.Run(context.Background(), cfg, nil) // exits
	}
	dir := t.TempDir()
	d := standalone(t, cfg)
	cmd := startSelf(t, ember.EnvDriver+"="+d.Addr(), ember.EnvSecret+"=test secret", dirEnv+"="+dir)
	if err := d.WaitExecutors(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "the driver to drop the frozen executor", func() bool { return len(d.Executors()) == 0 })
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wantExit(t, cmd, 1, "once it ran again (it lost its driver)")
	b, err := os.ReadFile(filepath.Join(dir, "executor.log"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "the driver dropped this executor: peer silent for "
	if !strings.Contains(string(b), want) {
		t.Errorf("the executor's log does not say %q:\n%s", want, b)
	}
}

// A standalone executor stopped by SIGTERM names itself in its last line,
// as its "executor ready: joined the driver" line did: a fleet's executors
// log to one place, and that line, the last of its process, said
// "executor stopped: its ctx ended" without saying which executor had.
func TestExecutorsLastLineNamesIt(t *testing.T) {
	cfg := ember.Config{Master: "standalone", Secret: "test secret", BuildID: "test", Logger: quiet}
	if isChild() {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		f, err := os.Create(filepath.Join(os.Getenv(dirEnv), "executor.log"))
		if err != nil {
			os.Exit(4)
		}
		cfg.Logger = slog.New(slog.NewTextHandler(f, nil))
		_ = ember.Run(ctx, cfg, nil) // exits
	}
	dir := t.TempDir()
	d := standalone(t, cfg)
	cmd := startSelf(t, ember.EnvDriver+"="+d.Addr(), ember.EnvSecret+"=test secret", dirEnv+"="+dir)
	if err := d.WaitExecutors(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	id := d.Executors()[0].ID
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("executor process stopped by SIGTERM: got %v, want exit status 0", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "executor.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := `msg="executor stopped: its ctx ended" executor=` + id + " "
	if !strings.Contains(string(b), want) {
		t.Errorf("the executor's log does not say %q:\n%s", want, b)
	}
}

// secondRunLine is what a second ember.Run in an executor process logs.
const secondRunLine = "ember.Run called again in an executor process"

// Two local-cluster applications run at once in one process, as a service
// running two might. Each executor process runs the program again, and its
// first ember.Run becomes the executor; a second one there must neither run
// a driver nor return. It used to find EMBER_DRIVER gone (the executor
// unsets it) and start a driver of its own: the driver function ran in an
// executor process, whose own executors did the same, one level further
// for as long as the application ran.
func TestSecondRunInExecutorProcessRunsNoDriver(t *testing.T) {
	if !isChild() {
		t.Setenv(dirEnv, t.TempDir()) // local-cluster executors inherit it
	}
	dir := os.Getenv(dirEnv)
	cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet, MetricsAddr: "off"}
	if isChild() {
		go runChild(cfg, nil) // the executor: it exits the process
		embertest.WaitFor(t, "the first ember.Run to become the executor", func() bool {
			return os.Getenv(ember.EnvDriver) == ""
		})
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("LOG_%d", os.Getpid())))
		if err != nil {
			t.Fatal(err)
		}
		second := cfg
		second.Logger = slog.New(slog.NewTextHandler(f, nil))
		runChild(second, func(context.Context, *ember.Driver) error {
			return writeFile(dir, fmt.Sprintf("DRIVER_%d", os.Getpid()), "")
		})
	}
	pids := make(chan int, 2)
	release := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			errs <- ember.Run(testCtx(t), cfg, func(ctx context.Context, d *ember.Driver) error {
				pids <- d.Executors()[0].PID
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
	}
	for range 2 {
		pid := <-pids
		embertest.WaitFor(t, fmt.Sprintf("executor process %d to run a driver, or to say its second ember.Run waits", pid), func() bool {
			if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("DRIVER_%d", pid))); err == nil {
				return true
			}
			b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("LOG_%d", pid)))
			return strings.Contains(string(b), secondRunLine)
		})
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("DRIVER_%d", pid))); err == nil {
			t.Errorf("executor process %d ran a driver function: got a driver in an executor process, want its second ember.Run to wait", pid)
		}
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	}
}

// A local-cluster executor runs the program's main up to ember.Run, so a
// main that blocks before Run (here reading stdin, as a service reading its
// configuration there would; an executor's stdin is the driver's pipe,
// which stays open) leaves the driver waiting for executors that never
// connect. Its start-up error said "0 ready" alone, with nothing pointing
// at what main does before Run.
func TestStartUpTimeoutSaysNoExecutorConnected(t *testing.T) {
	if os.Getenv(ember.EnvDriver) != "" {
		_, _ = io.Copy(io.Discard, os.Stdin) // until the driver kills it
		os.Exit(1)
	}
	cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet,
		MetricsAddr: "off", StartTimeout: time.Second}
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error {
		t.Error("driver function ran without executors")
		return nil
	})
	for _, want := range []string{"Config.StartTimeout", "no executor process connected", "before ember.Run"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run: got %v, want an error containing %q", err, want)
		}
	}
}

// A local-cluster executor runs the program's main up to ember.Run, so a
// service whose main takes its fixed HTTP port (or a lock) before Run ends
// every executor there, with its own status, and one whose arguments lead
// main elsewhere (another subcommand) returns before Run. The start-up
// error said "exit status 1" or "exited" alone, with nothing pointing at
// what main does before Run.
func TestExecutorEndedBeforeHandshakeSaysWhereToLook(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		want   string
	}{
		{"failed", 1, "exit status 1"},
		{"returned", 0, "exited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Getenv(ember.EnvDriver) != "" {
				os.Exit(tc.status) // as main failing to listen, or returning, before Run
			}
			cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet,
				MetricsAddr: "off", Conf: map[string]string{ember.ConfExecutorMaxRetries: "0"}}
			err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error {
				t.Error("driver function ran without executors")
				return nil
			})
			for _, want := range []string{"ended during start-up", tc.want, "before its handshake", "before ember.Run"} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Run: got %v, want an error containing %q", err, want)
				}
			}
		})
	}
}

// An executor that reached ember.Run and failed there (its plugin's Init)
// gets no such hint: its error says why.
func TestExecutorInitFailureHasNoBeforeRunHint(t *testing.T) {
	cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet,
		MetricsAddr: "off", Plugins: []plugin.Plugin{failingExecutorInit{}}}
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error {
		t.Error("driver function ran without executors")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "no thanks") {
		t.Fatalf("Run: got %v, want the executor plugin's Init error", err)
	}
	if strings.Contains(err.Error(), "before its handshake") {
		t.Errorf("Run: got %v, want no hint about main before ember.Run", err)
	}
}

type failingExecutorInit struct{}

func (failingExecutorInit) Name() string                      { return "failing-init" }
func (failingExecutorInit) DriverPlugin() plugin.DriverPlugin { return nil }
func (failingExecutorInit) ExecutorPlugin() plugin.ExecutorPlugin {
	return failingInitExecutor{}
}

type failingInitExecutor struct{ plugin.BaseExecutorPlugin }

func (failingInitExecutor) Init(context.Context, plugin.ExecutorContext, map[string]string) error {
	return errors.New("no thanks")
}

// slowLine is a slog handler that takes delay to write the line msg: an
// executor's last words, after its stream has ended.
type slowLine struct {
	slog.Handler
	msg   string
	delay time.Duration
}

func (h slowLine) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		time.Sleep(h.delay)
	}
	return h.Handler.Handle(ctx, r)
}

// An executor process that stops on its own (a SIGTERM to every process of
// the service, as systemd sends by default) and then shuts the driver down
// exits by itself. The driver, once closed, killed it if it had not
// exited yet, since it had not released it, and logged at Warn that it
// "ended" by "signal: killed": at every such stop whose executor took a
// moment to exit.
func TestExecutorThatLeftIsNotKilledAtShutdown(t *testing.T) {
	cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t), MetricsAddr: "off"}
	if isChild() {
		cfg.Logger = slog.New(slowLine{Handler: slog.NewTextHandler(io.Discard, nil), msg: "executor stopped: its ctx ended", delay: time.Second})
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		_ = ember.Run(ctx, cfg, nil) // exits, as the executor
		os.Exit(1)
	}
	var logs logtest.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	err := ember.Run(testCtx(t), cfg, func(ctx context.Context, d *ember.Driver) error {
		if err := syscall.Kill(d.Executors()[0].PID, syscall.SIGTERM); err != nil {
			return err
		}
		embertest.WaitFor(t, "the executor to leave", func() bool {
			return strings.Contains(logs.String(), "executor left: it stopped on its own")
		})
		return nil
	})
	if err != nil {
		t.Fatalf("Run: got %v, want nil", err)
	}
	if strings.Contains(logs.String(), "executor ended") {
		t.Errorf("driver logs: got %q, want no executor ended (it exits by itself once it has left)", logs.String())
	}
}
