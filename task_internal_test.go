package ember

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func noTask(context.Context, TaskContext, []byte) ([]byte, error) { return nil, nil }

// A sealed registry refuses new tasks, saying when NewTask was called and
// where to register instead; the tasks it had stay as they were. A task
// registered in a test function, or after Run, used to be added: the
// driver's list then had it and the executors of every later
// local-cluster Run in the process did not, so their handshake failed, in
// a test that had done nothing wrong.
func TestTaskRegistrySeal(t *testing.T) {
	tests := []struct {
		name  string
		seals []string // in order, before adding "b"
		want  []string // in add's message; none: "b" is added
	}{
		{name: "not sealed"},
		{name: "sealed by Run", seals: []string{sealedByRun},
			want: []string{`ember.NewTask "b": called after ember.Run was called in this process;`, `at package level instead, var t = ember.NewTask("b", ...),`}},
		{name: "sealed by embertest.Main", seals: []string{sealedByTests},
			want: []string{`ember.NewTask "b": called from a test, after embertest.Main started the tests`, "missing from every other test's executors", `at package level instead, var t = ember.NewTask("b", ...),`}},
		{name: "the first seal says when", seals: []string{sealedByTests, sealedByRun},
			want: []string{"called from a test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := new(taskRegistry)
			if msg := r.add(&taskEntry{name: "a", run: noTask}); msg != "" {
				t.Fatalf("add(a) to a new registry: got %q, want \"\"", msg)
			}
			for _, s := range tt.seals {
				r.seal(s)
			}
			msg := r.add(&taskEntry{name: "b", run: noTask})
			wantNames := []string{"a", "b"}
			if len(tt.want) > 0 {
				wantNames = []string{"a"}
			}
			if got := r.list(); !slices.Equal(got, wantNames) {
				t.Errorf("list() = %q, want %q", got, wantNames)
			}
			if len(tt.want) == 0 && msg != "" {
				t.Errorf("add(b): got %q, want \"\"", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("add(b): got %q, want it to contain %q", msg, w)
				}
			}
			if len(tt.seals) > 1 && strings.Contains(msg, tt.seals[1]) {
				t.Errorf("add(b): got %q, want only the first seal's words", msg)
			}
		})
	}
}

// A name taken is refused whether or not the registry is sealed, and the
// first registration stays.
func TestTaskRegistryDuplicate(t *testing.T) {
	r := new(taskRegistry)
	first := &taskEntry{name: "a", run: noTask}
	r.add(first)
	if got, want := r.add(&taskEntry{name: "a", run: noTask}), `ember.NewTask: task "a" registered twice`; got != want {
		t.Errorf("add(a) again: got %q, want %q", got, want)
	}
	if got := r.lookup("a"); got != first {
		t.Errorf("lookup(a) = %p, want the first entry %p", got, first)
	}
}

// withTasks makes r the process's task registry until t ends. The test
// must not run in parallel with any that reaches the registry (every
// cluster does).
func withTasks(t *testing.T, r *taskRegistry) {
	saved := tasks
	tasks = r
	t.Cleanup(func() { tasks = saved })
}

// Run seals the registry, even when it fails at once: NewTask in the
// driver function used to register a task its executors did not have
// (Map failed with NotFound only when called), and one registered after
// Run returned broke the handshake of the next Run's executors.
func TestRunSealsTasks(t *testing.T) {
	r := new(taskRegistry)
	withTasks(t, r)
	NewTask("before-run", func(context.Context, TaskContext, int) (int, error) { return 0, nil })
	if err := Run(context.Background(), Config{Master: "nonsense"}, nil); err == nil {
		t.Fatal("Run with Master \"nonsense\": got nil, want an error")
	}
	defer func() {
		r := fmt.Sprint(recover())
		if !strings.Contains(r, `ember.NewTask "after-run": called after ember.Run was called in this process`) {
			t.Errorf("NewTask after Run: got panic %q, want it to say it was called after Run", r)
		}
		if got, want := Tasks(), []string{"before-run"}; !slices.Equal(got, want) {
			t.Errorf("Tasks() = %q, want %q", got, want)
		}
	}()
	NewTask("after-run", func(context.Context, TaskContext, int) (int, error) { return 0, nil })
}

// What neither seal catches: in a test package whose TestMain is not
// embertest.Main, the first test to run a cluster makes a task in its
// function. Its own executors run that test and have the task; a later
// test's do not, and its start-up fails. The error names the task and the
// test that made it, where it used to name the task alone. Here the
// driver's registry gets the task as that first test's did, and the
// executor, this test re-executed, has the package-level tasks.
func TestHandshakeNamesWhereAMissingTaskWasMade(t *testing.T) {
	cfg := Config{Master: "local-cluster[1]", Logger: slog.New(slog.DiscardHandler),
		ExecutorArgs: []string{"-test.run=^TestHandshakeNamesWhereAMissingTaskWasMade$", "-test.count=1"}}
	if os.Getenv(EnvDriver) != "" {
		_ = Run(context.Background(), cfg, nil) // the executor: never returns
	}
	r := new(taskRegistry)
	for _, name := range tasks.list() {
		r.add(tasks.lookup(name))
	}
	withTasks(t, r)
	_, file, line, _ := runtime.Caller(0)
	NewTask("test.made-in-an-earlier-test", func(context.Context, TaskContext, int) (int, error) { return 0, nil })
	err := Run(context.Background(), cfg, func(context.Context, *Driver) error { return nil })
	want := fmt.Sprintf(`tasks differ: missing on the executor: ["test.made-in-an-earlier-test"] `+
		`("test.made-in-an-earlier-test" registered at %s:%d in github.com/emberhq/ember.TestHandshakeNamesWhereAMissingTaskWasMade; `, file, line+1)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run: got %v, want an error containing %q", err, want)
	}
}

// A task declared in a package-level var is registered by its package's
// init, which its site names.
func TestTaskSiteOfAPackageLevelVar(t *testing.T) {
	got := tasks.sites()["test.double"] // var double, in task_test.go
	for _, want := range []string{"/task_test.go:", " in github.com/emberhq/ember_test.init"} {
		if !strings.Contains(got, want) {
			t.Errorf("site of test.double: got %q, want it to contain %q", got, want)
		}
	}
}
