package mapx

import (
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A map emptied after a peak is copied small, and its room goes back to
// the heap; one still near its peak is left alone.
func TestShrunkGivesBackThePeak(t *testing.T) {
	m := map[int][64]byte{}
	high := 0
	for i := range 100_000 {
		m[i] = [64]byte{}
		Note(m, &high)
	}
	if high != 100_000 {
		t.Fatalf("high %d after 100,000 inserts", high)
	}
	for i := range 70_000 {
		delete(m, i)
	}
	if got := Shrunk(m, &high); len(got) != 30_000 || high != 100_000 {
		t.Fatalf("a map at 30 %% of its peak was copied (high %d)", high)
	}
	for i := 70_000; i < 99_990; i++ {
		delete(m, i)
	}
	before := heap()
	m = Shrunk(m, &high)
	after := heap()
	if len(m) != 10 || high != 10 {
		t.Fatalf("copy holds %d, high %d; want 10, 10", len(m), high)
	}
	for i := 99_990; i < 100_000; i++ {
		if _, ok := m[i]; !ok {
			t.Fatalf("key %d lost in the copy", i)
		}
	}
	if before-after < 4<<20 {
		t.Fatalf("the heap went from %d to %d KiB: the peak's room was not given back", before>>10, after>>10)
	}
	runtime.KeepAlive(m)
}

// Packed strings stay what they were given, across blocks' bounds, however
// long; short ones share blocks, long ones do not.
func TestStringsKeepWhatTheyWereGiven(t *testing.T) {
	var p Strings
	var in, out []string
	for i := range 3000 {
		s := strings.Repeat(string(rune('a'+i%26)), 1+i%40)
		switch {
		case i%100 == 0:
			s = strings.Repeat("k", maxPacked+1+i%3) // past the bound
		case i%101 == 0:
			s = ""
		}
		in = append(in, s)
		out = append(out, p.Pack(s))
	}
	for i := range in {
		if out[i] != in[i] {
			t.Fatalf("string %d: %q; want %q", i, out[i], in[i])
		}
	}
	if a, b := unsafe.StringData(out[1]), unsafe.StringData(out[2]); uintptr(unsafe.Pointer(b))-uintptr(unsafe.Pointer(a)) != uintptr(len(out[1])) {
		t.Fatalf("two short strings in a row are not packed one after the other")
	}
}
