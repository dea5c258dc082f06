package launch

import (
	"strings"
	"testing"
)

func TestParseMaster(t *testing.T) {
	tests := []struct {
		in   string
		want Master
		str  string // want.String()
	}{
		{"", Master{Kind: "local-cluster", N: 2}, "local-cluster[2]"},
		{"local", Master{Kind: "local", N: 1}, "local[1]"},
		{"local[1]", Master{Kind: "local", N: 1}, "local[1]"},
		{"local[16]", Master{Kind: "local", N: 16}, "local[16]"},
		{"local-cluster[4]", Master{Kind: "local-cluster", N: 4}, "local-cluster[4]"},
		{"  local-cluster[3]\n", Master{Kind: "local-cluster", N: 3}, "local-cluster[3]"},
		{"standalone", Master{Kind: "standalone"}, "standalone"},
	}
	for _, tt := range tests {
		got, err := ParseMaster(tt.in)
		if err != nil {
			t.Errorf("ParseMaster(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseMaster(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseMaster(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		// What String prints parses back to the same master.
		if again, err := ParseMaster(got.String()); err != nil || again != got {
			t.Errorf("ParseMaster(%q) = %+v, %v; want %+v", got.String(), again, err, got)
		}
	}
}

func TestParseMasterRejects(t *testing.T) {
	for _, in := range []string{
		"local[0]",
		"local[-1]",
		"local[]",
		"local[x]",
		"local[2",
		"local[2]x",
		"local-cluster",
		"local-cluster[0]",
		"local-cluster[1.5]",
		"cluster[2]",
		"standalone[2]",
		"yarn",
		"Local[2]",
	} {
		got, err := ParseMaster(in)
		if err == nil {
			t.Errorf("ParseMaster(%q) = %+v, want an error", in, got)
			continue
		}
		if want := "want local[N], local-cluster[N] or standalone"; !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMaster(%q): got error %q, want it to contain %q", in, err, want)
		}
	}
}
