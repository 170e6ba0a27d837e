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
	x, _ := strconv.ParseInt(string(a), 10, 64)
	y, _ := strconv.ParseInt(string(b), 10, 64)
	return strconv.AppendInt(a[:0], x+y, 10)
}

// SumReduce adds a key's decimal integer values; a value that is not an
// integer fails the reduce.
func SumReduce(_ context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error) {
	var n int64
	for v := range values {
		x, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("value %q of key %q is not a decimal integer", v, key)
		}
		n += x
	}
	return strconv.AppendInt(nil, n, 10), nil
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
	if len(in) == 0 {
		return out, nil
	}
	return out, json.Unmarshal(in, &params)
}

func ctx() context.Context {
	return context.WithValue(context.Background(), paramsKey{}, params)
}

// reader reads the length-prefixed fields of an input.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes() []byte {
	if r.err != nil || len(r.b) < 4 {
		r.err = errors.New("truncated input")
		return nil
	}
	n := binary.LittleEndian.Uint32(r.b)
	if uint64(n) > uint64(len(r.b)-4) {
		r.err = errors.New("truncated input")
		return nil
	}
	v := r.b[4 : 4+n]
	r.b = r.b[4+n:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errors.New("truncated input")
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

// combined holds a batch's pairs folded by key, when the kind has a
// combiner: one pair per distinct key crosses back, not one per emit.
var combined = map[string][]byte{}

func callMap(in, out []byte) ([]byte, error) {
	r := reader{b: in}
	emit := func(k, v []byte) {
		out = appendBytes(appendBytes(out, k), v)
	}
	if kind.Combine != nil {
		clear(combined)
		emit = func(k, v []byte) {
			if cur, ok := combined[string(k)]; ok {
				combined[string(k)] = kind.Combine(k, cur, v)
			} else {
				combined[string(k)] = append([]byte(nil), v...)
			}
		}
	}
	c := ctx()
	for len(r.b) > 0 {
		file := r.bytes()
		line := r.u64()
		text := r.bytes()
		if r.err != nil {
			return nil, r.err
		}
		if err := kind.Map(c, Record{File: string(file), Line: int64(line), Text: text}, emit); err != nil {
			return nil, fmt.Errorf("file %s line %d: %w", file, line, err)
		}
	}
	if kind.Combine != nil {
		for k, v := range combined {
			out = appendBytes(appendBytes(out, []byte(k)), v)
		}
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
// 1: failed), then the payload or the error's message. A panic of the
// kind's code is a failure too.
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
		return fmt.Append(append(out[:0], 1), err.Error())
	}
	return res
}
