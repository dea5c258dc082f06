// Package metrics ships executor metrics to the driver and defines the
// runtime's built-in metrics.
//
// Executors gather their registry and send the families, each encoded as a
// protobuf dto.MetricFamily, with their heartbeats; the driver keeps the
// latest set per executor and serves them with its own at /metrics.
package metrics

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/emberhq/ember/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// Encode gathers g into a wire.Metrics. It returns nil when there is
// nothing to send. A gather error comes back with the families gathered
// despite it, so that the caller can ship those and say what was left
// out.
func Encode(g prometheus.Gatherer) (*wire.Metrics, error) {
	fams, gatherErr := g.Gather()
	if len(fams) == 0 {
		return nil, gatherErr
	}
	m := &wire.Metrics{Families: make([][]byte, 0, len(fams))}
	for _, f := range fams {
		b, err := proto.Marshal(f)
		if err != nil {
			return nil, err
		}
		m.Families = append(m.Families, b)
	}
	return m, gatherErr
}

// Decode returns the families in m that are valid enough to be served:
// each has a name and a type, every metric has a value of that type, and
// its labels have valid, distinct names, none of them one the exposition
// format reserves for the type (le, quantile). The error lists the
// families left out, if any (the first maxListed, and how many more); the
// others are returned all the same, so one bad family costs only itself.
// Families past MaxEntries are left out undecoded.
func Decode(m *wire.Metrics) ([]*dto.MetricFamily, error) {
	var out []*dto.MetricFamily
	var errs []error
	unlisted := 0
	leaveOut := func(i int, err error) {
		if len(errs) < maxListed {
			errs = append(errs, fmt.Errorf("metric family %d: %w", i, err))
		} else {
			unlisted++
		}
	}
	left := MaxEntries
	for i, b := range m.GetFamilies() {
		n := 1 // the family itself
		if err := wire.CountEntries(b, familyDescriptor, &n, left, errTooManyEntries); err != nil {
			leaveOut(i, err)
			continue
		}
		left -= n
		f := &dto.MetricFamily{}
		if err := proto.Unmarshal(b, f); err != nil {
			leaveOut(i, err)
			continue
		}
		if err := validate(f); err != nil {
			leaveOut(i, err)
			continue
		}
		out = append(out, f)
	}
	if unlisted > 0 {
		errs = append(errs, fmt.Errorf("%d more metric families left out", unlisted))
	}
	return out, errors.Join(errs...)
}

// MaxEntries bounds what one shipment of an executor's metrics (with a
// HEARTBEAT or STOPPED) makes the driver decode: its families, and their
// metrics, label pairs, buckets, quantiles and other list elements at
// every depth, all counted together. Each takes a hundred bytes or more
// decoded for as little as two on the wire: a 4 MiB heartbeat of empty
// families made Decode allocate 800 MiB and return a 90 MiB error (which
// the driver logged), one of empty counters made the driver keep 250 MiB
// until the next heartbeat. Far more than an executor's registry holds;
// the families past it are left out, and the error says so.
const MaxEntries = 1 << 17

// maxListed bounds the families Decode's error names; the others are
// counted.
const maxListed = 8

var familyDescriptor = (&dto.MetricFamily{}).ProtoReflect().Descriptor()

var errTooManyEntries = fmt.Errorf("past the %d families, metrics, labels and other list elements one shipment of metrics may hold", MaxEntries)

func validate(f *dto.MetricFamily) error {
	if f.GetName() == "" || f.Type == nil {
		return fmt.Errorf("missing name or type")
	}
	// Names as the exposition formats accept them (UTF-8, as the
	// prometheus library's own validation), and text they can carry.
	if !model.UTF8Validation.IsValidMetricName(f.GetName()) || !utf8.ValidString(f.GetHelp()) || !utf8.ValidString(f.GetUnit()) {
		return fmt.Errorf("invalid name %q, help or unit", f.GetName())
	}
	var reserved string // a label the format gives this type's series
	switch f.GetType() {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		reserved = "le"
	case dto.MetricType_SUMMARY:
		reserved = "quantile"
	}
	seen := map[string]bool{}
	for _, m := range f.GetMetric() {
		clear(seen)
		for _, l := range m.GetLabel() {
			name := l.GetName()
			esc := escaped(name)
			switch {
			case !model.UTF8Validation.IsValidLabelName(name) || strings.HasPrefix(name, "__") || bareColon(name):
				return fmt.Errorf("%s: invalid label name %q", f.GetName(), name)
			case !utf8.ValidString(l.GetValue()):
				return fmt.Errorf("%s: label %q has a value that is not UTF-8", f.GetName(), name)
			case name == reserved:
				return fmt.Errorf("%s: a %v series may not have its own %q label", f.GetName(), f.GetType(), name)
			case seen[esc]:
				return fmt.Errorf("%s: label %q repeated (as served to scrapers that take no UTF-8 names, %q)", f.GetName(), name, esc)
			}
			seen[esc] = true
		}
		var ok bool
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			ok = m.Counter != nil
		case dto.MetricType_GAUGE:
			ok = m.Gauge != nil
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			ok = m.Histogram != nil
		case dto.MetricType_SUMMARY:
			ok = m.Summary != nil
		case dto.MetricType_UNTYPED:
			ok = m.Untyped != nil
		}
		if !ok {
			return fmt.Errorf("%s: a metric has no %v value", f.GetName(), f.GetType())
		}
	}
	return nil
}

// bareColon reports whether label name has a colon and is written
// unquoted by the text exposition format all the same: the format's
// writer (expfmt) quotes a label name only when it is not a valid legacy
// metric name, and those may have colons where label names may not, so
// that such a name (a:b) makes the whole exposition unparseable. Any
// other character outside the legacy set gets the name quoted, colon or
// not.
func bareColon(name string) bool {
	return strings.Contains(name, ":") && model.LegacyValidation.IsValidMetricName(name)
}

// escaped is name as the text format writes it for a scraper that takes
// no UTF-8 names (the default escaping, model.NameEscapingScheme): a b and
// a_b are both a_b there.
func escaped(name string) string { return model.EscapeName(name, model.UnderscoreEscaping) }

// Unambiguous returns g less each family whose name, escaped for scrapers
// that take no UTF-8 names, is another family's: served, the two would be
// one family with two TYPE lines, and the whole exposition would not
// parse. Of such families, one whose name needs no escaping is kept (the
// driver's own, ember_limit_hits_total, before an executor's
// "ember limit hits total"), else the first by name; the others are left
// out, and the error says so.
func Unambiguous(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		fams, err := g.Gather()
		kept := make(map[string]string, len(fams)) // by escaped name
		for _, f := range fams {
			if escaped(f.GetName()) == f.GetName() {
				kept[f.GetName()] = f.GetName()
			}
		}
		errs := []error{err}
		out := make([]*dto.MetricFamily, 0, len(fams))
		for _, f := range fams {
			e := escaped(f.GetName())
			if k, ok := kept[e]; ok && k != f.GetName() {
				errs = append(errs, fmt.Errorf("metric family %q left out: scrapers that take no UTF-8 names would read it as %q, the name of another", f.GetName(), e))
				continue
			}
			kept[e] = f.GetName()
			out = append(out, f)
		}
		return out, errors.Join(errs...)
	})
}

// SetLabel sets label name to value on every metric in fams, replacing
// any value the sender gave it, and leaves every metric's labels sorted by
// name. Sorted, they are served as they are: the prometheus library sorts
// unsorted labels in place while gathering, which two concurrent scrapes
// of the same stored metric would race on.
func SetLabel(fams []*dto.MetricFamily, name, value string) {
	for _, f := range fams {
		for _, m := range f.Metric {
			set := false
			for _, l := range m.Label {
				if l.GetName() == name {
					l.Value = &value
					set = true
				}
			}
			if !set {
				m.Label = append(m.Label, &dto.LabelPair{Name: &name, Value: &value})
			}
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
	}
}

// Store keeps the latest metric families of each executor. It is a
// prometheus.Gatherer. Safe for concurrent use.
//
// It serves each executor's ember_limit_hits_total series at 0 until the
// executor ships one (see Join): a series born at 1 shows no increase, so
// an alert on one would miss an executor's first hit. Made here, at
// scrape time, they cost nothing per heartbeat; shipped by the executors,
// they cost the driver five series to decode per executor every second
// (docs/performance.md, "Zeros are made at scrape time").
type Store struct {
	mu     sync.Mutex // protects the following fields
	byID   map[string][]*dto.MetricFamily
	joined map[string]bool // executors whose limit series are served at 0 until shipped
}

// Join makes executor id known before it ships any metrics, and has its
// limit series served at 0 until it ships them.
func (s *Store) Join(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[string][]*dto.MetricFamily{}
		s.joined = map[string]bool{}
	}
	if _, ok := s.byID[id]; !ok {
		s.byID[id] = nil
	}
	s.joined[id] = true
}

// Set replaces executor id's families.
func (s *Store) Set(id string, fams []*dto.MetricFamily) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[string][]*dto.MetricFamily{}
		s.joined = map[string]bool{}
	}
	s.byID[id] = fams
}

// Delete forgets executor id.
func (s *Store) Delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
	delete(s.joined, id)
}

// Gather implements prometheus.Gatherer: the families of every executor,
// merged by name (metrics carry an executor label, so they never clash).
// A family that disagrees on type or help with the one of the same name
// from an executor earlier in ID order is left out, and the error says so,
// as prometheus.Gatherers does for a family that disagrees with the
// driver's: the /metrics handler logs it and serves the rest.
func (s *Store) Gather() ([]*dto.MetricFamily, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	merged := map[string]*dto.MetricFamily{}
	from := map[string]string{} // the executor whose type and help are served, by name
	var errs []error
	for _, id := range slices.SortedFunc(maps.Keys(s.byID), CompareIDs) {
		for _, f := range s.byID[id] {
			m, ok := merged[f.GetName()]
			switch {
			case !ok:
				m = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type, Unit: f.Unit}
				merged[f.GetName()] = m
				from[f.GetName()] = id
			case m.GetType() != f.GetType():
				errs = append(errs, fmt.Errorf("executor %s's metric family %s left out: it is a %v, executor %s's a %v", id, f.GetName(), f.GetType(), from[f.GetName()], m.GetType()))
				continue
			case m.GetHelp() != f.GetHelp():
				errs = append(errs, fmt.Errorf("executor %s's metric family %s left out: its help is %q, executor %s's %q", id, f.GetName(), f.GetHelp(), from[f.GetName()], m.GetHelp()))
				continue
			}
			m.Metric = append(m.Metric, f.Metric...)
		}
		if s.joined[id] {
			zeroLimits(merged, from, id, s.byID[id])
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, name := range slices.Sorted(maps.Keys(merged)) {
		out = append(out, merged[name])
	}
	return out, errors.Join(errs...)
}

// CompareIDs orders executor IDs as the driver lists them: numbers by
// value ("2" before "10"), others as text after them.
func CompareIDs(a, b string) int {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	switch {
	case errA == nil && errB == nil:
		return cmp.Compare(x, y)
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	return strings.Compare(a, b)
}

// driverLimits are the limits the driver can hit (ember_limit_hits_total
// with executor="driver").
var driverLimits = []string{"message_size", "send_queue", "send_window", "lane_queue", "queue_overflow", "outstanding_asks", "handshake_timeout", "max_executors", "concurrent_handshakes"}

// executorLimits are the limits an executor can hit (its own
// ember_limit_hits_total, shipped to the driver).
var executorLimits = [...]string{"message_size", "send_queue", "send_window", "lane_queue", "queue_overflow"}

// zeroLimits adds to merged a 0 for each of executor id's limits that its
// families fams have no series of (see Store). from records the executor
// whose type and help a family has, for Gather.
func zeroLimits(merged map[string]*dto.MetricFamily, from map[string]string, id string, fams []*dto.MetricFamily) {
	var has [len(executorLimits)]bool // no map per executor per scrape
	for _, f := range fams {
		if f.GetName() != limitHitsName {
			continue
		}
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if i := slices.Index(executorLimits[:], lp.GetValue()); lp.GetName() == "limit" && i >= 0 {
					has[i] = true
				}
			}
		}
	}
	m := merged[limitHitsName]
	for i, limit := range executorLimits {
		if has[i] {
			continue
		}
		if m == nil {
			m = &dto.MetricFamily{Name: proto.String(limitHitsName), Help: proto.String(limitHitsHelp), Type: dto.MetricType_COUNTER.Enum()}
			merged[limitHitsName] = m
			from[limitHitsName] = id
		}
		if m.GetType() != dto.MetricType_COUNTER {
			return // an executor's own family of that name, of another type: Gather reports it
		}
		m.Metric = append(m.Metric, &dto.Metric{
			Label:   []*dto.LabelPair{{Name: proto.String("executor"), Value: proto.String(id)}, {Name: proto.String("limit"), Value: proto.String(limit)}},
			Counter: &dto.Counter{Value: proto.Float64(0)},
		})
	}
}

// The family of limits hit, on the driver and on executors.
const (
	limitHitsName = "ember_limit_hits_total"
	limitHitsHelp = "Times a limit was hit (message_size, outstanding_asks, send_queue, send_window, lane_queue, queue_overflow, handshake_timeout, max_executors, concurrent_handshakes), by executor."
)

// NewLimitHits returns the counter of limits hit, labelled by limit and
// executor ("driver" on the driver). Driver and executors create it with
// the same name and help so that /metrics merges them into one family.
func NewLimitHits(constLabels prometheus.Labels) *prometheus.CounterVec {
	labels := []string{"limit"}
	if constLabels == nil {
		labels = []string{"executor", "limit"}
	}
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        limitHitsName,
		Help:        limitHitsHelp,
		ConstLabels: constLabels,
	}, labels)
}

// NewDropped returns the counter of sent messages that could not be
// delivered, labelled by plugin, reason and executor: where the message
// was dropped ("driver" on the driver). Driver and executors create it
// with the same name and help so that /metrics merges them into one
// family.
func NewDropped(constLabels prometheus.Labels) *prometheus.CounterVec {
	labels := []string{"plugin", "reason"}
	if constLabels == nil {
		labels = []string{"executor", "plugin", "reason"}
	}
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "ember_messages_dropped_total",
		Help:        "Sent messages that could not be delivered, and replies that came after their ask gave up with no plugin.DroppedReplyListener to take them, or its lane closed (reason late_reply), by plugin, reason and executor (where dropped: driver for the driver).",
		ConstLabels: constLabels,
	}, labels)
}

// NewLaneStalled returns the gauge that is 1 while a plugin's dispatch
// lane is stalled (see rpc.WatchStalls), labelled by plugin and executor
// ("driver" on the driver), made on either side as NewDropped is.
func NewLaneStalled(constLabels prometheus.Labels) *prometheus.GaugeVec {
	labels := []string{"plugin"}
	if constLabels == nil {
		labels = []string{"executor", "plugin"}
	}
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name:        "ember_lane_stalled",
		Help:        "1 while a plugin's dispatch lane is stalled: messages wait and none of its calls has returned for ember.lane.stallWarning; by plugin and executor (driver for the driver's lanes).",
		ConstLabels: constLabels,
	}, labels)
}

// Deferred holds collectors that are registered on a registry only when
// the first series of one of them is made, all of them together. A
// Prometheus registry holding no collector gathers for nothing, but one
// holding any, even with no series, allocates about 32 KB a gather (two
// channels of a thousand metrics). An executor gathers every metrics
// interval, and its built-in vectors usually have no series: registered
// up front, they made 1,000 executors sharing four processes allocate
// 33 MB a second, and doubled the scale scenario's ask p99
// (docs/performance.md, "An idle executor gathers for nothing").
//
// Defer the collectors first; then the Vecs are safe for concurrent use.
type Deferred struct {
	once  sync.Once
	reg   prometheus.Registerer
	cs    []prometheus.Collector
	onErr func(error)
}

// NewDeferred returns a Deferred registering on reg. onErr is called
// with each error the registration returns.
func NewDeferred(reg prometheus.Registerer, onErr func(error)) *Deferred {
	return &Deferred{reg: reg, onErr: onErr}
}

func (d *Deferred) register() {
	d.once.Do(func() {
		for _, c := range d.cs {
			if err := d.reg.Register(c); err != nil {
				d.onErr(err)
			}
		}
	})
}

// labelled is a Prometheus metric vector with series of type T.
type labelled[T any] interface {
	prometheus.Collector
	WithLabelValues(lvs ...string) T
	DeleteLabelValues(lvs ...string) bool
}

// Vec is a metric vector whose registration d defers. Safe for concurrent
// use, as its vector.
type Vec[T any] struct {
	d   *Deferred
	vec labelled[T]
}

// Defer adds vec to d's collectors. Call it before any series is made:
// the collectors registered are those added then.
func Defer[T any](d *Deferred, vec labelled[T]) Vec[T] {
	d.cs = append(d.cs, vec)
	return Vec[T]{d: d, vec: vec}
}

// WithLabelValues returns the series of these label values, as the
// vector's WithLabelValues, registering d's collectors first if it is the
// first.
func (v Vec[T]) WithLabelValues(lvs ...string) T {
	v.d.register()
	return v.vec.WithLabelValues(lvs...)
}

// DeleteLabelValues deletes the series of these label values, as the
// vector's DeleteLabelValues. The collectors stay registered.
func (v Vec[T]) DeleteLabelValues(lvs ...string) bool {
	return v.vec.DeleteLabelValues(lvs...)
}

// Flag returns a function that sets g to 1 for true and 0 for false.
func Flag(g prometheus.Gauge) func(bool) {
	return func(on bool) {
		if on {
			g.Set(1)
		} else {
			g.Set(0)
		}
	}
}

// Builtin are the runtime's own metrics on the driver.
type Builtin struct {
	Messages       *prometheus.CounterVec   // plugin, type, direction, kind
	MessageErrors  *prometheus.CounterVec   // plugin, code, kind
	Dropped        *prometheus.CounterVec   // executor ("driver"), plugin, reason
	HandlerSeconds *prometheus.HistogramVec // plugin
	Tasks          *prometheus.CounterVec   // task, state
	TasksRunning   *prometheus.GaugeVec     // task
	ExecutorsAlive prometheus.Gauge
	ExecutorsLost  prometheus.Counter
	AuthFailures   *prometheus.CounterVec // reason
	Mismatches     prometheus.Counter
	LimitHits      *prometheus.CounterVec // executor ("driver"), limit
	LaneStalled    *prometheus.GaugeVec   // executor ("driver"), plugin
}

// TaskStates are the values of ember_tasks_total's state label.
var TaskStates = []string{"started", "succeeded", "failed", "lost", "canceled"}

// NewBuiltin registers the built-in metrics on reg.
func NewBuiltin(reg prometheus.Registerer) *Builtin {
	b := &Builtin{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ember_messages_total",
			Help: "Plugin messages, by plugin, message type (\"unregistered\" for a name the driver does not know), direction (to_driver, to_executor) and kind (ask, send).",
		}, []string{"plugin", "type", "direction", "kind"}),
		MessageErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ember_message_errors_total",
			Help: "Messages a driver plugin's Receive failed: asks answered with an error, and sends whose Receive returned one or panicked, by plugin, error code and kind (ask, send).",
		}, []string{"plugin", "code", "kind"}),
		Dropped: NewDropped(nil),
		HandlerSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ember_handler_seconds",
			Help:    "Time driver plugins spend in Receive, by plugin (sampled: one message in 8).",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}, []string{"plugin"}),
		Tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ember_tasks_total",
			Help: "Task attempts, by task and state (started, succeeded, failed, lost, canceled).",
		}, []string{"task", "state"}),
		TasksRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ember_tasks_running",
			Help: "Task attempts running on executors, by task, canceled attempts included until their tasks return; an attempt sent ahead of the slots (short tasks) counts once an attempt ahead of it on its executor has ended.",
		}, []string{"task"}),
		ExecutorsAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ember_executors_alive",
			Help: "Executors connected and ready.",
		}),
		ExecutorsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ember_executors_lost_total",
			Help: "Executors lost: their connection ended without the driver releasing them or their stopping on their own (a crash, a kill, silence).",
		}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ember_auth_failures_total",
			Help: "Executors refused because they could not prove the application secret (reason wrong proof, no proof), and connections whose TLS handshake failed (reason tls).",
		}, []string{"reason"}),
		Mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ember_handshake_mismatches_total",
			Help: "Executors refused at the handshake because they do not match the driver: another build, protocol, plugin list, message types, tasks or message limit.",
		}),
		LimitHits:   NewLimitHits(nil),
		LaneStalled: NewLaneStalled(nil),
	}
	// Served at 0 from the start, so that an alert on their increase
	// sees the first refusal or hit (a series born at 1 shows none).
	for _, reason := range []string{"wrong proof", "no proof", "tls"} {
		b.AuthFailures.WithLabelValues(reason)
	}
	for _, limit := range driverLimits {
		b.LimitHits.WithLabelValues("driver", limit)
	}
	reg.MustRegister(b.Messages, b.MessageErrors, b.Dropped, b.HandlerSeconds, b.Tasks, b.TasksRunning, b.ExecutorsAlive, b.ExecutorsLost, b.AuthFailures, b.Mismatches, b.LimitHits, b.LaneStalled)
	return b
}

// PluginRegisterer returns the registerer a plugin's context hands out:
// reg, with the labels plugin and executor added to every metric
// registered through it. A metric of the plugin's own that uses one of
// those label names cannot be registered; the error then says why, where
// Prometheus's alone speaks of duplicate constant and variable labels.
//
// A panic in the plugin's collectors (in Collect, or in a metric's Write,
// where a GaugeFunc's function runs) is recovered and becomes a gather
// error naming the plugin, which costs only those series: the registry
// collects on goroutines of its own, where nobody else could recover it,
// and a plugin's panic must not take its process (with local[N], the
// driver's) down.
func PluginRegisterer(reg prometheus.Registerer, plugin, executor string) prometheus.Registerer {
	return pluginRegisterer{prometheus.WrapRegistererWith(prometheus.Labels{"plugin": plugin, "executor": executor}, reg), plugin}
}

type pluginRegisterer struct {
	prometheus.Registerer
	plugin string
}

func (r pluginRegisterer) Register(c prometheus.Collector) error {
	err := r.Registerer.Register(&recoveringCollector{Collector: c, plugin: r.plugin})
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		// Hand back the plugin's own collectors, as Prometheus's
		// wrapping registerer does with its own wrapper.
		if rc, ok := are.ExistingCollector.(*recoveringCollector); ok {
			are.ExistingCollector = rc.Collector
		}
		// NewCollector is Prometheus's wrappingCollector around ours,
		// never ours: hand back c itself.
		are.NewCollector = c
		return are
	}
	// A variable label of either name: "duplicate label names"; a
	// constant one: "attempted wrapping with already existing label name".
	if err != nil && (strings.Contains(err.Error(), "duplicate label names") ||
		strings.Contains(err.Error(), "attempted wrapping with already existing label name")) {
		return fmt.Errorf(`%w (Ember adds the labels "plugin" and "executor" to a plugin's metrics: name yours otherwise)`, err)
	}
	return err
}

func (r pluginRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister unregisters c, whose Describe runs as in Register.
func (r pluginRegisterer) Unregister(c prometheus.Collector) bool {
	return r.Registerer.Unregister(&recoveringCollector{Collector: c, plugin: r.plugin})
}

// recoveringCollector runs a plugin's collector, turning its panics into
// gather errors.
type recoveringCollector struct {
	prometheus.Collector
	plugin string
	// unchecked: Describe, at Register, described nothing (an unchecked
	// collector, or a CollectorFunc with no series yet), so Collect
	// checks the names of the metrics it collects.
	unchecked atomic.Bool
}

// panicDesc describes the invalid metric that stands for a collector's
// panic in Collect.
var panicDesc = prometheus.NewDesc("ember_plugin_collector_panic", "A plugin's collector panicked.", nil, nil)

func (c *recoveringCollector) Collect(ch chan<- prometheus.Metric) {
	unchecked := c.unchecked.Load()
	if p := c.collect(func(m prometheus.Metric) {
		if unchecked {
			if err := c.reserved(m.Desc()); err != nil {
				ch <- prometheus.NewInvalidMetric(m.Desc(), err)
				return
			}
		}
		ch <- recoveringMetric{Metric: m, plugin: c.plugin}
	}); p != nil {
		ch <- prometheus.NewInvalidMetric(panicDesc, fmt.Errorf("plugin %q: a metric collector panicked in Collect: %v", c.plugin, p))
	}
}

// Describe runs the plugin's Describe, turning a panic into an invalid
// descriptor, which Register (and Unregister) report: the registry calls
// Describe on a goroutine of its own too. A prometheus.CollectorFunc
// describes itself by collecting (DescribeByCollect), on yet another
// goroutine, out of reach here: it is described through collect instead.
// A metric named in Ember's namespace (ember_) is refused the same way: on
// an executor nothing else would stop it, and the driver would serve it in
// Ember's own family, under its help text. A collector that describes
// nothing has its metrics' names checked as they are collected instead.
func (c *recoveringCollector) Describe(ch chan<- *prometheus.Desc) {
	var p any
	described := false
	if _, ok := c.Collector.(prometheus.CollectorFunc); ok {
		p = c.collect(func(m prometheus.Metric) { described = true; ch <- c.checkName(m.Desc()) })
	} else {
		inner := make(chan *prometheus.Desc)
		go func() {
			defer close(inner)
			defer func() { p = recover() }()
			c.Collector.Describe(inner)
		}()
		for d := range inner {
			described = true
			ch <- c.checkName(d)
		}
	}
	c.unchecked.Store(!described)
	if p != nil {
		ch <- prometheus.NewInvalidDesc(fmt.Errorf("plugin %q: a metric collector panicked in Describe: %v", c.plugin, p))
	}
}

// checkName returns d, or an invalid descriptor saying why if d's metric
// is named in Ember's namespace.
func (c *recoveringCollector) checkName(d *prometheus.Desc) *prometheus.Desc {
	if err := c.reserved(d); err != nil {
		return prometheus.NewInvalidDesc(err)
	}
	return d
}

// reserved returns an error saying why if d's metric is named in Ember's
// namespace, or nil.
func (c *recoveringCollector) reserved(d *prometheus.Desc) error {
	if name := descName(d); strings.HasPrefix(name, reservedPrefix) {
		return fmt.Errorf("plugin %q: metric %s: the %s prefix is Ember's own (prefix yours with the plugin's name)", c.plugin, name, reservedPrefix)
	}
	return nil
}

// reservedPrefix begins the names of Ember's own metrics.
const reservedPrefix = "ember_"

// descName returns the metric name d describes, read from its String
// (Desc keeps it unexported); "" if that cannot be read.
func descName(d *prometheus.Desc) string {
	s, ok := strings.CutPrefix(d.String(), "Desc{fqName: ")
	if !ok {
		return ""
	}
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return ""
	}
	name, _ := strconv.Unquote(q)
	return name
}

// collect runs the plugin's Collect on a goroutine of its own, where its
// panic can be recovered, hands each metric to fn, and returns the value
// of the panic, if any.
func (c *recoveringCollector) collect(fn func(prometheus.Metric)) (panicked any) {
	inner := make(chan prometheus.Metric)
	go func() {
		defer close(inner)
		defer func() { panicked = recover() }()
		c.Collector.Collect(inner)
	}()
	for m := range inner {
		fn(m)
	}
	return panicked
}

// recoveringMetric is a plugin's metric whose Write (a GaugeFunc's
// function, say) may panic.
type recoveringMetric struct {
	prometheus.Metric
	plugin string
}

func (m recoveringMetric) Write(out *dto.Metric) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("plugin %q: metric %s panicked: %v", m.plugin, m.Desc(), p)
		}
	}()
	return m.Metric.Write(out)
}
