package mapx

import (
	"strings"
	"unsafe"
)

// Strings packs strings that outlive the moment they were made (the ids
// that key a map for as long as their job is remembered) into blocks of
// their own. Allocated one by one amid a burst's garbage (the records
// being decoded, the messages being read), each would share a page with
// that garbage, and a page with one of them live cannot be handed back
// once the burst is over. Packed, they fill pages of their own, and a
// block goes once none of its strings is held.
type Strings struct{ buf []byte }

const (
	stringsBlock = 16 << 10 // bytes per block
	maxPacked    = 256      // a longer string gets an allocation of its own
)

// Pack returns a copy of s in the current block. The bytes of a block are
// written once, as a string is appended, and never again: the strings
// made of them stay what they are.
func (p *Strings) Pack(s string) string {
	if len(s) == 0 || len(s) > maxPacked {
		return strings.Clone(s)
	}
	if cap(p.buf)-len(p.buf) < len(s) {
		p.buf = make([]byte, 0, stringsBlock)
	}
	off := len(p.buf)
	p.buf = append(p.buf, s...)
	return unsafe.String(&p.buf[off], len(s))
}
