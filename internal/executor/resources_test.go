package executor

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/plugin"
)

// script writes an executable shell script into a temporary directory and
// returns its path. Discovery commands run without a shell, so a test
// that needs quoting or stderr goes through one.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "discover.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDiscoverResources(t *testing.T) {
	conf := plugin.NewConf(map[string]string{
		"ember.executor.resource.gpu.discoveryScript":     `echo {"name":"gpu","addresses":["0","1"]}`,
		"ember.executor.resource.fpga.x.discoveryScript":  `echo {"name":"fpga.x","addresses":[]}`,
		"ember.executor.resource.gpu.amount":              "2", // not a discovery key
		"ember.executor.slots":                            "4",
		"other.resource.gpu.discoveryScript":              "false",
		"ember.executor.resource.disk.discoveryScriptish": "false",
	})
	got, err := discoverResources(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Errorf("got %d resources %v, want gpu and fpga.x", len(got), got)
	}
	if r := got["gpu"]; r.Name != "gpu" || !slices.Equal(r.Addresses, []string{"0", "1"}) {
		t.Errorf("gpu: got %+v, want addresses [0 1]", r)
	}
	if r, ok := got["fpga.x"]; !ok || len(r.Addresses) != 0 {
		t.Errorf("fpga.x: got %+v (found %v), want it with no addresses", r, ok)
	}
}

func TestDiscoverFailures(t *testing.T) {
	tests := []struct {
		name, command string
		want          []string // in the error
	}{
		{"empty command", "  ", []string{`resource "gpu"`, "empty name or discovery command"}},
		{"missing command", "/nonexistent/discover", []string{`discovery command "/nonexistent/discover"`, "no such file"}},
		{"failing command", "false", []string{`discovery command "false": exit status 1`}},
		{"stderr is quoted", script(t, "echo 'no driver loaded' >&2; exit 3"), []string{"exit status 3: no driver loaded"}},
		{"not JSON", "echo nope", []string{`printed "nope"`, `want JSON like {"name":"gpu","addresses":["0"]}`}},
		{"another resource", `echo {"name":"fpga","addresses":["0"]}`, []string{`reported resource "fpga"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := discover(context.Background(), "gpu", tt.command)
			if err == nil {
				t.Fatalf("discover(%q): got %+v, want an error", tt.command, r)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("discover(%q): got error %q, want it to contain %q", tt.command, err, w)
				}
			}
		})
	}
	t.Run("empty name", func(t *testing.T) {
		conf := plugin.NewConf(map[string]string{"ember.executor.resource..discoveryScript": "echo {}"})
		if _, err := discoverResources(context.Background(), conf); err == nil || !strings.Contains(err.Error(), `resource ""`) {
			t.Errorf("got %v, want an error naming the empty resource", err)
		}
	})
}

// A discovery command that leaves a process behind holding its output
// still ends with its context.
func TestDiscoverDoesNotWaitForLeftovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	// The leftover lives 20s; it writes its pid so that the test can kill
	// it, rather than leave it running after the test binary has ended.
	pidFile := filepath.Join(t.TempDir(), "leftover")
	cmd := script(t, `sleep 20 & echo $! > "`+pidFile+`"; exec sleep 60`)
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill()
				}
			}
		}
	})
	start := time.Now()
	if _, err := discover(ctx, "gpu", cmd); err == nil {
		t.Fatal("got no error, want the command killed")
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("discover returned after %v, want soon after its context ended, not when the leftover process did", elapsed)
	}
}

// A discovery command that outlives its context is killed.
func TestDiscoverStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := discover(ctx, "gpu", "sleep 60")
	if err == nil {
		t.Fatal("got no error, want the command killed")
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Errorf("discover returned after %v, want soon after its context ended", elapsed)
	}
}

func TestResourceName(t *testing.T) {
	tests := []struct {
		key      string
		name     string
		isScript bool
	}{
		{"ember.executor.resource.gpu.discoveryScript", "gpu", true},
		{"ember.executor.resource.a.b.discoveryScript", "a.b", true},
		{"ember.executor.resource..discoveryScript", "", true},
		{"ember.executor.resource.discoveryScript", "", true}, // prefix and suffix overlap
		{"ember.executor.resource.gpu.amount", "", false},
		{"ember.executor.slots", "", false},
		{"spark.executor.resource.gpu.discoveryScript", "", false},
	}
	for _, tt := range tests {
		name, ok := ResourceName(tt.key)
		if name != tt.name || ok != tt.isScript {
			t.Errorf("ResourceName(%q) = %q, %v; want %q, %v", tt.key, name, ok, tt.name, tt.isScript)
		}
		if tt.name != "" && ResourceKey(tt.name) != tt.key {
			t.Errorf("ResourceKey(%q) = %q, want %q", tt.name, ResourceKey(tt.name), tt.key)
		}
	}
}
