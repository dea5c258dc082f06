package launch

import "os"

// SelfExe names the binary this process runs, whatever has become of the
// file it was started from (replaced or deleted): "/proc/self/exe", or ""
// without procfs. Safe for concurrent use.
func SelfExe() string {
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err != nil {
		return ""
	}
	return self
}
