package app_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server a test starts in this process is stopped by its end: what
// a stopped server left running would be found here. A library read of an
// object cannot be interrupted (see natsx's stalling.pump): its goroutine
// ends at the read's own deadline, which may come after the test that
// began it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/mrcluster/mrcluster/internal/natsx.(*stalling).pump"))
}
