package kinds

import (
	"context"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// A simulated task's progress is the share of its sleep slept: seen
// between 0 and 1 while it sleeps, 1 once it is done.
func TestSleepSetsItsProgress(t *testing.T) {
	var p job.Progress
	done := make(chan error, 1)
	go func() { done <- sleep(job.WithProgress(context.Background(), &p), 1500*time.Millisecond) }()
	var between bool
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if f, ok := p.Load(); !ok || f != 1 || !between {
				t.Fatalf("progress %v (%v) at the end, seen between 0 and 1: %v", f, ok, between)
			}
			return
		case <-poll.C:
			if f, ok := p.Load(); ok && f > 0 && f < 1 {
				between = true
			}
		}
	}
}
