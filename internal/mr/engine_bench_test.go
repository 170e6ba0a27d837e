package mr

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/mrcluster/mrcluster/internal/kinds"
)

// BenchmarkMapBuffer is the map side of wordcount without I/O: the books'
// words emitted into a combining buffer, beside a plain map of counters.
func BenchmarkMapBuffer(b *testing.B) {
	paths, _ := filepath.Glob("../../../shared/corpus/gutenberg/*.txt")
	var lines [][]byte
	var size int64
	for _, p := range paths {
		d, err := os.ReadFile(p)
		if err != nil {
			b.Skip("no corpus")
		}
		size += int64(len(d))
		lines = append(lines, bytes.Split(d, []byte("\n"))...)
	}
	wc := kinds.Data()[0]
	one := []byte("1")
	b.Run("emit", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			buf := &mapBuffer{parts: 4, combine: wc.Combine, limit: 1 << 30, agg: map[string]int32{}}
			for _, l := range lines {
				kinds.EachWord(l, func(w []byte) { buf.emit(w, one) })
			}
		}
	})
	b.Run("counters", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			counts := map[string]*int64{}
			for _, l := range lines {
				kinds.EachWord(l, func(w []byte) {
					if p, ok := counts[string(w)]; ok {
						*p++
					} else {
						n := int64(1)
						counts[string(w)] = &n
					}
				})
			}
		}
	})
}
