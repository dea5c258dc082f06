package ember

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/emberhq/ember/internal/launch"
)

// executableID identifies this program's binary: the Go build ID from its
// ELF note when there is one, else a SHA-256 of the file. Computed once,
// from the binary the process runs (launch.SelfExe) where the system
// names it: the file it was started from may have been rebuilt or deleted
// since, and a replacement executor started later must still match its
// driver.
var executableID = sync.OnceValue(func() string {
	path := launch.SelfExe()
	if path == "" {
		var err error
		if path, err = os.Executable(); err != nil {
			return "unknown"
		}
	}
	if id := goBuildID(path); id != "" {
		return id
	}
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unknown"
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
})

// goBuildID reads the Go build ID note of an ELF binary.
func goBuildID(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return ""
	}
	data, err := s.Data()
	if err != nil || len(data) < 16 {
		return ""
	}
	// Note: namesz, descsz, type (4 bytes each), "Go\x00\x00", then desc.
	desc := data[16:]
	return "go:" + strings.TrimRight(string(desc), "\x00")
}
