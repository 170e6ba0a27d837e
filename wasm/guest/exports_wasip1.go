//go:build wasip1

package guest

import "unsafe"

// The module's exports (docs/wasm-abi.md). The host asks for an input
// buffer with mrk_alloc, writes the input there, and calls one of the
// others with its address and length; each answers with the address and
// length of its answer, packed as address<<32 | length, valid until the
// next call.

var in, out []byte

//go:wasmexport mrk_alloc
func mrkAlloc(n uint32) uint32 {
	if uint32(cap(in)) < n {
		in = make([]byte, n)
	}
	in = in[:n]
	if n == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&in[0])))
}

func run(call func(in, out []byte) ([]byte, error), n uint32) uint64 {
	out = answer(call, in[:n], out)
	return uint64(uintptr(unsafe.Pointer(&out[0])))<<32 | uint64(len(out))
}

//go:wasmexport mrk_info
func mrkInfo(n uint32) uint64 { return run(callInfo, n) }

//go:wasmexport mrk_params
func mrkParams(n uint32) uint64 { return run(callParams, n) }

//go:wasmexport mrk_map
func mrkMap(n uint32) uint64 { return run(callMap, n) }

//go:wasmexport mrk_combine
func mrkCombine(n uint32) uint64 { return run(callCombine, n) }

//go:wasmexport mrk_reduce
func mrkReduce(n uint32) uint64 { return run(callReduce, n) }

//go:wasmexport mrk_format
func mrkFormat(n uint32) uint64 { return run(callFormat, n) }
