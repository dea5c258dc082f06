// Package stamp splits an ask's round trip into segments, for ember-bench's
// -breakdown: each process records when every ask passes each point of
// its path, keyed by call ID, and ember-bench lines the processes' records
// up afterwards (their wall clocks are the same clock on one host).
//
// It records only in binaries built with the emberstamp build tag.
// Otherwise Enabled is false, Mark is empty, and the calls compile away:
//
//	go run -tags emberstamp ./cmd/ember-bench -breakdown
package stamp

// Point is one place on an ask's path.
type Point uint8

// The points of an Ember ask (asker: the side that asks; answerer: the
// side whose plugin replies), then those of the raw gRPC ping-pong
// baseline.
const (
	AskQueued      Point = iota // asker: call registered, frame queued or about to be written
	AskWritten                  // asker: the write carrying the ask returned
	AskRead                     // answerer: the batch carrying the ask was read
	AskDispatched               // answerer: the plugin's Receive is about to be called
	ReplyQueued                 // answerer: Receive returned; its reply is encoded and queued next
	ReplyWriting                // answerer: the write carrying the reply starts
	ReplyWritten                // answerer: that write returned
	ReplyRead                   // asker: the batch carrying the reply was read
	ReplyDelivered              // asker: the asking goroutine has its reply

	RawSend       // baseline client: about to send
	RawSent       // baseline client: send returned
	RawServerRead // baseline server: message received
	RawServerSent // baseline server: echo sent
	RawRead       // baseline client: echo received

	NumPoints
)

// MaxID bounds the call IDs recorded: larger IDs are ignored.
const MaxID = 1 << 15

// fileBytes is the size of what Dump writes: every point's stamp for
// every call ID, 8 bytes each.
const fileBytes = int(NumPoints) * MaxID * 8
