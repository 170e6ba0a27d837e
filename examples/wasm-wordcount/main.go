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
	"encoding/binary"
	"math/bits"
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

// Each byte of a word at once: ones has 0x01 in every byte, highs 0x80.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// countWords emits every maximal run of letters of b with a count of one.
//
// It reads 8 bytes at a time: in WebAssembly compiled from Go every jump
// that does not fall through costs a trip through the function's dispatch
// table, and a loop over bytes takes one or more per byte. Eight ASCII
// bytes give a mask of their letters with a few operations on a word, and
// the loop then visits only the bytes where a word starts or ends; bytes
// beyond ASCII go through utf8 and unicode, one rune at a time.
func countWords(b []byte, emit guest.Emit) {
	start := -1 // where the word under way began, or -1
	i := 0
	for i+8 <= len(b) {
		w := binary.LittleEndian.Uint64(b[i:])
		if w&highs != 0 {
			// A byte beyond ASCII: these 8 bytes one rune at a time (the
			// last rune may end past them).
			i, start = slowWords(b, i, i+8, start, emit)
			continue
		}
		// With bit 5 set, A-Z read as a-z and nothing else as a letter;
		// a byte's high bit then says whether it is >= 'a' and <= 'z' (no
		// byte is above 0x7f, so no sum or difference leaves its byte).
		x := w | 0x20*ones
		letters := (x + (0x80-'a')*ones) & (0xfa*ones - x) & highs
		// A word starts at a letter after a non-letter and ends at a
		// non-letter after a letter; the byte before the first is the
		// last of the previous 8. Starts and ends alternate: each end
		// closes the word under way or the first start not yet taken.
		before := letters << 8
		if start >= 0 {
			before |= 0x80
		}
		starts, ends := letters&^before, before&^letters
		for ; ends != 0; ends &= ends - 1 {
			if start < 0 {
				start = i + bits.TrailingZeros64(starts)>>3
				starts &= starts - 1
			}
			emit(b[start:i+bits.TrailingZeros64(ends)>>3], one)
			start = -1
		}
		if starts != 0 { // a word that goes on past these 8 bytes
			start = i + bits.TrailingZeros64(starts)>>3
		}
		i += 8
	}
	_, start = slowWords(b, i, len(b), start, emit)
	if start >= 0 {
		emit(b[start:], one)
	}
}

// slowWords goes on with countWords' scan of b from i, a rune at a time,
// until it reaches end (or the end of the rune that crosses it), and
// returns where it stopped and where the word under way began (-1: none).
func slowWords(b []byte, i, end, start int, emit guest.Emit) (int, int) {
	for i < end {
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
	return i, start
}

func main() {}
