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
	f.Add(pointName, []byte(`{"X":1,"Y":2,"tag":"t"}`))
	f.Add(nestedName, []byte(`{"Name":"n","Points":[{"X":1}],"Labels":{"a":"b"},"Opt":{"Y":3}}`))
	f.Add(tagsName, []byte(`["a","b"]`))
	f.Add(emptyName, []byte(`{}`))
	f.Add(helloName, []byte("\x08\x01\x12\x01b\x1a\x02p1"))
	f.Add("", []byte(nil))
	f.Add("no.such.name", []byte(`{}`))
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
