package executor

import (
	"runtime"
	"testing"

	"github.com/emberhq/ember/internal/wire"
)

// An executor's READY reports its task slots: its own setting (its
// process's EMBER_EXECUTOR_SLOTS) over the driver's conf, the conf over
// Config.Slots, and GOMAXPROCS when none is set: the CPUs the process may
// use, where NumCPU counted a container's host. The conf used to win over
// everything, so one machine of a farm could not take fewer tasks than
// the rest.
func TestReadySlots(t *testing.T) {
	tests := []struct {
		name  string
		conf  string // the driver's ember.executor.slots; "" unset
		slots int    // Config.Slots
		own   int    // Config.OwnSlots
		want  int
	}{
		{name: "default", want: runtime.GOMAXPROCS(0)},
		{name: "Config.Slots", slots: 5, want: 5},
		{name: "the driver's conf", conf: "4", slots: 5, want: 4},
		{name: "the executor's own over the conf", conf: "4", slots: 5, own: 2, want: 2},
		{name: "the executor's own", own: 3, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDriver(t, []string{"p"}, 0)
			if tt.conf != "" {
				d.conf = map[string]string{ConfSlots: tt.conf}
			}
			runErr := d.runWith(testPlugin{name: "p", ep: &funcExecutor{}}, func(cfg *Config) {
				cfg.Slots, cfg.OwnSlots = tt.slots, tt.own
			})
			i := d.waitFor(wire.Kind_KIND_READY, 0)
			d.mu.Lock()
			got := int(d.frames[i].GetReady().GetSlots())
			d.mu.Unlock()
			if got != tt.want {
				t.Errorf("READY's slots: got %d, want %d", got, tt.want)
			}
			d.send(&wire.Frame{Kind: wire.Kind_KIND_STOP})
			d.waitFor(wire.Kind_KIND_STOPPED, i)
			d.release()
			if err := <-runErr; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}
