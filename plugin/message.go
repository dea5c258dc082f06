package plugin

import (
	"fmt"
	"reflect"

	"github.com/emberhq/ember/internal/codec"
)

// RegisterMessage registers T as a message type under a wire name derived
// from it ("import/path.TypeName"). Messages are plain Go values of
// registered types: structs are encoded as CBOR (exported fields by name,
// honouring `cbor` and `json` tags), and proto.Message types (register the
// pointer, e.g. *pb.Event) as protobuf.
// Register in an init function, in the package that declares the type, so
// that driver and executors register the same set (they agree on it in
// the handshake). Sending an unregistered type fails at the call with
// ErrUnregisteredMessage.
//
// A pointer to a registered struct type may be sent; it arrives as the
// value (Ask[*T] takes it and returns a pointer to it). A nil one, like a
// nil proto message, arrives as nil (so an Ask's reply gives R's zero
// value). A value held in an interface-typed field (any) arrives as CBOR
// decodes it: integers as uint64 (int64 when negative), floats as float64,
// maps as map[string]any, arrays as []any; declare concrete field types
// where the receiver needs them. A map with keys other than strings (a
// map[int]string, say) in such a field cannot arrive as map[string]any:
// the receiver cannot decode the message and drops it (an Ask fails with
// CodeInvalidArgument), so put such maps in fields of their own type.
// RegisterMessage panics if T or its name is already registered to
// something else, if T is an interface type or a proto message type that
// is not a pointer (register *pb.Event, not pb.Event), or if T is a struct
// whose fields are all unexported (it would arrive as its zero value).
// It panics for a new type once ember.Run has been called in the process,
// and, in a test package whose TestMain is embertest.Main, once the tests
// have started: the type would be missing from the executors (of other
// tests, for one registered in a test function), which agree on the set
// in the handshake. Registering the same type under the same name again
// does nothing. It is safe for concurrent use.
func RegisterMessage[T any]() {
	t := reflect.TypeFor[T]()
	RegisterMessageName[T](codec.NameOf(t))
}

// RegisterMessageName is RegisterMessage with an explicit wire name, for
// types that must keep their name when moved or renamed. It panics as
// RegisterMessage does, and on an empty name.
func RegisterMessageName[T any](name string) {
	if err := codec.Register(reflect.TypeFor[T](), name); err != nil {
		panic(fmt.Sprintf("plugin.RegisterMessage: %v", err))
	}
}
