// Package kinds holds the built-in job kinds.
package kinds

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// Builtin returns a registry with the seed's simulated kinds. sleepScale
// multiplies their sleeps: 0.001 makes them a thousand times faster.
func Builtin(sleepScale float64) *job.Registry {
	r := job.NewRegistry(
		job.Kind{
			Name:        "short",
			Description: "simulated work: each partition sleeps 0–4 s and returns 1",
			Map:         sleeper(5, 1, sleepScale),
		},
		job.Kind{
			Name:        "long",
			Description: "simulated work: each partition sleeps 0–9 s and returns 5",
			Map:         sleeper(10, 5, sleepScale),
		},
		job.Kind{
			Name:        "noop",
			Description: "returns 1 at once; measures the cluster's own overhead",
			Map:         func(context.Context, job.Task) (int64, error) { return 1, nil },
		},
	)
	for _, k := range Data() {
		r.Register(k.Kind())
	}
	return r
}

// sleeper returns a map that sleeps a random whole number of seconds in
// [0, n) times scale, then returns value; it stops early when ctx ends.
func sleeper(n int, value int64, scale float64) job.MapFunc {
	return func(ctx context.Context, _ job.Task) (int64, error) {
		d := time.Duration(float64(rand.IntN(n)) * scale * float64(time.Second))
		if d <= 0 {
			return value, nil
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return value, nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}
