package plugin_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/emberhq/ember/internal/codec"
	"github.com/emberhq/ember/plugin"
)

// Types used only by these tests, so that registrations never collide.
type (
	msgTwice    struct{ A int }
	msgNamed    struct{ B string }
	msgNamedDup struct{ C string }
	msgRenamed  struct{ D int }
	msgIface    interface{ M() }
)

func TestRegisterMessageTwice(t *testing.T) {
	t.Parallel()
	plugin.RegisterMessage[msgTwice]()
	plugin.RegisterMessage[msgTwice]() // same type, same name: no-op
	want := codec.NameOf(reflect.TypeFor[msgTwice]())
	if want != "github.com/emberhq/ember/plugin_test.msgTwice" {
		t.Errorf("NameOf(msgTwice) = %q, want %q", want, "github.com/emberhq/ember/plugin_test.msgTwice")
	}
	if !slices.Contains(codec.Names(), want) {
		t.Errorf("codec.Names() does not contain %q", want)
	}
	name, _, err := codec.Encode(msgTwice{A: 1})
	if err != nil {
		t.Fatalf("Encode after RegisterMessage: %v", err)
	}
	if name != want {
		t.Errorf("Encode name = %q, want %q", name, want)
	}
}

func TestRegisterMessageNamePanics(t *testing.T) {
	t.Parallel()
	plugin.RegisterMessageName[msgNamed]("plugin_test.named")
	plugin.RegisterMessageName[msgNamed]("plugin_test.named") // identical: fine
	plugin.RegisterMessageName[msgRenamed]("plugin_test.renamed")

	tests := []struct {
		name     string
		register func()
		want     []string
	}{
		{
			"name taken by another type",
			func() { plugin.RegisterMessageName[msgNamedDup]("plugin_test.named") },
			[]string{"plugin.RegisterMessage", `"plugin_test.named"`, "already used"},
		},
		{
			"type registered under another name",
			func() { plugin.RegisterMessageName[msgRenamed]("plugin_test.renamed-again") },
			[]string{"plugin.RegisterMessage", "msgRenamed", `already registered as "plugin_test.renamed"`},
		},
		{
			"derived name differs from explicit one",
			func() { plugin.RegisterMessage[msgNamed]() },
			[]string{"already registered"},
		},
		{
			"interface type",
			func() { plugin.RegisterMessage[msgIface]() },
			[]string{"interface"},
		},
		{
			"empty name",
			func() { plugin.RegisterMessageName[struct{ E int }]("") },
			[]string{"empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := mustPanic(t, tt.register)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("panic %q, want it to contain %q", msg, w)
				}
			}
		})
	}
}
