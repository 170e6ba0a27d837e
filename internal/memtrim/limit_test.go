package memtrim

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// limitNow reads the runtime's soft memory limit.
func limitNow() int64 { return debug.SetMemoryLimit(-1) }

// collect runs collections until the floating limit has been adjusted
// after one of them and returns the limit it set.
func collect(t *testing.T, tuned <-chan int64) int64 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		runtime.GC()
		select {
		case l := <-tuned:
			return l
		case <-deadline:
			t.Fatal("the limit was not adjusted after 10 s of collections")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// The limit holds at its base while the live data is small, rises above it
// with the live data (so that the collector does not run without pause)
// and comes back down once the data is gone; stopping lifts it.
func TestLimitFloatsWithTheLiveData(t *testing.T) {
	if limitNow() != math.MaxInt64 {
		t.Fatalf("a limit of %d is set before the test", limitNow())
	}
	tuned := make(chan int64, 100)
	limiter.mu.Lock()
	limiter.tuned = func(l int64) {
		select {
		case tuned <- l:
		default:
		}
	}
	limiter.mu.Unlock()
	defer func() {
		limiter.mu.Lock()
		limiter.tuned = nil
		limiter.mu.Unlock()
	}()

	const base = 96 << 20
	stop := Limit(base)
	defer stop()
	if l := limitNow(); l != base {
		t.Fatalf("limit %d MiB with little live data, want the base, %d MiB", l>>20, base>>20)
	}

	for range 160 {
		sink = append(sink, make([]byte, 1<<20))
	}
	for len(tuned) > 0 {
		<-tuned
	}
	// An adjustment after a collection that ran before the data was made
	// (another test's) may still be on its way: collect until one sees it.
	deadline := time.Now().Add(10 * time.Second)
	for l := collect(t, tuned); l < 240<<20; l = collect(t, tuned) {
		if time.Now().After(deadline) {
			t.Fatalf("limit %d MiB with 160 MiB live: less than half the growth GOGC=100 allows, the collector would run almost without pause", l>>20)
		}
	}

	sink = nil
	for {
		if l := collect(t, tuned); l == base {
			break
		} else if l < base {
			t.Fatalf("limit %d MiB below the base", l>>20)
		}
	}

	stop()
	stop() // twice is harmless
	if l := limitNow(); l != math.MaxInt64 {
		t.Fatalf("limit %d MiB after stop, want none", l>>20)
	}
	for len(tuned) > 0 {
		<-tuned
	}
	runtime.GC()
	runtime.GC()
	if l := limitNow(); l != math.MaxInt64 {
		t.Fatalf("a collection after stop set the limit again: %d MiB", l>>20)
	}
}

// Several holders: the largest base holds, and the limit stays until the
// last stops.
func TestLimitOfSeveralHolders(t *testing.T) {
	a := Limit(64 << 20)
	b := Limit(80 << 20)
	if l := limitNow(); l < 80<<20 {
		t.Fatalf("limit %d MiB, want at least the larger base, 80 MiB", l>>20)
	}
	b()
	if l := limitNow(); l == math.MaxInt64 {
		t.Fatal("the limit was lifted while a holder remains")
	}
	a()
	if l := limitNow(); l != math.MaxInt64 {
		t.Fatalf("limit %d MiB after the last holder stopped", l>>20)
	}
}
