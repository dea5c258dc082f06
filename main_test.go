package ember_test

import (
	"testing"

	"github.com/emberhq/ember/embertest"
)

func TestMain(m *testing.M) { embertest.Main(m) }
