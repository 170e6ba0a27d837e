//go:build unix

package wasmkind

import (
	"testing"
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
	for _, b := range kept.free {
		if len(b) == max {
			n++
		}
	}
	kept.mu.Unlock()
	if n > keptMappings {
		t.Fatalf("%d mappings kept, want at most %d", n, keptMappings)
	}
}
