package kinds

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Corpus returns the test corpus, copies times over (file names prefixed
// with the copy number), and where it came from: the eight books of
// ../shared/corpus/gutenberg next to the repository (or $MRCLUSTER_CORPUS),
// or, on a machine without them, eight generated texts of the same size
// and shape (lines of words of several scripts, CRLF and blank lines), so
// that the tests run everywhere, against the same sequential reference.
func Corpus(copies int) ([]Doc, string) {
	dir := findCorpus()
	var books []Doc
	if dir != "" {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
		sort.Strings(paths)
		for _, p := range paths {
			if data, err := os.ReadFile(p); err == nil {
				books = append(books, Doc{Name: filepath.Base(p), Data: data})
			}
		}
	}
	source := dir
	if len(books) == 0 {
		books, source = generated(), "generated texts (no gutenberg corpus found next to the repository)"
	}
	var docs []Doc
	for i := range copies {
		for _, b := range books {
			name := b.Name
			if copies > 1 {
				name = fmt.Sprintf("%d-%s", i, b.Name)
			}
			docs = append(docs, Doc{Name: name, Data: b.Data})
		}
	}
	return docs, source
}

func findCorpus() string {
	if d := os.Getenv("MRCLUSTER_CORPUS"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			c := filepath.Join(filepath.Dir(d), "shared", "corpus", "gutenberg")
			if _, err := os.Stat(c); err == nil {
				return c
			}
			return ""
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// generated makes eight texts of 140–600 KB from a fixed seed.
func generated() []Doc {
	rng := rand.New(rand.NewPCG(42, 7))
	vocab := strings.Fields("the of and a to in he was that it his her you I with had as for she not at but be on my him they all so this were which have from me by said one what when there an no if would or their them Alice whale Ahab Huck Tom Sherlock Dorian Frankenstein Gregor König Märchen Grétel naïve café Ωμέγα λόγος Москва 東京 ſeemed don't well-known 1984 — \"quoted\" (aside)")
	sizes := []int{139000, 453000, 441000, 540000, 594000, 139000, 582000, 413000}
	var docs []Doc
	for i, n := range sizes {
		var b strings.Builder
		for b.Len() < n {
			words := rng.IntN(14)
			for w := range words {
				if w > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(vocab[rng.IntN(len(vocab))])
				if rng.IntN(9) == 0 {
					b.WriteString(",")
				}
			}
			if rng.IntN(4) == 0 {
				b.WriteString("\r")
			}
			b.WriteString("\n")
		}
		docs = append(docs, Doc{Name: fmt.Sprintf("text-%d.txt", i), Data: []byte(b.String())})
	}
	return docs
}
