package stamp

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeDump writes a file in Dump's format holding marks (point -> id -> time).
func writeDump(t *testing.T, marks map[Point]map[uint64]int64) string {
	t.Helper()
	buf := make([]byte, int(NumPoints)*MaxID*8)
	for p, ids := range marks {
		for id, at := range ids {
			binary.LittleEndian.PutUint64(buf[(int(p)*MaxID+int(id))*8:], uint64(at))
		}
	}
	path := filepath.Join(t.TempDir(), "stamps")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadMergesProcesses(t *testing.T) {
	asker := writeDump(t, map[Point]map[uint64]int64{
		AskQueued:      {1: 1000, 2: 5000, 3: 9000},
		ReplyDelivered: {1: 1700, 2: 5900}, // call 3 never answered
	})
	answerer := writeDump(t, map[Point]map[uint64]int64{
		AskRead: {1: 1200, 2: 5300, 3: 9100},
	})
	r, err := Read(asker, answerer)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, to Point
		lo, hi   int
		want     []int64
	}{
		{AskQueued, ReplyDelivered, 0, 10, []int64{700, 900}},
		{AskQueued, AskRead, 0, 10, []int64{200, 300, 100}}, // across the two files
		{AskQueued, AskRead, 2, 3, []int64{300}},
		{AskRead, ReplyDelivered, 3, 10, nil},
	}
	for _, tt := range tests {
		if got := r.Segment(tt.from, tt.to, tt.lo, tt.hi); !slices.Equal(got, tt.want) {
			t.Errorf("Segment(%d, %d, %d, %d) = %v, want %v", tt.from, tt.to, tt.lo, tt.hi, got, tt.want)
		}
	}
}

func TestReadRejectsOtherSizes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(path, make([]byte, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil {
		t.Fatal("Read of a 64-byte file: got nil error, want one")
	}
}
