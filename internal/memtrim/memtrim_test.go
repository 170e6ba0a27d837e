package memtrim

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
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
	// The collector may start before the heap reaches its goal (at 70 %
	// of the way from the live heap, on a loaded machine): with the
	// default goal, the 96 MiB below were sometimes collected, and the
	// case was not set up.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
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

// What a process lets go after a trim, without allocating, goes back at a
// later look; a process whose pages stay half used does not collect at
// every look meanwhile, and waits longer after each trim that handed back
// little.
func TestMemoryLetGoAfterATrimGoesBackLater(t *testing.T) {
	defer runtime.GC() // what this test let go is not live for the next
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	// 256 MiB of 2 KiB objects, one in four kept: each 8 KiB page holds
	// a live object, and none can be handed back. No collection while
	// they are made: new objects would fill the places of dead ones.
	debug.SetGCPercent(-1)
	var keep [][]byte
	for i := range 128 << 10 {
		b := make([]byte, 2<<10)
		if i%4 == 0 {
			keep = append(keep, b)
		}
	}
	debug.SetGCPercent(400)
	runtime.GC()
	tr := New()
	for range Window {
		if tr.Look() != 0 {
			t.Fatal("trimmed before a whole window of looks")
		}
	}
	if got := tr.Look(); got >= minFree {
		t.Fatalf("handed back %d MiB of pages that each hold a live object", got>>20)
	}
	if tr.trimmed != tr.looks {
		t.Fatal("a quiet process holding twice its live heap did not collect")
	}
	// It waits, collects again once the wait is over, and waits twice as
	// long after that trim, which the wait alone allowed, handed back
	// little.
	for _, wait := range []int{Window, 2 * Window} {
		if tr.wait != wait {
			t.Fatalf("waits %d looks after a trim that handed back little; want %d", tr.wait, wait)
		}
		for range wait - 1 {
			tr.Look()
			if tr.trimmed == tr.looks {
				t.Fatal("collected again during the wait")
			}
		}
		if got := tr.Look(); got >= minFree || tr.trimmed != tr.looks {
			t.Fatalf("at the end of the wait: handed back %d MiB, collected %v; want a collection that hands back little", got>>20, tr.trimmed == tr.looks)
		}
	}
	for range 4*Window - 1 {
		tr.Look()
	}
	runtime.KeepAlive(keep)
	keep = nil // let go, with no allocation to start a collection
	if got := tr.Look(); got < minFree {
		t.Fatalf("once the wait was over, handed back %d MiB once its 64 MiB live were let go", got>>20)
	}
	if tr.wait != Window {
		t.Fatalf("waits %d looks after a trim that handed back much; want %d", tr.wait, Window)
	}
}

// pool holds buffers as JetStream's block pools do; kept, those its
// caches hold.
var (
	pool sync.Pool
	kept [][]byte
)

// A process gone quiet after a busy spell trims once, though what it holds
// looks live: buffers a sync.Pool keeps count as live until the second
// collection after their last use (a server 30 s after a burst of 200,000
// jobs held 72 MiB of JetStream's block buffers so, 159 MiB resident with
// 109 live). And once more a window later, for what it lets go by its
// timers once quiet (JetStream's block caches, 10 s after their last use).
func TestQuietProcessAfterABusySpellLetsPooledMemoryGo(t *testing.T) {
	tr := New()
	for range Window {
		if tr.Look() != 0 {
			t.Fatal("trimmed before a whole window of looks")
		}
	}
	for range busy >> 20 {
		sink = append(sink, make([]byte, 1<<20))
		sink = sink[:0]
	}
	// No collection but the test's and the trims' from here: each would
	// move the pool's buffers on towards their end.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	t.Cleanup(func() {
		for pool.Get() != nil {
		}
		kept = nil
		runtime.GC()
	})
	for range 96 {
		pool.Put(make([]byte, 1<<20))
		kept = append(kept, make([]byte, 1<<20))
	}
	// Collected, and the free pages handed back: the 192 MiB in the pool
	// and the caches are live, and the process holds little else.
	debug.FreeOSMemory()
	quiet := func(what string) uint64 {
		t.Helper()
		for range Window - 1 {
			if tr.Look() != 0 {
				t.Fatalf("trimmed within a window of %s", what)
			}
		}
		return tr.Look()
	}
	// At least half back: under the race detector a pool drops a
	// quarter of what is put in it at random.
	if got := quiet("the busy spell"); got < 48<<20 {
		t.Fatalf("a process quiet after a busy spell, its pool holding 96 MiB, handed back %d MiB", got>>20)
	}
	// The caches let their buffers go to the pool, without allocating.
	for _, b := range kept {
		pool.Put(b)
	}
	kept = nil
	if got := quiet("the trim"); got < 48<<20 {
		t.Fatalf("a window after a busy spell's trim, with 96 MiB let go to a pool since, handed back %d MiB", got>>20)
	}
	for range 3 * Window {
		if tr.Look() != 0 {
			t.Fatal("trimmed again with no busy spell since")
		}
	}
}
