// Package memtrim hands memory back to the system once a process that
// needed much of it for a while has gone quiet.
//
// Go returns the free pages of its heap to the system in the background,
// down to about the heap goal its last collection set: twice the live heap
// of that moment. A server that has just read a store of hundreds of
// thousands of jobs at start (JetStream's block buffers, the records being
// decoded), or has just run a big job, made its last collection at that
// peak; once idle it allocates too little to collect again for two
// minutes, and keeps the peak's memory resident. A restart with 200,000
// finished jobs sat at 767 MiB resident with 190 MiB live.
package memtrim

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Every is how often Run looks; Window, in looks, is the span over which
// a process must have been quiet (10 s): a process that has just gone
// quiet hands its memory back 10 to 12 s later.
const (
	Every  = 2 * time.Second
	Window = 5
)

// Trimmer decides, from the runtime's metrics, when to hand memory back.
type Trimmer struct {
	samples []metrics.Sample
	allocs  []uint64 // bytes allocated until each of the last Window looks, oldest first
	floor   uint64   // memory held right after the last trim
	// base is the bytes allocated until the last trim (or the first look);
	// after is set by a busy spell's trim, for the one that follows it.
	base  uint64
	after bool
	// looks counts the looks; trimmed is the look of the last trim, wait
	// the looks after it during which the floor holds (see Look).
	looks, trimmed, wait int
}

const (
	metricLive     = "/gc/heap/live:bytes"
	metricFree     = "/memory/classes/heap/free:bytes" // free, and not yet handed back
	metricAllocs   = "/gc/heap/allocs:bytes"
	metricTotal    = "/memory/classes/total:bytes"
	metricReleased = "/memory/classes/heap/released:bytes"
)

// New returns a Trimmer.
func New() *Trimmer {
	return &Trimmer{samples: []metrics.Sample{{Name: metricLive}, {Name: metricAllocs}, {Name: metricTotal}, {Name: metricReleased}}}
}

// minFree is the memory a trim must be able to hand back to be worth a
// collection. busy is what a process allocated since the last trim for a
// spell after which it trims once gone quiet, whatever its live heap.
const (
	minFree = 64 << 20
	busy    = 256 << 20
)

// held is the memory the process holds from the system (as the soft
// memory limit counts it, about its resident size).
func (t *Trimmer) held() uint64 { return t.samples[2].Value.Uint64() - t.samples[3].Value.Uint64() }

// Look collects and hands the heap's free memory back to the system when
// the process is quiet: over the last Window looks it allocated at most an
// eighth of its live heap or 16 MiB, whichever is more, and at most
// 64 MiB, so the memory will not be asked for again at once. It then trims
// once after a busy spell (it allocated 256 MiB since the last trim) and
// once more Window looks later; otherwise when it holds at least 64 MiB
// more than its live heap and, for Window looks after its last trim (twice
// as many after each trim that the wait alone allowed and that handed back
// less than 64 MiB, up to 5 minutes), than right after that trim. It
// returns how many bytes it handed back; 0 if it did not look.
//
// The live heap is that of the last collection, which in a process gone
// quiet after a peak (a restart's read of the store) is the peak's: the
// free pages alone do not tell what a collection would free. After a
// restart with 200,000 jobs the last collection at start saw 315 MiB live
// and left 45 MiB free, so a rule on free pages never trimmed and the
// server sat at 600 MiB with 80 MiB live. Nor does the live heap tell all:
// what sync.Pools hold counts as live until the second collection after
// its last use, and JetStream pools the buffers of the blocks it wrote: a
// server 30 s after a burst of 200,000 jobs held 72 MiB of them in pools
// (109 MiB live, 159 MiB resident; 43 MiB live after two collections),
// which the rule on the live heap never trimmed.
func (t *Trimmer) Look() uint64 {
	metrics.Read(t.samples)
	live, allocs, held := t.samples[0].Value.Uint64(), t.samples[1].Value.Uint64(), t.held()
	if t.looks == 0 {
		t.base = allocs
	}
	full := len(t.allocs) == Window
	if full {
		t.allocs = t.allocs[1:]
	}
	t.allocs = append(t.allocs, allocs)
	since := allocs - t.allocs[0]
	t.looks++
	if !full || since > max(live/8, 16<<20) || since > minFree {
		return 0
	}
	// Right after a trim, the floor keeps a process that holds more than
	// its live heap for good (pages shared by live and dead objects) from
	// collecting at every look. For a while only: what a process lets go
	// after a trim without allocating (JetStream frees the caches of the
	// blocks it read 10 s after their last read) is found only by another
	// collection. The wait doubles while trims hand back little.
	//
	// A busy spell's trim is followed by another, Window looks later: what
	// the process lets go by its timers once quiet is not found by the
	// first (JetStream's caches of the blocks it wrote during the spell
	// go to its pools 10 s after their last use; the live heap the first
	// trim saw counted them, so the rule on the live heap did not trim
	// again).
	spell := allocs-t.base >= busy
	after := t.after && t.looks-t.trimmed >= Window
	again := !spell && !after && held < t.floor+minFree // only the wait allows this trim
	floored := again && t.looks-t.trimmed < t.wait
	if !spell && !after && (held < live+minFree || floored) {
		return 0
	}
	t.after = spell
	// Two collections: what sync.Pools hold (JetStream pools its block
	// buffers) is let go at the second after it was last used.
	runtime.GC()
	debug.FreeOSMemory()
	metrics.Read(t.samples)
	t.base = t.samples[1].Value.Uint64()
	t.allocs = append(t.allocs[:0], t.base)
	t.floor = t.held()
	freed := held - min(held, t.floor)
	t.trimmed = t.looks
	if again && freed < minFree {
		t.wait = min(2*t.wait, maxWait)
	} else {
		t.wait = Window
	}
	return freed
}

// maxWait bounds, in looks, the wait after a trim that handed back little
// (5 min).
const maxWait = 150

// Run looks every Every until ctx ends, and says what it handed back at
// debug level.
func Run(ctx context.Context, log *slog.Logger) {
	t := New()
	tick := time.NewTicker(Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if freed := t.Look(); freed > 0 {
				log.Debug("handed memory back to the system after a busy spell", "freed_mib", freed>>20)
			}
		}
	}
}
