package wire

import "google.golang.org/grpc/mem"

// MarshalLarge and UnmarshalBatchAliasing let tests and the fuzzer reach
// the large-payload paths with payloads of any size.
var (
	MarshalLarge           func(b *Batch, min int) (mem.BufferSlice, error) = marshalLarge
	UnmarshalBatchAliasing func(data []byte, b *Batch, min int) error       = unmarshalBatch
)

const PayloadField = payloadField
