// Package mapreduce is the Go API for kinds of your own: write a map, an
// optional combiner and a reduce, then run the mrcluster command line from
// a main package of yours with Main, so that its serve and worker know
// them. Every server and worker of a cluster must run a program that
// registers the same kinds.
//
//	func main() {
//		mapreduce.Main(mapreduce.Kind{
//			Name: "lettercount",
//			Map: func(ctx context.Context, rec mapreduce.Record, emit mapreduce.Emit) error {
//				…
//			},
//			Combine: mapreduce.SumCombine,
//			Reduce:  mapreduce.SumReduce,
//		})
//	}
//
// Keys and values are bytes. Output is one line per key, ordered by key:
// "key value" unless the kind has a Format.
package mapreduce

import (
	"context"
	"iter"

	"github.com/mrcluster/mrcluster/internal/cli"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// Record is one line of input: the file it comes from, its number (from 1)
// and its text, without the newline. Text is only valid during the call.
type Record = job.Record

// Emit hands one intermediate key and value to the cluster, which copies
// both.
type Emit = job.Emit

// Param describes one parameter of a kind, for the dashboard and errors.
type Param = job.Param

// Kind is a map-reduce job kind: its Map is called with every input line
// of a map task's split; Combine, optional, merges two values of one key on
// the map side (associative and commutative; it may return a, changed);
// Reduce makes a key's output value from all its values (nil keeps the
// first); Format, optional, makes a key's output line; Params and Check
// describe and validate the kind's parameters. The built-in wordcount, grep
// and indexer are written with this same type.
type Kind = job.DataKind

// SkipRetry, wrapped in the error a Map or Reduce returns (fmt.Errorf("…:
// %w", mapreduce.SkipRetry)), fails the task at once, without the attempts
// --max-attempts allows, and with it the job: for what no attempt can
// mend, such as a record the kind cannot read.
var SkipRetry = job.ErrSkipRetry

// Params returns the params of the job a map or reduce call belongs to.
func Params(ctx context.Context) map[string]any { return job.ParamsOf(ctx) }

// Main runs the mrcluster command line (serve, worker, submit, …) with the
// built-in kinds and these, then exits.
func Main(kinds ...Kind) {
	ks := make([]job.Kind, len(kinds))
	for i, k := range kinds {
		ks[i] = k.Kind()
	}
	cli.Main(ks...)
}

// SumCombine adds two decimal integers: the combiner of counting kinds.
// A value that is not an integer counts as 0.
func SumCombine(key, a, b []byte) []byte { return kinds.SumCombine(key, a, b) }

// SumReduce adds a key's decimal integer values; a value that is not an
// integer fails the reduce.
func SumReduce(ctx context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error) {
	return kinds.SumReduce(ctx, key, values)
}
