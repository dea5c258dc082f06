//go:build !emberstamp

package stamp

import "testing"

func TestDisabledWithoutTag(t *testing.T) {
	if Enabled {
		t.Fatal("Enabled without the emberstamp tag")
	}
	Mark(AskQueued, 1) // must not panic
	if err := Dump(t.TempDir() + "/x"); err == nil {
		t.Fatal("Dump without the emberstamp tag: got nil error, want one")
	}
}
