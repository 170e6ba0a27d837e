// Command wasm-wordcount is a word count as a WebAssembly kind: built once,
// uploaded once, run by every worker of a cluster without a rebuild. Its
// output equals the built-in wordcount's, byte for byte.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o wc.wasm ./examples/wasm-wordcount
//	mrcluster kind put mywc wc.wasm
//	mrcluster submit mywc --input books --partitions 8 --reducers 4 --wait
package main

import (
	"context"
	"unicode"
	"unicode/utf8"

	"github.com/mrcluster/mrcluster/wasm/guest"
)

var one = []byte("1")

func init() {
	guest.Register(guest.Kind{
		Description: "counts each word (a maximal run of Unicode letters) of the input, as a WebAssembly module",
		Map: func(_ context.Context, rec guest.Record, emit guest.Emit) error {
			countWords(rec.Text, emit)
			return nil
		},
		Combine: guest.SumCombine,
		Reduce:  guest.SumReduce,
	})
}

// asciiLetter[c] is true for the ASCII letters: most bytes of most texts
// are ASCII, and a table is cheaper than unicode.IsLetter.
var asciiLetter = func() (t [utf8.RuneSelf]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	return t
}()

// countWords emits every maximal run of letters of b with a count of one.
func countWords(b []byte, emit guest.Emit) {
	start := -1
	for i := 0; i < len(b); {
		c, size := b[i], 1
		var letter bool
		if c < utf8.RuneSelf {
			letter = asciiLetter[c]
		} else {
			var r rune
			r, size = utf8.DecodeRune(b[i:])
			letter = unicode.IsLetter(r)
		}
		if letter {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			emit(b[start:i], one)
			start = -1
		}
		i += size
	}
	if start >= 0 {
		emit(b[start:], one)
	}
}

func main() {}
