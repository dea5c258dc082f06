package driver

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/logtest"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	dto "github.com/prometheus/client_model/go"
)

func TestCheckHello(t *testing.T) {
	t.Parallel()
	const build = "build-1"
	driverPlugins := []string{"alpha", "beta", "gamma"}
	driverTypes := []string{"m.A", "m.B"}
	driverTasks := []string{"square", "sum"}
	const driverMax = 4 << 20
	// hello returns an executor HELLO that agrees with the driver, changed by edit.
	hello := func(edit func(h *wire.Hello)) *wire.Hello {
		h := &wire.Hello{
			ProtocolVersion: wire.ProtocolVersion,
			BuildId:         build,
			Plugins:         []string{"alpha", "beta", "gamma"},
			MessageTypes:    []string{"m.A", "m.B"},
			Tasks:           []string{"square", "sum"},
			MaxMessageBytes: driverMax,
		}
		if edit != nil {
			edit(h)
		}
		return h
	}
	tests := []struct {
		name   string
		hello  *wire.Hello
		want   []string // substrings of the message; none: agreement
		reject []string // substrings the message must not contain
	}{
		{name: "equal", hello: hello(nil)},
		{
			name:   "missing plugin",
			hello:  hello(func(h *wire.Hello) { h.Plugins = []string{"alpha", "gamma"} }),
			want:   []string{"plugins differ", `missing on the executor: ["beta"]`},
			reject: []string{"only on the executor", "order differs"},
		},
		{
			name:   "extra plugin",
			hello:  hello(func(h *wire.Hello) { h.Plugins = []string{"alpha", "beta", "gamma", "delta"} }),
			want:   []string{"plugins differ", `only on the executor: ["delta"]`},
			reject: []string{"missing on the executor", "order differs"},
		},
		{
			name:  "missing and extra",
			hello: hello(func(h *wire.Hello) { h.Plugins = []string{"alpha", "omega", "gamma"} }),
			want:  []string{`missing on the executor: ["beta"]`, `only on the executor: ["omega"]`},
		},
		{
			name:  "no plugins on the executor",
			hello: hello(func(h *wire.Hello) { h.Plugins = nil }),
			want:  []string{`missing on the executor: ["alpha" "beta" "gamma"]`},
		},
		{
			name:   "same plugins, other order",
			hello:  hello(func(h *wire.Hello) { h.Plugins = []string{"beta", "alpha", "gamma"} }),
			want:   []string{"plugins differ", "order differs", `driver ["alpha" "beta" "gamma"]`, `executor ["beta" "alpha" "gamma"]`},
			reject: []string{"missing", "only on"},
		},
		{
			name:  "protocol version",
			hello: hello(func(h *wire.Hello) { h.ProtocolVersion = 1 }),
			want:  []string{"protocol version", fmt.Sprintf("driver %d", wire.ProtocolVersion), "executor 1"},
		},
		{
			name:  "build ID",
			hello: hello(func(h *wire.Hello) { h.BuildId = "build-2" }),
			want:  []string{"build ID", `driver "build-1"`, `executor "build-2"`},
		},
		{
			name:  "message type missing",
			hello: hello(func(h *wire.Hello) { h.MessageTypes = []string{"m.A"} }),
			want:  []string{"message types differ", `missing on the executor: ["m.B"]`},
		},
		{
			name:  "message type extra",
			hello: hello(func(h *wire.Hello) { h.MessageTypes = []string{"m.A", "m.B", "m.C"} }),
			want:  []string{"message types differ", `only on the executor: ["m.C"]`},
		},
		{
			// Both ends sort them, and frames carry a type's index in the
			// list: in another order, or with one twice, they would name
			// other types (only a peer not built from Ember sends that).
			name:  "message types in another order",
			hello: hello(func(h *wire.Hello) { h.MessageTypes = []string{"m.B", "m.A"} }),
			want:  []string{"message types differ", "order differs"},
		},
		{
			name:  "a message type twice",
			hello: hello(func(h *wire.Hello) { h.MessageTypes = []string{"m.A", "m.A", "m.B"} }),
			want:  []string{"message types differ"},
		},
		{
			name:  "task missing",
			hello: hello(func(h *wire.Hello) { h.Tasks = []string{"square"} }),
			want:  []string{"tasks differ", `missing on the executor: ["sum"]`, "package-level vars"},
		},
		{
			name:  "tasks in another order",
			hello: hello(func(h *wire.Hello) { h.Tasks = []string{"sum", "square"} }),
			want:  []string{"tasks differ", "order differs"},
		},
		{
			name:  "larger message limit",
			hello: hello(func(h *wire.Hello) { h.MaxMessageBytes = 8 << 20 }),
			want:  []string{"message limit: driver 4194304 bytes, executor 8388608", "Config.MaxMessageBytes"},
		},
		{
			name:  "smaller message limit",
			hello: hello(func(h *wire.Hello) { h.MaxMessageBytes = 1 << 20 }),
			want:  []string{"message limit: driver 4194304 bytes, executor 1048576"},
		},
		{
			name: "everything differs",
			hello: &wire.Hello{ProtocolVersion: 0, BuildId: "", Plugins: []string{"gamma", "beta", "alpha"},
				MessageTypes: []string{"m.Z"}, Tasks: nil},
			want: []string{"protocol version", "build ID", "plugins differ: order differs",
				"message types differ", `only on the executor: ["m.Z"]`, "tasks differ", "message limit"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := checkHello(tt.hello, &wire.Hello{ProtocolVersion: wire.ProtocolVersion, BuildId: build,
				Plugins: driverPlugins, MessageTypes: driverTypes, Tasks: driverTasks, MaxMessageBytes: driverMax}, nil)
			if len(tt.want) == 0 {
				if got != "" {
					t.Errorf("checkHello = %q, want agreement (\"\")", got)
				}
				return
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("checkHello = %q, want it to contain %q", got, w)
				}
			}
			for _, r := range tt.reject {
				if strings.Contains(got, r) {
					t.Errorf("checkHello = %q, want it not to contain %q", got, r)
				}
			}
		})
	}
}

func TestListDiff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		driver, executor []string
		want             string
	}{
		{"both empty", nil, nil, ""},
		{"nil and empty agree", nil, []string{}, ""},
		{"equal", []string{"a", "b"}, []string{"a", "b"}, ""},
		{"swap", []string{"a", "b"}, []string{"b", "a"}, `things differ: order differs: driver ["a" "b"], executor ["b" "a"]`},
		{"twice", []string{"a", "b"}, []string{"a", "a", "b"}, `things differ: order differs: driver ["a" "b"], executor ["a" "a" "b"]`},
		{"missing", []string{"a", "b"}, []string{"a"}, `things differ: missing on the executor: ["b"]`},
		{"extra", []string{"a"}, []string{"a", "b"}, `things differ: only on the executor: ["b"]`},
		{"both", []string{"a", "b"}, []string{"a", "c"}, `things differ: missing on the executor: ["b"], only on the executor: ["c"]`},
		{"names with spaces are quoted", []string{"my plugin"}, nil, `things differ: missing on the executor: ["my plugin"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := listDiff("things", tt.driver, tt.executor); got != tt.want {
				t.Errorf("listDiff(%q, %q) = %q, want %q", tt.driver, tt.executor, got, tt.want)
			}
		})
	}
}

// A task the executor lacks is named with where the driver registered it,
// so that a task made in a test function (which breaks the handshake of a
// later test's local-cluster executors, not its own) leads to that test.
func TestCheckHelloNamesTaskSites(t *testing.T) {
	t.Parallel()
	want := &wire.Hello{ProtocolVersion: wire.ProtocolVersion, Tasks: []string{"square", "late"}}
	h := &wire.Hello{ProtocolVersion: wire.ProtocolVersion, Tasks: []string{"square"}}
	sites := map[string]string{"square": "tasks.go:3 in app.init", "late": "a_test.go:12 in app.TestA"}
	got := checkHello(h, want, sites)
	const w = `tasks differ: missing on the executor: ["late"] ("late" registered at a_test.go:12 in app.TestA; declare tasks with ember.NewTask in package-level vars`
	if !strings.Contains(got, w) {
		t.Errorf("checkHello = %q, want it to contain %q", got, w)
	}
	if strings.Contains(got, "app.init") {
		t.Errorf("checkHello = %q, want no site of a task the executor has", got)
	}
}

func TestTaskSites(t *testing.T) {
	t.Parallel()
	sites := map[string]string{"a": "a.go:1 in p.init", "b": "b.go:2 in p.TestB", "c": "c.go:3 in p.TestC",
		"d": "d.go:4 in p.TestD", "e": "e.go:5 in p.TestE"}
	tests := []struct {
		name             string
		driver, executor []string
		sites            map[string]string
		want             string
	}{
		{"no sites", []string{"a", "b"}, []string{"a"}, nil, ""},
		{"none missing", []string{"a", "b"}, []string{"b", "a"}, sites, ""},
		{"only on the executor", []string{"a"}, []string{"a", "b"}, sites, ""},
		{"one missing", []string{"a", "b"}, []string{"a"}, sites, `"b" registered at b.go:2 in p.TestB; `},
		{"missing without a site", []string{"a", "x"}, []string{"a"}, sites, ""},
		{"a few, in the driver's order", []string{"a", "c", "b"}, nil, sites,
			`"a" registered at a.go:1 in p.init; "c" registered at c.go:3 in p.TestC; "b" registered at b.go:2 in p.TestB; `},
		{"more than a few", []string{"a", "b", "c", "d", "e"}, nil, sites,
			`"a" registered at a.go:1 in p.init; "b" registered at b.go:2 in p.TestB; "c" registered at c.go:3 in p.TestC; …; `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := taskSites(tt.driver, tt.executor, tt.sites); got != tt.want {
				t.Errorf("taskSites(%q, %q) = %q, want %q", tt.driver, tt.executor, got, tt.want)
			}
		})
	}
}

// Executors refused for a handshake mismatch are logged within a budget:
// a fleet of hosts left on another build, their supervisor restarting
// each as it exits, logged an Error per attempt. The lines beyond the
// budget are held back, and the next window's first says how many; the
// metric counts every one.
func TestMismatchErrorsAreBounded(t *testing.T) {
	var logs logtest.Buffer
	d := servedDriver(t, func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		cfg.BuildID = "build-1"
	})
	t.Cleanup(func() { d.Close() })
	const n = rpc.LogBurst + 3
	for range n {
		stream := handshake(t, d, func(h *wire.Hello) { h.BuildId = "build-2" })
		if b, err := stream.Recv(); err != nil || b.Frames[0].Welcome == nil || b.Frames[0].Welcome.Code == 0 {
			t.Fatalf("WELCOME of an executor of another build: got %v, %v; want a refusal", b, err)
		}
	}
	mismatches := func() float64 {
		var m dto.Metric
		if err := d.builtin.Mismatches.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	waitUntil(t, fmt.Sprintf("ember_handshake_mismatches_total at %d", n), func() bool { return mismatches() == n })
	s := logs.String()
	if got := strings.Count(s, `msg="refused executor: handshake mismatch"`); got != rpc.LogBurst {
		t.Errorf("mismatch lines: got %d, want %d (the budget); the log:\n%s", got, rpc.LogBurst, s)
	}
	if !strings.Contains(s, `msg="more errors of executors refused for a handshake mismatch are held back`) {
		t.Errorf("the log does not say that more are held back:\n%s", s)
	}
}
