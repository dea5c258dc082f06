package metrics

import (
	"runtime"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/wire"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// An executor's metrics cost the driver about what it sends: a heartbeat
// of 4 MiB used to make Decode allocate 800 MiB when it held two million
// empty families (and return a 90 MiB error naming each, which the driver
// logged), and 220 MiB, kept until the next heartbeat, when it held one
// family of a million empty counters. Families within MaxEntries are
// still kept.
func TestDecodeCostsAboutItsBytes(t *testing.T) {
	name, typ, v := "kept_total", dto.MetricType_COUNTER, 1.0
	kept, err := proto.Marshal(&dto.MetricFamily{Name: &name, Type: &typ, Metric: []*dto.Metric{{Counter: &dto.Counter{Value: &v}}}})
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 << 20
	var families [][]byte // empty ones
	for n := 0; n < size; n += 2 {
		families = append(families, nil)
	}
	counters := protowire.AppendTag(nil, 1, protowire.BytesType)
	counters = protowire.AppendString(counters, "c_total")
	counters = protowire.AppendTag(counters, 3, protowire.VarintType)
	counters = protowire.AppendVarint(counters, 0)
	for len(counters) < size {
		counters = append(counters, 0x22, 0x02, 0x1a, 0x00) // a metric with an empty counter
	}
	for _, tt := range []struct {
		name     string
		families [][]byte
	}{
		{"empty families", append([][]byte{kept}, families...)},
		{"empty counters", [][]byte{kept, counters}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := &wire.Metrics{Families: tt.families}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			fams, err := Decode(m)
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("Decode of a %d MiB shipment allocated %d MiB", size>>20, alloc>>20)
			}
			if err == nil {
				t.Errorf("Decode: no error, want one saying what was left out")
			} else if n := len(err.Error()); n > 4<<10 {
				t.Errorf("Decode: error of %d bytes, want at most 4 KiB", n)
			}
			if len(fams) != 1 || fams[0].GetName() != name {
				t.Errorf("Decode kept %d families, want only %s", len(fams), name)
			}
		})
	}
}

// A family over MaxEntries is left out, and the error says why.
func TestDecodeMaxEntries(t *testing.T) {
	name, typ := "many_total", dto.MetricType_COUNTER
	f := &dto.MetricFamily{Name: &name, Type: &typ}
	for range MaxEntries {
		f.Metric = append(f.Metric, &dto.Metric{Counter: &dto.Counter{}})
	}
	b, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	fams, err := Decode(&wire.Metrics{Families: [][]byte{b}})
	if len(fams) != 0 || err == nil || !strings.Contains(err.Error(), "list elements") {
		t.Errorf("Decode of %d metrics: %d families, %v; want none, and an error naming the limit", MaxEntries, len(fams), err)
	}
	f.Metric = f.Metric[:MaxEntries-1] // with the family itself: MaxEntries
	if b, err = proto.Marshal(f); err != nil {
		t.Fatal(err)
	}
	if fams, err := Decode(&wire.Metrics{Families: [][]byte{b}}); len(fams) != 1 || err != nil {
		t.Errorf("Decode of %d metrics: %d families, %v; want the family", MaxEntries-1, len(fams), err)
	}
}
