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
	"strconv"

	"github.com/mrcluster/mrcluster/internal/cli"
	"github.com/mrcluster/mrcluster/internal/job"
)

// Record is one line of input: the file it comes from, its number (from 1)
// and its text, without the newline. Text is only valid during the call.
type Record = job.Record

// Emit hands one intermediate key and value to the cluster, which copies
// both.
type Emit = job.Emit

// Param describes one parameter of a kind, for the dashboard and errors.
type Param = job.Param

// Kind is a map-reduce job kind.
type Kind struct {
	// Name is what a job names in "kind"; Description is shown in the
	// dashboard and in GET /api/v1/kinds.
	Name        string
	Description string
	// Map is called with every input line of a map task's split.
	Map func(ctx context.Context, rec Record, emit Emit) error
	// Combine, optional, merges two values of one key on the map side; it
	// must be associative and commutative and may return a, changed.
	Combine func(key, a, b []byte) []byte
	// Reduce makes a key's output value from all its values; nil keeps
	// the first value.
	Reduce func(ctx context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error)
	// Format, optional, makes the output line of a key and its value.
	Format func(key, value []byte) []byte
	// Params, optional, lists the kind's parameters; Check validates them.
	Params []Param
	Check  func(params map[string]any) error
}

func (k Kind) internal() job.Kind {
	return job.Kind{
		Name: k.Name, Description: k.Description,
		MapRecord: k.Map, Combine: k.Combine, ReduceKey: k.Reduce, Format: k.Format,
		Params: k.Params, Check: k.Check,
	}
}

// Params returns the params of the job a map or reduce call belongs to.
func Params(ctx context.Context) map[string]any { return job.ParamsOf(ctx) }

// Main runs the mrcluster command line (serve, worker, submit, …) with the
// built-in kinds and these, then exits.
func Main(kinds ...Kind) {
	ks := make([]job.Kind, len(kinds))
	for i, k := range kinds {
		ks[i] = k.internal()
	}
	cli.Main(ks...)
}

// SumCombine adds two decimal integers: the combiner of counting kinds.
func SumCombine(_, a, b []byte) []byte {
	x, _ := strconv.ParseInt(string(a), 10, 64)
	y, _ := strconv.ParseInt(string(b), 10, 64)
	return strconv.AppendInt(a[:0], x+y, 10)
}

// SumReduce adds a key's decimal integer values.
func SumReduce(_ context.Context, _ []byte, values iter.Seq[[]byte]) ([]byte, error) {
	var n int64
	for v := range values {
		x, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, err
		}
		n += x
	}
	return strconv.AppendInt(nil, n, 10), nil
}
