package memtrim

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultLimit is the soft memory limit of a server or worker process
// unless it is told otherwise (--memory-limit-mb).
const DefaultLimit = 256 << 20

// Without a limit, Go keeps the pages it freed until its background
// scavenger gets to them, and its heap grows to twice the live data before
// it collects: a 1 GiB word count, whose live data is ~110 MiB (half of it
// JetStream's block buffers), peaked at 329-355 MiB resident, 120 MiB of it
// free pages not yet handed back. Under a soft limit the collector and the
// scavenger keep the process under it. A fixed limit has a price: when the
// live data alone nears it (a burst of 200,000 queued jobs peaks at
// 1.2 GiB resident), the collector runs without pause and takes up to half the CPU.
// So the limit floats: after every collection it is set to the larger of
// the base and what the process holds now plus half the heap growth GOGC
// allows. Above the base the collector then runs as with GOGC halved (at
// most twice as often), never without pause; below it the limit bounds
// the memory the live data does not need. (With the whole growth GOGC
// allows, the word count peaked at 321 MiB.)

// limiter is the process's one floating limit: the runtime's limit is a
// property of the process, shared by every server a test starts in it.
var limiter struct {
	mu      sync.Mutex
	bases   map[*int64]struct{} // of the callers of Limit not yet stopped
	gen     int                 // counts up when the last caller stops: an older hook stops re-arming
	tuned   func(limit int64)   // tests: called after each adjustment
	samples []metrics.Sample
}

const metricGOGC = "/gc/gogc:percent"

// Limit sets the process's soft memory limit to base, floating above it
// when the live data needs more, until stop is called (the limit is then
// lifted, once no other caller of Limit holds one). With several callers,
// the largest base holds. A GOMEMLIMIT in the environment wins: Limit then
// leaves the runtime's limit alone; so does a base of 0.
func Limit(base int64) (stop func()) {
	if base <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	b := &base
	limiter.mu.Lock()
	defer limiter.mu.Unlock()
	if limiter.bases == nil {
		limiter.bases = map[*int64]struct{}{}
		limiter.samples = []metrics.Sample{{Name: metricTotal}, {Name: metricReleased}, {Name: metricFree}, {Name: metricLive}, {Name: metricGOGC}}
	}
	if len(limiter.bases) == 0 {
		arm(limiter.gen)
	}
	limiter.bases[b] = struct{}{}
	tuneLocked()
	var once sync.Once
	return func() {
		once.Do(func() {
			limiter.mu.Lock()
			defer limiter.mu.Unlock()
			delete(limiter.bases, b)
			if len(limiter.bases) == 0 {
				limiter.gen++
				debug.SetMemoryLimit(math.MaxInt64)
				return
			}
			tuneLocked()
		})
	}
}

// gcMark is an object no one holds: its cleanup runs after the collection
// that finds it unreachable, which re-arms the next one.
type gcMark struct {
	_ *gcMark // a pointer, so that it is not put in a tiny block with others
	_ [8]byte
}

func arm(gen int) {
	runtime.AddCleanup(new(gcMark), afterGC, gen)
}

func afterGC(gen int) {
	limiter.mu.Lock()
	defer limiter.mu.Unlock()
	if gen != limiter.gen {
		return // stopped
	}
	tuneLocked()
	arm(gen)
}

// tuneLocked sets the limit from the runtime's metrics. limiter.mu must be
// held.
func tuneLocked() {
	var base int64
	for b := range limiter.bases {
		base = max(base, *b)
	}
	s := limiter.samples
	metrics.Read(s)
	total, released, free, live := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64(), s[3].Value.Uint64()
	limit := base
	if gogc := s[4].Value.Uint64(); gogc > 0 && gogc < math.MaxInt32 { // GOGC=off: the limit alone paces the collector
		held := total - released - free // live and not yet swept objects, fragmentation, stacks, the runtime's own
		need := held + live*gogc/200
		limit = max(base, int64(min(need, math.MaxInt64/2)))
	}
	debug.SetMemoryLimit(limit)
	if limiter.tuned != nil {
		limiter.tuned(limit)
	}
}
