package dataset

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// memFile cuts data into blocks the way PutFile does and returns the input
// file and a block opener over memory.
func memFile(name string, data []byte, bs int64, withEnds bool) (job.InputFile, map[int][]byte) {
	f := job.InputFile{Name: name, Size: int64(len(data)), BlockSize: bs, Lines: []int64{}}
	blocks := map[int][]byte{}
	for i := 0; int64(i)*bs < int64(len(data)); i++ {
		b := data[int64(i)*bs : min(int64(i+1)*bs, int64(len(data)))]
		blocks[i] = b
		f.Lines = append(f.Lines, int64(bytes.Count(b, []byte{'\n'})))
		if withEnds {
			if b[len(b)-1] == '\n' {
				f.EndsLine += "1"
			} else {
				f.EndsLine += "0"
			}
		}
	}
	return f, blocks
}

// checkSplits reads files in m splits and asserts that every line is read
// exactly once, in order, with its number, and that the bytes add up.
func checkSplits(t testing.TB, contents [][]byte, bs int64, m int, withEnds bool) {
	var files []job.InputFile
	blocks := map[string]map[int][]byte{}
	for i, c := range contents {
		f, b := memFile(fmt.Sprintf("f%d", i), c, bs, withEnds)
		files = append(files, f)
		blocks[f.Name] = b
	}
	open := func(_ context.Context, f job.InputFile, i int) (io.ReadCloser, error) {
		b, ok := blocks[f.Name][i]
		if !ok {
			return nil, fmt.Errorf("no block %d", i)
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	var got []string
	var total, lines int64
	// Read as the map tasks of a job over the files do: each with the
	// files its split names, and no others.
	j := job.New("wordcount_x", job.Spec{Kind: "wordcount", Partitions: m}, time.Now())
	j.Files, j.Reducers, j.Phase = files, 1, job.PhaseMap
	tasks, carried := j.Tasks(), 0
	if len(tasks) != m {
		t.Fatalf("m=%d: %d map tasks", m, len(tasks))
	}
	for _, task := range tasks {
		carried += len(task.Files)
		n, l, err := ReadSplit(context.Background(), open, task.Files, task.Split, func(r job.Record) error {
			got = append(got, fmt.Sprintf("%s:%d:%s", r.File, r.Line, r.Text))
			return nil
		})
		if err != nil {
			t.Fatalf("bs=%d m=%d: %v", bs, m, err)
		}
		total, lines = total+n, lines+l
	}
	var want []string
	var size int64
	for i, c := range contents {
		size += int64(len(c))
		if len(c) == 0 {
			continue
		}
		ls := strings.Split(strings.TrimSuffix(string(c), "\n"), "\n")
		for j, l := range ls {
			want = append(want, fmt.Sprintf("f%d:%d:%s", i, j+1, strings.TrimSuffix(l, "\r")))
		}
	}
	if total != size {
		t.Fatalf("bs=%d m=%d: read %d bytes of %d", bs, m, total, size)
	}
	if carried > len(files)+m {
		t.Fatalf("bs=%d m=%d: the tasks carry %d files in all; want at most the %d files plus one per task", bs, m, carried, len(files))
	}
	if int(lines) != len(want) || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("bs=%d m=%d: lines differ\n got %q\nwant %q", bs, m, got, want)
	}
}

func TestSplitsReadEveryLineOnce(t *testing.T) {
	contents := [][]byte{
		[]byte("alpha beta\ngamma\n\ndelta epsilon zeta\r\neta"),
		{},
		[]byte("\n\n\nx\n"),
		[]byte("one line no newline"),
		[]byte(strings.Repeat("long line of words ", 50) + "\nshort\n"),
	}
	for _, bs := range []int64{1, 2, 3, 7, 64, 1 << 20} {
		for _, m := range []int{1, 2, 3, 5, 8, 17, 100, 2000} {
			checkSplits(t, contents, bs, m, true)
			checkSplits(t, contents, bs, m, false)
		}
	}
}

func TestSplitsCoverFiles(t *testing.T) {
	files := []job.InputFile{{Size: 10}, {Size: 0}, {Size: 5}}
	sp := job.Splits(files, 4)
	var covered int64
	for _, s := range sp {
		for _, p := range s {
			covered += p.End - p.Start
		}
	}
	if len(sp) != 4 || covered != 15 {
		t.Fatalf("splits %v cover %d bytes, want 15 in 4 splits", sp, covered)
	}
}

// FuzzSplitReader checks the split/record reader on arbitrary bytes, block
// sizes and split counts: no panic, every line once, numbers right.
func FuzzSplitReader(f *testing.F) {
	f.Add([]byte("a\nb\nc"), []byte("d\r\ne\n"), uint8(1), uint8(3))
	f.Add([]byte("\n\n\n"), []byte(""), uint8(2), uint8(7))
	f.Add([]byte("no newline at all"), []byte("x\n"), uint8(5), uint8(2))
	f.Fuzz(func(t *testing.T, a, b []byte, bs, m uint8) {
		checkSplits(t, [][]byte{a, b}, int64(bs%16)+1, int(m%32)+1, m&128 != 0)
	})
}

// A key part is one per name: names that differ only where a key could
// not tell them apart get different keys, which hold only what a key may
// hold; a name of the old characters keeps the key it always had.
func TestKeyPart(t *testing.T) {
	if got := keyPart("pg-1342_x.txt"); got != "pg-1342_x=txt" {
		t.Fatalf("keyPart of an old name = %q, changed from pg-1342_x=txt", got)
	}
	seen := map[string]string{}
	for _, name := range []string{"a.b", "a=b", "a b", "a/20b", "a%20b", "a_b", "é", "e\u0301", "日本", "a=3Db", "a/3Db", "x+y (1)"} {
		k := keyPart(name)
		for i := 0; i < len(k); i++ {
			if c := k[i]; !keyByte(c) && c != '=' && c != '/' {
				t.Errorf("keyPart(%q) = %q holds %q", name, k, c)
			}
		}
		if other, ok := seen[k]; ok {
			t.Errorf("keyPart(%q) = keyPart(%q) = %q", name, other, k)
		}
		seen[k] = name
	}
}
