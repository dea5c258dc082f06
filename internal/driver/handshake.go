package driver

import (
	"fmt"
	"slices"
	"strings"

	"github.com/emberhq/ember/internal/wire"
)

// checkHello compares an executor's HELLO h with want, what the driver
// runs (its protocol version, build ID, plugins, message types, tasks and
// message limit), and returns a message naming every difference, or ""
// when they agree. sites says where the driver's tasks were registered,
// for those missing on the executor.
func checkHello(h, want *wire.Hello, sites map[string]string) string {
	var problems []string
	if h.ProtocolVersion != want.ProtocolVersion {
		problems = append(problems, fmt.Sprintf("protocol version: driver %d, executor %d", want.ProtocolVersion, h.ProtocolVersion))
	}
	if h.BuildId != want.BuildId {
		problems = append(problems, fmt.Sprintf("build ID: driver %q, executor %q (executors must run the driver's binary, or both must set the same Config.BuildID)", want.BuildId, h.BuildId))
	}
	if d := listDiff("plugins", want.Plugins, h.Plugins); d != "" {
		problems = append(problems, d)
	}
	// Sorted on both ends, and indexed by frames (Conn.SetTypes): the
	// same names in the same order.
	if d := listDiff("message types", want.MessageTypes, h.MessageTypes); d != "" {
		problems = append(problems, d)
	}
	if d := listDiff("tasks", want.Tasks, h.Tasks); d != "" {
		problems = append(problems, d+" ("+taskSites(want.Tasks, h.Tasks, sites)+
			"declare tasks with ember.NewTask in package-level vars: one made in a function, a test's say, is missing from processes that have not run it)")
	}
	if h.MaxMessageBytes != want.MaxMessageBytes {
		// Each end refuses to send more than its own limit and to receive
		// more than its own: a message between the two would end the
		// connection, and a task input or output would end every
		// executor in turn.
		problems = append(problems, fmt.Sprintf("message limit: driver %d bytes, executor %d (set the same Config.MaxMessageBytes in every process)", want.MaxMessageBytes, h.MaxMessageBytes))
	}
	return strings.Join(problems, "; ")
}

// maxTaskSites bounds the tasks whose registration site a mismatch names.
const maxTaskSites = 3

// taskSites names where the first few of the driver's tasks missing on the
// executor were registered, as "\"t\" registered at file:line in function; ",
// or returns "" when sites knows none of them. A task made in a test
// function shows here by its test, which may not be the test whose
// executors were refused.
func taskSites(driver, executor []string, sites map[string]string) string {
	if len(sites) == 0 {
		return ""
	}
	onExecutor := set(executor)
	var b strings.Builder
	n := 0
	for _, name := range driver {
		if site := sites[name]; site != "" && !onExecutor[name] {
			if n == maxTaskSites {
				b.WriteString("…; ")
				break
			}
			fmt.Fprintf(&b, "%q registered at %s; ", name, site)
			n++
		}
	}
	return b.String()
}

// listDiff describes how the executor's list differs from the driver's,
// which it must equal: names missing on either side, or else a different
// order (or a name twice).
func listDiff(what string, driver, executor []string) string {
	if slices.Equal(driver, executor) {
		return ""
	}
	// Sets, not slices.Contains: a peer's lists may be long.
	onDriver, onExecutor := set(driver), set(executor)
	var missing, extra []string
	for _, n := range driver {
		if !onExecutor[n] {
			missing = append(missing, n)
		}
	}
	for _, n := range executor {
		if !onDriver[n] {
			extra = append(extra, n)
		}
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("missing on the executor: %s", quoteAll(missing)))
	}
	if len(extra) > 0 {
		parts = append(parts, fmt.Sprintf("only on the executor: %s", quoteAll(extra)))
	}
	if len(parts) == 0 {
		parts = append(parts, fmt.Sprintf("order differs: driver %s, executor %s", quoteAll(driver), quoteAll(executor)))
	}
	return what + " differ: " + strings.Join(parts, ", ")
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return "[" + strings.Join(q, " ") + "]"
}

func set(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
