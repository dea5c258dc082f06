package ember_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/plugin"
)

// outlivesItsExecutor's first attempt says where it runs, in a file under
// dir, and waits to be killed with its executor; later attempts return the
// ID of the executor that ran them.
var outlivesItsExecutor = ember.NewTask("test.outlives-its-executor", func(ctx context.Context, tc ember.TaskContext, dir string) (string, error) {
	if tc.Attempt == 0 {
		if err := writeFile(dir, "first-attempt", tc.ExecutorID); err != nil {
			return "", err
		}
		<-ctx.Done()
		return "", ctx.Err()
	}
	return tc.ExecutorID, nil
})

// exitsCleanlyOnce's first attempt ends its executor's process with status
// 0, as a library calling os.Exit(0) would; later attempts return the ID
// of the executor that ran them.
var exitsCleanlyOnce = ember.NewTask("test.exits-cleanly-once", func(ctx context.Context, tc ember.TaskContext, _ int) (string, error) {
	if tc.Attempt == 0 {
		os.Exit(0)
	}
	return tc.ExecutorID, nil
})

// membership is a driver plugin that records the executors added and
// removed.
type membership struct {
	mu             sync.Mutex
	added, removed []string
}

// localCluster returns the configuration of a local-cluster[1] whose one
// plugin records membership in m on the driver and runs init (if not nil)
// as its executor side's Init, logging to logs.
func (m *membership) localCluster(t *testing.T, logs *logtest.Buffer, init func(context.Context, plugin.ExecutorContext, map[string]string) error) ember.Config {
	t.Helper()
	p := fakePlugin{
		name: "membership",
		newDriver: func() plugin.DriverPlugin {
			return &listeningDriver{
				AddedF: func(_ context.Context, e plugin.ExecutorInfo) {
					m.mu.Lock()
					defer m.mu.Unlock()
					m.added = append(m.added, e.ID)
				},
				RemovedF: func(_ context.Context, e plugin.ExecutorInfo, _ error) {
					m.mu.Lock()
					defer m.mu.Unlock()
					m.removed = append(m.removed, e.ID)
				},
			}
		},
		newExecutor: func() plugin.ExecutorPlugin { return &fakeExecutor{InitF: init} },
	}
	return ember.Config{
		Master:       "local-cluster[1]",
		Plugins:      []plugin.Plugin{p},
		ExecutorArgs: embertest.ExecutorArgs(t),
		Logger:       slog.New(slog.NewTextHandler(logs, nil)),
	}
}

// startLocalCluster starts m.localCluster with no executor Init, this
// test's executor processes serving it (a child process never returns).
func (m *membership) startLocalCluster(t *testing.T, logs *logtest.Buffer) *embertest.Cluster {
	t.Helper()
	cfg := m.localCluster(t, logs, nil)
	if isChild() {
		runChild(cfg, nil)
	}
	return embertest.Start(t, cfg)
}

func (m *membership) counts() (added, removed int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.added), len(m.removed)
}

// A local-cluster replaces an executor process that dies (killed here, as
// the OOM killer would): a new process joins with a new ID, the lost
// executor's task runs again on it, and the job succeeds. Before, the
// cluster ran on one executor short for the rest of its life, and a job
// that lost its last executor failed.
func TestLocalClusterReplacesALostExecutor(t *testing.T) {
	dir := sharedDir(t)
	var m membership
	var logs logtest.Buffer
	c := m.startLocalCluster(t, &logs)
	type result struct {
		out []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := ember.Map(testCtx(t), c.Driver, outlivesItsExecutor, []string{dir})
		done <- result{out, err}
	}()
	lost := waitFile(t, dir, "first-attempt")
	if err := c.Kill(lost); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Map across the loss of its only executor: %v", r.err)
	}
	if r.out[0] == lost || r.out[0] == "" {
		t.Errorf("the second attempt ran on executor %q, want the replacement of %q", r.out[0], lost)
	}
	execs := c.Driver.Executors()
	if len(execs) != 1 || execs[0].ID != r.out[0] {
		t.Errorf("executors after the replacement: got %v, want just %s", execs, r.out[0])
	}
	embertest.WaitFor(t, "OnExecutorAdded twice and OnExecutorRemoved once", func() bool {
		added, removed := m.counts()
		return added == 2 && removed == 1
	})
	// The lost executor had been ready: not a failed replacement. But it
	// crashed soon after it became ready, so its replacement waits the
	// first backoff.
	if s := logs.String(); !strings.Contains(s, `msg="replacing a lost executor" executor=`+lost+" pid=") ||
		!strings.Contains(s, "after=100ms failed_in_a_row=0 crashed_soon_in_a_row=1") {
		t.Errorf("the driver did not log the replacement of an executor that crashed soon; the log:\n%s", s)
	}
	if lost, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_executors_lost_total", nil); lost != 1 {
		t.Errorf("ember_executors_lost_total: got %v, want 1", lost)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if added, _ := m.counts(); added != 2 {
		t.Errorf("executors added by the end: got %d, want 2 (none replaced at shutdown)", added)
	}
}

// A local-cluster executor process frozen (SIGSTOP, or a runtime stuck)
// past the heartbeat timeout is lost, and killed, so that it is replaced:
// the driver waited for the process to exit before replacing it, and a
// frozen one never does, so the cluster ran one executor short for as
// long as it stayed frozen.
func TestLocalClusterReplacesAFrozenExecutor(t *testing.T) {
	var m membership
	var logs logtest.Buffer
	cfg := m.localCluster(t, &logs, nil)
	cfg.HeartbeatInterval, cfg.HeartbeatTimeout = 100*time.Millisecond, time.Second
	if isChild() {
		runChild(cfg, nil)
	}
	c := embertest.Start(t, cfg)
	frozen := c.Driver.Executors()[0]
	if err := syscall.Kill(frozen.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Without the fix the process stays frozen: let it go at the end.
	// Only then: once killed, its PID may be another process's.
	t.Cleanup(func() {
		if t.Failed() {
			_ = syscall.Kill(frozen.PID, syscall.SIGCONT)
		}
	})
	embertest.WaitFor(t, "a replacement of the frozen executor", func() bool {
		execs := c.Driver.Executors()
		return len(execs) == 1 && execs[0].ID != frozen.ID
	})
	embertest.WaitFor(t, "the frozen executor's process to end", func() bool {
		return syscall.Kill(frozen.PID, 0) != nil
	})
	if lost, _ := value(scrape(t, c.Driver.MetricsURL()), "ember_executors_lost_total", nil); lost != 1 {
		t.Errorf("ember_executors_lost_total: got %v, want 1", lost)
	}
	if s := logs.String(); !strings.Contains(s, `msg="replacing a lost executor" executor=`+frozen.ID+" pid=") {
		t.Errorf("the driver did not log the replacement of executor %s; the log:\n%s", frozen.ID, s)
	}
}

// An executor that freezes during start-up (here its plugin's Init stops
// its own process) is lost and killed; start-up fails, and its error says
// that the driver killed it. It said "signal: killed" alone, the OOM
// killer's signature.
func TestStartUpErrorSaysTheDriverKilledAFrozenExecutor(t *testing.T) {
	p := fakePlugin{name: "freezes", newExecutor: func() plugin.ExecutorPlugin {
		return &fakeExecutor{InitF: func(ctx context.Context, _ plugin.ExecutorContext, _ map[string]string) error {
			if err := syscall.Kill(os.Getpid(), syscall.SIGSTOP); err != nil {
				return err
			}
			// The process stops as each of its threads next enters the
			// kernel: returning, Init let READY out first (1 run in 8).
			<-ctx.Done()
			return ctx.Err()
		}}
	}}
	cfg := ember.Config{Master: "local-cluster[1]", ExecutorArgs: embertest.ExecutorArgs(t), Logger: quiet, MetricsAddr: "off",
		Plugins: []plugin.Plugin{p}, HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: time.Second}
	if isChild() {
		runChild(cfg, nil)
	}
	err := ember.Run(testCtx(t), cfg, func(context.Context, *ember.Driver) error {
		t.Error("the driver function ran, its executor frozen")
		return nil
	})
	const want = "killed by the driver, which had lost it"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: got %v, want an error saying %q", err, want)
	}
}

// Replacements that fail before they are ready (here every executor's
// Init fails once a file exists: a broken deployment) are given up after
// ember.executor.maxRetries in a row. A job waiting for an executor then
// fails saying why, instead of waiting for ever, and the driver logs it.
// Each failed replacement is logged once at Error ("executor failed to
// initialise"), and its process's exit (status 1, as every such
// executor's) at Debug alone: it used to add a Warn "executor ended" for
// each, the same failure told twice.
func TestLocalClusterStopsReplacingExecutorsThatFail(t *testing.T) {
	dir := sharedDir(t)
	var m membership
	var logs logtest.Buffer
	cfg := m.localCluster(t, &logs, func(_ context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
		if _, err := os.Stat(filepath.Join(pc.Conf().Get(dirConf), "broken")); err == nil {
			return errors.New("the deployment is broken")
		}
		return nil
	})
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Conf = map[string]string{dirConf: dir, ember.ConfExecutorMaxRetries: "2"}
	if isChild() {
		runChild(cfg, nil)
	}
	c := embertest.Start(t, cfg)
	if err := writeFile(dir, "broken", "yes"); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(c.Driver.Executors()[0].ID); err != nil {
		t.Fatal(err)
	}
	_, err := ember.Map(testCtx(t), c.Driver, double, []int{1})
	if plugin.CodeOf(err) != plugin.CodeUnavailable || !strings.Contains(err.Error(), "lost executors are no longer replaced: the last 2 replacements ended before they were ready") ||
		!strings.Contains(err.Error(), "the deployment is broken") {
		t.Errorf("Map once replacements failed: got %v, want Unavailable saying they were given up, and the last one's Init error", err)
	}
	if s := logs.String(); !strings.Contains(s, `msg="lost executors are no longer replaced"`) {
		t.Errorf("the driver did not log giving up; the log:\n%s", s)
	}
	if added, _ := m.counts(); added != 1 {
		t.Errorf("executors added: got %d, want 1 (no replacement became ready)", added)
	}
	const ended = `msg="executor ended"`
	embertest.WaitFor(t, "the exits of both failed replacements", func() bool { return strings.Count(logs.String(), ended) == 2 })
	s := logs.String()
	if n := strings.Count(s, `level=DEBUG `+ended); n != 2 {
		t.Errorf("exits of the failed replacements at Debug: got %d, want 2; the log:\n%s", n, s)
	}
	if n := strings.Count(s, `level=ERROR msg="executor failed to initialise"`); n != 2 {
		t.Errorf("failed replacements at Error: got %d, want 2; the log:\n%s", n, s)
	}
}

// A local-cluster executor process that stops on its own (a SIGTERM that
// its program turns into the end of Run's ctx, as when a service manager
// stops every process of the service) exits cleanly and is not replaced:
// replacing it would fight the stop.
func TestLocalClusterLeavesAnExecutorThatStoppedOnItsOwn(t *testing.T) {
	var m membership
	var logs logtest.Buffer
	cfg := m.localCluster(t, &logs, nil)
	if isChild() { // an executor: Run ends the process
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		_ = ember.Run(ctx, cfg, nil)
	}
	c := embertest.Start(t, cfg)
	e := c.Driver.Executors()[0]
	p, err := os.FindProcess(e.PID)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	embertest.WaitFor(t, "the driver's log that the executor stopped on its own and is not replaced", func() bool {
		return strings.Contains(logs.String(), `msg="executor process stopped on its own: not replaced"`)
	})
	if lost, ok := value(scrape(t, c.Driver.MetricsURL()), "ember_executors_lost_total", nil); !ok || lost != 0 {
		t.Errorf("ember_executors_lost_total after a stop on its own: got %v (present %v), want 0", lost, ok)
	}
	// No executor is left, and none will come: a job fails, as on a
	// local[N], instead of waiting for a replacement.
	if _, err := ember.Map(testCtx(t), c.Driver, double, []int{1}); plugin.CodeOf(err) != plugin.CodeUnavailable {
		t.Errorf("Map once the only executor stopped on its own: got %v, want Unavailable", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if added, removed := m.counts(); added != 1 || removed != 1 {
		t.Errorf("executors added and removed: got %d and %d, want 1 and 1", added, removed)
	}
	if s := logs.String(); strings.Contains(s, "replacing a lost executor") {
		t.Errorf("the driver replaced an executor that stopped on its own; the log:\n%s", s)
	}
}

// A replacement runs the driver's own binary even once the file it was
// started from is gone (deleted here; a redeploy that rebuilds it in place
// is the same): on Linux it is started from /proc/self/exe. Before, it was
// started from the path, and failed to start, or ran the new build, which
// the handshake refused, until the driver gave up replacing.
func TestReplacementRunsTheDriversBinaryWhenItsFileIsGone(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the running binary is reached through /proc/self/exe on Linux only")
	}
	dir := os.Getenv(dirEnv)
	cfg := ember.Config{
		Master:       "local-cluster[1]",
		ExecutorArgs: embertest.ExecutorArgs(t),
		Logger:       quiet,
	}
	if isChild() {
		runChild(cfg, func(ctx context.Context, d *ember.Driver) error {
			first := d.Executors()[0].PID
			if err := writeFile(dir, "pid", strconv.Itoa(first)); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, embertest.DefaultTimeout)
			defer cancel()
			for {
				if e := d.Executors(); len(e) == 1 && e[0].PID != first {
					return writeFile(dir, "replaced", strconv.Itoa(e[0].PID))
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("no replacement ready: %w", ctx.Err())
				case <-time.After(time.Millisecond):
				}
			}
		})
	}
	dir = t.TempDir()
	bin := filepath.Join(t.TempDir(), "app.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	driver := startBinary(t, bin, roleEnv+"=driver", dirEnv+"="+dir)
	pid, err := strconv.Atoi(waitFile(t, dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFile(t, dir, "replaced")
	if err := driver.Wait(); err != nil {
		t.Errorf("driver: got %v, want exit status 0", err)
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// An executor process that exits with status 0 without having said it was
// stopping (a task that called os.Exit(0)) crashed all the same: it is
// replaced, and the task runs again on the replacement. Taken for a stop
// on its own, it left the cluster one executor short for good.
func TestLocalClusterReplacesAnExecutorThatExitedCleanlyWithoutStopping(t *testing.T) {
	var m membership
	var logs logtest.Buffer
	c := m.startLocalCluster(t, &logs)
	first := c.Driver.Executors()[0].ID
	out, err := ember.Map(testCtx(t), c.Driver, exitsCleanlyOnce, []int{1})
	if err != nil {
		t.Fatalf("Map across an executor's os.Exit(0): %v", err)
	}
	if out[0] == first {
		t.Errorf("the second attempt ran on executor %s, want its replacement", out[0])
	}
	if s := logs.String(); strings.Contains(s, "stopped on its own") || !strings.Contains(s, `msg="replacing a lost executor"`) {
		t.Errorf("want the executor replaced, not taken for one that stopped on its own; the log:\n%s", s)
	}
}
