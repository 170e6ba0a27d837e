package bench

import (
	"context"
	"testing"
	"time"
)

// The measure of the cluster's own code runs every job to its end, one
// per call and in batches, and leaves nothing running (TestMain).
func TestOwnCodeRunsEveryJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, batch := range []int{1, 10} {
		rate, cpu, err := OwnCode(ctx, 200, 4, batch)
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		if rate <= 0 || cpu <= 0 {
			t.Fatalf("batch %d: %.0f jobs/s, %v of CPU a job; want both measured", batch, rate, cpu)
		}
	}
}
