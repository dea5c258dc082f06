package plugin_test

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emberhq/ember/plugin"
)

// namedPlugin is a plugin with no sides; the registry only needs a name.
type namedPlugin struct{ name string }

func (p *namedPlugin) Name() string                          { return p.name }
func (p *namedPlugin) DriverPlugin() plugin.DriverPlugin     { return nil }
func (p *namedPlugin) ExecutorPlugin() plugin.ExecutorPlugin { return nil }

var _ plugin.Plugin = (*namedPlugin)(nil)

// runID makes plugin names unique per test run: the registry is global and
// outlives a run under -count.
var runID atomic.Int64

// uniqueName returns prefix with a suffix no other call returns.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, runID.Add(1))
}

// mustPanic runs fn and returns the panic value's text, failing if fn
// returns normally.
func mustPanic(t *testing.T, fn func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatalf("did not panic")
		}
		msg = fmt.Sprint(r)
	}()
	fn()
	return ""
}

func TestRegisterPanics(t *testing.T) {
	t.Parallel()
	dupName := uniqueName("registry-test-dup")
	dup := &namedPlugin{name: dupName}
	plugin.Register(dup)
	twice := fmt.Sprintf("%q registered twice", dupName)
	tests := []struct {
		name string
		p    plugin.Plugin
		want string
	}{
		{"nil", nil, "nil plugin"},
		{"empty name", &namedPlugin{name: ""}, "empty plugin name"},
		{"duplicate", &namedPlugin{name: dupName}, twice},
		{"same value again", dup, twice},
		// Names ember.Run refuses: registered, they could never be
		// enabled, and the mistake surfaced only when a program named
		// the plugin in its configuration.
		{"upper case", &namedPlugin{name: "Metrics"}, `invalid plugin name "Metrics"`},
		{"space", &namedPlugin{name: "rpc demo"}, `invalid plugin name "rpc demo"`},
		{"leading dot", &namedPlugin{name: ".x"}, `invalid plugin name ".x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := mustPanic(t, func() { plugin.Register(tt.p) })
			if !strings.Contains(msg, tt.want) {
				t.Errorf("panic %q, want it to contain %q", msg, tt.want)
			}
		})
	}
	// The failed duplicate did not replace the original.
	got, err := plugin.Lookup(dupName)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if got != dup {
		t.Errorf("Lookup returned %p, want the first registration %p", got, dup)
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	name := uniqueName("registry-test-lookup")
	p := &namedPlugin{name: name}
	plugin.Register(p)

	got, err := plugin.Lookup(name)
	if err != nil {
		t.Fatalf("Lookup(registered): %v", err)
	}
	if got != p {
		t.Errorf("Lookup returned %p, want %p", got, p)
	}

	got, err = plugin.Lookup("registry-test-never-registered")
	if err == nil {
		t.Fatalf("Lookup(unknown) = %v, nil; want an error", got)
	}
	if got != nil {
		t.Errorf("Lookup(unknown) plugin = %v, want nil", got)
	}
	for _, want := range []string{`unknown plugin "registry-test-never-registered"`, "forgotten import", name} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Lookup(unknown) error %q, want it to contain %q", err, want)
		}
	}
}

func TestRegistered(t *testing.T) {
	t.Parallel()
	id := uniqueName("registry-test-sorted")
	names := []string{id + "-c", id + "-a", id + "-b"}
	for _, n := range names {
		plugin.Register(&namedPlugin{name: n})
	}
	got := plugin.Registered()
	if !slices.IsSorted(got) {
		t.Errorf("Registered() = %q, want it sorted", got)
	}
	for _, n := range names {
		if !slices.Contains(got, n) {
			t.Errorf("Registered() = %q, want it to contain %q", got, n)
		}
	}
	// The result is a copy: changing it does not change the registry.
	clear(got)
	if again := plugin.Registered(); !slices.Contains(again, names[0]) {
		t.Errorf("after clearing a Registered() result, Registered() = %q, want it to contain %q", again, names[0])
	}
}

func TestRegisterConcurrent(t *testing.T) {
	t.Parallel()
	const n = 32
	done := make(chan struct{})
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			name := uniqueName(fmt.Sprintf("registry-test-concurrent-%02d", i))
			plugin.Register(&namedPlugin{name: name})
			_ = plugin.Registered()
			if _, err := plugin.Lookup(name); err != nil {
				t.Errorf("Lookup(%q) after Register: %v", name, err)
			}
		}()
	}
	for range n {
		<-done
	}
}
