package natsx

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The measures of the substrate alone do what they say: every job
// submitted is counted finished, and the rate is a rate.
func TestCeilings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, batch := range []int{1, 10} {
		if rate, err := JobCeiling(ctx, t.TempDir(), 200, 4, batch); err != nil || rate <= 0 {
			t.Fatalf("JobCeiling in batches of %d: %v, %v", batch, rate, err)
		}
	}

	g, err := StartGroupedJobs(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	const n = 300
	errs := make(chan error, n)
	for i := range n { // concurrent submits: gathered into groups
		go func() { errs <- g.Submit(ctx, fmt.Appendf(nil, `{"id":"j%d","state":"queued"}`, i)) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Await(ctx, n); err != nil {
		t.Fatal(err)
	}
	if seen := g.seen.Load(); seen != n {
		t.Fatalf("%d jobs archived finished for %d submitted", seen, n)
	}
}
