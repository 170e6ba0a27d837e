package mapx

import (
	"runtime"
	"testing"
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
