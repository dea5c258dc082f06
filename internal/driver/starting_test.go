package driver

import (
	"fmt"
	"testing"

	"github.com/emberhq/ember/plugin"
)

// A start-up timeout's error names the executors still starting in ID
// order, numbers by value, and at most maxStartingListed of them: it
// listed every one, sorted as text ("1, 10, 100, ..., 9").
func TestDescribeStarting(t *testing.T) {
	execs := func(ids ...string) []plugin.ExecutorInfo {
		t.Helper()
		infos := make([]plugin.ExecutorInfo, len(ids))
		for i, id := range ids {
			infos[i] = plugin.ExecutorInfo{ID: id, Host: "h", PID: 100 + i}
		}
		return infos
	}
	numbered := func(n int) []string {
		t.Helper()
		ids := make([]string, n)
		for i := range ids {
			ids[n-1-i] = fmt.Sprint(i + 1) // in reverse: the order must come from describeStarting
		}
		return ids
	}
	tests := []struct {
		name string
		ids  []string
		want string
	}{
		{"one", []string{"7"}, "7 (host h, pid 100)"},
		{"numbers by value", []string{"10", "9", "100", "1"},
			"1 (host h, pid 103), 9 (host h, pid 101), 10 (host h, pid 100), 100 (host h, pid 102)"},
		{"other IDs after numbers, as text", []string{"b", "2", "a", "10"},
			"2 (host h, pid 101), 10 (host h, pid 103), a (host h, pid 102), b (host h, pid 100)"},
		{"exactly the bound", numbered(maxStartingListed),
			"1 (host h, pid 109), 2 (host h, pid 108), 3 (host h, pid 107), 4 (host h, pid 106), 5 (host h, pid 105), " +
				"6 (host h, pid 104), 7 (host h, pid 103), 8 (host h, pid 102), 9 (host h, pid 101), 10 (host h, pid 100)"},
		{"over the bound", numbered(1000),
			"1 (host h, pid 1099), 2 (host h, pid 1098), 3 (host h, pid 1097), 4 (host h, pid 1096), 5 (host h, pid 1095), " +
				"6 (host h, pid 1094), 7 (host h, pid 1093), 8 (host h, pid 1092), 9 (host h, pid 1091), 10 (host h, pid 1090), and 990 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := describeStarting(execs(tt.ids...)); got != tt.want {
				t.Errorf("describeStarting(%d executors):\n got %q\nwant %q", len(tt.ids), got, tt.want)
			}
		})
	}
}
