// Package kinds holds the built-in job kinds.
package kinds

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// Builtin returns a registry with the seed's simulated kinds. sleepScale
// multiplies their sleeps: 0.001 makes them a thousand times faster.
func Builtin(sleepScale float64) *job.Registry {
	// The simulated kinds take any params, as the job's own data.
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
		r.Register(onlyDeclared(k.Kind()))
	}
	return r
}

// onlyDeclared makes data kind k refuse the params it does not declare: a
// typo ("patern") or a param of another kind is an error naming it, not a
// setting silently ignored. (The simulated kinds take any params, as a
// job's own data; kinds of one's own, compiled in or uploaded, keep their
// own rules: one may read params it does not list.)
func onlyDeclared(k job.Kind) job.Kind {
	check := k.Check
	k.Check = func(params map[string]any) error {
		for _, name := range slices.Sorted(maps.Keys(params)) {
			if !slices.ContainsFunc(k.Params, func(p job.Param) bool { return p.Name == name }) {
				if len(k.Params) == 0 {
					return fmt.Errorf("%s is not a parameter of this kind, which takes none: leave out params", job.Quote(name))
				}
				names := make([]string, len(k.Params))
				for i, p := range k.Params {
					names[i] = p.Name
				}
				return fmt.Errorf("%s is not a parameter of this kind; it takes %s", job.Quote(name), strings.Join(names, ", "))
			}
		}
		if check != nil {
			return check(params)
		}
		return nil
	}
	return k
}

// sleeper returns a map that sleeps a random whole number of seconds in
// [0, n) times scale, then returns value; it stops early when ctx ends.
// Its progress is the share of its sleep slept, set every progressStep.
func sleeper(n int, value int64, scale float64) job.MapFunc {
	return func(ctx context.Context, _ job.Task) (int64, error) {
		if err := sleep(ctx, time.Duration(float64(rand.IntN(n))*scale*float64(time.Second))); err != nil {
			return 0, err
		}
		return value, nil
	}
}

// sleep waits d, or until ctx ends (its cause), setting the task's
// progress to the share of d slept every progressStep.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	progress := job.ProgressOf(ctx)
	progress.Set(0)
	start := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	step := time.NewTicker(progressStep)
	defer step.Stop()
	for {
		select {
		case <-t.C:
			progress.Set(1)
			return nil
		case <-step.C:
			progress.Set(float64(time.Since(start)) / float64(d))
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// progressStep is how often a simulated task sets its progress: its
// worker writes it every 2 s at most.
const progressStep = 500 * time.Millisecond
