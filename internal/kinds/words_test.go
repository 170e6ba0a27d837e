package kinds

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// wordsByRune is the definition EachWord follows, read a rune at a time:
// the maximal runs of runes unicode.IsLetter says are letters (a byte that
// is not UTF-8 reads as utf8.RuneError, not a letter).
func wordsByRune(b []byte) []string {
	var words []string
	start := -1
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case unicode.IsLetter(r) && start < 0:
			start = i
		case !unicode.IsLetter(r) && start >= 0:
			words = append(words, string(b[start:i]))
			start = -1
		}
		i += size
	}
	if start >= 0 {
		words = append(words, string(b[start:]))
	}
	return words
}

// EachWord reads 8 bytes at a time; its words must be the definition's
// wherever the words, the runes beyond ASCII and the ends of the 8-byte
// steps fall.
func TestEachWordFindsTheRunsOfLetters(t *testing.T) {
	pieces := []string{"a", "Zz", "word", "ASCII", " ", "  ", ".", "@", "[", "`", "{", "0", "9", "\t", "\x00", "\x7f",
		"é", "Ω", "日本", "ß", "\u00a0", "—", "\xff", "\xe2\x82", "😀", "z"}
	check := func(s string) {
		t.Helper()
		want := wordsByRune([]byte(s))
		// Sliced from a longer buffer: the scan must not read past the
		// slice's end as if it were the slice's.
		buf := []byte(s + "tail")
		var got []string
		EachWord(buf[:len(s)], func(w []byte) { got = append(got, string(w)) })
		if !slices.Equal(got, want) {
			t.Fatalf("EachWord(%q) = %q, want %q", s, got, want)
		}
	}
	for _, s := range []string{"", "a", "abcdefgh", "abcdefg ", " bcdefgh", "abcdefghijklmnopq", "12345678abc", "AZaz@[`{"} {
		check(s)
	}
	// Every ASCII byte, alone among letters and among spaces.
	for c := range 128 {
		check("abcdef" + string(rune(c)) + "ghijklmn")
		check("      " + string(rune(c)) + "        ")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b strings.Builder
		for n := rng.IntN(12); n > 0; n-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		check(b.String())
	}
	docs, _ := Corpus(1) // the books, or generated texts when they are not there
	for _, d := range docs {
		for line := range strings.Lines(string(d.Data)) {
			check(line)
		}
	}
}
