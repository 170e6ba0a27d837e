// A module that exports the ABI's names and answers garbage: an answer
// pointing outside its memory.
package main

//go:wasmexport mrk_alloc
func alloc(n uint32) uint32 { return 1024 }

//go:wasmexport mrk_info
func info(n uint32) uint64 { return answer(`{"abi":1,"description":"garbage"}`) }

//go:wasmexport mrk_params
func params(n uint32) uint64 { return answer("") }

//go:wasmexport mrk_map
func mapf(n uint32) uint64 { return 0xfff00000<<32 | 1000 }

//go:wasmexport mrk_combine
func combine(n uint32) uint64 { return 0 }

//go:wasmexport mrk_reduce
func reduce(n uint32) uint64 { return 0 }

//go:wasmexport mrk_format
func format(n uint32) uint64 { return 0 }

var out []byte

func answer(s string) uint64 {
	out = append([]byte{0}, s...)
	return uint64(ptr(out))<<32 | uint64(len(out))
}

func main() {}
