package wasmkind

// copied is a linear memory in a Go slice, copied as it grows: wazero's
// own kind, for where a mapping cannot be had.
type copied struct{ buf []byte }

func (c *copied) Reallocate(size uint64) []byte {
	if size <= uint64(cap(c.buf)) {
		c.buf = c.buf[:size]
	} else {
		c.buf = append(c.buf, make([]byte, size-uint64(len(c.buf)))...)
	}
	return c.buf
}

func (c *copied) Free() { c.buf = nil }
