// Command lettercount is mrcluster with one kind of its own, "lettercount":
// how often each letter occurs in the input, case folded. It runs every
// mrcluster command: start a server with it, then submit a job.
//
//	go run ./examples/lettercount serve
//	go run ./examples/lettercount dataset put books ../shared/corpus/gutenberg/*.txt
//	go run ./examples/lettercount submit lettercount --input books --partitions 8 --reducers 2 --wait
//
// Every worker of the cluster must run this program too
// (go run ./examples/lettercount worker --nats …), so that it knows the kind.
package main

import (
	"context"
	"unicode"
	"unicode/utf8"

	"github.com/mrcluster/mrcluster/mapreduce"
)

// LetterCount is the kind.
var LetterCount = mapreduce.Kind{
	Name:        "lettercount",
	Description: "how often each letter occurs, case folded: \"letter count\" lines",
	Map: func(_ context.Context, rec mapreduce.Record, emit mapreduce.Emit) error {
		var buf [utf8.UTFMax]byte
		for _, r := range string(rec.Text) {
			if unicode.IsLetter(r) {
				n := utf8.EncodeRune(buf[:], unicode.ToLower(r))
				emit(buf[:n], []byte("1"))
			}
		}
		return nil
	},
	Combine: mapreduce.SumCombine,
	Reduce:  mapreduce.SumReduce,
}

func main() { mapreduce.Main(LetterCount) }
