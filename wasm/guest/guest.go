// Package guest writes a map-reduce kind as a WebAssembly module that a
// cluster runs from one upload, without being rebuilt: a Go program built
// with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared that registers one Kind
// in an init function.
//
//	func init() {
//		guest.Register(guest.Kind{
//			Description: "counts words",
//			Map: func(ctx context.Context, rec guest.Record, emit guest.Emit) error {
//				for _, w := range bytes.Fields(rec.Text) {
//					emit(w, []byte("1"))
//				}
//				return nil
//			},
//			Combine: guest.SumCombine,
//			Reduce:  guest.SumReduce,
//		})
//	}
//
//	func main() {}
//
// The shapes are those of mapreduce.Kind. The module has no filesystem,
// network, environment or clock: only its input. How records and pairs
// cross between the cluster and the module is in docs/wasm-abi.md.
package guest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"strconv"
)

// Record is one line of input: the file it comes from, its number (from 1)
// and its text, without the newline. Text is only valid during the call.
type Record struct {
	File string
	Line int64
	Text []byte
}

// Emit hands one intermediate key and value to the cluster, which copies
// both.
type Emit func(key, value []byte)

// Param describes one parameter of a kind, for the dashboard and errors.
type Param struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Required    bool   `json:"required"`
}

// Kind is a map-reduce kind: Map is called with every input line of a map
// task's split; Combine, optional, merges two values of one key on the map
// side (associative and commutative; it may return a, changed); Reduce
// makes a key's output value from all its values (nil keeps the first);
// Format, optional, makes a key's output line ("key value" when nil).
type Kind struct {
	Description string
	Params      []Param
	Map         func(ctx context.Context, rec Record, emit Emit) error
	Combine     func(key, a, b []byte) []byte
	Reduce      func(ctx context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error)
	Format      func(key, value []byte) []byte
}

var (
	kind   *Kind
	params map[string]any
)

// Register makes k the module's kind. Call it once, from an init function.
func Register(k Kind) {
	if kind != nil {
		panic("guest.Register called twice: a module holds one kind")
	}
	kind = &k
	combined.sum = k.Combine != nil && reflect.ValueOf(k.Combine).Pointer() == reflect.ValueOf(SumCombine).Pointer()
}

type paramsKey struct{}

// Params returns the params of the job a map or reduce call belongs to.
func Params(ctx context.Context) map[string]any {
	p, _ := ctx.Value(paramsKey{}).(map[string]any)
	return p
}

// SumCombine adds two decimal integers: the combiner of counting kinds.
// A value that is not an integer counts as 0.
func SumCombine(_, a, b []byte) []byte {
	x, _ := parseInt(a)
	y, _ := parseInt(b)
	return strconv.AppendInt(a[:0], x+y, 10)
}

// SkipRetry, wrapped in the error a Map or Reduce returns (fmt.Errorf("…:
// %w", guest.SkipRetry)), fails the task at once, without the attempts the
// cluster's --max-attempts allows, and with it the job: for what no attempt
// can mend, such as a record the kind cannot read.
var SkipRetry = errors.New("not to be retried")

// SumReduce adds a key's decimal integer values; a value that is not an
// integer fails the reduce.
func SumReduce(_ context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error) {
	var n int64
	for v := range values {
		x, ok := parseInt(v)
		if !ok {
			return nil, fmt.Errorf("value %q of key %q is not a decimal integer", v, key)
		}
		n += x
	}
	return strconv.AppendInt(nil, n, 10), nil
}

// parseInt reads a decimal integer: plain digits without a conversion to
// a string (which allocates, and a word count parses billions of counts),
// anything else through strconv.
func parseInt(b []byte) (n int64, ok bool) {
	if len(b) > 0 && len(b) < 19 {
		for _, c := range b {
			if c < '0' || c > '9' {
				return slowInt(b)
			}
			n = n*10 + int64(c-'0')
		}
		return n, true
	}
	return slowInt(b)
}

func slowInt(b []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// The calls of the ABI, on the bytes the host wrote. Each returns the
// payload of its answer or an error, sent as status 1 and its message.

// ABIVersion is the version of docs/wasm-abi.md this package speaks.
const ABIVersion = 1

type info struct {
	ABI         int     `json:"abi"`
	Description string  `json:"description"`
	Params      []Param `json:"params"`
	Combine     bool    `json:"combine"`
	Format      bool    `json:"format"`
}

func callInfo(_, out []byte) ([]byte, error) {
	if kind == nil || kind.Map == nil {
		return nil, errors.New("the module registered no kind with a Map: call guest.Register from an init function")
	}
	b, err := json.Marshal(info{ABI: ABIVersion, Description: kind.Description, Params: kind.Params, Combine: kind.Combine != nil, Format: kind.Format != nil})
	return append(out, b...), err
}

func callParams(in, out []byte) ([]byte, error) {
	params = nil
	combined.drain(nil)
	if len(in) == 0 {
		return out, nil
	}
	return out, json.Unmarshal(in, &params)
}

func ctx() context.Context {
	return context.WithValue(context.Background(), paramsKey{}, params)
}

var errTruncated = errors.New("truncated input")

// reader reads the length-prefixed fields of an input.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes() []byte {
	if r.err != nil || len(r.b) < 4 {
		r.err = errTruncated
		return nil
	}
	n := binary.LittleEndian.Uint32(r.b)
	if uint64(n) > uint64(len(r.b)-4) {
		r.err = errTruncated
		return nil
	}
	v := r.b[4 : 4+n]
	r.b = r.b[4+n:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errTruncated
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func appendBytes(out, b []byte) []byte {
	out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
	return append(out, b...)
}

// table holds a task's pairs folded by key, when the kind has a
// combiner, across batches: one pair per distinct key crosses back, when
// the table is full or the host asks for what is held (a map call without
// records), not one per emit.
//
// It is a hash table of its own, open addressing over entries that hold
// each key's hash, place in one arena of keys and count, rather than a Go
// map: in WebAssembly every call of the runtime's map functions costs
// several times what it does natively, and a word count is one lookup per
// word.
type table struct {
	slots   []int32 // index+1 into entries; 0 is empty
	entries []entry
	arena   []byte   // the keys, one after another
	vals    [][]byte // each entry's value, unless sum
	size    int      // bytes of keys and values
	// With SumCombine as the combiner the values are counts, added as
	// integers rather than combined as text: what SumCombine would give,
	// without a parse and a format per emit.
	sum bool
}

type entry struct {
	// a and b are the key's first 16 bytes, zero-padded (the key itself
	// when it is that short, as most words are, so that a lookup compares
	// two words and never reads the arena); a longer key's hash is in b.
	a, b       uint64
	hash       uint32
	start, end int32 // the key, in arena
	count      int64 // the value, when sum
}

// tableSize bounds what a table holds before it hands its pairs back: a
// fraction of an instance's memory (256 MiB by default).
const tableSize = 16 << 20

// mix is the finalizer of MurmurHash3: every bit of x moves every bit of
// the result.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	return x ^ x>>33
}

// addCombined folds the pair k, v into the combined table: the emit of a
// kind with a combiner. It is written for the way Go compiles to
// WebAssembly, where every jump that does not fall through to the next
// block goes through the function's dispatch table and every call costs
// more than a lookup: it is a function rather than a method (which an emit
// would reach through a wrapper), calls nothing on its way to a known key,
// and a key of up to 16 bytes (most words) is read with two loads, masked
// to its length, taking no loop and no switch.
func addCombined(k, v []byte) {
	t := &combined
	if len(t.slots) == 0 {
		t.slots = make([]int32, 1024)
	}
	n := len(k)
	var a, b uint64
	if n <= 16 && cap(k) >= 16 {
		// The bytes past the key up to its slice's capacity are the
		// input's, readable; the masks keep only the key's. A shift of 64
		// or more gives 0 in Go, so a mask of a whole word is all ones.
		w := k[:16]
		a = binary.LittleEndian.Uint64(w) & (1<<(8*uint(n)) - 1)
		b = binary.LittleEndian.Uint64(w[8:]) & (1<<(8*uint(max(n-8, 0))) - 1)
	} else {
		a, b = fingerprint(k)
	}
	h := uint32(mix(a ^ b*0x9e3779b97f4a7c15 ^ uint64(n)))
	mask := uint32(len(t.slots) - 1)
	p := h & mask
	for s := t.slots[p]; s != 0; s = t.slots[p] {
		e := &t.entries[s-1]
		if e.a == a && e.b == b && int(e.end-e.start) == n && (n <= 16 || t.sameKey(e, k)) {
			if t.sum && len(v) == 1 && v[0]-'0' <= 9 { // a count of one digit: most emits
				e.count += int64(v[0] - '0')
				return
			}
			t.fold(s-1, k, v)
			return
		}
		p = (p + 1) & mask
	}
	t.slots[p] = int32(len(t.entries)) + 1
	e := entry{a: a, b: b, hash: h, start: int32(len(t.arena))}
	t.arena = append(t.arena, k...)
	e.end = int32(len(t.arena))
	if t.sum {
		e.count, _ = parseInt(v)
	} else {
		t.vals = append(t.vals, append([]byte(nil), v...))
	}
	t.entries = append(t.entries, e)
	t.size += len(k) + len(v) + 48
	if len(t.entries)*2 > len(t.slots) {
		t.grow()
	}
}

// sameKey reports whether e's key, as long as k and of the same
// fingerprint, is k.
func (t *table) sameKey(e *entry, k []byte) bool {
	return string(t.arena[e.start:e.end]) == string(k)
}

// fold adds v to the value of entry i, of key k: what addCombined does but
// for a count of one digit.
func (t *table) fold(i int32, k, v []byte) {
	if t.sum {
		c, _ := parseInt(v) // not an integer: 0, as SumCombine
		t.entries[i].count += c
		return
	}
	old := len(t.vals[i])
	t.vals[i] = kind.Combine(k, t.vals[i], v)
	t.size += len(t.vals[i]) - old
}

// fingerprint returns what addCombined compares a key by, for a key it
// cannot read with two masked loads: a key of up to 16 bytes zero-padded
// (the same words as the loads give), a longer one's first 8 bytes and a
// hash of the whole.
func fingerprint(k []byte) (a, b uint64) {
	if n := len(k); n <= 16 {
		var w [16]byte
		copy(w[:], k)
		return binary.LittleEndian.Uint64(w[:]), binary.LittleEndian.Uint64(w[8:])
	}
	a = binary.LittleEndian.Uint64(k)
	for i := 8; i+8 <= len(k); i += 8 {
		b = mix(b ^ binary.LittleEndian.Uint64(k[i:]))
	}
	return a, mix(b ^ binary.LittleEndian.Uint64(k[len(k)-8:]))
}

// grow doubles the slots and places every key again.
func (t *table) grow() {
	t.slots = make([]int32, 2*len(t.slots))
	mask := uint32(len(t.slots) - 1)
	for i, e := range t.entries {
		p := e.hash & mask
		for t.slots[p] != 0 {
			p = (p + 1) & mask
		}
		t.slots[p] = int32(i) + 1
	}
}

// drain appends every pair held to out and empties the table.
func (t *table) drain(out []byte) []byte {
	var num [20]byte
	for i, e := range t.entries {
		out = appendBytes(out, t.arena[e.start:e.end])
		if t.sum {
			out = appendBytes(out, strconv.AppendInt(num[:0], e.count, 10))
		} else {
			out = appendBytes(out, t.vals[i])
		}
	}
	clear(t.slots)
	clear(t.vals) // let the values go
	t.arena, t.entries, t.vals, t.size = t.arena[:0], t.entries[:0], t.vals[:0], 0
	return out
}

var combined table

func callMap(in, out []byte) ([]byte, error) {
	if kind.Combine != nil && len(in) == 0 {
		return combined.drain(out), nil
	}
	emit := func(k, v []byte) {
		out = appendBytes(appendBytes(out, k), v)
	}
	if kind.Combine != nil {
		emit = addCombined
	}
	c := ctx()
	name := ""
	// Each record: file (a field), line (8 bytes), text (a field), read
	// here with no call (a call of Go code costs in WebAssembly what a
	// short line's word count does).
	for b := in; len(b) > 0; {
		if len(b) < 4 {
			return nil, errTruncated
		}
		n := uint64(binary.LittleEndian.Uint32(b))
		if n+16 > uint64(len(b)) {
			return nil, errTruncated
		}
		file, line := b[4:4+n], binary.LittleEndian.Uint64(b[4+n:])
		b = b[12+n:]
		n = uint64(binary.LittleEndian.Uint32(b))
		if n+4 > uint64(len(b)) {
			return nil, errTruncated
		}
		text := b[4 : 4+n]
		b = b[4+n:]
		if string(file) != name { // the lines of a batch mostly share a file: one string for them
			name = string(file)
		}
		if err := kind.Map(c, Record{File: name, Line: int64(line), Text: text}, emit); err != nil {
			return nil, fmt.Errorf("file %s line %d: %w", file, line, err)
		}
	}
	if kind.Combine != nil && combined.size > tableSize {
		out = combined.drain(out)
	}
	return out, nil
}

func callCombine(in, out []byte) ([]byte, error) {
	r := reader{b: in}
	k, a, b := r.bytes(), r.bytes(), r.bytes()
	if r.err != nil {
		return nil, r.err
	}
	if kind.Combine == nil {
		return nil, errors.New("the kind has no Combine")
	}
	return append(out, kind.Combine(k, a, b)...), nil
}

func callReduce(in, out []byte) ([]byte, error) {
	r := reader{b: in}
	key := r.bytes()
	n := r.u64()
	var values [][]byte
	for range n {
		values = append(values, r.bytes())
	}
	if r.err != nil {
		return nil, r.err
	}
	seq := func(yield func([]byte) bool) {
		for _, v := range values {
			if !yield(v) {
				return
			}
		}
	}
	if kind.Reduce == nil {
		if len(values) == 0 {
			return out, nil
		}
		return append(out, values[0]...), nil
	}
	v, err := kind.Reduce(ctx(), key, seq)
	if err != nil {
		return nil, err
	}
	return append(out, v...), nil
}

func callFormat(in, out []byte) ([]byte, error) {
	r := reader{b: in}
	k, v := r.bytes(), r.bytes()
	if r.err != nil {
		return nil, r.err
	}
	if kind.Format == nil {
		return append(append(append(out, k...), ' '), v...), nil
	}
	return append(out, kind.Format(k, v)...), nil
}

// answer runs call on in and returns the answer: a status byte (0: done,
// 1: failed, 2: failed and not to be retried), then the payload or the
// error's message. A panic of the kind's code is a failure too.
func answer(call func(in, out []byte) ([]byte, error), in, out []byte) (res []byte) {
	defer func() {
		if p := recover(); p != nil {
			res = append(out[:0], 1)
			res = fmt.Appendf(res, "panic: %v", p)
		}
	}()
	out = append(out[:0], 0)
	res, err := call(in, out)
	if err != nil {
		status := byte(1)
		if errors.Is(err, SkipRetry) {
			status = 2
		}
		return fmt.Append(append(out[:0], status), err.Error())
	}
	return res
}
