//go:build !linux

package launch

// SelfExe names the binary this process runs; elsewhere than on Linux it
// is not known apart from its path (os.Executable), and it returns "".
func SelfExe() string { return "" }
