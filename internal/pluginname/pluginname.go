// Package pluginname holds the rule for plugin names, which both
// plugin.Register and ember.Run apply.
package pluginname

import "regexp"

var valid = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Valid reports whether name is a plugin name: lowercase letters, digits,
// '.', '_' or '-', starting with a letter or digit (Rule).
func Valid(name string) bool { return valid.MatchString(name) }

// Rule says what Valid accepts, for error messages.
const Rule = "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
