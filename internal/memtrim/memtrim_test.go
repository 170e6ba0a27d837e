package memtrim

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

var sink [][]byte

func free() uint64 {
	s := []metrics.Sample{{Name: metricFree}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// After a spell that needed much memory, a quiet process hands the free
// part back; a busy one does not.
func TestQuietProcessHandsMemoryBack(t *testing.T) {
	tr := New()
	for range Window {
		if tr.Look() != 0 {
			t.Fatal("trimmed before a whole window of looks: it has nothing to compare the allocations with")
		}
	}
	// A spell: 256 MiB live, then let go and collected, so the heap holds
	// it free.
	for range 256 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC()
	if f := free(); f < minFree {
		t.Fatalf("only %d MiB free after letting 256 MiB go", f>>20)
	}
	for range Window - 1 {
		if tr.Look() != 0 {
			t.Fatal("trimmed within a window of allocating 256 MiB: the process is busy")
		}
	}
	// Quiet for a whole window: the free memory goes back.
	before := free()
	got := tr.Look()
	if got == 0 {
		t.Fatalf("a quiet process with %d MiB free did not trim", before>>20)
	}
	if after := free(); after >= minFree {
		t.Fatalf("%d MiB still free after the trim (%d before)", after>>20, before>>20)
	}
	if tr.Look() != 0 {
		t.Fatal("trimmed again with nothing free")
	}
}

// A process gone quiet right after a peak: its last collection saw the
// peak live, and the heap grew past it since, so hardly any page is free
// yet. It holds much more than its live data needs: the trim collects and
// hands it back. (A rule on free pages alone left a restarted server at
// 600 MiB with 80 MiB live.)
func TestQuietProcessAfterAPeakHandsMemoryBack(t *testing.T) {
	tr := New()
	for range 128 {
		sink = append(sink, make([]byte, 1<<20))
	}
	runtime.GC() // the last collection: 128 MiB live
	for range 96 {
		sink = append(sink, make([]byte, 1<<20)) // below the heap goal: no collection
	}
	sink = nil
	if f := free(); f >= minFree {
		t.Fatalf("%d MiB free before any collection of the dropped data: the case is not set up", f>>20)
	}
	for range Window {
		if tr.Look() != 0 {
			t.Fatal("trimmed before a whole window of looks")
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapSys - ms.HeapReleased
	if got := tr.Look(); got < minFree {
		t.Fatalf("a quiet process holding %d MiB for nothing live handed back %d MiB", before>>20, got>>20)
	}
	runtime.ReadMemStats(&ms)
	if after := ms.HeapSys - ms.HeapReleased; after > before/2 {
		t.Fatalf("the heap holds %d MiB after the trim, %d before", after>>20, before>>20)
	}
}
