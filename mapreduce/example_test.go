package mapreduce_test

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"strconv"

	"github.com/mrcluster/mrcluster/mapreduce"
)

// A kind that counts the words of each length, run on a cluster of its own.
func Example() {
	lengths := mapreduce.Kind{
		Name: "wordlengths",
		Map: func(_ context.Context, rec mapreduce.Record, emit mapreduce.Emit) error {
			for _, w := range bytes.Fields(rec.Text) {
				emit(fmt.Appendf(nil, "%02d", len(w)), []byte("1"))
			}
			return nil
		},
		Combine: mapreduce.SumCombine,
		Reduce: func(_ context.Context, _ []byte, values iter.Seq[[]byte]) ([]byte, error) {
			n := 0
			for v := range values {
				x, _ := strconv.Atoi(string(v))
				n += x
			}
			return strconv.AppendInt(nil, int64(n), 10), nil
		},
	}
	out, err := mapreduce.RunLocal(context.Background(), lengths, map[string]string{
		"a.txt": "the quick brown fox\njumps over\n",
		"b.txt": "the lazy dog",
	}, 3, 2, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(out)
	// Output:
	// 03 4
	// 04 2
	// 05 3
}
