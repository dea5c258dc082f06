// Command rpc is Spark's plugin RPC example in Go: each executor plugin asks
// its driver plugin for an initial configuration when it starts, and sends
// a final value when it shuts down.
//
//	go run ./examples/rpc
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

// The messages. Every process registers them, in init.
type (
	InitialConfigRequest  struct{}
	InitialConfigResponse struct{ Value int }
	FinalValueResponse    struct{ Value int }
)

func init() {
	plugin.RegisterMessage[InitialConfigRequest]()
	plugin.RegisterMessage[InitialConfigResponse]()
	plugin.RegisterMessage[FinalValueResponse]()
}

// rpcDemo pairs the two sides under one name.
type rpcDemo struct{}

func (rpcDemo) Name() string                          { return "rpc-demo" }
func (rpcDemo) DriverPlugin() plugin.DriverPlugin     { return &driverPlugin{} }
func (rpcDemo) ExecutorPlugin() plugin.ExecutorPlugin { return &executorPlugin{} }

type driverPlugin struct{ plugin.BaseDriverPlugin }

// Receive answers the initial-configuration ask and prints final values.
func (*driverPlugin) Receive(ctx context.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case InitialConfigRequest:
		return InitialConfigResponse{Value: 10}, nil
	case FinalValueResponse:
		fmt.Printf("the final value is %d\n", m.Value)
		return nil, nil
	}
	return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
}

type executorPlugin struct {
	plugin.BaseExecutorPlugin
	pc plugin.ExecutorContext
}

func (p *executorPlugin) Init(ctx context.Context, pc plugin.ExecutorContext, _ map[string]string) error {
	p.pc = pc
	r, err := plugin.Ask[InitialConfigResponse](ctx, pc, InitialConfigRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("the initial configuration is %d\n", r.Value)
	return nil
}

func (p *executorPlugin) Shutdown(ctx context.Context) error {
	return p.pc.Send(ctx, FinalValueResponse{Value: 100})
}

var (
	_ plugin.DriverPlugin   = (*driverPlugin)(nil)
	_ plugin.ExecutorPlugin = (*executorPlugin)(nil)
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once a signal has started the shutdown, a second one ends the
	// program at once (the default action), should the shutdown take long.
	context.AfterFunc(ctx, stop)
	err := ember.Run(ctx, ember.Config{
		AppName: "rpc",
		Master:  "local-cluster[2]",
		Plugins: []plugin.Plugin{rpcDemo{}},
	}, func(ctx context.Context, d *ember.Driver) error {
		return nil // the plugins do all the work
	})
	if err != nil {
		log.Fatal(err)
	}
}
