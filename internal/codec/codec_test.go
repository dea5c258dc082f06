package codec_test

import (
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/wire"
	"github.com/fxamacker/cbor/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Message types registered by these tests. Every name starts with
// "codec_test.rt." so that it cannot collide with other registrations in
// this package's test binary.
type (
	rtPoint struct {
		X, Y int
		Tag  string `json:"tag,omitempty"`
	}
	rtNested struct {
		Name   string
		Points []rtPoint
		Labels map[string]string
		Opt    *rtPoint
	}
	rtTags  []string
	rtEmpty struct{}
	// rtAny holds a value in an interface-typed field.
	rtAny struct{ V any }
	// rtBad cannot be encoded.
	rtBad struct{ F func() }
	// rtUnregistered is never registered.
	rtUnregistered struct{ A int }
	// rtClumsy's own CBOR methods panic, as user code can.
	rtClumsy struct{ A int }
)

const (
	pointName  = "codec_test.rt.point"
	nestedName = "codec_test.rt.nested"
	tagsName   = "codec_test.rt.tags"
	emptyName  = "codec_test.rt.empty"
	anyName    = "codec_test.rt.any"
	badName    = "codec_test.rt.bad"
	helloName  = "codec_test.rt.hello" // *wire.Hello, a proto message
	clumsyName = "codec_test.rt.clumsy"
)

func (rtClumsy) MarshalCBOR() ([]byte, error) { panic("clumsy encoder") }
func (*rtClumsy) UnmarshalCBOR([]byte) error  { panic("clumsy decoder") }

func init() {
	for _, r := range []struct {
		t    reflect.Type
		name string
	}{
		{reflect.TypeFor[rtPoint](), pointName},
		{reflect.TypeFor[rtNested](), nestedName},
		{reflect.TypeFor[rtTags](), tagsName},
		{reflect.TypeFor[rtEmpty](), emptyName},
		{reflect.TypeFor[rtAny](), anyName},
		{reflect.TypeFor[rtBad](), badName},
		{reflect.TypeFor[*wire.Hello](), helloName},
		{reflect.TypeFor[rtClumsy](), clumsyName},
	} {
		if err := codec.Register(r.t, r.name); err != nil {
			panic(err)
		}
	}
}

// encode calls codec.Encode, turning a panic into a test failure.
func encode(t *testing.T, v any) (name string, payload []byte, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Encode(%T) panicked: %v", v, r)
		}
	}()
	return codec.Encode(v)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       any
		wantName string
		want     any // what Decode returns
	}{
		{"struct", rtPoint{X: 1, Y: -2, Tag: "héllo"}, pointName, rtPoint{X: 1, Y: -2, Tag: "héllo"}},
		{"zero struct", rtPoint{}, pointName, rtPoint{}},
		{"string that is not UTF-8", rtPoint{Tag: "ok\xff\xfe"}, pointName, rtPoint{Tag: "ok\xff\xfe"}},
		{"map key and value that are not UTF-8", rtNested{Labels: map[string]string{"\xc3": "\x80\x80"}},
			nestedName, rtNested{Labels: map[string]string{"\xc3": "\x80\x80"}}},
		{"pointer to struct arrives as the value", &rtPoint{X: 3}, pointName, rtPoint{X: 3}},
		{"nested", rtNested{Name: "n", Points: []rtPoint{{X: 1}, {Y: 2}}, Labels: map[string]string{"a": "b"}, Opt: &rtPoint{X: 9}},
			nestedName, rtNested{Name: "n", Points: []rtPoint{{X: 1}, {Y: 2}}, Labels: map[string]string{"a": "b"}, Opt: &rtPoint{X: 9}}},
		{"named slice", rtTags{"x", "y"}, tagsName, rtTags{"x", "y"}},
		{"empty struct", rtEmpty{}, emptyName, rtEmpty{}},
		// What plugin.RegisterMessage documents for interface-typed fields.
		{"int in an interface arrives as uint64", rtAny{V: 5}, anyName, rtAny{V: uint64(5)}},
		{"negative int in an interface arrives as int64", rtAny{V: -5}, anyName, rtAny{V: int64(-5)}},
		{"float in an interface", rtAny{V: float32(1.5)}, anyName, rtAny{V: 1.5}},
		{"map and slice in an interface", rtAny{V: map[string]any{"n": []int{1}}}, anyName,
			rtAny{V: map[string]any{"n": []any{uint64(1)}}}},
		{"proto", &wire.Hello{ProtocolVersion: 1, BuildId: "b", Plugins: []string{"p1", "p2"}, Pid: 42, Auth: []byte{0, 1}},
			helloName, &wire.Hello{ProtocolVersion: 1, BuildId: "b", Plugins: []string{"p1", "p2"}, Pid: 42, Auth: []byte{0, 1}}},
		{"empty proto", &wire.Hello{}, helloName, &wire.Hello{}},
		{"nil", nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name, payload, err := encode(t, tt.in)
			if err != nil {
				t.Fatalf("Encode(%#v): %v", tt.in, err)
			}
			if name != tt.wantName {
				t.Errorf("Encode name = %q, want %q", name, tt.wantName)
			}
			got, err := codec.Decode(name, payload)
			if err != nil {
				t.Fatalf("Decode(%q, %q): %v", name, payload, err)
			}
			if pm, ok := tt.want.(proto.Message); ok {
				gm, ok := got.(proto.Message)
				if !ok || !proto.Equal(gm, pm) {
					t.Errorf("Decode = %v (%T), want %v (%T)", got, got, tt.want, tt.want)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode = %#v (%T), want %#v (%T)", got, got, tt.want, tt.want)
			}
		})
	}
}

// nil, and a nil pointer of a registered type (a proto message, a struct
// sent by pointer), are nil on the wire: the receiver gets nil. A nil proto
// message used to arrive as an empty one, and a nil *T was refused as an
// unregistered type.
func TestEncodeNil(t *testing.T) {
	t.Parallel()
	for _, v := range []any{nil, (*rtPoint)(nil), (*wire.Hello)(nil)} {
		name, payload, err := encode(t, v)
		if name != "" || payload != nil || err != nil {
			t.Errorf("Encode(%#v) = %q, %q, %v; want \"\", nil, nil", v, name, payload, err)
		}
	}
	v, err := codec.Decode("", []byte("ignored"))
	if v != nil || err != nil {
		t.Errorf("Decode(\"\", ...) = %v, %v; want nil, nil", v, err)
	}
}

func TestEncodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		v        any
		wantIs   error // nil: any error
		wantText []string
	}{
		{"unregistered struct", rtUnregistered{A: 1}, codec.ErrUnregistered, []string{"codec_test.rtUnregistered", "RegisterMessage"}},
		{"pointer to unregistered", &rtUnregistered{}, codec.ErrUnregistered, []string{"*codec_test.rtUnregistered"}},
		{"builtin", 42, codec.ErrUnregistered, []string{"int"}},
		{"unnamed slice of a registered element", []rtPoint{{X: 1}}, codec.ErrUnregistered, []string{"[]codec_test.rtPoint"}},
		{"pointer to pointer to registered struct", new(*rtPoint), codec.ErrUnregistered, []string{"**codec_test.rtPoint"}},
		{"proto value, not pointer", wire.Resource{}, codec.ErrUnregistered, []string{"wire.Resource"}},
		{"unencodable registered type", rtBad{F: func() {}}, nil, []string{badName}},
		{"the type's own encoder panics", rtClumsy{}, nil, []string{"encoding method panicked: clumsy encoder"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			name, payload, err := encode(t, tt.v)
			if err == nil {
				t.Fatalf("Encode(%T) = %q, %q, nil; want an error", tt.v, name, payload)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Encode(%T) error %q does not wrap %q", tt.v, err, tt.wantIs)
			}
			if tt.wantIs == nil && errors.Is(err, codec.ErrUnregistered) {
				t.Errorf("Encode(%T) error %q wraps ErrUnregistered, want another error", tt.v, err)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Encode(%T) error %q, want it to contain %q", tt.v, err, w)
				}
			}
		})
	}
}

// TestEncodePointerToProtoPointer pins that a pointer to a registered proto
// message pointer (a **pb.Msg, easy to pass by mistake as &msg) is refused
// with ErrUnregistered. It fails today: Encode finds the element type
// registered as a proto, skips the dereference, and panics in the
// v.(proto.Message) assertion, so Send/Ask would crash the caller
// (DESIGN.md §3.8: "never a crash").
func TestEncodePointerToProtoPointer(t *testing.T) {
	t.Parallel()
	hello := &wire.Hello{BuildId: "x"}
	name, payload, err := encode(t, &hello)
	if !errors.Is(err, codec.ErrUnregistered) {
		t.Errorf("Encode(**wire.Hello) = %q, %q, %v; want an error wrapping ErrUnregistered", name, payload, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		typ      string
		payload  []byte
		wantIs   error
		wantText string
	}{
		{"unknown name", "codec_test.no.such.type", []byte("{}"), codec.ErrUnknownName, `"codec_test.no.such.type"`},
		{"JSON instead of CBOR", pointName, []byte(`{"X":`), codec.ErrDecode, pointName},
		{"wrong type", pointName, mustCBOR(map[string]any{"X": "one"}), codec.ErrDecode, pointName},
		{"map for a slice type", tagsName, mustCBOR(map[string]any{"a": 1}), codec.ErrDecode, tagsName},
		{"empty payload for CBOR", pointName, nil, codec.ErrDecode, pointName},
		{"truncated proto", helloName, []byte{0x08}, codec.ErrDecode, helloName},
		{"bad proto length", helloName, []byte{0x12, 0xff, 0xff, 0xff, 0xff, 0x0f}, codec.ErrDecode, helloName},
		{"invalid utf-8 in proto string", helloName, []byte{0x12, 0x02, 0xff, 0xfe}, codec.ErrDecode, helloName},
		// User code given a peer's bytes: a panic must not end the process.
		{"the type's own decoder panics", clumsyName, mustCBOR(1), codec.ErrDecode, clumsyName + ": its decoding method panicked: clumsy decoder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := codec.Decode(tt.typ, tt.payload)
			if err == nil {
				t.Fatalf("Decode(%q, %q) = %#v, nil; want an error", tt.typ, tt.payload, v)
			}
			if v != nil {
				t.Errorf("Decode(%q, %q) value = %#v, want nil with an error", tt.typ, tt.payload, v)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("Decode error %q does not wrap %q", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Decode error %q, want it to contain %q", err, tt.wantText)
			}
		})
	}
}

func TestDecodeLenient(t *testing.T) {
	t.Parallel()
	// CBOR null and unknown fields decode to the zero value and are
	// ignored; an empty proto payload is the empty message.
	v, err := codec.Decode(pointName, []byte{0xf6})
	if err != nil || v != (rtPoint{}) {
		t.Errorf("Decode(point, null) = %#v, %v; want the zero point, nil", v, err)
	}
	extra, err := cbor.Marshal(map[string]any{"X": 1, "Unknown": true})
	if err != nil {
		t.Fatal(err)
	}
	v, err = codec.Decode(pointName, extra)
	if err != nil || v != (rtPoint{X: 1}) {
		t.Errorf("Decode(point, unknown field) = %#v, %v; want {X:1}, nil", v, err)
	}
	v, err = codec.Decode(helloName, nil)
	if h, ok := v.(*wire.Hello); err != nil || !ok || !proto.Equal(h, &wire.Hello{}) {
		t.Errorf("Decode(hello, nil) = %v, %v; want an empty *wire.Hello, nil", v, err)
	}
}

// valueProto implements proto.Message on its value type, which Register
// must refuse: proto messages are registered by pointer.
type valueProto struct{}

func (valueProto) ProtoReflect() protoreflect.Message { return nil }

type (
	regA   struct{ A int }
	regB   struct{ B int }
	regC   struct{ C int }
	regErr interface{ Error() string }
)

func TestRegister(t *testing.T) {
	t.Parallel()
	if err := codec.Register(reflect.TypeFor[regA](), "codec_test.reg.a"); err != nil {
		t.Fatalf("Register(regA): %v", err)
	}
	if err := codec.Register(reflect.TypeFor[regA](), "codec_test.reg.a"); err != nil {
		t.Errorf("Register(regA) again under the same name = %v, want nil", err)
	}
	if err := codec.Register(reflect.TypeFor[*regC](), "codec_test.reg.c-pointer"); err != nil {
		t.Errorf("Register(*regC) = %v, want nil (a non-proto pointer type is allowed)", err)
	}

	tests := []struct {
		name     string
		typ      reflect.Type
		msgName  string
		wantText []string
	}{
		{"nil type", nil, "codec_test.reg.nil", []string{"nil type"}},
		{"empty name", reflect.TypeFor[regB](), "", []string{"empty"}},
		{"interface", reflect.TypeFor[regErr](), "codec_test.reg.iface", []string{"interface"}},
		{"any", reflect.TypeFor[any](), "codec_test.reg.any", []string{"interface"}},
		{"proto interface", reflect.TypeFor[proto.Message](), "codec_test.reg.protoiface", []string{"pointer type"}},
		{"proto value receiver", reflect.TypeFor[valueProto](), "codec_test.reg.valueproto", []string{"pointer type", "valueProto"}},
		{"type under a second name", reflect.TypeFor[regA](), "codec_test.reg.a2", []string{"regA", `already registered as "codec_test.reg.a"`}},
		{"name taken by another type", reflect.TypeFor[regB](), "codec_test.reg.a", []string{`"codec_test.reg.a"`, "already used by", "regA"}},
		{"name taken by a proto", reflect.TypeFor[regB](), helloName, []string{"already used by", "wire.Hello"}},
		{"no exported fields", reflect.TypeFor[hidden](), "codec_test.reg.hidden", []string{"hidden has no exported fields"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := codec.Register(tt.typ, tt.msgName)
			if err == nil {
				t.Fatalf("Register(%v, %q) = nil, want an error", tt.typ, tt.msgName)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Register(%v, %q) error %q, want it to contain %q", tt.typ, tt.msgName, err, w)
				}
			}
		})
	}
	// Failed registrations leave no trace.
	for _, n := range []string{"codec_test.reg.a2", "codec_test.reg.iface", "codec_test.reg.valueproto"} {
		if slices.Contains(codec.Names(), n) {
			t.Errorf("Names() contains %q after a failed Register", n)
		}
	}
	if _, _, err := codec.Encode(regB{}); !errors.Is(err, codec.ErrUnregistered) {
		t.Errorf("Encode(regB) after a failed Register: %v, want ErrUnregistered", err)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	names := codec.Names()
	if !slices.IsSorted(names) {
		t.Errorf("Names() = %q, want it sorted", names)
	}
	for _, n := range []string{pointName, nestedName, tagsName, helloName} {
		if !slices.Contains(names, n) {
			t.Errorf("Names() = %q, want it to contain %q", names, n)
		}
	}
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("Names() = %q has duplicates", names)
	}
}

func TestNameOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ  reflect.Type
		want string
	}{
		{reflect.TypeFor[rtPoint](), "github.com/emberhq/ember/internal/codec_test.rtPoint"},
		{reflect.TypeFor[rtTags](), "github.com/emberhq/ember/internal/codec_test.rtTags"},
		{reflect.TypeFor[*wire.Hello](), "github.com/emberhq/ember/internal/wire.Hello"},
		{reflect.TypeFor[wire.Hello](), "github.com/emberhq/ember/internal/wire.Hello"},
		{reflect.TypeFor[*rtPoint](), "*codec_test.rtPoint"},
		{reflect.TypeFor[[]int](), "[]int"},
		{reflect.TypeFor[map[string]int](), "map[string]int"},
		{reflect.TypeFor[string](), "string"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			if got := codec.NameOf(tt.typ); got != tt.want {
				t.Errorf("NameOf(%v) = %q, want %q", tt.typ, got, tt.want)
			}
		})
	}
}

// TestRegisterConcurrent registers distinct types while other goroutines
// encode and decode; run with -race.
func TestRegisterConcurrent(t *testing.T) {
	t.Parallel()
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// [i+100]byte is a distinct type per goroutine.
			typ := reflect.ArrayOf(i+100, reflect.TypeFor[byte]())
			name := fmt.Sprintf("codec_test.concurrent.%d", i)
			if err := codec.Register(typ, name); err != nil {
				t.Errorf("Register(%v): %v", typ, err)
				return
			}
			v := reflect.New(typ).Elem().Interface()
			gotName, payload, err := codec.Encode(v)
			if err != nil || gotName != name {
				t.Errorf("Encode(%v) = %q, %v; want %q, nil", typ, gotName, err, name)
				return
			}
			if _, err := codec.Decode(name, payload); err != nil {
				t.Errorf("Decode(%q): %v", name, err)
			}
		})
		wg.Go(func() {
			name, payload, err := codec.Encode(rtPoint{X: i})
			if err != nil {
				t.Errorf("Encode(point): %v", err)
				return
			}
			if v, err := codec.Decode(name, payload); err != nil || v != (rtPoint{X: i}) {
				t.Errorf("Decode(point) = %v, %v; want {X:%d}", v, err, i)
			}
			_ = codec.Names()
		})
	}
	wg.Wait()
	names := codec.Names()
	for i := range n {
		if want := fmt.Sprintf("codec_test.concurrent.%d", i); !slices.Contains(names, want) {
			t.Errorf("Names() lacks %q after concurrent registration", want)
		}
	}
}

// TestMarshalUnmarshal covers the registry-free encoding used for values
// whose type both sides know statically (task inputs and outputs).
func TestMarshalUnmarshal(t *testing.T) {
	t.Parallel()
	t.Run("struct", func(t *testing.T) {
		t.Parallel()
		in := rtUnregistered{A: 7} // no registration needed
		data, err := codec.Marshal(in)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var out rtUnregistered
		if err := codec.Unmarshal(data, &out); err != nil || out != in {
			t.Errorf("Unmarshal = %+v, %v; want %+v, nil", out, err, in)
		}
	})
	t.Run("builtin", func(t *testing.T) {
		t.Parallel()
		data, err := codec.Marshal([]int{1, 2, 3})
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var out []int
		if err := codec.Unmarshal(data, &out); err != nil || !slices.Equal(out, []int{1, 2, 3}) {
			t.Errorf("Unmarshal = %v, %v; want [1 2 3], nil", out, err)
		}
	})
	t.Run("proto", func(t *testing.T) {
		t.Parallel()
		in := &wire.Task{JobId: "j", Name: "square", Index: 3}
		data, err := codec.Marshal(in)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var out *wire.Task
		if err := codec.Unmarshal(data, &out); err != nil || !proto.Equal(out, in) {
			t.Errorf("Unmarshal into **wire.Task = %v, %v; want %v, nil", out, err, in)
		}
	})
	t.Run("bad data", func(t *testing.T) {
		t.Parallel()
		var n int
		if err := codec.Unmarshal([]byte(`"x"`), &n); err == nil {
			t.Errorf("Unmarshal(string into int) = nil, want an error")
		}
		var m *wire.Task
		if err := codec.Unmarshal([]byte{0x0a, 0x05}, &m); err == nil {
			t.Errorf("Unmarshal(truncated proto) = nil, want an error")
		}
	})
}

func mustCBOR(v any) []byte {
	b, err := cbor.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Decode reuses the value it decodes into: a message must not inherit
// fields of the one decoded before it, nor share its slices and maps.
func TestDecodeFreshEachTime(t *testing.T) {
	first := rtNested{Name: "first", Points: []rtPoint{{X: 1}}, Labels: map[string]string{"k": "v"}, Opt: &rtPoint{Y: 2}}
	_, full, err := encode(t, first)
	if err != nil {
		t.Fatal(err)
	}
	_, sparse, err := encode(t, rtNested{Name: "second"})
	if err != nil {
		t.Fatal(err)
	}
	// Tag is omitted from the encoding when empty: absent, not null.
	_, tagged, err := encode(t, rtPoint{X: 1, Tag: "t"})
	if err != nil {
		t.Fatal(err)
	}
	_, untagged, err := encode(t, rtPoint{X: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // the scratch value is pooled; go round a few times
		if _, err := codec.Decode(pointName, tagged); err != nil {
			t.Fatal(err)
		}
		p, err := codec.Decode(pointName, untagged)
		if err != nil {
			t.Fatal(err)
		}
		if want := (rtPoint{X: 2}); p != want {
			t.Errorf("decode after a tagged point = %+v, want %+v (a field left from the one before)", p, want)
		}
		a, err := codec.Decode(nestedName, full)
		if err != nil {
			t.Fatal(err)
		}
		b, err := codec.Decode(nestedName, sparse)
		if err != nil {
			t.Fatal(err)
		}
		if want := (rtNested{Name: "second"}); !reflect.DeepEqual(b, want) {
			t.Errorf("second decode = %+v, want %+v (fields left from the first)", b, want)
		}
		got := a.(rtNested)
		if !reflect.DeepEqual(got, first) {
			t.Errorf("first decode = %+v, want %+v", got, first)
		}
		got.Points[0].X, got.Labels["k"] = 99, "changed"
		c, err := codec.Decode(nestedName, full)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, first) {
			t.Errorf("a later decode = %+v, want %+v (it shares memory with an earlier result)", c, first)
		}
	}
}

// Marshal and Unmarshal, for task inputs and outputs, turn a panic in the
// type's own methods into an error too.
func TestMarshalUnmarshalPanics(t *testing.T) {
	t.Parallel()
	if _, err := codec.Marshal(rtClumsy{}); err == nil || !strings.Contains(err.Error(), "clumsy encoder") {
		t.Errorf("Marshal of a type whose encoder panics: got %v, want the panic as an error", err)
	}
	var v rtClumsy
	if err := codec.Unmarshal(mustCBOR(1), &v); !errors.Is(err, codec.ErrDecode) || !strings.Contains(err.Error(), "clumsy decoder") {
		t.Errorf("Unmarshal into a type whose decoder panics: got %v, want ErrDecode with the panic", err)
	}
}

type (
	hidden       struct{ x, y int }
	hiddenInner  struct{ X int }
	hiddenEmbeds struct{ hiddenInner }
	hiddenMixed  struct {
		x int
		Y int
	}
	hiddenCBOR struct{ x int }
	hiddenBin  struct{ x int }
	// Carry nothing by design.
	blankOnly   struct{ _ [0]func() }
	noCompare   struct{ noCmp [0]func() }
	toArrayOnly struct {
		_ struct{} `cbor:",toarray"`
	}
)

func (hiddenCBOR) MarshalCBOR() ([]byte, error)   { return nil, nil }
func (*hiddenBin) MarshalBinary() ([]byte, error) { return nil, nil }

// CheckFields refuses a struct that would travel as an empty map, its
// fields all unexported, and nothing else.
func TestCheckFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ     reflect.Type
		wantErr bool
	}{
		{reflect.TypeFor[hidden](), true},
		{reflect.TypeFor[*hidden](), true},
		{reflect.TypeFor[struct{}](), false},
		{reflect.TypeFor[rtPoint](), false},
		{reflect.TypeFor[hiddenMixed](), false},
		{reflect.TypeFor[hiddenEmbeds](), false}, // embedded: let through, not looked into
		{reflect.TypeFor[hiddenCBOR](), false},   // encodes itself
		{reflect.TypeFor[hiddenBin](), false},    // encodes itself (pointer receiver)
		{reflect.TypeFor[time.Time](), false},    // all unexported, but a BinaryMarshaler
		{reflect.TypeFor[*wire.Hello](), false},  // protobuf
		{reflect.TypeFor[int](), false},
		{reflect.TypeFor[map[string]int](), false},
		{reflect.TypeFor[any](), false},
		{reflect.TypeFor[**hidden](), true},
		{reflect.TypeFor[big.Int](), false}, // CBOR encodes it as a bignum
		{reflect.TypeFor[*big.Int](), false},
		{reflect.TypeFor[big.Float](), true}, // MarshalText only, which CBOR ignores
		{reflect.TypeFor[blankOnly](), false},
		{reflect.TypeFor[noCompare](), false},
		{reflect.TypeFor[toArrayOnly](), false},
	}
	for _, tt := range tests {
		err := codec.CheckFields(tt.typ)
		if (err != nil) != tt.wantErr {
			t.Errorf("CheckFields(%v) = %v, want an error: %v", tt.typ, err, tt.wantErr)
		}
	}
	// What CheckFields lets through does travel: a big.Int among them.
	b, err := codec.Marshal(big.NewInt(-1 << 62))
	if err != nil {
		t.Fatal(err)
	}
	var got big.Int
	if err := codec.Unmarshal(b, &got); err != nil || got.Int64() != -1<<62 {
		t.Errorf("big.Int round trip: got %v, %v; want %d", &got, err, int64(-1<<62))
	}
}

// Decoding a message allocates what it returns and nothing else: the value
// copied into the interface, and its strings. The scratch *T comes from a
// pool, which the race detector empties at random, so the count is checked
// without it.
func TestDecodeAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled values at random")
	}
	payload := mustCBOR(rtPoint{X: 1, Y: -2, Tag: "héllo"})
	got := testing.AllocsPerRun(100, func() {
		if _, err := codec.Decode(pointName, payload); err != nil {
			t.Fatal(err)
		}
	})
	if want := 2.0; got != want { // the rtPoint in the interface, and Tag
		t.Errorf("Decode(%q) made %v allocations, want %v", pointName, got, want)
	}
}

type (
	sealedBefore struct{ N int }
	sealedAfter  struct{ N int }
)

// A sealed registry refuses new types, saying when it was sealed and
// where to register them; a type registered before may be registered
// again, as it may be anywhere (two init functions). Not parallel: it
// seals the process's registry for its duration.
func TestRegisterSealed(t *testing.T) {
	before, after := reflect.TypeFor[sealedBefore](), reflect.TypeFor[sealedAfter]()
	if err := codec.Register(before, "codec_test.sealedBefore"); err != nil {
		t.Fatal(err)
	}
	codec.Seal("after the test sealed it")
	t.Cleanup(codec.Unseal)
	codec.Seal("twice") // the first seal's words stay
	if err := codec.Register(before, "codec_test.sealedBefore"); err != nil {
		t.Errorf("Register of a type registered before the seal: got %v, want nil", err)
	}
	err := codec.Register(after, "codec_test.sealedAfter")
	want := "codec_test.sealedAfter: registered after the test sealed it; register message types in an init function"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Register of a new type once sealed: got %v, want an error containing %q", err, want)
	}
	if _, _, err := codec.Encode(sealedAfter{1}); err == nil {
		t.Error("Encode of the type refused: got nil error, want it unregistered")
	}
}
