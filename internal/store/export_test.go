package store

import "time"

// SetSeenDeletedAfter sets seenDeletedAfter for a test, which restores it.
func SetSeenDeletedAfter(d time.Duration) (restore func()) {
	was := seenDeletedAfter
	seenDeletedAfter = d
	return func() { seenDeletedAfter = was }
}
