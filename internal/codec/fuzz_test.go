package codec_test

import (
	"testing"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/wire"
)

// fuzzNames are the registered names every fuzz payload is also decoded as,
// so that arbitrary bytes reach each decoder whatever name the fuzzer picks.
var fuzzNames = []string{pointName, nestedName, tagsName, emptyName, helloName}

// FuzzDecode feeds arbitrary (name, payload) pairs to codec.Decode, as a
// peer can. Decode must never panic, and whatever it accepts must encode
// again under the same name and decode once more.
func FuzzDecode(f *testing.F) {
	// Seeds in the encoding peers send (CBOR, protobuf for proto
	// messages), whole and cut short, so that mutations start inside
	// the struct, slice and map decoders.
	for _, v := range []any{
		rtPoint{X: 1, Y: -2, Tag: "héllo"},
		rtNested{Name: "n", Points: []rtPoint{{X: 1}, {Y: 2}}, Labels: map[string]string{"a": "b"}, Opt: &rtPoint{Y: 3}},
		rtTags{"x", "y", ""},
		rtEmpty{},
		&wire.Hello{ProtocolVersion: 1, BuildId: "b", Plugins: []string{"p1"}},
	} {
		name, payload, err := codec.Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(name, payload)
		f.Add(name, payload[:len(payload)/2])
	}
	f.Add(pointName, []byte{0xa1, 0x61, 0x58, 0x63, 0x6f, 0x6e, 0x65}) // {"X": "one"}: a field of another type
	f.Add("", []byte(nil))
	f.Add("no.such.name", []byte{0xa0})
	f.Fuzz(func(t *testing.T, name string, payload []byte) {
		check(t, name, payload)
		for _, n := range fuzzNames {
			check(t, n, payload)
		}
		// Task inputs and outputs arrive through Unmarshal.
		var p rtPoint
		_ = codec.Unmarshal(payload, &p)
		var h *wire.Hello
		_ = codec.Unmarshal(payload, &h)
		var v any
		_ = codec.Unmarshal(payload, &v)
	})
}

func check(t *testing.T, name string, payload []byte) {
	t.Helper()
	v, err := codec.Decode(name, payload)
	if err != nil {
		if v != nil {
			t.Fatalf("Decode(%q, %q) = %#v with error %v; want nil with an error", name, payload, v, err)
		}
		return
	}
	if name == "" {
		if v != nil {
			t.Fatalf("Decode(\"\", %q) = %#v, want nil", payload, v)
		}
		return
	}
	gotName, again, err := codec.Encode(v)
	if err != nil {
		t.Fatalf("Decode(%q, %q) = %#v, which does not encode: %v", name, payload, v, err)
	}
	if gotName != name {
		t.Fatalf("Decode(%q, ...) gave %T, which encodes as %q", name, v, gotName)
	}
	if _, err := codec.Decode(gotName, again); err != nil {
		t.Fatalf("re-encoded %q payload %q does not decode: %v", name, again, err)
	}
}
