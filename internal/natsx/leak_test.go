package natsx

import (
	"testing"

	"go.uber.org/goleak"
)

// A library read of an object cannot be interrupted (see stalling.pump):
// its goroutine ends at the read's own deadline, which may come after the
// test that began it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/mrcluster/mrcluster/internal/natsx.(*stalling).pump"))
}
