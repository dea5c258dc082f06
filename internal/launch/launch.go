// Package launch starts executors for a driver: in-process goroutines for
// local[N], child processes of the same binary for local-cluster[N], and
// nothing for standalone, where executors are started by others.
package launch

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Launcher starts executors that connect to a driver. A Kubernetes or SSH
// launcher implements the same interface.
type Launcher interface {
	// Start starts n executors that connect to driverAddr. It returns once
	// they are started, not connected. exited is called (from any
	// goroutine) when an executor ends, id naming it as the launcher does
	// (Processes: its process ID); err is nil for a clean exit. A driver
	// that replaces lost executors calls Start again, with n = 1, until
	// it calls Wait; Processes allows it, Local does not.
	Start(ctx context.Context, n int, driverAddr string, exited func(id int, err error)) error
	// Wait waits for every executor to end. When ctx ends first, it kills
	// those still running (or, where it cannot, gives up on them after a
	// grace period) and returns an error saying which it did.
	Wait(ctx context.Context) error
}

// Master is a parsed Config.Master.
type Master struct {
	Kind string // "local", "local-cluster" or "standalone"
	N    int    // executors for the local kinds
}

// ParseMaster parses "local", "local[N]", "local-cluster[N]" or
// "standalone". An empty string means local-cluster[2].
func ParseMaster(s string) (Master, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return Master{Kind: "local-cluster", N: 2}, nil
	case "local":
		return Master{Kind: "local", N: 1}, nil
	case "standalone":
		return Master{Kind: "standalone"}, nil
	}
	for _, kind := range []string{"local-cluster", "local"} {
		rest, ok := strings.CutPrefix(s, kind+"[")
		if !ok {
			continue
		}
		num, ok := strings.CutSuffix(rest, "]")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 1 {
			break
		}
		return Master{Kind: kind, N: n}, nil
	}
	return Master{}, fmt.Errorf("master %q: want local[N], local-cluster[N] or standalone (N >= 1)", s)
}

func (m Master) String() string {
	if m.Kind == "standalone" {
		return m.Kind
	}
	return fmt.Sprintf("%s[%d]", m.Kind, m.N)
}
