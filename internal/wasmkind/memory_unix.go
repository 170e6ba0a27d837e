//go:build unix

package wasmkind

import (
	"context"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// withMemory makes the instances started with ctx keep their linear memory
// in a mapping of its own of the memory's largest size, reserved but not
// written: growing it is a change of length, where wazero's own memory, a
// Go slice, is copied and cleared on every growth (a Go module grows its
// memory a few pages at a time as its heap grows: about a fifth of a word
// count's time went to copies). The kernel hands out the zeroed pages as
// the module first writes them, and the mapping goes with the instance.
func withMemory(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(allocate))
}

type mapped struct{ buf []byte }

func allocate(_, max uint64) experimental.LinearMemory {
	if max == 0 || max > 4<<30 {
		return &copied{}
	}
	buf, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return &copied{} // no address space for it: the copying kind
	}
	return &mapped{buf: buf[:0]}
}

func (m *mapped) Reallocate(size uint64) []byte {
	if size > uint64(cap(m.buf)) {
		return nil // beyond the memory's maximum: memory.grow answers -1
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *mapped) Free() {
	if m.buf != nil {
		_ = syscall.Munmap(m.buf[:cap(m.buf)])
		m.buf = nil
	}
}
