package stamp

import (
	"encoding/binary"
	"fmt"
	"os"
)

// Record is the stamps of one or more processes, merged: At[p][id] is when
// call id passed point p (unix nanoseconds), or 0.
type Record struct {
	At [NumPoints][]int64
}

// Read merges the files Dump wrote, in order: a stamp is taken from the
// last file that has it. Each side marks its own points, so the files
// overlap only where both sides asked under the same call ID (ember-bench
// skips those low IDs).
func Read(paths ...string) (*Record, error) {
	r := &Record{}
	for p := range r.At {
		r.At[p] = make([]int64, MaxID)
	}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if len(b) != fileBytes {
			return nil, fmt.Errorf("%s: %d bytes, want %d (a different build?)", path, len(b), fileBytes)
		}
		for p := range r.At {
			for id := range r.At[p] {
				if t := int64(binary.LittleEndian.Uint64(b[(p*MaxID+id)*8:])); t != 0 {
					r.At[p][id] = t
				}
			}
		}
	}
	return r, nil
}

// Segment returns, for every call in [lo, hi) that passed both points,
// the time from one to the other in nanoseconds.
func (r *Record) Segment(from, to Point, lo, hi int) []int64 {
	var out []int64
	for id := lo; id < hi && id < MaxID; id++ {
		a, b := r.At[from][id], r.At[to][id]
		if a != 0 && b != 0 {
			out = append(out, b-a)
		}
	}
	return out
}
