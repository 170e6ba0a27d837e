//go:build unix

package wasmkind

import (
	"testing"
	"time"
	"unsafe"
)

// A module's memory grows in place, keeps what it holds, and refuses to
// grow past its maximum.
func TestMappedMemoryGrowsInPlace(t *testing.T) {
	m := allocate(0, 1<<20)
	if _, ok := m.(*mapped); !ok {
		t.Fatalf("allocate gave a %T, want a mapping", m)
	}
	defer m.Free()
	a := m.Reallocate(64 << 10)
	if len(a) != 64<<10 {
		t.Fatalf("length %d", len(a))
	}
	a[100] = 7
	b := m.Reallocate(512 << 10)
	if len(b) != 512<<10 || unsafe.SliceData(a) != unsafe.SliceData(b) || b[100] != 7 {
		t.Fatalf("grown to %d bytes, moved %v, byte %d", len(b), unsafe.SliceData(a) != unsafe.SliceData(b), b[100])
	}
	if b[len(b)-1] != 0 {
		t.Fatal("new memory is not zeroed")
	}
	if c := m.Reallocate(2 << 20); c != nil {
		t.Fatalf("grown past its maximum to %d bytes", len(c))
	}
}

// An ended instance's mapping is kept for the next instance of the same
// largest size, with every byte its instance wrote zero again (those past
// keptResident given back to the kernel), and at most keptMappings are.
func TestKeptMappingsAreZero(t *testing.T) {
	if !keepMappings {
		t.Skip("mappings are kept on Linux only")
	}
	const max = 24<<20 + 4096 // a size no other test's instances have
	m := allocate(0, max)
	first := m.Reallocate(3 * keptResident / 2)
	for i := range first {
		first[i] = byte(i) | 1
	}
	at := unsafe.SliceData(first)
	m.Free()

	again := allocate(0, max)
	defer again.Free()
	buf := again.Reallocate(2 * keptResident)
	if unsafe.SliceData(buf) != at {
		t.Fatal("the ended instance's mapping was not kept for the next one")
	}
	for i, c := range buf {
		if c != 0 {
			t.Fatalf("byte %d of a kept mapping is %d, want 0", i, c)
		}
	}

	var ms []interface{ Free() }
	for range keptMappings + 2 {
		m := allocate(0, max)
		m.Reallocate(4096)[0] = 1
		ms = append(ms, m)
	}
	for _, m := range ms {
		m.Free()
	}
	kept.mu.Lock()
	n := 0
	for _, k := range kept.free {
		if len(k.buf) == max {
			n++
		}
	}
	kept.mu.Unlock()
	if n > keptMappings {
		t.Fatalf("%d mappings kept, want at most %d", n, keptMappings)
	}
}

// A kept mapping no instance takes is unmapped after keptIdle: a process
// that ran one job of an uploaded kind kept 16 MiB until it exited.
func TestKeptMappingsGoWhenIdle(t *testing.T) {
	if !keepMappings {
		t.Skip("mappings are kept on Linux only")
	}
	kept.mu.Lock()
	was := keptIdle
	keptIdle = 20 * time.Millisecond
	kept.mu.Unlock()
	defer func() {
		kept.mu.Lock()
		keptIdle = was
		kept.mu.Unlock()
	}()
	const max = 24<<20 + 8192 // a size no other test's instances have
	holds := func() bool {
		kept.mu.Lock()
		defer kept.mu.Unlock()
		for _, k := range kept.free {
			if len(k.buf) == max {
				return true
			}
		}
		return false
	}
	wait := func(what string, done func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s after 10 s, with mappings kept at most %s", what, keptIdle)
			}
		}
	}
	sweepKept() // a timer armed by an earlier test waits the former keptIdle
	wait("the mappings other tests left are still kept", func() bool {
		kept.mu.Lock()
		defer kept.mu.Unlock()
		return len(kept.free) == 0
	})
	m := allocate(0, max)
	m.Reallocate(4096)[0] = 1
	m.Free()
	if !holds() {
		t.Fatal("the ended instance's mapping was not kept")
	}
	wait("a mapping no instance took is still kept", func() bool { return !holds() })
	again := allocate(0, max)
	defer again.Free()
	if buf := again.Reallocate(4096); buf[0] != 0 {
		t.Fatal("a fresh mapping is not zero")
	}
}
