package mr

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
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

// TestPlainBufferSortsEveryRecord checks a buffer without a combiner: every
// record comes out once, in its key's partition, sorted by key, through
// many spills.
func TestPlainBufferSortsEveryRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	b := &mapBuffer{parts: 3, limit: 4 << 10, dir: t.TempDir()}
	defer b.close()
	var want []string
	for i := range 20000 {
		k := fmt.Sprintf("k%d", rng.IntN(500)) // keys repeat, as a skewed map's do
		v := fmt.Sprintf("v%d", i)
		want = append(want, k+"="+v)
		b.emit([]byte(k), []byte(v))
		if b.err != nil {
			t.Fatal(b.err)
		}
	}
	if len(b.spills) < 10 {
		t.Fatalf("a 4 KiB buffer spilled %d times, want many", len(b.spills))
	}
	var got []string
	for p := range 3 {
		var buf bytes.Buffer
		if err := b.writePart(p, &buf); err != nil {
			t.Fatal(err)
		}
		r := newRunReader(&buf, inputReadBuffer)
		var last []byte
		for r.next() == nil {
			if partition(r.key, 3) != p {
				t.Fatalf("key %s in partition %d, want %d", r.key, p, partition(r.key, 3))
			}
			if bytes.Compare(r.key, last) < 0 {
				t.Fatalf("key %s after %s in partition %d", r.key, last, p)
			}
			last = append(last[:0], r.key...)
			got = append(got, string(r.key)+"="+string(r.val))
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%d records out of %d in, or not the same ones", len(got), len(want))
	}
}

// TestPlainBufferHoldsAboutItsLimit checks what a buffer without a
// combiner costs. It allocated about five times its input (a list of
// every record at each spill, 48 bytes each, and an arena doubled past
// the limit; 141 MB for these 30 MB), so that four map tasks of a skewed
// job held far more than their --sort-buffer-mb. Now its arena and its
// index each grow to at most the limit, and a spill sorts the index in
// place.
func TestPlainBufferHoldsAboutItsLimit(t *testing.T) {
	const limit = 4 << 20
	b := &mapBuffer{parts: 4, limit: limit, dir: t.TempDir()}
	defer b.close()
	key := []byte("the") // every record under one key: the skewed job
	line := bytes.Repeat([]byte("a line of a book, "), 3)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const records = 500000 // about 30 MB: several spills
	for range records {
		b.emit(key, line)
	}
	runtime.ReadMemStats(&after)
	if b.err != nil {
		t.Fatal(b.err)
	}
	if len(b.spills) < 4 {
		t.Fatalf("%d spills of %d records of %d bytes through a %d-byte buffer", len(b.spills), records, len(key)+len(line), limit)
	}
	if held := cap(b.arena) + cap(b.recs)*int(recOverhead); held > 2*limit {
		t.Errorf("the buffer holds %d bytes, more than twice its limit of %d", held, limit)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*limit {
		t.Errorf("emitting %d records through a %d-byte buffer allocated %d bytes, want at most %d", records, limit, alloc, 8*limit)
	}
}

// The default sort buffer shrinks so that the workers' buffers fit in
// half the memory limit, not under 4 MiB; a size set by hand is kept.
func TestSortBufferWithinTheMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		configured, limit int64
		workers           int
		want              int64
	}{
		{DefaultSortBuffer, 256 * mib, 4, DefaultSortBuffer}, // the defaults
		{DefaultSortBuffer, 256 * mib, 16, 8 * mib},
		{DefaultSortBuffer, 128 * mib, 4, 16 * mib},
		{DefaultSortBuffer, 64 * mib, 64, 4 * mib},            // not under 4 MiB
		{DefaultSortBuffer, 0, 64, DefaultSortBuffer},         // no limit
		{DefaultSortBuffer, 4096 * mib, 4, DefaultSortBuffer}, // never above the default
		{64 * mib, 256 * mib, 16, 64 * mib},                   // set by hand
	} {
		if got := SortBufferWithin(c.configured, c.limit, c.workers); got != c.want {
			t.Errorf("SortBufferWithin(%d MiB, %d MiB, %d workers) = %d MiB, want %d", c.configured/mib, c.limit/mib, c.workers, got/mib, c.want/mib)
		}
	}
}

// TestCombiningBufferHoldsAboutItsLimit checks what a buffer with a
// combiner costs when every key is new (a word count of a text of
// distinct words, or of ids): it counted a key as its bytes and 112, and
// held 1.8 times its limit at its spill (the key's map entry, its hot and
// cold entries with the slack of their growth, its value, and the sort's
// list of every key and value, each key copied), so that four map tasks of
// a 108 MB word count of distinct words held 290 MB of buffers of 32 MiB.
func TestCombiningBufferHoldsAboutItsLimit(t *testing.T) {
	const limit = 8 << 20
	add := func(_, a, b []byte) []byte { return append(a[:0], a[0]+b[0]) }
	b := &mapBuffer{parts: 4, combine: add, limit: limit, dir: t.TempDir(), agg: map[string]int32{}}
	defer b.close()
	var before, held runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	key := make([]byte, 8)
	one := []byte{1}
	keys := 0
	for i := 0; len(b.spills) == 0; i++ {
		binary.BigEndian.PutUint64(key, uint64(i)*0x9e3779b97f4a7c15)
		b.emit(key, one)
		if b.err != nil {
			t.Fatal(b.err)
		}
		if b.size+200 >= limit && b.mem == nil {
			// The last key before the spill: what the buffer holds at its
			// fullest, as its spill sorts it.
			b.sort()
			keys = len(b.agg)
			runtime.GC()
			runtime.ReadMemStats(&held)
			b.mem = nil
		}
	}
	live := int64(held.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d keys before the spill; the buffer held %d bytes at its fullest (%d a key), its limit %d", keys, live, live/int64(max(keys, 1)), limit)
	if live > limit*5/4 {
		t.Errorf("a buffer of distinct keys held %d bytes as it spilled, more than 1.25 times its limit of %d", live, limit)
	}
}
