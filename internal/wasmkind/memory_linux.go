package wasmkind

import "syscall"

// keepMappings: an ended instance's mapping is kept (memory_unix.go).
const keepMappings = true

// giveBack hands a mapping's pages back to the kernel; they read as zeros
// at their next use.
func giveBack(b []byte) error { return syscall.Madvise(b, syscall.MADV_DONTNEED) }
