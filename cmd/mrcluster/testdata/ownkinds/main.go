// Command ownkinds is mrcluster with two kinds of its own, for the tests of
// failures with separate processes: "panics", whose map always panics, and
// "slowcount", a word count whose map takes 5 s more per task in a process
// started with SLOW_WORKER=1, as on a sick machine; and "nap", a word count
// whose map sleeps the param seconds on its first line, and fails once in a
// process started with NAP_FAIL_ONCE=FILE (while FILE does not exist); and
// "killer", whose map kills its own process, as the out-of-memory killer
// does to a worker whose task takes all its memory.
package main

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"

	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/mapreduce"
)

func main() {
	wc := kinds.Data()[0]
	slow := os.Getenv("SLOW_WORKER") == "1"
	mapreduce.Main(
		mapreduce.Kind{
			Name:        "panics",
			Description: "a map that always panics",
			Map: func(context.Context, mapreduce.Record, mapreduce.Emit) error {
				var m map[string]int
				m["boom"]++ // a nil map: the kind of bug a real map has
				return nil
			},
		},
		mapreduce.Kind{
			Name:        "killer",
			Description: "a map that kills its own process",
			Map: func(context.Context, mapreduce.Record, mapreduce.Emit) error {
				return syscall.Kill(os.Getpid(), syscall.SIGKILL)
			},
		},
		mapreduce.Kind{
			Name:        "nap",
			Description: "wordcount whose map sleeps params.seconds on its first line",
			Map: func(ctx context.Context, rec mapreduce.Record, emit mapreduce.Emit) error {
				if rec.Line == 1 {
					if f := os.Getenv("NAP_FAIL_ONCE"); f != "" {
						if _, err := os.Stat(f); err != nil {
							_ = os.WriteFile(f, nil, 0o600)
							return errors.New("a hiccup: the map failed once")
						}
					}
					secs, _ := mapreduce.Params(ctx)["seconds"].(float64)
					select {
					case <-time.After(time.Duration(secs * float64(time.Second))):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return wc.Map(ctx, rec, emit)
			},
			Combine: wc.Combine,
			Reduce:  wc.Reduce,
		},
		mapreduce.Kind{
			Name:        "slowcount",
			Description: "wordcount, 5 s slower per task on a worker started with SLOW_WORKER=1",
			Map: func(ctx context.Context, rec mapreduce.Record, emit mapreduce.Emit) error {
				if slow && rec.Line == 1 {
					select {
					case <-time.After(5 * time.Second):
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return wc.Map(ctx, rec, emit)
			},
			Combine: wc.Combine,
			Reduce:  wc.Reduce,
		},
	)
}
