package ember_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/embertest"
)

var identity = ember.NewTask("bench.identity", func(_ context.Context, _ ember.TaskContext, n int) (int, error) {
	return n, nil
})

// BenchmarkMap runs trivial tasks (identity on an int) on local-cluster[2]
// in jobs of several sizes. One op is one job; tasks/s and ns/task are
// the figures to compare: the cost per task must not grow with the job.
//
//	go test -run '^$' -bench BenchmarkMap -benchtime 3x .
func BenchmarkMap(b *testing.B) {
	for _, size := range []int{100, 10_000, 100_000} {
		b.Run(fmt.Sprintf("tasks=%d", size), func(b *testing.B) {
			cfg := ember.Config{Master: "local-cluster[2]", ExecutorArgs: embertest.ExecutorArgs(b), Logger: quiet, MetricsAddr: "off"}
			if isChild() {
				runChild(cfg, nil)
			}
			c := embertest.Start(b, cfg)
			inputs := make([]int, size)
			for i := range inputs {
				inputs[i] = i
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				out, err := ember.Map(ctx, c.Driver, identity, inputs)
				if err != nil || len(out) != size {
					b.Fatalf("Map: %d outputs, %v", len(out), err)
				}
			}
			b.StopTimer()
			tasks := float64(b.N * size)
			b.ReportMetric(tasks/b.Elapsed().Seconds(), "tasks/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/tasks, "ns/task")
		})
	}
}
