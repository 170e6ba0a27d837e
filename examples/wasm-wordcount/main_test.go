package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mrcluster/mrcluster/internal/kinds"
)

// words returns what countWords emits for b.
func words(b []byte) []string {
	var got []string
	countWords(b, func(k, v []byte) {
		if string(v) != "1" {
			panic("countWords emitted a value other than 1")
		}
		got = append(got, string(k))
	})
	return got
}

// The example reads 8 bytes at a time; its words must be the built-in
// word count's, wherever the words, the runes beyond ASCII and the ends of
// the 8-byte steps fall.
func TestCountWordsFindsTheBuiltInsWords(t *testing.T) {
	pieces := []string{"a", "Zz", "word", "ASCII", " ", "  ", ".", "@", "[", "`", "{", "0", "9", "\t",
		"é", "Ω", "日本", "ß", "\u00a0", "—", "\xff", "\xe2\x82", "😀", "z"}
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(s string) {
		t.Helper()
		var want []string
		kinds.EachWord([]byte(s), func(w []byte) { want = append(want, string(w)) })
		// Sliced from a longer buffer too: the scan must not read past the
		// line's end as if it were the line's.
		buf := []byte(s + "tail")
		if got := words(buf[:len(s)]); !slices.Equal(got, want) {
			t.Fatalf("countWords(%q) = %q, the built-in's words are %q", s, got, want)
		}
	}
	for _, s := range []string{"", "a", "abcdefgh", "abcdefg ", " bcdefgh", "abcdefghijklmnopq", "12345678abc"} {
		check(s)
	}
	for range 20000 {
		var b strings.Builder
		for n := rng.IntN(12); n > 0; n-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		check(b.String())
	}
	docs, _ := kinds.Corpus(1) // the books, or generated texts when they are not there
	for _, d := range docs {
		for line := range strings.Lines(string(d.Data)) {
			check(line)
		}
	}
}
