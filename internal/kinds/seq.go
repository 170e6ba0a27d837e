package kinds

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The plain sequential implementations of the data kinds: what the cluster's
// outputs are checked against, and the baseline of the benchmark.

// Doc is one input file of a sequential run.
type Doc struct {
	Name string
	Data []byte
}

// WordCounts counts the words of r, in one goroutine.
func WordCounts(r io.Reader, counts map[string]int64) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		EachWord(sc.Bytes(), func(w []byte) { counts[string(w)]++ })
	}
	return sc.Err()
}

// SeqWordCount is wordcount's output for docs.
func SeqWordCount(docs []Doc) string {
	counts := map[string]int64{}
	for _, d := range docs {
		_ = WordCounts(bytes.NewReader(d.Data), counts)
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d\n", k, counts[k])
	}
	return b.String()
}

// SeqGrep is grep's output for docs, which must be given sorted by name.
func SeqGrep(docs []Doc, pattern string) string {
	re := regexp.MustCompile(pattern)
	var b strings.Builder
	for _, d := range docs {
		for i, line := range lines(d.Data) {
			if re.Match(line) {
				fmt.Fprintf(&b, "%s:%d %s\n", d.Name, i+1, line)
			}
		}
	}
	return b.String()
}

// SeqIndexer is indexer's output for docs.
func SeqIndexer(docs []Doc) string {
	index := map[string]map[string]bool{}
	for _, d := range docs {
		for _, line := range lines(d.Data) {
			EachWord(line, func(w []byte) {
				if index[string(w)] == nil {
					index[string(w)] = map[string]bool{}
				}
				index[string(w)][d.Name] = true
			})
		}
	}
	keys := make([]string, 0, len(index))
	for k := range index {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		names := make([]string, 0, len(index[k]))
		for n := range index[k] {
			names = append(names, n)
		}
		sort.Strings(names)
		b.WriteString(k + " " + strconv.Itoa(len(names)) + " " + strings.Join(names, ",") + "\n")
	}
	return b.String()
}

// lines splits data into lines without their "\n" or "\r\n".
func lines(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	ls := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	for i, l := range ls {
		ls[i] = bytes.TrimSuffix(l, []byte("\r"))
	}
	return ls
}
