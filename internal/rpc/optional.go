package rpc

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/emberhq/ember/plugin"
)

// Optional interfaces of each side, found by type assertion: a method
// that meant to implement one but has another signature (or is declared
// on the pointer while the side is a value) compiles, and is never called.
var (
	DriverOptional = []reflect.Type{
		reflect.TypeFor[plugin.ExecutorListener](),
		reflect.TypeFor[plugin.ConcurrentReceiver](),
		reflect.TypeFor[plugin.SendWindowed](),
		reflect.TypeFor[plugin.DroppedReplyListener](),
	}
	ExecutorOptional = []reflect.Type{
		reflect.TypeFor[plugin.ExecutorReceiver](),
		reflect.TypeFor[plugin.ConcurrentReceiver](),
		reflect.TypeFor[plugin.DroppedReplyListener](),
		reflect.TypeFor[plugin.TaskListener](),
	}
)

// MissedOptional describes, for each of ifaces that v does not implement
// although it has a method of that name (or its pointer type has), why
// not: which methods are missing, have another signature or are declared
// on the pointer. The runtime never calls those methods; a plugin that
// has them meant to implement the interface.
func MissedOptional(v any, ifaces []reflect.Type) []string {
	t := reflect.TypeOf(v)
	if t == nil {
		return nil
	}
	var out []string
	for _, it := range ifaces {
		if t.Implements(it) {
			continue
		}
		var have, why []string
		for i := range it.NumMethod() {
			im := it.Method(i)
			m, ok := t.MethodByName(im.Name)
			switch {
			case ok && withoutReceiver(m.Type) == im.Type:
				have = append(have, im.Name)
			case ok:
				have = append(have, im.Name)
				why = append(why, fmt.Sprintf("%s is %s, want %s", im.Name, withoutReceiver(m.Type), im.Type))
			case t.Kind() != reflect.Pointer && hasMethod(reflect.PointerTo(t), im.Name):
				have = append(have, im.Name)
				why = append(why, fmt.Sprintf("%s is declared on %s, and the plugin side is a %s value", im.Name, reflect.PointerTo(t), t))
			default:
				why = append(why, fmt.Sprintf("%s is missing", im.Name))
			}
		}
		if len(have) > 0 {
			verb := "is"
			if len(have) > 1 {
				verb = "are"
			}
			out = append(out, fmt.Sprintf("%T does not implement %s (%s), so %s %s never called",
				v, it, strings.Join(why, "; "), strings.Join(have, " and "), verb))
		}
	}
	return out
}

func hasMethod(t reflect.Type, name string) bool {
	_, ok := t.MethodByName(name)
	return ok
}

// withoutReceiver returns the type of method type m (whose first
// parameter is its receiver) as an interface's method has it.
func withoutReceiver(m reflect.Type) reflect.Type {
	in := make([]reflect.Type, 0, m.NumIn()-1)
	for i := 1; i < m.NumIn(); i++ {
		in = append(in, m.In(i))
	}
	out := make([]reflect.Type, m.NumOut())
	for i := range out {
		out[i] = m.Out(i)
	}
	return reflect.FuncOf(in, out, m.IsVariadic())
}
