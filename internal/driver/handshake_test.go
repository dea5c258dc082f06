package driver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/wire"
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
				Plugins: driverPlugins, MessageTypes: driverTypes, Tasks: driverTasks, MaxMessageBytes: driverMax})
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
