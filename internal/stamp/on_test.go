//go:build emberstamp

package stamp

import (
	"path/filepath"
	"testing"
)

func TestMarkDumpRead(t *testing.T) {
	Mark(ReplyQueued, 7)
	Mark(ReplyWritten, 7)
	Mark(ReplyQueued, MaxID) // out of range: ignored
	path := filepath.Join(t.TempDir(), "stamps")
	if err := Dump(path); err != nil {
		t.Fatal(err)
	}
	r, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Segment(ReplyQueued, ReplyWritten, 0, MaxID)
	if len(got) != 1 || got[0] < 0 {
		t.Fatalf("segment of call 7: got %v, want one non-negative duration", got)
	}
}
