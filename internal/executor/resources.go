package executor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/emberhq/ember/plugin"
)

// Resource discovery configuration, as in Spark: for each resource name,
// ember.executor.resource.<name>.discoveryScript is a command (a path and
// space-separated arguments, run without a shell) that prints
// {"name":"<name>","addresses":["0","1"]} on stdout.
const (
	resourcePrefix = "ember.executor.resource."
	scriptSuffix   = ".discoveryScript"
	// DiscoveryTimeout bounds one discovery command.
	DiscoveryTimeout = 30 * time.Second
)

// ResourceKey returns the Conf key that names resource name's discovery
// command.
func ResourceKey(name string) string { return resourcePrefix + name + scriptSuffix }

// ResourceName reports whether key names a resource's discovery command,
// and which resource; the name is empty for the key with none
// ("ember.executor.resource..discoveryScript", or the prefix and suffix
// overlapping).
func ResourceName(key string) (name string, ok bool) {
	if !strings.HasPrefix(key, resourcePrefix) || !strings.HasSuffix(key, scriptSuffix) {
		return "", false
	}
	if len(key) <= len(resourcePrefix)+len(scriptSuffix) {
		return "", true
	}
	return key[len(resourcePrefix) : len(key)-len(scriptSuffix)], true
}

func discoverResources(ctx context.Context, conf plugin.Conf) (map[string]plugin.Resource, error) {
	out := map[string]plugin.Resource{}
	for k, v := range conf.All() {
		name, ok := ResourceName(k)
		if !ok {
			continue
		}
		r, err := discover(ctx, name, v)
		if err != nil {
			return nil, err
		}
		out[name] = r
	}
	return out, nil
}

func discover(ctx context.Context, name, command string) (plugin.Resource, error) {
	args := strings.Fields(command)
	if name == "" || len(args) == 0 {
		return plugin.Resource{}, fmt.Errorf("resource %q: empty name or discovery command", name)
	}
	ctx, cancel := context.WithTimeout(ctx, DiscoveryTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A command that leaves a process behind holding its output would
	// otherwise keep Run waiting past the timeout.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%v: %s", err, msg)
		}
		return plugin.Resource{}, fmt.Errorf("resource %q: discovery command %q: %w", name, command, err)
	}
	var r plugin.Resource
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return plugin.Resource{}, fmt.Errorf("resource %q: discovery command %q printed %q, want JSON like {\"name\":%q,\"addresses\":[\"0\"]}: %v", name, command, strings.TrimSpace(stdout.String()), name, err)
	}
	if r.Name != name {
		return plugin.Resource{}, fmt.Errorf("resource %q: discovery command %q reported resource %q", name, command, r.Name)
	}
	return r, nil
}
