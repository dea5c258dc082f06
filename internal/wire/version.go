package wire

import "google.golang.org/protobuf/proto"

// ProtocolVersion is the version of the frame protocol. A driver refuses
// executors that speak another.
const ProtocolVersion = 1

// WelcomeDigestInput is the encoding of w that the driver's proof binds:
// deterministic protobuf of w with its Auth field cleared.
func WelcomeDigestInput(w *Welcome) []byte {
	c := proto.Clone(w).(*Welcome)
	c.Auth = nil
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return b
}
