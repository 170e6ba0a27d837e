package mr

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TestMergerGroupsSortedRuns writes random sorted runs, merges them and
// checks every key comes once, in order, with all its values.
func TestMergerGroupsSortedRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	want := map[string]int{}
	var srcs []source
	for range 5 {
		var keys []string
		for range rng.IntN(200) {
			keys = append(keys, fmt.Sprintf("k%03d", rng.IntN(150)))
		}
		slices.Sort(keys)
		var buf bytes.Buffer
		w := newRunWriter(&buf)
		for _, k := range keys {
			want[k]++
			if err := w.write([]byte(k), []byte("1")); err != nil {
				t.Fatal(err)
			}
		}
		_ = w.flush()
		srcs = append(srcs, newRunReader(&buf, inputReadBuffer))
	}
	m, err := newMerger(srcs)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var order []string
	err = m.groups(func(key []byte, values func(func([]byte) bool)) error {
		if _, dup := got[string(key)]; dup {
			return fmt.Errorf("key %s twice", key)
		}
		order = append(order, string(key))
		for range values {
			got[string(key)]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(order) || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merged %v, want %v (order sorted: %v)", got, want, slices.IsSorted(order))
	}
}

// TestRunReaderRejectsCorruptRuns: a truncated or absurd run is an error,
// not a panic or a huge allocation.
func TestRunReaderRejectsCorruptRuns(t *testing.T) {
	var buf bytes.Buffer
	w := newRunWriter(&buf)
	_ = w.write([]byte("key"), []byte("value"))
	_ = w.flush()
	full := buf.Bytes()
	for i := 1; i < len(full); i++ {
		r := newRunReader(bytes.NewReader(full[:i]), inputReadBuffer)
		if err := r.next(); err == nil {
			t.Fatalf("a run cut at %d bytes read fine", i)
		}
	}
	r := newRunReader(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}), inputReadBuffer)
	if err := r.next(); err == nil || err == io.EOF {
		t.Fatalf("a 4 GiB key length: %v", err)
	}
}

// TestCombiningBufferFoldsLikeAPlainSum: the buffer's runs of equal values,
// folded by doubling, and its spills give the same sums as adding up.
func TestCombiningBufferFoldsLikeAPlainSum(t *testing.T) {
	add := func(_, a, b []byte) []byte {
		x, _ := strconv.Atoi(string(a))
		y, _ := strconv.Atoi(string(b))
		return strconv.AppendInt(a[:0], int64(x+y), 10)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	b := &mapBuffer{parts: 3, combine: add, limit: 2 << 10, dir: t.TempDir(), agg: map[string]int32{}}
	defer b.close()
	want := map[string]int{}
	for range 20000 {
		k := fmt.Sprintf("w%d", rng.IntN(300))
		v := 1
		if rng.IntN(10) == 0 {
			v = rng.IntN(1000) // some values differ from the run, some are long
		}
		want[k] += v
		b.emit([]byte(k), []byte(strconv.Itoa(v)))
		if b.err != nil {
			t.Fatal(b.err)
		}
	}
	if len(b.spills) == 0 {
		t.Fatal("a 2 KiB buffer never spilled")
	}
	got := map[string]int{}
	for p := range 3 {
		var buf bytes.Buffer
		if err := b.writePart(p, &buf); err != nil {
			t.Fatal(err)
		}
		r := newRunReader(&buf, inputReadBuffer)
		for r.next() == nil {
			if _, dup := got[string(r.key)]; dup {
				t.Fatalf("key %s twice in the output", r.key)
			}
			n, _ := strconv.Atoi(string(r.val))
			got[string(r.key)] = n
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatal("combined sums differ from plain sums")
	}
}
