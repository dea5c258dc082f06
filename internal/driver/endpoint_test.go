package driver

import (
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/wire"
)

// labelled is a message type registered in this test binary.
type labelled struct{ N int }

func init() {
	if err := codec.Register(reflect.TypeFor[labelled](), "driver_test.labelled"); err != nil {
		panic(err)
	}
}

// A message's type name labels ember_messages_total. A frame may carry the
// name itself (type index 0), which is then whatever the peer wrote: only
// a name registered here becomes a label. A name that is not valid UTF-8
// made WithLabelValues panic on the lane, outside any recover, and ended
// the driver process; made-up names each made a series for the driver's
// life.
func TestMessageTypeLabels(t *testing.T) {
	tests := []struct {
		name  string
		types []string // the frames' type names, one SEND each
		want  map[string]float64
	}{
		{"registered", []string{"driver_test.labelled", "driver_test.labelled"}, map[string]float64{"driver_test.labelled": 2}},
		{"not UTF-8", []string{"\xff", "a\xfe"}, map[string]float64{"unregistered": 2}},
		{"made up", madeUp(1000), map[string]float64{"unregistered": 1000}},
		{"both", []string{"driver_test.labelled", "x", "driver_test.labelled"}, map[string]float64{"driver_test.labelled": 2, "unregistered": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _, es, c := memberDriver(t, slog.New(slog.NewTextHandler(io.Discard, nil)))
			d.ready(es, &wire.Frame{Kind: wire.Kind_KIND_READY, Ready: &wire.Ready{Slots: 1}})
			for _, typ := range tt.types {
				d.HandleFrame(c, &wire.Frame{Kind: wire.Kind_KIND_SEND, Type: typ, Payload: []byte{0xa0}})
			}
			flushLanes(t, d)
			c.Close(nil)
			got := map[string]float64{}
			fams, err := d.Gatherer().Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fams {
				if f.GetName() != "ember_messages_total" {
					continue
				}
				for _, m := range f.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "type" {
							got[l.GetValue()] += m.GetCounter().GetValue()
						}
					}
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ember_messages_total by type = %v, want %v", got, tt.want)
			}
		})
	}
}

func madeUp(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("made.up/T%d", i)
	}
	return s
}
