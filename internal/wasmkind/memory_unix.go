//go:build unix

package wasmkind

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero/experimental"
)

// withMemory makes the instances started with ctx keep their linear memory
// in a mapping of its own of the memory's largest size, reserved but not
// written: growing it is a change of length, where wazero's own memory, a
// Go slice, is copied and cleared on every growth (a Go module grows its
// memory a few pages at a time as its heap grows: about a fifth of a word
// count's time went to copies). The kernel hands out the zeroed pages as
// the module first writes them, and the mapping goes with the instance
// (or to the next instance: kept, below).
func withMemory(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(allocate))
}

type mapped struct{ buf []byte }

// kept holds the mappings of ended instances for the next ones (Linux
// only, where MADV_DONTNEED gives back pages that read as zeros). A page
// the kernel hands out at its first write costs a fault, about 8 µs on a
// virtual machine, and an instance of a Go module writes about 700 of
// them as its data segments are copied in: a task of an uploaded kind
// spent 9.5 ms starting its instance, most of it in those faults, which
// a job of a thousand small tasks paid a thousand times. A kept mapping
// has its first keptResident bytes cleared (so its pages stay, and the
// next instance's data goes into them) and the rest of what its instance
// used given back to the kernel: at most keptMappings × keptResident of
// memory held for it, the rest of the mapping only reserved, and only
// while uploaded kinds run: a mapping kept keptIdle without being taken
// is unmapped (a process that ran one job of an uploaded kind kept 16 MiB
// until it exited).
var kept struct {
	mu    sync.Mutex
	free  []keptMapping
	sweep *time.Timer // armed while free is not empty
}

type keptMapping struct {
	buf []byte // the whole mapping, its pages zero
	at  time.Time
}

const (
	keptMappings = 4
	keptResident = 4 << 20
)

// keptIdle is how long a kept mapping waits for an instance (a variable
// for tests).
var keptIdle = 30 * time.Second

func allocate(_, max uint64) experimental.LinearMemory {
	if max == 0 || max > 4<<30 {
		return &copied{}
	}
	if buf := reuse(max); buf != nil {
		return &mapped{buf: buf[:0]}
	}
	buf, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		return &copied{} // no address space for it: the copying kind
	}
	return &mapped{buf: buf[:0]}
}

// reuse returns a kept mapping of max bytes, or nil.
func reuse(max uint64) []byte {
	kept.mu.Lock()
	defer kept.mu.Unlock()
	for i := len(kept.free) - 1; i >= 0; i-- {
		if buf := kept.free[i].buf; uint64(len(buf)) == max {
			kept.free = append(kept.free[:i], kept.free[i+1:]...)
			return buf
		}
	}
	return nil
}

// sweepKept unmaps the mappings kept keptIdle without being taken, and
// arms itself again for the others.
func sweepKept() {
	kept.mu.Lock()
	defer kept.mu.Unlock()
	if kept.sweep != nil {
		kept.sweep.Stop() // a sweep called before its timer fired
	}
	now := time.Now()
	left := kept.free[:0]
	for _, k := range kept.free {
		if now.Sub(k.at) >= keptIdle {
			_ = syscall.Munmap(k.buf)
		} else {
			left = append(left, k)
		}
	}
	clear(kept.free[len(left):])
	kept.free = left
	kept.sweep = nil
	if len(left) > 0 {
		kept.sweep = time.AfterFunc(keptIdle-now.Sub(left[0].at), sweepKept)
	}
}

func (m *mapped) Reallocate(size uint64) []byte {
	if size > uint64(cap(m.buf)) {
		return nil // beyond the memory's maximum: memory.grow answers -1
	}
	m.buf = m.buf[:size]
	return m.buf
}

func (m *mapped) Free() {
	if m.buf == nil {
		return
	}
	whole, used := m.buf[:cap(m.buf)], len(m.buf)
	m.buf = nil
	if !keep(whole, used) {
		_ = syscall.Munmap(whole)
	}
}

// keep clears the first used bytes of a mapping and keeps it for the next
// instance, if there is room; it reports whether it did.
func keep(whole []byte, used int) bool {
	if !keepMappings {
		return false
	}
	kept.mu.Lock()
	room := len(kept.free) < keptMappings
	kept.mu.Unlock()
	if !room {
		return false
	}
	if used > keptResident {
		if giveBack(whole[keptResident:used]) != nil {
			return false
		}
		used = keptResident
	}
	clear(whole[:used])
	kept.mu.Lock()
	defer kept.mu.Unlock()
	if len(kept.free) >= keptMappings {
		return false // taken meanwhile
	}
	kept.free = append(kept.free, keptMapping{buf: whole, at: time.Now()})
	if kept.sweep == nil {
		kept.sweep = time.AfterFunc(keptIdle, sweepKept)
	}
	return true
}
