package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"testing"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/wire"
	"github.com/emberhq/ember/plugin"
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

// The error of an ask to an executor tells a coordinator what to do next:
// ErrClosed alone (ask another) for an executor stopping on its own,
// ErrShuttingDown too (stop) for the driver's shutdown. An ask refused by
// an executor plugin that has shut down (it crossed the executor's LEAVING
// on the wire) gives the same as one whose handler returned its ctx's end
// then; a Receive's own error keeps its code and text.
func TestAskError(t *testing.T) {
	refused := func() error {
		_, err := rpc.Result(&wire.Frame{Code: uint32(plugin.CodeUnavailable), Error: `executor plugin "p" has shut down`, Closed: true})
		return err
	}
	canceled := func() error {
		_, err := rpc.Result(&wire.Frame{Code: uint32(plugin.CodeCanceled), Error: "context canceled"})
		return err
	}
	own := func() error { // a Receive returning CodeUnavailable of its own
		_, err := rpc.Result(&wire.Frame{Code: uint32(plugin.CodeUnavailable), Error: "backend down"})
		return err
	}
	tests := []struct {
		name             string
		err              error
		stoppingOwn      bool // the executor has sent LEAVING
		driverStopping   bool
		askerCanceled    bool
		want             string
		wantClosed       bool
		wantShuttingDown bool
	}{
		{"refused, stopping on its own", refused(), true, false, false, "executor 1: unavailable: it is stopping on its own: ember: closed", true, false},
		{"refused, driver shutting down", refused(), false, true, false, "executor 1: unavailable: ember: the driver is shutting down: ember: closed", true, true},
		{"refused, otherwise", refused(), false, false, false, `executor 1: unavailable: executor plugin "p" has shut down`, true, false},
		{"refused, the asker's ctx ended", refused(), true, false, true, `executor 1: unavailable: executor plugin "p" has shut down`, true, false},
		{"handler canceled, stopping on its own", canceled(), true, false, false, "executor 1: unavailable: it is stopping on its own: ember: closed", true, false},
		{"handler canceled, otherwise", canceled(), false, false, false, "canceled: context canceled", false, false},
		{"Receive's own unavailable, stopping on its own", own(), true, false, false, "executor 1: unavailable: backend down", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _, es, c := memberDriver(t, slog.New(slog.NewTextHandler(io.Discard, nil)))
			d.mu.Lock()
			es.stoppingOwn, d.stopping = tt.stoppingOwn, tt.driverStopping
			d.mu.Unlock()
			t.Cleanup(func() { // before memberDriver's Close, which waits for the executor to go
				d.mu.Lock()
				d.stopping = false
				d.mu.Unlock()
				c.Close(nil)
			})
			ctx, cancel := context.WithCancel(context.Background())
			if tt.askerCanceled {
				cancel()
			}
			defer cancel()
			err := d.askError(ctx, c, tt.err)
			if err.Error() != tt.want {
				t.Errorf("got %q, want %q", err, tt.want)
			}
			if got := errors.Is(err, plugin.ErrClosed); got != tt.wantClosed {
				t.Errorf("errors.Is(%v, ErrClosed) = %v, want %v", err, got, tt.wantClosed)
			}
			if got := errors.Is(err, plugin.ErrShuttingDown); got != tt.wantShuttingDown {
				t.Errorf("errors.Is(%v, ErrShuttingDown) = %v, want %v", err, got, tt.wantShuttingDown)
			}
		})
	}
}

// An ASK that reaches a driver plugin after it has shut down (its lane
// closed) is refused as closed: the executor's Ask fails with ErrClosed,
// as one to a driver that has gone does.
func TestAskToAShutDownDriverPluginIsRefusedClosed(t *testing.T) {
	d, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Plugins: []plugin.Plugin{&membership{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	stream, es := schedExecutor(t, d, "1", 1)
	d.endpoints[0].lane.Close()
	d.HandleFrame(es.conn, &wire.Frame{Kind: wire.Kind_KIND_ASK, Call: 7, Plugin: 0})
	pollSent(t, stream, wire.Kind_KIND_REPLY, 1)
	stream.mu.Lock()
	defer stream.mu.Unlock()
	for _, f := range stream.frames {
		if f.Kind != wire.Kind_KIND_REPLY {
			continue
		}
		if f.Call != 7 || plugin.Code(f.Code) != plugin.CodeUnavailable || !f.Closed || f.Error != `driver plugin "members" has shut down` {
			t.Errorf("got REPLY call %d, %v %q, closed %v; want call 7, Unavailable, saying the plugin has shut down, closed", f.Call, plugin.Code(f.Code), f.Error, f.Closed)
		}
	}
}
