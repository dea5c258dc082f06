// Command dynamicconfig changes a setting of a running application on every
// executor. The driver plugin serves a small HTTP endpoint; a request
//
//	POST /config?key=log.level&value=debug
//
// updates the setting on the driver, broadcasts it to every executor, and
// answers once every ready executor has acknowledged it. The executors are
// separate processes, so the only way a change reaches them is a message.
//
// The driver function plays the operator: it finds the endpoint, makes two
// changes over HTTP, checks the answers, and returns.
//
//	go run ./examples/dynamicconfig
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emberhq/ember"
	"github.com/emberhq/ember/plugin"
)

// The messages. Every process registers them, in init.
type (
	// SetConfig tells an executor to set Key to Value. The driver numbers
	// changes with increasing versions, and an executor keeps, per key, the
	// value with the highest version it has seen: a duplicate or late
	// message cannot undo a newer change.
	SetConfig struct {
		Key, Value string
		Version    int64
	}
	// Ack tells the driver plugin that an executor holds Version (or a
	// newer one) of a setting.
	Ack struct {
		ExecutorID string
		Version    int64
	}
	// GetChanges asks the driver plugin for the changes made since it
	// started; an executor's Init asks it, so that it runs nothing with
	// settings older than those.
	GetChanges struct{}
	// Changes answers GetChanges: every setting changed since the start,
	// oldest version first.
	Changes struct{ List []SetConfig }
)

func init() {
	plugin.RegisterMessage[SetConfig]()
	plugin.RegisterMessage[Ack]()
	plugin.RegisterMessage[GetChanges]()
	plugin.RegisterMessage[Changes]()
}

const (
	pluginName = "dynamic-config"
	// ackTimeout bounds how long a request waits for the executors.
	ackTimeout = 10 * time.Second
)

// initialSettings reach the executors as the driver plugin's extraConf.
var initialSettings = map[string]string{"log.level": "info"}

// setting is one value and the version that set it (0: initial).
type setting struct {
	Value   string `json:"value"`
	Version int64  `json:"version"`
}

// dynamicConfig pairs the two sides under one name. main builds it before
// ember.Run so that the driver function can reach the driver plugin, which
// lives in the same (driver) process. Executor processes build it too but
// never initialise its driver side.
type dynamicConfig struct{ driver *driverPlugin }

func newDynamicConfig() dynamicConfig {
	return dynamicConfig{driver: &driverPlugin{ready: make(chan struct{})}}
}

func (p dynamicConfig) Name() string                        { return pluginName }
func (p dynamicConfig) DriverPlugin() plugin.DriverPlugin   { return p.driver }
func (dynamicConfig) ExecutorPlugin() plugin.ExecutorPlugin { return &executorPlugin{} }

// driverPlugin is a plugin.ExecutorListener, checked at compile time.
var _ plugin.ExecutorListener = (*driverPlugin)(nil)

// driverPlugin owns the settings and the HTTP endpoint.
type driverPlugin struct {
	plugin.BaseDriverPlugin

	ready  chan struct{} // closed by Init once the fields below are set
	pc     plugin.DriverContext
	url    string
	srv    *http.Server
	served chan error         // Serve's result
	cancel context.CancelFunc // cancels the requests in flight

	mu       sync.Mutex // protects the following fields
	settings map[string]setting
	version  int64                     // the last version handed out
	waiting  map[int64]map[string]bool // version -> executors that acked it, while a request waits
	changed  chan struct{}             // closed and replaced on every ack and membership change
}

// Init starts the HTTP endpoint and returns the initial settings, which
// every executor receives as extraConf.
func (p *driverPlugin) Init(_ context.Context, pc plugin.DriverContext) (map[string]string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.pc = pc
	p.settings = make(map[string]setting)
	for k, v := range initialSettings {
		p.settings[k] = setting{Value: v}
	}
	p.waiting = make(map[int64]map[string]bool)
	p.changed = make(chan struct{})

	mux := http.NewServeMux()
	mux.HandleFunc("POST /config", p.handleSet)
	mux.HandleFunc("GET /config", p.handleGet)
	base, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	p.served = make(chan error, 1)
	go func() { p.served <- p.srv.Serve(lis) }()
	p.url = "http://" + lis.Addr().String() + "/config"
	close(p.ready)
	pc.Logger().Info("dynamic configuration endpoint", "url", p.url)
	return maps.Clone(initialSettings), nil
}

// URL returns the endpoint's URL once Init has run.
func (p *driverPlugin) URL(ctx context.Context) (string, error) {
	select {
	case <-p.ready:
		return p.url, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Update is the answer to POST /config.
type Update struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	Version int64  `json:"version"`
	// Executors are the IDs of the executors that acknowledged it.
	Executors []string `json:"executors"`
}

func (p *driverPlugin) handleSet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("key") || q.Get("key") == "" || !q.Has("value") {
		http.Error(w, "want POST /config?key=K&value=V", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), ackTimeout)
	defer cancel()
	u, err := p.set(ctx, q.Get("key"), q.Get("value"))
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		http.Error(w, err.Error(), http.StatusGatewayTimeout)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		writeJSON(w, u)
	}
}

func (p *driverPlugin) handleGet(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	s := maps.Clone(p.settings)
	p.mu.Unlock()
	writeJSON(w, s)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// set records the change, broadcasts it, and waits until every executor
// that was ready when it was broadcast has acknowledged it, or has left.
func (p *driverPlugin) set(ctx context.Context, key, value string) (Update, error) {
	p.mu.Lock()
	p.version++
	v := p.version
	p.settings[key] = setting{Value: value, Version: v}
	acked := make(map[string]bool)
	p.waiting[v] = acked
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiting, v)
		p.mu.Unlock()
	}()

	want := executorIDs(p.pc.Executors())
	if err := p.pc.Broadcast(ctx, SetConfig{Key: key, Value: value, Version: v}); err != nil {
		return Update{}, fmt.Errorf("broadcast version %d: %w", v, err)
	}
	for {
		// Take the channel before reading the membership, so that a change
		// after the read closes the channel we wait on.
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		still := executorIDs(p.pc.Executors())

		p.mu.Lock()
		var missing []string
		for _, id := range want {
			if !acked[id] && slices.Contains(still, id) {
				missing = append(missing, id)
			}
		}
		done := slices.Sorted(maps.Keys(acked))
		p.mu.Unlock()
		if len(missing) == 0 {
			return Update{Key: key, Value: value, Version: v, Executors: done}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Update{}, fmt.Errorf("version %d not acknowledged by executors %v: %w", v, missing, ctx.Err())
		}
	}
}

func executorIDs(es []plugin.ExecutorInfo) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

// notifyLocked wakes the requests waiting for acks. p.mu must be held.
func (p *driverPlugin) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Receive answers an executor's GetChanges and records acknowledgements.
func (p *driverPlugin) Receive(ctx context.Context, msg any) (any, error) {
	var m Ack
	switch msg := msg.(type) {
	case GetChanges:
		return Changes{List: p.changes()}, nil
	case Ack:
		m = msg
	default:
		return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
	}
	// The runtime says who sent the message; trust it over the payload.
	id, ok := plugin.SenderID(ctx)
	if !ok {
		id = m.ExecutorID
	}
	p.mu.Lock()
	if acked, ok := p.waiting[m.Version]; ok {
		acked[id] = true
		p.notifyLocked()
	}
	p.mu.Unlock()
	return nil, nil
}

// changes returns the settings changed since the start, oldest version
// first.
func (p *driverPlugin) changes() []SetConfig {
	p.mu.Lock()
	var changes []SetConfig
	for k, s := range p.settings {
		if s.Version > 0 {
			changes = append(changes, SetConfig{Key: k, Value: s.Value, Version: s.Version})
		}
	}
	p.mu.Unlock()
	slices.SortFunc(changes, func(a, b SetConfig) int { return cmp.Compare(a.Version, b.Version) })
	return changes
}

// OnExecutorAdded brings an executor up to date with the changes made
// while it joined: after its Init asked for them (GetChanges), and before
// it was ready for Broadcast. Its settings are at most that far behind
// while these travel; the executor keeps the newest version of each, so
// what it already holds is sent again harmlessly. (With local-cluster
// every executor joins before the first change, so this sends nothing.)
func (p *driverPlugin) OnExecutorAdded(ctx context.Context, e plugin.ExecutorInfo) {
	for _, c := range p.changes() {
		if err := p.pc.SendExecutor(ctx, e.ID, c); err != nil {
			// Gone, or the driver is shutting down (ErrShuttingDown
			// matches ErrClosed): nothing to bring up to date.
			if !errors.Is(err, plugin.ErrClosed) {
				p.pc.Logger().Warn("could not bring a new executor up to date", "executor", e.ID, "err", err)
			}
			return
		}
	}
}

// OnExecutorRemoved wakes the requests waiting for acks, so that they stop
// waiting for an executor that has left.
func (p *driverPlugin) OnExecutorRemoved(context.Context, plugin.ExecutorInfo, error) {
	p.mu.Lock()
	p.notifyLocked()
	p.mu.Unlock()
}

// Shutdown stops the HTTP endpoint: requests still waiting for acks end at
// once, then the server waits for their handlers within ctx's deadline.
func (p *driverPlugin) Shutdown(ctx context.Context) error {
	p.cancel()
	err := p.srv.Shutdown(ctx)
	if serr := <-p.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// executorPlugin holds the executor's copy of the settings. Init runs on
// the executor's start-up goroutine and Receive on the plugin's lane, so the
// fields are guarded.
type executorPlugin struct {
	plugin.BaseExecutorPlugin

	mu       sync.Mutex // protects the following fields
	pc       plugin.ExecutorContext
	settings map[string]setting
}

// Init takes the initial settings from extraConf, which the driver plugin
// returned from its own Init and never changes, then asks the driver
// plugin for the changes made since. Init returns before the executor is
// ready, so before it runs any task or takes any message: an executor that
// joins after a change (one started by hand, or a replacement of one lost)
// never works with settings older than those it got here.
func (p *executorPlugin) Init(ctx context.Context, pc plugin.ExecutorContext, extraConf map[string]string) error {
	p.mu.Lock()
	p.pc = pc
	p.settings = make(map[string]setting)
	for _, k := range slices.Sorted(maps.Keys(extraConf)) {
		p.settings[k] = setting{Value: extraConf[k]}
		fmt.Printf("executor %s started with %s=%s\n", pc.ExecutorID(), k, extraConf[k])
	}
	p.mu.Unlock()
	changes, err := plugin.Ask[Changes](ctx, pc, GetChanges{})
	if err != nil {
		return fmt.Errorf("asking the driver for the settings changed since it started: %w", err)
	}
	for _, c := range changes.List {
		p.apply(c)
	}
	return nil
}

// Receive applies a change, then acknowledges it.
func (p *executorPlugin) Receive(ctx context.Context, msg any) (any, error) {
	m, ok := msg.(SetConfig)
	if !ok {
		return nil, plugin.Errorf(plugin.CodeInvalidArgument, "unexpected message %T", msg)
	}
	pc := p.apply(m)
	return nil, pc.Send(ctx, Ack{ExecutorID: pc.ExecutorID(), Version: m.Version})
}

// apply applies a change unless it already holds a newer one, and returns
// the plugin's context.
func (p *executorPlugin) apply(m SetConfig) plugin.ExecutorContext {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.Version > p.settings[m.Key].Version {
		p.settings[m.Key] = setting{Value: m.Value, Version: m.Version}
		fmt.Printf("executor %s applied %s=%s (version %d)\n", p.pc.ExecutorID(), m.Key, m.Value, m.Version)
	}
	return p.pc
}

var (
	_ plugin.Plugin           = dynamicConfig{}
	_ plugin.DriverPlugin     = (*driverPlugin)(nil)
	_ plugin.ExecutorListener = (*driverPlugin)(nil)
	_ plugin.ExecutorPlugin   = (*executorPlugin)(nil)
	_ plugin.ExecutorReceiver = (*executorPlugin)(nil)
)

// operate is the driver function: it changes two settings over HTTP, as
// an operator would, and checks what the endpoint answers.
func operate(ctx context.Context, d *ember.Driver, dp *driverPlugin) error {
	endpoint, err := dp.URL(ctx)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * ackTimeout}
	defer client.CloseIdleConnections()
	want := maps.Clone(initialSettings)
	for _, c := range []struct{ key, value string }{
		{"log.level", "debug"},
		{"sample.rate", "0.5"},
	} {
		var u Update
		q := url.Values{"key": {c.key}, "value": {c.value}}
		if err := call(ctx, client, http.MethodPost, endpoint+"?"+q.Encode(), &u); err != nil {
			return err
		}
		if ids := executorIDs(d.Executors()); u.Key != c.key || u.Value != c.value || !slices.Equal(u.Executors, ids) {
			return fmt.Errorf("set %s=%s: got %+v, want the change acknowledged by executors %v", c.key, c.value, u, ids)
		}
		fmt.Printf("all %d executors applied %s=%s (version %d)\n", len(u.Executors), u.Key, u.Value, u.Version)
		want[c.key] = c.value
	}

	var s map[string]setting
	if err := call(ctx, client, http.MethodGet, endpoint, &s); err != nil {
		return err
	}
	got := make(map[string]string, len(s))
	var line []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		got[k] = s[k].Value
		line = append(line, k+"="+s[k].Value)
	}
	if !maps.Equal(got, want) {
		return fmt.Errorf("GET %s: got %v, want %v", endpoint, got, want)
	}
	fmt.Printf("the driver's configuration is %s\n", strings.Join(line, " "))
	return nil
}

// call makes one request and decodes a 200 answer's JSON body into out.
func call(ctx context.Context, client *http.Client, method, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, u, err)
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once a signal has started the shutdown, a second one ends the
	// program at once (the default action), should the shutdown take long.
	context.AfterFunc(ctx, stop)
	dc := newDynamicConfig()
	err := ember.Run(ctx, ember.Config{
		AppName: "dynamicconfig",
		Master:  "local-cluster[2]",
		Plugins: []plugin.Plugin{dc},
	}, func(ctx context.Context, d *ember.Driver) error {
		return operate(ctx, d, dc.driver)
	})
	if err != nil {
		log.Fatal(err)
	}
}
