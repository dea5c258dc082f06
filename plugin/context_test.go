package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/plugin"
)

func TestConfGetLookup(t *testing.T) {
	t.Parallel()
	c := plugin.NewConf(map[string]string{"a": "1", "empty": ""})
	tests := []struct {
		key    string
		want   string
		wantOK bool
	}{
		{"a", "1", true},
		{"empty", "", true},
		{"missing", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			if got := c.Get(tt.key); got != tt.want {
				t.Errorf("Get(%q) = %q, want %q", tt.key, got, tt.want)
			}
			got, ok := c.Lookup(tt.key)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestConfInt(t *testing.T) {
	t.Parallel()
	c := plugin.NewConf(map[string]string{"n": "42", "neg": "-7", "bad": "4x2", "float": "1.5", "empty": ""})
	tests := []struct {
		key     string
		def     int
		want    int
		wantErr bool
	}{
		{"n", 0, 42, false},
		{"neg", 0, -7, false},
		{"missing", 9, 9, false},
		{"bad", 9, 0, true},
		{"float", 9, 0, true},
		{"empty", 9, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			got, err := c.Int(tt.key, tt.def)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Int(%q) = %d, nil; want an error", tt.key, got)
				}
				for _, w := range []string{tt.key, fmt.Sprintf("%q", c.Get(tt.key)), "not an integer"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Int(%q) error %q, want it to contain %q", tt.key, err, w)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Int(%q, %d) = %d, %v; want %d, nil", tt.key, tt.def, got, err, tt.want)
			}
		})
	}
}

func TestConfDuration(t *testing.T) {
	t.Parallel()
	c := plugin.NewConf(map[string]string{"d": "1m30s", "ms": "250ms", "bad": "5", "junk": "soon"})
	tests := []struct {
		key     string
		def     time.Duration
		want    time.Duration
		wantErr bool
	}{
		{"d", 0, 90 * time.Second, false},
		{"ms", 0, 250 * time.Millisecond, false},
		{"missing", time.Hour, time.Hour, false},
		{"bad", time.Hour, 0, true}, // no unit
		{"junk", time.Hour, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			got, err := c.Duration(tt.key, tt.def)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Duration(%q) = %v, nil; want an error", tt.key, got)
				}
				for _, w := range []string{tt.key, fmt.Sprintf("%q", c.Get(tt.key)), "not a duration"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Duration(%q) error %q, want it to contain %q", tt.key, err, w)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Duration(%q, %v) = %v, %v; want %v, nil", tt.key, tt.def, got, err, tt.want)
			}
		})
	}
}

func TestConfAll(t *testing.T) {
	t.Parallel()
	c := plugin.NewConf(map[string]string{"b": "2", "c": "3", "a": "1", "aa": "11"})
	var keys, values []string
	for k, v := range c.All() {
		keys = append(keys, k)
		values = append(values, v)
	}
	wantKeys, wantValues := []string{"a", "aa", "b", "c"}, []string{"1", "11", "2", "3"}
	if fmt.Sprint(keys) != fmt.Sprint(wantKeys) || fmt.Sprint(values) != fmt.Sprint(wantValues) {
		t.Errorf("All() = %q %q, want %q %q", keys, values, wantKeys, wantValues)
	}

	// Breaking out of the loop stops the iteration.
	n := 0
	for range c.All() {
		n++
		break
	}
	if n != 1 {
		t.Errorf("All() after break yielded %d entries, want 1", n)
	}
}

func TestConfZero(t *testing.T) {
	t.Parallel()
	var c plugin.Conf
	if got := c.Get("x"); got != "" {
		t.Errorf("zero Conf Get = %q, want empty", got)
	}
	if _, ok := c.Lookup("x"); ok {
		t.Errorf("zero Conf Lookup ok = true, want false")
	}
	if n, err := c.Int("x", 3); n != 3 || err != nil {
		t.Errorf("zero Conf Int = %d, %v; want 3, nil", n, err)
	}
	for k := range c.All() {
		t.Errorf("zero Conf All yielded %q, want nothing", k)
	}
	if got := c.Map(); len(got) != 0 {
		t.Errorf("zero Conf Map() = %v, want empty", got)
	}
	// The Conf of an application whose Config.Conf is nil is NewConf(nil):
	// a plugin that copied it to add a key of its own panicked on a nil
	// map.
	for _, c := range []plugin.Conf{{}, plugin.NewConf(nil)} {
		m := c.Map()
		if m == nil {
			t.Fatalf("empty Conf Map() = nil, want an empty map the caller can add to")
		}
		m["k"] = "v"
	}
}

func TestConfTypedValues(t *testing.T) {
	t.Parallel()
	c := plugin.NewConf(map[string]string{"n": "42", "d": "1.5s", "b": "TRUE", "f": "0", "bad": "x"})
	tests := []struct {
		name    string
		get     func() (any, error)
		want    any
		wantErr string // substring; "" for none
	}{
		{"Int", func() (any, error) { return c.Int("n", 0) }, 42, ""},
		{"Int default", func() (any, error) { return c.Int("none", 7) }, 7, ""},
		{"Int bad", func() (any, error) { return c.Int("bad", 7) }, 0, `conf bad="x": not an integer`},
		{"Duration", func() (any, error) { return c.Duration("d", 0) }, 1500 * time.Millisecond, ""},
		{"Duration default", func() (any, error) { return c.Duration("none", time.Second) }, time.Second, ""},
		{"Duration bad", func() (any, error) { return c.Duration("bad", time.Second) }, time.Duration(0), `conf bad="x": not a duration`},
		{"Bool", func() (any, error) { return c.Bool("b", false) }, true, ""},
		{"Bool 0", func() (any, error) { return c.Bool("f", true) }, false, ""},
		{"Bool default", func() (any, error) { return c.Bool("none", true) }, true, ""},
		{"Bool bad", func() (any, error) { return c.Bool("bad", true) }, false, `conf bad="x": not a boolean`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.get()
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.wantErr != "" && (plugin.CodeOf(err) != plugin.CodeInvalidArgument || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want InvalidArgument saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewConfCopies(t *testing.T) {
	t.Parallel()
	m := map[string]string{"k": "v"}
	c := plugin.NewConf(m)
	m["k"] = "changed"
	m["new"] = "x"
	if got := c.Get("k"); got != "v" {
		t.Errorf("after changing the source map, Get(k) = %q, want %q", got, "v")
	}
	if _, ok := c.Lookup("new"); ok {
		t.Errorf("after adding to the source map, Lookup(new) ok = true, want false")
	}

	out := c.Map()
	out["k"] = "changed"
	if got := c.Get("k"); got != "v" {
		t.Errorf("after changing Map()'s result, Get(k) = %q, want %q", got, "v")
	}
	if want := map[string]string{"k": "v"}; !maps.Equal(c.Map(), want) {
		t.Errorf("Map() = %v, want %v", c.Map(), want)
	}
}

// fakeAsker is a stub Asker whose behaviour is a func field.
type fakeAsker struct {
	AskF func(ctx context.Context, msg any) (any, error)
}

func (f fakeAsker) Ask(ctx context.Context, msg any) (any, error) { return f.AskF(ctx, msg) }

func replying(v any, err error) fakeAsker {
	return fakeAsker{AskF: func(context.Context, any) (any, error) { return v, err }}
}

type askReply struct{ N int }

type stringer string

func (s stringer) String() string { return string(s) }

func TestAskTyped(t *testing.T) {
	t.Parallel()
	boom := plugin.NewError(plugin.CodeNotFound, "no such key")

	t.Run("right type", func(t *testing.T) {
		t.Parallel()
		got, err := plugin.Ask[askReply](context.Background(), replying(askReply{N: 7}, nil), "req")
		if err != nil || got != (askReply{N: 7}) {
			t.Errorf("Ask = %+v, %v; want {N:7}, nil", got, err)
		}
	})
	t.Run("pointer type", func(t *testing.T) {
		t.Parallel()
		want := &askReply{N: 8}
		got, err := plugin.Ask[*askReply](context.Background(), replying(want, nil), "req")
		if err != nil || got != want {
			t.Errorf("Ask = %p, %v; want %p, nil", got, err, want)
		}
	})
	t.Run("interface type", func(t *testing.T) {
		t.Parallel()
		got, err := plugin.Ask[fmt.Stringer](context.Background(), replying(stringer("hi"), nil), "req")
		if err != nil || got == nil || got.String() != "hi" {
			t.Errorf("Ask[fmt.Stringer] = %v, %v; want hi, nil", got, err)
		}
	})
	t.Run("wrong type", func(t *testing.T) {
		t.Parallel()
		got, err := plugin.Ask[askReply](context.Background(), replying("a string", nil), "req")
		if got != (askReply{}) {
			t.Errorf("Ask value = %+v, want the zero value", got)
		}
		if c := plugin.CodeOf(err); c != plugin.CodeInvalidArgument {
			t.Fatalf("Ask error %v has code %v, want %v", err, c, plugin.CodeInvalidArgument)
		}
		for _, w := range []string{"string", "askReply"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Ask error %q, want it to name %q", err, w)
			}
		}
	})
	// A reply sent as &T arrives as T (the codec sends what a pointer
	// points to), so Ask[*T] takes the value: it used to fail with
	// "reply is T, want *T", every time, over the wire.
	t.Run("value where pointer wanted", func(t *testing.T) {
		t.Parallel()
		got, err := plugin.Ask[*askReply](context.Background(), replying(askReply{N: 1}, nil), "req")
		if err != nil || got == nil || *got != (askReply{N: 1}) {
			t.Errorf("Ask[*T] of a T = %v, %v; want &{N:1}, nil", got, err)
		}
		_, err = plugin.Ask[*askReply](context.Background(), replying("a string", nil), "req")
		if c := plugin.CodeOf(err); c != plugin.CodeInvalidArgument {
			t.Errorf("Ask[*T] of a string: error %v has code %v, want %v", err, c, plugin.CodeInvalidArgument)
		}
	})
	t.Run("nil reply", func(t *testing.T) {
		t.Parallel()
		got, err := plugin.Ask[askReply](context.Background(), replying(nil, nil), "req")
		if err != nil || got != (askReply{}) {
			t.Errorf("Ask = %+v, %v; want the zero value, nil", got, err)
		}
		p, err := plugin.Ask[*askReply](context.Background(), replying(nil, nil), "req")
		if err != nil || p != nil {
			t.Errorf("Ask[*T] = %v, %v; want nil, nil", p, err)
		}
	})
	t.Run("error passes through", func(t *testing.T) {
		t.Parallel()
		got, err := plugin.Ask[askReply](context.Background(), replying(askReply{N: 1}, boom), "req")
		if err != boom {
			t.Errorf("Ask error = %v, want %v itself", err, boom)
		}
		if got != (askReply{}) {
			t.Errorf("Ask value with an error = %+v, want the zero value", got)
		}
	})
	t.Run("context error passes through", func(t *testing.T) {
		t.Parallel()
		_, err := plugin.Ask[askReply](context.Background(), replying(nil, context.DeadlineExceeded), "req")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Ask error = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("ctx and msg reach the asker", func(t *testing.T) {
		t.Parallel()
		type key struct{}
		ctx := context.WithValue(context.Background(), key{}, "marker")
		var gotMsg any
		var gotVal any
		a := fakeAsker{AskF: func(ctx context.Context, msg any) (any, error) {
			gotMsg, gotVal = msg, ctx.Value(key{})
			return askReply{}, nil
		}}
		if _, err := plugin.Ask[askReply](ctx, a, askReply{N: 5}); err != nil {
			t.Fatalf("Ask: %v", err)
		}
		if gotMsg != (askReply{N: 5}) || gotVal != "marker" {
			t.Errorf("asker got msg %v and ctx value %v, want {5} and marker", gotMsg, gotVal)
		}
	})
}

// fakeDriverContext stubs AskExecutor; other methods are not used.
type fakeDriverContext struct {
	plugin.DriverContext
	AskExecutorF func(ctx context.Context, executorID string, msg any) (any, error)
}

func (f fakeDriverContext) AskExecutor(ctx context.Context, id string, msg any) (any, error) {
	return f.AskExecutorF(ctx, id, msg)
}

func TestAskExecutorTyped(t *testing.T) {
	t.Parallel()
	var gotID string
	dc := fakeDriverContext{AskExecutorF: func(_ context.Context, id string, msg any) (any, error) {
		gotID = id
		if msg == "wrong" {
			return 12, nil
		}
		return askReply{N: 3}, nil
	}}
	got, err := plugin.AskExecutor[askReply](context.Background(), dc, "2", "req")
	if err != nil || got != (askReply{N: 3}) || gotID != "2" {
		t.Errorf("AskExecutor = %+v, %v (executor %q); want {N:3}, nil (executor 2)", got, err, gotID)
	}
	_, err = plugin.AskExecutor[askReply](context.Background(), dc, "2", "wrong")
	if c := plugin.CodeOf(err); c != plugin.CodeInvalidArgument {
		t.Errorf("AskExecutor with a wrong reply type: code %v, want %v", c, plugin.CodeInvalidArgument)
	}
}

func TestSenderID(t *testing.T) {
	t.Parallel()
	if id, ok := plugin.SenderID(context.Background()); ok || id != "" {
		t.Errorf("SenderID(Background) = %q, %v; want \"\", false", id, ok)
	}
	ctx := plugin.NewSenderContext(context.Background(), "3")
	if id, ok := plugin.SenderID(ctx); !ok || id != "3" {
		t.Errorf("SenderID(NewSenderContext 3) = %q, %v; want \"3\", true", id, ok)
	}
}

type askerFunc func(ctx context.Context, msg any) (any, error)

func (f askerFunc) Ask(ctx context.Context, msg any) (any, error) { return f(ctx, msg) }

type wrongReply struct{ V int }

// A reply of the wrong type names the type Ask wanted, also when that is
// an interface type (whose zero value has no dynamic type to print).
func TestAskWrongReplyNamesWantedType(t *testing.T) {
	a := askerFunc(func(context.Context, any) (any, error) { return wrongReply{1}, nil })
	tests := []struct {
		name string
		ask  func() error
		want string
	}{
		{"struct", func() error { _, err := plugin.Ask[Chunk](context.Background(), a, Chunk{}); return err },
			"invalid_argument: reply is plugin_test.wrongReply, want plugin_test.Chunk"},
		{"interface", func() error { _, err := plugin.Ask[fmt.Stringer](context.Background(), a, Chunk{}); return err },
			"invalid_argument: reply is plugin_test.wrongReply, want fmt.Stringer"},
		{"pointer", func() error { _, err := plugin.Ask[*Chunk](context.Background(), a, Chunk{}); return err },
			"invalid_argument: reply is plugin_test.wrongReply, want *plugin_test.Chunk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ask()
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
}

// Reply converts a done Call's outcome as Ask converts a reply.
func TestReplyTyped(t *testing.T) {
	t.Parallel()
	boom := plugin.NewError(plugin.CodeNotFound, "no such key")
	tests := []struct {
		name string
		call plugin.Call
		want askReply
		code plugin.Code
	}{
		{"right type", plugin.Call{Reply: askReply{N: 7}}, askReply{N: 7}, plugin.CodeOK},
		{"nil reply", plugin.Call{}, askReply{}, plugin.CodeOK},
		{"wrong type", plugin.Call{Reply: "a string"}, askReply{}, plugin.CodeInvalidArgument},
		{"error", plugin.Call{Reply: askReply{N: 1}, Err: boom}, askReply{}, plugin.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := plugin.Reply[askReply](&tt.call)
			if got != tt.want || plugin.CodeOf(err) != tt.code {
				t.Errorf("Reply = %+v, %v; want %+v and code %v", got, err, tt.want, tt.code)
			}
		})
	}
	p, err := plugin.Reply[*askReply](&plugin.Call{Reply: askReply{N: 2}})
	if err != nil || p == nil || *p != (askReply{N: 2}) {
		t.Errorf("Reply[*T] of a T = %v, %v; want &{N:2}, nil", p, err)
	}
}
