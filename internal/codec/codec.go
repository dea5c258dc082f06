// Package codec is the registry of message types and their encoding.
//
// Plain Go values are encoded with CBOR (RFC 8949, github.com/fxamacker/cbor:
// struct fields by name, honouring `cbor` and `json` tags); values
// implementing proto.Message are encoded with protobuf. docs/internals.md
// records the measurement behind that choice (BenchmarkCodec in this
// package): CBOR encodes and decodes a small struct 2-3x faster than
// encoding/json, and its decoder is built for untrusted input.
//
// The registry is written during program initialisation and read on every
// message, so reads are lock-free: each registration publishes a new
// immutable snapshot.
package codec

import (
	"encoding"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/fxamacker/cbor/v2"
	"google.golang.org/protobuf/proto"
)

// Errors returned by the codec; callers wrap them with a code.
var (
	ErrUnregistered = errors.New("unregistered message type")
	ErrUnknownName  = errors.New("unknown message type name")
	ErrDecode       = errors.New("cannot decode message")
)

type entry struct {
	name  string
	typ   reflect.Type
	proto bool // typ implements proto.Message
	// scratch holds *typ values to decode into: the decoded value is
	// copied out into the interface Decode returns, so decoding allocates
	// that copy and not also a fresh *typ.
	scratch sync.Pool
}

type snapshot struct {
	byType map[reflect.Type]*entry
	byName map[string]*entry
	names  []string // sorted
}

var (
	mu  sync.Mutex // serialises writers
	cur atomic.Pointer[snapshot]
	// sealed says why Register takes no new types ("": it does); written
	// under mu.
	sealed string
)

func init() {
	cur.Store(&snapshot{byType: map[reflect.Type]*entry{}, byName: map[string]*entry{}})
}

var protoMessage = reflect.TypeFor[proto.Message]()

// The CBOR modes. Times keep nanoseconds; maps decoded into an interface
// become map[string]any, as with encoding/json; the decoder's limits on
// nesting, array and map sizes bound what a hostile peer can make it
// allocate (the frame size bounds the rest). A Go string may hold any
// bytes and the encoder sends them as they are, so the decoder accepts
// text that is not valid UTF-8: every string arrives byte for byte, where
// rejecting it would fail a message the sender was told had been sent.
var (
	encMode = mustMode(cbor.EncOptions{Time: cbor.TimeRFC3339Nano}.EncMode())
	decMode = mustMode(cbor.DecOptions{
		UTF8:             cbor.UTF8DecodeInvalid,
		DefaultMapType:   reflect.TypeFor[map[string]any](),
		MaxNestedLevels:  64,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
	}.DecMode())
)

func mustMode[M any](m M, err error) M {
	if err != nil {
		panic(err)
	}
	return m
}

// NameOf returns the wire name derived from t: "import/path.TypeName" for
// named types, t.String() for others, with pointers to named structs named
// like their element when they are proto messages.
func NameOf(t reflect.Type) string {
	if t.Implements(protoMessage) && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Name() != "" && t.PkgPath() != "" {
		return t.PkgPath() + "." + t.Name()
	}
	return t.String()
}

// Seal makes Register refuse new types from now on, saying that it was
// called when (an earlier Seal's words stay): a process registers the
// types it will ever have before it runs, so that every process of an
// application, executors included, agrees on them in the handshake.
func Seal(when string) {
	mu.Lock()
	defer mu.Unlock()
	if sealed == "" {
		sealed = when
	}
}

// Register adds t under name. Registering the same type under the same name
// twice is a no-op; any other reuse of a type or a name is an error, and
// so is a new type once the registry is sealed (Seal).
func Register(t reflect.Type, name string) error {
	if t == nil {
		return errors.New("nil type")
	}
	if name == "" {
		return errors.New("empty message name")
	}
	isProto := t.Implements(protoMessage)
	if isProto && t.Kind() != reflect.Pointer {
		return fmt.Errorf("%v: register the pointer type of a proto message", t)
	}
	if !isProto && t.Kind() == reflect.Interface {
		return fmt.Errorf("%v: cannot register an interface type", t)
	}
	if !isProto && reflect.PointerTo(t).Implements(protoMessage) {
		return fmt.Errorf("%v: register the pointer type of a proto message (*%v)", t, t)
	}
	if err := CheckFields(t); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	old := cur.Load()
	if e, ok := old.byType[t]; ok {
		if e.name == name {
			return nil
		}
		return fmt.Errorf("%v: already registered as %q", t, e.name)
	}
	if e, ok := old.byName[name]; ok {
		return fmt.Errorf("message name %q: already used by %v", name, e.typ)
	}
	if sealed != "" {
		return fmt.Errorf("%v: registered %s; register message types in an init function, so that every process, executors included, has them before ember.Run", t, sealed)
	}
	next := &snapshot{
		byType: make(map[reflect.Type]*entry, len(old.byType)+1),
		byName: make(map[string]*entry, len(old.byName)+1),
	}
	for k, v := range old.byType {
		next.byType[k] = v
	}
	for k, v := range old.byName {
		next.byName[k] = v
	}
	e := &entry{name: name, typ: t, proto: isProto}
	next.byType[t] = e
	next.byName[name] = e
	next.names = append(slices.Clone(old.names), name)
	slices.Sort(next.names)
	cur.Store(next)
	return nil
}

var (
	cborMarshaler   = reflect.TypeFor[cbor.Marshaler]()
	binaryMarshaler = reflect.TypeFor[encoding.BinaryMarshaler]()
	bigInt          = reflect.TypeFor[big.Int]()
)

// CheckFields reports an error for a struct type (or pointer to one) that
// would travel as an empty map though it holds data: none of its fields is
// exported or embedded, one at least is neither blank (_) nor of zero size,
// and it encodes itself in no other way (cbor.Marshaler,
// encoding.BinaryMarshaler, proto.Message, or big.Int, which CBOR encodes
// as a bignum; CBOR ignores encoding.TextMarshaler and json.Marshaler).
// CBOR, like encoding/json, skips unexported fields, so such a value would
// arrive as its zero value with no error on either side. It errs on the
// side of letting a type through: embedded fields are not looked into.
func CheckFields(t reflect.Type) error {
	st := t
	for st.Kind() == reflect.Pointer {
		st = st.Elem()
	}
	if st.Kind() != reflect.Struct || st == bigInt {
		return nil
	}
	for _, m := range []reflect.Type{protoMessage, cborMarshaler, binaryMarshaler} {
		if st.Implements(m) || reflect.PointerTo(st).Implements(m) {
			return nil
		}
	}
	holds := false // a field that carries data and is dropped
	for i := range st.NumField() {
		switch f := st.Field(i); {
		case f.IsExported() || f.Anonymous:
			return nil
		case f.Name != "_" && f.Type.Size() > 0:
			holds = true
		}
	}
	if !holds {
		return nil // carries nothing by design (struct{}, noCopy markers)
	}
	return fmt.Errorf("%v has no exported fields: it would arrive as its zero value (CBOR encodes exported fields only, and ignores encoding.TextMarshaler and json.Marshaler; export them, or implement cbor.Marshaler or encoding.BinaryMarshaler)", t)
}

// Names returns the registered wire names, sorted.
func Names() []string { return slices.Clone(cur.Load().names) }

// Known reports whether name is a registered wire name. A name from a peer
// is only a claim until checked: it may be anything, valid UTF-8 or not.
func Known(name string) bool {
	_, ok := cur.Load().byName[name]
	return ok
}

// Encode returns the wire name and encoding of v. A nil v encodes as an
// empty name and no payload, and so does a nil pointer of a registered
// type (a nil proto message, a nil *T for a registered T): the receiver
// gets nil either way, where a nil proto message used to arrive as an
// empty one. A pointer to a registered non-proto type is encoded as the
// value it points to. A panic in the type's own encoding method (user
// code) is an error.
func Encode(v any) (name string, payload []byte, err error) {
	if v == nil {
		return "", nil, nil
	}
	defer recoverEncode(&err, v)
	s := cur.Load()
	t := reflect.TypeOf(v)
	e, ok := s.byType[t]
	if ok && e.proto && reflect.ValueOf(v).IsNil() {
		return "", nil, nil
	}
	if !ok && t.Kind() == reflect.Pointer {
		if e, ok = s.byType[t.Elem()]; ok {
			rv := reflect.ValueOf(v)
			if rv.IsNil() {
				return "", nil, nil
			}
			if e.proto { // a pointer to a proto message pointer
				return "", nil, fmt.Errorf("%w: %v (send the %v itself)", ErrUnregistered, t, t.Elem())
			}
			v = rv.Elem().Interface()
		}
	}
	if !ok {
		return "", nil, fmt.Errorf("%w: %v (call plugin.RegisterMessage[%v]() in an init function, in every process)", ErrUnregistered, t, t)
	}
	if e.proto {
		payload, err = proto.Marshal(v.(proto.Message))
	} else {
		payload, err = encMode.Marshal(v)
	}
	if err != nil {
		return "", nil, fmt.Errorf("encode %s: %w", e.name, err)
	}
	return e.name, payload, nil
}

// Decode returns the value of the registered type named name encoded in
// payload. An empty name decodes to nil. A panic in the type's own
// decoding method (user code, given a peer's bytes) is an ErrDecode error.
func Decode(name string, payload []byte) (v any, err error) {
	if name == "" {
		return nil, nil
	}
	// A closure, not recoverDecode(&err, name): name as an argument of
	// type any would be boxed, an allocation on every message.
	defer func() {
		if r := recover(); r != nil {
			err = decodePanicked(name, r)
		}
	}()
	e, ok := cur.Load().byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (not registered in this process)", ErrUnknownName, name)
	}
	if e.proto {
		m := reflect.New(e.typ.Elem()).Interface().(proto.Message)
		if err := proto.Unmarshal(payload, m); err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrDecode, name, err)
		}
		return m, nil
	}
	ptr := e.scratch.Get() // a *typ; pointers go in and out of the pool without allocating
	if ptr == nil {
		ptr = reflect.New(e.typ).Interface()
	}
	defer e.scratch.Put(ptr)
	p := reflect.ValueOf(ptr)
	// Decoding merges into what is there; start from the zero value.
	// Everything the decoder allocates (strings, slices, maps) is fresh,
	// so the copy returned shares nothing with the next use of p.
	p.Elem().SetZero()
	if err := decMode.Unmarshal(payload, ptr); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrDecode, name, err)
	}
	return p.Elem().Interface(), nil
}

// Marshal encodes v as a registered message would be (protobuf for
// proto.Message, CBOR otherwise) without needing its type registered: for
// values whose type both sides know statically, such as task inputs. A
// panic in the type's own encoding method is an error.
func Marshal(v any) (b []byte, err error) {
	defer recoverEncode(&err, v)
	if m, ok := v.(proto.Message); ok {
		return proto.Marshal(m)
	}
	return encMode.Marshal(v)
}

// Unmarshal decodes data produced by Marshal into ptr. A panic in the
// type's own decoding method is an ErrDecode error.
func Unmarshal(data []byte, ptr any) (err error) {
	defer recoverDecode(&err, reflect.TypeOf(ptr))
	rv := reflect.ValueOf(ptr)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		// *T where T is a proto message pointer type (e.g. **pb.X).
		if elem := rv.Elem(); elem.Kind() == reflect.Pointer && elem.Type().Implements(protoMessage) {
			m := reflect.New(elem.Type().Elem())
			if err := proto.Unmarshal(data, m.Interface().(proto.Message)); err != nil {
				return err
			}
			elem.Set(m)
			return nil
		}
	}
	return decMode.Unmarshal(data, ptr)
}

// recoverDecode turns a panic in the own decoding method of what (a type
// or its wire name) into an ErrDecode *err. Call it deferred.
func recoverDecode(err *error, what any) {
	if r := recover(); r != nil {
		*err = decodePanicked(what, r)
	}
}

// decodePanicked is the ErrDecode error for a panic r in the own decoding
// method of what.
func decodePanicked(what, r any) error {
	return fmt.Errorf("%w %v: its decoding method panicked: %v", ErrDecode, what, r)
}

// recoverEncode turns a panic in v's own encoding method into *err. Call
// it deferred.
func recoverEncode(err *error, v any) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("encode %T: its encoding method panicked: %v", v, r)
	}
}
