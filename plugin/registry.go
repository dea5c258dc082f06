package plugin

import (
	"fmt"
	"slices"
	"sync"

	"github.com/emberhq/ember/internal/pluginname"
)

var (
	registryMu sync.RWMutex
	registry   = map[string]Plugin{}
)

// Register makes p available by name, for applications that enable plugins
// through configuration ("ember.plugins", Spark: spark.plugins). Call it
// from an init function. It panics if p is nil, its name is empty, not
// one ember.Run accepts (lowercase letters, digits, '.', '_' or '-',
// starting with a letter or digit) or already registered, as
// database/sql.Register does. It is safe for concurrent use.
func Register(p Plugin) {
	if p == nil {
		panic("plugin.Register: nil plugin")
	}
	name := p.Name()
	if name == "" {
		panic("plugin.Register: empty plugin name")
	}
	if !pluginname.Valid(name) {
		panic(fmt.Sprintf("plugin.Register: invalid plugin name %q: want %s", name, pluginname.Rule))
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("plugin.Register: plugin %q registered twice", name))
	}
	registry[name] = p
}

// Lookup returns the registered plugin called name, or, when there is
// none, an error that names the registered ones (a forgotten import is the
// usual cause). It is safe for concurrent use.
func Lookup(name string) (Plugin, error) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	p, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown plugin %q (forgotten import? registered: %v)", name, registeredLocked())
	}
	return p, nil
}

// Registered returns the names of the registered plugins, sorted.
func Registered() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return registeredLocked()
}

func registeredLocked() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
