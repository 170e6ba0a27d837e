package wasmkind

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The host function that instrument makes a module call now and then.
const (
	yieldModule = "mrk"
	yieldName   = "yield"
	// yieldEvery is how many function calls and loop iterations a module
	// runs between two calls of yield.
	yieldEvery = 1 << 16
)

// instrument returns a copy of a module in which every function and every
// loop iteration counts down a global of its own and, every yieldEvery of
// them, calls the host's mrk.yield, which stops the module once its
// context has ended. Its names and debugging sections are left out: the
// added import renumbers the module's functions.
//
// Why: wazero can stop a module when its context ends
// (WithCloseOnContextDone), but it does so by leaving the module's code for
// Go at every loop iteration: 4 to 5 times slower for code such as Go's,
// whose every function is a loop. And code that never leaves for Go cannot
// be preempted by Go's scheduler, so a module looping without a call out
// would hold up every collection of the process, and with it the timer
// that should stop it. A counter per iteration costs next to nothing; a
// call out every 65,536 iterations lets the collector in and the deadline
// act.
//
// The code is walked instruction by instruction (WebAssembly 2.0 with
// SIMD, and tail calls); a module using an instruction it does not know
// (threads, exceptions) is refused with the instruction named.
func instrument(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, errors.New("it does not start with \\0asm")
	}
	type section struct {
		id   byte
		body []byte
	}
	var secs []section
	for r := newReader(wasm[8:]); len(r.b) > 0; {
		id := r.byte()
		n := r.u32()
		body := r.take(int(n))
		if r.err != nil {
			return nil, fmt.Errorf("section %d: %w", id, r.err)
		}
		if id == 0 {
			continue // custom sections: names and debugging information
		}
		secs = append(secs, section{id, body})
	}
	// What the additions are numbered: the yield function follows the
	// imported functions (and so shifts every defined function by one), its
	// type and the counter follow the types and globals there are.
	var types, funcs, globals uint32
	for _, s := range secs {
		r := newReader(s.body)
		switch s.id {
		case 1:
			types = r.u32()
		case 2:
			for range r.u32() {
				r.take(int(r.u32())) // module
				r.take(int(r.u32())) // name
				switch kind := r.byte(); kind {
				case 0: // func: type index
					r.u32()
					funcs++
				case 1: // table: reftype, limits
					r.byte()
					r.limits()
				case 2: // memory: limits
					r.limits()
				case 3: // global: valtype, mutability
					r.byte()
					r.byte()
					globals++
				case 4: // tag
					r.byte()
					r.u32()
				default:
					r.err = fmt.Errorf("an import of kind %d", kind)
				}
			}
		case 6:
			globals += r.u32()
		}
		if r.err != nil {
			return nil, fmt.Errorf("section %d: %w", s.id, r.err)
		}
	}
	yield, counter := funcs, globals
	remap := func(f uint32) uint32 {
		if f >= yield {
			return f + 1
		}
		return f
	}
	// counter -= 1; if counter == 0 { counter = yieldEvery; yield() }
	check := binary.AppendUvarint([]byte{0x23}, uint64(counter))
	check = append(check, 0x41, 0x01, 0x6b, 0x24)
	check = binary.AppendUvarint(check, uint64(counter))
	check = append(check, 0x23)
	check = binary.AppendUvarint(check, uint64(counter))
	check = append(check, 0x45, 0x04, 0x40, 0x41)
	check = appendS32(check, yieldEvery)
	check = append(check, 0x24)
	check = binary.AppendUvarint(check, uint64(counter))
	check = append(check, 0x10)
	check = binary.AppendUvarint(check, uint64(yield))
	check = append(check, 0x0b)

	have := map[byte]bool{}
	for i := range secs {
		s := &secs[i]
		have[s.id] = true
		var err error
		switch s.id {
		case 1: // types: () -> ()
			s.body = appendVec(s.body, func(b []byte) []byte { return append(b, 0x60, 0x00, 0x00) })
		case 2: // imports: mrk.yield
			s.body = appendVec(s.body, func(b []byte) []byte { return appendImport(b, types) })
		case 6: // globals: the counter
			if s.body, err = rewriteGlobals(s.body, remap); err == nil {
				s.body = appendVec(s.body, func(b []byte) []byte { return append(b, global()...) })
			}
		case 7:
			s.body, err = rewriteExports(s.body, remap)
		case 8: // start
			r := newReader(s.body)
			s.body = binary.AppendUvarint(nil, uint64(remap(r.u32())))
			err = r.err
		case 9:
			s.body, err = rewriteElements(s.body, remap)
		case 10:
			s.body, err = rewriteCode(s.body, check, remap)
		case 11:
			s.body = mergeData(s.body)
		}
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", s.id, err)
		}
	}
	// Sections that are missing go where the order of sections puts them.
	adds := []section{
		{1, []byte{0x01, 0x60, 0x00, 0x00}},
		{2, appendImport([]byte{0x01}, types)},
		{6, append([]byte{0x01}, global()...)},
	}
	for _, add := range adds {
		if have[add.id] {
			continue
		}
		at := len(secs)
		for i, s := range secs {
			if rank(s.id) > rank(add.id) {
				at = i
				break
			}
		}
		secs = slices.Insert(secs, at, add)
	}
	res := append([]byte(nil), wasm[:8]...)
	for _, s := range secs {
		res = append(res, s.id)
		res = binary.AppendUvarint(res, uint64(len(s.body)))
		res = append(res, s.body...)
	}
	return res, nil
}

// mergeGap is the most zero bytes mergeData writes to join two segments.
const mergeGap = 64

// mergeData returns a data section whose active segments are joined where
// they lie at most mergeGap bytes apart, the gaps written as zeros; or
// the section as it is when that could change what a module's memory
// holds at its start (segments that overlap, whose order then matters;
// passive ones, or another memory's, or an offset that is not a
// constant, which bulk-memory code may name by their index).
//
// Why: Go's linker leaves out every run of zeros in a module's data, so a
// Go module has tens of thousands of segments (the example word count:
// 38,473 for 954 KB), and every instance, one per task, copies and
// evaluates them one by one: 1.5 ms per task. Joined they are a few
// segments (11; 1.6 MB), copied at once.
func mergeData(body []byte) []byte {
	type segment struct {
		off  uint32
		data []byte
	}
	r := newReader(body)
	n := r.u32()
	if r.err != nil || n < 2 {
		return body
	}
	segs := make([]segment, 0, min(n, 1<<20))
	for range n {
		if r.byte() != 0 || r.byte() != 0x41 { // active in memory 0; i32.const
			return body
		}
		off, ok := r.s32()
		if !ok || r.byte() != 0x0b {
			return body
		}
		data := r.take(int(r.u32()))
		if r.err != nil {
			return body
		}
		segs = append(segs, segment{uint32(off), data})
	}
	if len(r.b) != 0 {
		return body
	}
	slices.SortStableFunc(segs, func(a, b segment) int { return cmp.Compare(a.off, b.off) })
	end := func(s segment) uint64 { return uint64(s.off) + uint64(len(s.data)) }
	for i := 1; i < len(segs); i++ {
		if end(segs[i-1]) > uint64(segs[i].off) {
			return body
		}
	}
	var joined []segment
	for _, s := range segs {
		if k := len(joined) - 1; k >= 0 && uint64(s.off)-end(joined[k]) <= mergeGap {
			joined[k].data = append(joined[k].data, make([]byte, uint64(s.off)-end(joined[k]))...)
			joined[k].data = append(joined[k].data, s.data...)
			continue
		}
		joined = append(joined, segment{s.off, slices.Clone(s.data)})
	}
	out := binary.AppendUvarint(nil, uint64(len(joined)))
	for _, s := range joined {
		out = append(appendS32(append(out, 0x00, 0x41), int32(s.off)), 0x0b)
		out = binary.AppendUvarint(out, uint64(len(s.data)))
		out = append(out, s.data...)
	}
	return out
}

// global is the counter's definition: a mutable i32 of yieldEvery.
func global() []byte {
	return append(appendS32([]byte{0x7f, 0x01, 0x41}, yieldEvery), 0x0b)
}

func appendImport(b []byte, typ uint32) []byte {
	b = append(b, byte(len(yieldModule)))
	b = append(b, yieldModule...)
	b = append(b, byte(len(yieldName)))
	b = append(b, yieldName...)
	return binary.AppendUvarint(append(b, 0x00), uint64(typ))
}

// rank orders the known sections as the binary format requires.
func rank(id byte) int {
	return slices.Index([]byte{1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11}, id)
}

// appendVec adds one entry, made by add, to a vector's encoding.
func appendVec(vec []byte, add func([]byte) []byte) []byte {
	r := newReader(vec)
	n := r.u32()
	out := binary.AppendUvarint(nil, uint64(n+1))
	return add(append(out, r.b...))
}

func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func rewriteGlobals(sec []byte, remap func(uint32) uint32) ([]byte, error) {
	r := newReader(sec)
	n := r.u32()
	out := binary.AppendUvarint(nil, uint64(n))
	for range n {
		at := len(r.b)
		r.byte() // type
		r.byte() // mutability
		out = append(out, r.from(at)...)
		var err error
		if out, err = rewriteExpr(r, out, nil, remap, true); err != nil {
			return nil, err
		}
	}
	return out, r.err
}

func rewriteExports(sec []byte, remap func(uint32) uint32) ([]byte, error) {
	r := newReader(sec)
	n := r.u32()
	out := binary.AppendUvarint(nil, uint64(n))
	for range n {
		at := len(r.b)
		r.take(int(r.u32()))
		kind := r.byte()
		out = append(out, r.from(at)...)
		idx := r.u32()
		if kind == 0 {
			idx = remap(idx)
		}
		out = binary.AppendUvarint(out, uint64(idx))
	}
	return out, r.err
}

func rewriteElements(sec []byte, remap func(uint32) uint32) ([]byte, error) {
	r := newReader(sec)
	n := r.u32()
	out := binary.AppendUvarint(nil, uint64(n))
	var err error
	for range n {
		flags := r.u32()
		out = binary.AppendUvarint(out, uint64(flags))
		if flags > 7 {
			return nil, fmt.Errorf("an element segment of kind %d", flags)
		}
		if flags&3 == 2 { // a table index
			out = binary.AppendUvarint(out, uint64(r.u32()))
		}
		if flags&1 == 0 { // an offset
			if out, err = rewriteExpr(r, out, nil, remap, true); err != nil {
				return nil, err
			}
		}
		if flags&3 != 0 { // an element kind or reference type
			out = append(out, r.byte())
		}
		count := r.u32()
		out = binary.AppendUvarint(out, uint64(count))
		for range count {
			if flags&4 == 0 { // function indexes
				out = binary.AppendUvarint(out, uint64(remap(r.u32())))
			} else if out, err = rewriteExpr(r, out, nil, remap, true); err != nil {
				return nil, err
			}
		}
	}
	if r.err != nil || len(r.b) > 0 {
		return nil, errors.New("the element section does not end where its segments do")
	}
	return out, nil
}

// rewriteCode inserts check after the block type of every loop and, in
// every function body, before the first instruction that calls or
// branches unless a loop comes first, and renumbers calls.
//
// What is before that instruction runs once per call, straight: a
// function's entry need not be counted when a loop's check is sure to run
// before the function can call or loop. Every function of a Go module
// opens with the loop its code jumps back to, so it is counted once per
// call instead of twice.
func rewriteCode(sec, check []byte, remap func(uint32) uint32) ([]byte, error) {
	r := newReader(sec)
	n := r.u32()
	out := binary.AppendUvarint(nil, uint64(n))
	var body []byte
	for i := range n {
		size := r.u32()
		fr := newReader(r.take(int(size)))
		if r.err != nil {
			return nil, fmt.Errorf("function %d: %w", i, r.err)
		}
		start := len(fr.b)
		for range fr.u32() { // locals: count, type
			fr.u32()
			fr.byte()
		}
		if fr.err != nil {
			return nil, fmt.Errorf("function %d: %w", i, fr.err)
		}
		body = append(body[:0], fr.from(start)...)
		var err error
		if body, err = rewriteExpr(fr, body, check, remap, false); err != nil {
			return nil, fmt.Errorf("function %d: %w", i, err)
		}
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	if r.err != nil || len(r.b) > 0 {
		return nil, errors.New("the code section does not end where its functions do")
	}
	return out, nil
}

// rewriteExpr copies the instructions of r to out, check after each
// loop's block type and function indexes renumbered; a constant
// expression (one) ends at its first end. A function's body (check not
// nil) gets check before its first call or branch too, unless a loop
// comes first.
func rewriteExpr(r *reader, out, check []byte, remap func(uint32) uint32, one bool) ([]byte, error) {
	entry := check != nil // the function's entry is not counted yet
	for len(r.b) > 0 {
		at := len(r.b)
		op := r.byte()
		if entry && (op >= 0x03 && op <= 0x05 || op >= 0x0c && op <= 0x15) { // loop, if, else, br*, return, call*
			if op != 0x03 {
				out = append(out, check...)
			}
			entry = false
		}
		switch {
		case op == 0x03: // loop
			r.s64()
			out = append(append(out, r.from(at)...), check...)
			continue
		case op == 0x10 || op == 0x12 || op == 0xd2: // call, return_call, ref.func
			out = binary.AppendUvarint(append(out, op), uint64(remap(r.u32())))
			continue
		case op == 0x0b && one:
			return append(out, op), r.err
		case op == 0x02 || op == 0x04: // block, if
			r.s64()
		case op == 0x0c || op == 0x0d || // br, br_if
			(op >= 0x20 && op <= 0x26) || // local.*, global.*, table.get/set
			op == 0x3f || op == 0x40: // memory.size, memory.grow
			r.u32()
		case op == 0x0e: // br_table
			for range r.u32() {
				r.u32()
			}
			r.u32()
		case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
			r.u32()
			r.u32()
		case op == 0x1c: // select t*
			for range r.u32() {
				r.byte()
			}
		case op >= 0x28 && op <= 0x3e: // loads and stores
			r.memarg()
		case op == 0x41 || op == 0x42: // i32.const, i64.const
			r.s64()
		case op == 0x43:
			r.take(4)
		case op == 0x44:
			r.take(8)
		case op == 0xd0: // ref.null
			r.s64()
		case op == 0xfc:
			switch sub := r.u32(); {
			case sub <= 7: // saturating truncations
			case sub == 8 || sub == 10 || sub == 12 || sub == 14: // memory.init, memory.copy, table.init, table.copy
				r.u32()
				r.u32()
			case sub <= 17:
				r.u32()
			default:
				return nil, fmt.Errorf("instruction 0xfc %d is not one the sandbox runs", sub)
			}
		case op == 0xfd:
			switch sub := r.u32(); {
			case sub <= 11 || sub == 92 || sub == 93: // v128 loads and stores
				r.memarg()
			case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
				r.take(16)
			case sub >= 21 && sub <= 34: // lane extract and replace
				r.byte()
			case sub >= 84 && sub <= 91: // lane loads and stores
				r.memarg()
				r.byte()
			}
		case op <= 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b ||
			(op >= 0x45 && op <= 0xc4) || op == 0xd1:
			// no immediates
		default:
			return nil, fmt.Errorf("instruction 0x%02x is not one the sandbox runs (threads and exceptions are not supported)", op)
		}
		if r.err != nil {
			return nil, fmt.Errorf("instruction 0x%02x: %w", op, r.err)
		}
		out = append(out, r.from(at)...)
	}
	if one {
		return nil, errors.New("a constant expression without its end")
	}
	return out, r.err
}

// reader reads the encodings of a module's binary format.
type reader struct {
	b    []byte
	orig []byte // b as it was at first, which from slices
	err  error
}

func newReader(b []byte) *reader { return &reader{b: b, orig: b} }

var errTruncated = errors.New("truncated")

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errTruncated
	}
	r.b = nil
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.fail()
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u32() uint32 {
	v, n := binary.Uvarint(r.b)
	if r.err != nil || n <= 0 || n > 5 || v > 1<<32-1 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return uint32(v)
}

// s32 reads a signed LEB128 number of 32 bits.
func (r *reader) s32() (int32, bool) {
	var v int64
	for i := 0; i < 5; i++ {
		c := r.byte()
		if r.err != nil {
			return 0, false
		}
		v |= int64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v |= -1 << (7 * (i + 1))
			}
			if v < -1<<31 || v > 1<<31-1 {
				return 0, false
			}
			return int32(v), true
		}
	}
	return 0, false
}

// s64 skips a signed LEB128 number (block types, constants).
func (r *reader) s64() {
	for i := 0; ; i++ {
		if i == 10 {
			r.fail()
			return
		}
		if r.byte()&0x80 == 0 || r.err != nil {
			return
		}
	}
}

func (r *reader) limits() {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

func (r *reader) memarg() {
	if align := r.u32(); align&0x40 != 0 { // multiple memories: an index follows
		r.u32()
	}
	r.u32()
}

// from returns what r read since it had at bytes left, when r.b was a
// suffix of the bytes it started with.
func (r *reader) from(at int) []byte {
	return r.orig[len(r.orig)-at : len(r.orig)-len(r.b)]
}
