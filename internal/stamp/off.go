//go:build !emberstamp

package stamp

import "errors"

// Enabled reports whether this binary records stamps.
const Enabled = false

// Mark does nothing without the emberstamp build tag.
func Mark(Point, uint64) {}

// Dump fails without the emberstamp build tag.
func Dump(string) error { return errors.New("stamps are recorded only with -tags emberstamp") }
