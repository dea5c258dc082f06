package benchkit

import (
	"fmt"
	"strings"
)

// Body returns the shortest string whose message, as encode encodes it,
// is exactly size bytes, so that typed messages can match the baselines'
// raw payloads byte for byte. It panics if no string up to size long does.
func Body(size int, encode func(body string) ([]byte, error)) string {
	for n := range size {
		b := strings.Repeat("e", n)
		if enc, err := encode(b); err == nil && len(enc) == size {
			return b
		}
	}
	panic(fmt.Sprintf("benchkit: no body encodes to %d bytes", size))
}
