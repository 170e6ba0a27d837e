package app_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server a test starts in this process is stopped by its end: what
// a stopped server left running would be found here.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
