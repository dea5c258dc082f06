package ember_test

import (
	"testing"

	"github.com/emberhq/ember/embertest"
)

func TestMain(m *testing.M) {
	watchParent() // in a child of startSelf: exit with the test process
	embertest.Main(m)
}
