package wire

// ProtocolVersion is the version of the frame protocol. A driver refuses
// executors that speak another.
const ProtocolVersion = 1
