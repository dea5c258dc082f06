package wire

import "google.golang.org/grpc/mem"

// The large-payload paths, for tests and the fuzzer, with payloads of any
// size counted as large.

const PayloadField = payloadField

func MarshalLarge(b *Batch, min int) (mem.BufferSlice, error) { return marshalLarge(b, min) }

func UnmarshalBatchAliasing(data []byte, b *Batch, min int) error {
	_, err := unmarshalBatch(data, b, min)
	return err
}

var ListFields = listFields
