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
