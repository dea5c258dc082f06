// Package hook lets the public packages hand unexported constructors to the
// runtime's internal packages without widening the public API.
package hook

// WireError builds a *plugin.Error received from the peer (IsRemote true).
// Set by package plugin's init.
var WireError func(code uint32, msg string) error
