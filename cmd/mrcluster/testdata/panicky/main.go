// Command panicky is mrcluster with a kind whose map always panics, for the
// tests that a panicking task fails its job, not its worker process.
package main

import (
	"context"

	"github.com/mrcluster/mrcluster/mapreduce"
)

func main() {
	mapreduce.Main(mapreduce.Kind{
		Name:        "panics",
		Description: "a map that always panics",
		Map: func(context.Context, mapreduce.Record, mapreduce.Emit) error {
			var m map[string]int
			m["boom"]++ // a nil map: the kind of bug a real map has
			return nil
		},
	})
}
