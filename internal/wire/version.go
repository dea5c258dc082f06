package wire

import "google.golang.org/protobuf/proto"

// ProtocolVersion is the version of the frame protocol. A driver refuses
// executors that speak another. Version 2 added per-plugin flow control of
// SENDs (KIND_CREDIT); version 3, the send window in Welcome; version 4,
// the plugins' own send windows in Welcome; version 5, KIND_LEAVING and
// the plugins with no side to take messages (Welcome.no_driver_side,
// Ready.no_receiver); version 6, the asker's cancel of an ask
// (KIND_ASK_CANCEL, Frame.cancelable); version 7, lent credit
// (Frame.lent); version 8, the executor's message limit in Hello; version
// 9, a task's permanent failure (Frame.permanent); version 10, lent credit
// kept for the handlers until released (Frame.released), where it used to
// become anyone's when the loan ended; version 11, how long a task attempt
// held its slot (Frame.slot_micros), and TASKs queued ahead of free slots;
// version 12, an ASK refused by a plugin that has shut down
// (Frame.closed).
const ProtocolVersion = 12

// WelcomeDigestInput is the encoding of w that the driver's proof binds:
// deterministic protobuf of w with its Auth field cleared. It fails when w
// has a string that is not valid UTF-8, which that encoding refuses: the
// driver checks its configuration at start-up, so only a damaged or forged
// Welcome does.
func WelcomeDigestInput(w *Welcome) ([]byte, error) {
	c := proto.Clone(w).(*Welcome)
	c.Auth = nil
	return proto.MarshalOptions{Deterministic: true}.Marshal(c)
}
