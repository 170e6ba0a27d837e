//go:build !unix

package wasmkind

import "context"

// withMemory leaves instances with wazero's own memory, a Go slice.
func withMemory(ctx context.Context) context.Context { return ctx }
