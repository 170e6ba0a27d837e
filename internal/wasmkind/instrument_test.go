package wasmkind

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// module assembles a module from its sections (id, then body).
func module(sections ...[]byte) []byte {
	out := []byte("\x00asm\x01\x00\x00\x00")
	for _, s := range sections {
		out = append(out, s[0])
		out = binary.AppendUvarint(out, uint64(len(s)-1))
		out = append(out, s[1:]...)
	}
	return out
}

// vec is a section (or vector) of n entries.
func vec(id byte, entries ...[]byte) []byte {
	out := binary.AppendUvarint([]byte{id}, uint64(len(entries)))
	for _, e := range entries {
		out = append(out, e...)
	}
	return out
}

// body is a function body without locals.
func body(code ...byte) []byte {
	b := append([]byte{0}, code...)
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

func str(s string) []byte { return append([]byte{byte(len(s))}, s...) }

func export(name string, kind, idx byte) []byte { return append(str(name), kind, idx) }

// testModule exercises what instrument renumbers: an imported function
// (env.seven, 7) before the defined ones, calls, a start function setting a
// global, exports, a table filled by an element segment of indexes and one
// of expressions (ref.func), a global initialized by ref.func, a loop
// that never ends, and a recursion without a loop that would take 2^n
// calls.
//
//	func 0 (import) seven
//	func 1 a: call 2 + call 0       = 42
//	func 2 b: 35
//	func 3 spin: loop br 0 end
//	func 4 d: call_indirect table[i] (i the parameter)
//	func 5 start: global 0 = 1
//	func 6 e: global 0
//	func 7 rec(n): n == 0 ? 0 : rec(n-1) + rec(n-1)
var testModule = module(
	vec(1, []byte{0x60, 0, 1, 0x7f}, []byte{0x60, 0, 0}, []byte{0x60, 1, 0x7f, 1, 0x7f}),
	vec(2, append(append(str("env"), str("seven")...), 0, 0)),
	vec(3, []byte{0}, []byte{0}, []byte{1}, []byte{2}, []byte{1}, []byte{0}, []byte{2}),
	vec(4, []byte{0x70, 0, 2}),
	vec(6,
		[]byte{0x7f, 1, 0x41, 0, 0x0b},  // global 0: mutable i32 0
		[]byte{0x70, 0, 0xd2, 2, 0x0b}), // global 1: funcref b
	vec(7, export("a", 0, 1), export("spin", 0, 3), export("d", 0, 4), export("e", 0, 6), export("rec", 0, 7)),
	[]byte{8, 5}, // start: func 5
	vec(9,
		[]byte{0, 0x41, 0, 0x0b, 1, 2},              // table[0] = b, by index
		[]byte{4, 0x41, 1, 0x0b, 1, 0xd2, 1, 0x0b}), // table[1] = a, by ref.func
	vec(10,
		body(0x10, 2, 0x10, 0, 0x6a, 0x0b),
		body(0x41, 35, 0x0b),
		body(0x03, 0x40, 0x0c, 0, 0x0b, 0x0b),
		body(0x20, 0, 0x11, 0, 0, 0x0b),
		body(0x41, 1, 0x24, 0, 0x0b),
		body(0x23, 0, 0x0b),
		body(0x20, 0, 0x45, 0x04, 0x7f, 0x41, 0, 0x05,
			0x20, 0, 0x41, 1, 0x6b, 0x10, 7, 0x20, 0, 0x41, 1, 0x6b, 0x10, 7, 0x6a, 0x0b, 0x0b)),
)

func TestInstrumentKeepsWhatTheModuleDoes(t *testing.T) {
	ctx := context.Background()
	// The module is valid before it is instrumented.
	plain := wazero.NewRuntime(ctx)
	defer plain.Close(ctx)
	if _, err := plain.CompileModule(ctx, testModule); err != nil {
		t.Fatalf("the test module itself: %v", err)
	}

	code, err := instrument(testModule)
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(false))
	defer rt.Close(ctx)
	var yields atomic.Int64
	_, err = rt.NewHostModuleBuilder(yieldModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, m api.Module, s []uint64) {
			yields.Add(1)
			yield(ctx, m, s)
		}), nil, nil).Export(yieldName).Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rt.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithFunc(func() int32 { return 7 }).Export("seven").Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := rt.InstantiateWithConfig(ctx, code, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("the instrumented module: %v", err)
	}
	call := func(name string, args ...uint64) uint64 {
		t.Helper()
		res, err := mod.ExportedFunction(name).Call(ctx, args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res[0]
	}
	if got := call("a"); got != 42 {
		t.Errorf("a = %d, want 42", got)
	}
	if got := call("e"); got != 1 {
		t.Errorf("the start function did not run: global = %d", got)
	}
	if got := call("d", 0); got != 35 {
		t.Errorf("table[0] = %d, want b's 35", got)
	}
	if got := call("d", 1); got != 42 {
		t.Errorf("table[1] = %d, want a's 42", got)
	}
	if got := call("rec", 10); got != 0 {
		t.Errorf("rec(10) = %d, want 0", got)
	}

	// A recursion without a loop is counted by its calls: 2^60 of them
	// are stopped at the deadline too.
	rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer rcancel()
	recDone := make(chan error, 1)
	go func() {
		_, err := mod.ExportedFunction("rec").Call(rctx, 60)
		recDone <- err
	}()
	select {
	case err := <-recDone:
		if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
			t.Fatalf("rec(60): %v, want it stopped at its deadline", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("rec(60) was not stopped a minute after its deadline: its calls are not counted")
	}

	// The loop is stopped at its deadline, and the collector, which needs
	// every goroutine to stop, runs meanwhile.
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := mod.ExportedFunction("spin").Call(tctx)
		done <- err
	}()
	for yields.Load() < 3 { // the loop runs
		runtime.Gosched()
	}
	gcs := make(chan struct{})
	go func() {
		runtime.GC()
		runtime.GC()
		close(gcs)
	}()
	select {
	case <-gcs:
	case err := <-done:
		t.Fatalf("the loop ended before the collections did: %v", err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("spin: %v, want it stopped at its deadline", err)
	}
}

// What instrument cannot walk it refuses, naming it.
func TestInstrumentRefusesWhatItDoesNotKnow(t *testing.T) {
	atomics := module(
		vec(1, []byte{0x60, 0, 0}),
		vec(3, []byte{0}),
		vec(10, body(0xfe, 0x03, 0x00, 0x0b)),
	)
	for _, c := range []struct {
		name string
		wasm []byte
		want string
	}{
		{"not wasm", []byte("hello"), "does not start with"},
		{"cut short", testModule[:len(testModule)-3], "truncated"},
		{"threads", atomics, "instruction 0xfe"},
	} {
		if _, err := instrument(c.wasm); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// tinyKind is the smallest module of the ABI: every call answers its
// info, which names it (so that each name is a module of its own).
func tinyKind(name string) []byte {
	answer := append([]byte{0}, `{"abi":1,"description":"`+name+`"}`...)
	packed := int64(16)<<32 | int64(len(answer))
	ret := appendS64([]byte{0x42}, packed)
	funcs := [][]byte{{0}}
	code := [][]byte{body(0x41, 0x80, 0x08, 0x0b)} // mrk_alloc: 1024
	exported := [][]byte{export("mrk_alloc", 0, 0)}
	for i, name := range exports[1:] {
		funcs = append(funcs, []byte{1})
		code = append(code, body(append(ret, 0x0b)...))
		exported = append(exported, export(name, 0, byte(i+1)))
	}
	exported = append(exported, export("memory", 2, 0))
	data := append([]byte{0, 0x41, 16, 0x0b}, byte(len(answer)))
	return module(
		vec(1, []byte{0x60, 1, 0x7f, 1, 0x7f}, []byte{0x60, 1, 0x7f, 1, 0x7e}),
		vec(3, funcs...),
		vec(5, []byte{0, 1}),
		vec(7, exported...),
		vec(10, code...),
		vec(11, append(data, answer...)),
	)
}

func appendS64(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// A runtime keeps at most MaxCompiled modules compiled, freeing the least
// recently used; one a task runs is freed when the task ends, not before.
func TestCompiledModulesAreBounded(t *testing.T) {
	ctx := context.Background()
	r, err := New(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	first, err := r.Compile(ctx, tinyKind("first"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Info.Description != "first" {
		t.Fatalf("info = %+v", first.Info)
	}
	second, err := r.Compile(ctx, tinyKind("second"))
	if err != nil {
		t.Fatal(err)
	}
	_, release, err := second.Kind(ctx, "second", nil) // a task runs it
	if err != nil {
		t.Fatal(err)
	}
	for i := range MaxCompiled {
		if _, err := r.Compile(ctx, tinyKind(fmt.Sprint("other", i))); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			r.Cached(first.Hash) // used again: not the least recent
		}
	}
	if n := r.Compiled(); n != MaxCompiled {
		t.Fatalf("%d modules compiled, want %d", n, MaxCompiled)
	}
	if _, ok := r.Cached(second.Hash); ok {
		t.Fatal("the least recently used module is still cached")
	}
	// The running task's module works until it ends, and not after.
	if _, release2, err := second.Kind(ctx, "second", nil); err != nil {
		t.Fatalf("a second task of a module in use: %v", err)
	} else {
		release2()
	}
	release()
	if _, _, err := second.Kind(ctx, "second", nil); !errors.Is(err, ErrEvicted) {
		t.Fatalf("a task of a freed module: %v, want ErrEvicted", err)
	}
}

// With CacheDir, compiled modules are kept in the directory, and a
// runtime started again on it loads them and runs their tasks.
func TestCompiledModulesOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for i := range 2 {
		r, err := New(ctx, 16, CacheDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		m, err := r.Compile(ctx, tinyKind("cached"))
		if err != nil || m.Info.Description != "cached" {
			t.Fatalf("runtime %d: %+v %v", i, m, err)
		}
		if _, release, err := m.Kind(ctx, "cached", nil); err != nil {
			t.Fatalf("runtime %d: %v", i, err)
		} else {
			release()
		}
		if err := r.Close(ctx); err != nil {
			t.Fatal(err)
		}
		files := 0
		_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, _ error) error {
			if d != nil && !d.IsDir() {
				files++
			}
			return nil
		})
		if files == 0 {
			t.Fatalf("runtime %d left nothing in %s", i, dir)
		}
	}
}

// image applies the active segments of a data section to a memory of size
// bytes, in their order, as an instance's start does.
func image(t *testing.T, sec []byte, size int) []byte {
	t.Helper()
	mem := make([]byte, size)
	r := newReader(sec)
	for range r.u32() {
		if r.byte() != 0 || r.byte() != 0x41 {
			t.Fatal("not an active segment of memory 0 at a constant")
		}
		off, _ := r.s32()
		r.byte()
		copy(mem[uint32(off):], r.take(int(r.u32())))
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return mem
}

// dataSection encodes active segments of memory 0, in this order.
func dataSection(segs ...struct {
	off  int32
	data string
}) []byte {
	out := binary.AppendUvarint(nil, uint64(len(segs)))
	for _, s := range segs {
		out = append(appendS32(append(out, 0x00, 0x41), s.off), 0x0b)
		out = binary.AppendUvarint(out, uint64(len(s.data)))
		out = append(out, s.data...)
	}
	return out
}

// Segments a few bytes apart are joined, out of order or not, into what
// writes the same memory; segments that overlap, or that are not all
// active at a constant offset, are left as they are.
func TestMergeDataKeepsTheMemory(t *testing.T) {
	type seg = struct {
		off  int32
		data string
	}
	sec := dataSection(seg{200, "abc"}, seg{0, "hello"}, seg{8, "world"}, seg{40, "x"}, seg{203, "d"}, seg{1000, "far"})
	merged := mergeData(sec)
	if n, _ := binary.Uvarint(merged); n != 3 {
		t.Errorf("%d segments after the merge, want 3 (0-41, 200-204, 1000-1003)", n)
	}
	if !bytes.Equal(image(t, merged, 2048), image(t, sec, 2048)) {
		t.Fatal("the merged segments write another memory")
	}
	overlap := dataSection(seg{0, "hello"}, seg{3, "LO"})
	if got := mergeData(overlap); !bytes.Equal(got, overlap) {
		t.Error("overlapping segments were merged: their order matters")
	}
	passive := append(dataSection(seg{0, "a"}, seg{4, "b"}), 0x01, 0x01, 'p')
	passive[0] = 3
	if got := mergeData(passive); !bytes.Equal(got, passive) {
		t.Error("a section with a passive segment was changed")
	}
	if got := mergeData(sec[:len(sec)-2]); !bytes.Equal(got, sec[:len(sec)-2]) {
		t.Error("a truncated section was changed")
	}
}

// cacheFile returns the one compiled module's file in dir.
func cacheFile(t *testing.T, dir string) string {
	t.Helper()
	var files []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, _ error) error {
		if d != nil && !d.IsDir() && d.Name() != sumsFile {
			files = append(files, path)
		}
		return nil
	})
	if len(files) != 1 {
		t.Fatalf("compiled modules in %s: %v; want one", dir, files)
	}
	return files[0]
}

// Bytes flipped in a compiled module in the cache: in its machine code
// (wazero's CRC says so, and every task of the kind failed for good,
// "compilationcache: checksum mismatch"), or in its table of functions'
// offsets (which nothing checked: it would have been run as code). A
// runtime started on the directory removes the file, says so, and
// compiles the module again; one already running when the file is damaged
// compiles it again too.
func TestDamagedCompiledModuleIsCompiledAgain(t *testing.T) {
	ctx := context.Background()
	run := func(r *Runtime) error {
		m, err := r.Compile(ctx, tinyKind("cached"))
		if err != nil {
			return err
		}
		_, release, err := m.Kind(ctx, "cached", nil)
		if err == nil {
			release()
		}
		return err
	}
	// compiled leaves the module compiled in the cache under dir.
	compiled := func(t *testing.T, dir string) {
		t.Helper()
		r, err := New(ctx, 16, CacheDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(ctx)
		if err := run(r); err != nil {
			t.Fatal(err)
		}
	}
	// A file is "WAZEVO", the length of wazero's version and the version,
	// the number of functions (4 bytes), their offsets (8 bytes each),
	// the code's length, the code and its CRC, and more.
	flip := func(path string, at func(data []byte) int) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		i := at(data)
		for j := i; j < i+4; j++ {
			data[j] ^= 0x5a
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, at := range map[string]func([]byte) int{
		"in the code":              func(data []byte) int { return len(data) / 2 },
		"in the offsets' table":    func(data []byte) int { return 7 + int(data[6]) + 4 + 1 },
		"in the number of offsets": func(data []byte) int { return 7 + int(data[6]) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			compiled(t, dir)
			file := cacheFile(t, dir)
			flip(file, at)
			r, err := New(ctx, 16, CacheDir(dir))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			if d := r.Dropped(); len(d) != 1 || d[0] != file {
				t.Fatalf("dropped %v; want the damaged %s", d, file)
			}
			if err := run(r); err != nil {
				t.Fatalf("the module compiled again: %v", err)
			}
		})
	}
	t.Run("while running", func(t *testing.T) {
		dir := t.TempDir()
		compiled(t, dir)
		r, err := New(ctx, 16, CacheDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close(ctx)
		if len(r.Dropped()) != 0 {
			t.Fatalf("a sound cache: dropped %v", r.Dropped())
		}
		flip(cacheFile(t, dir), func(data []byte) int { return len(data) / 2 })
		if err := run(r); err != nil {
			t.Fatalf("a module whose compiled copy was damaged while the runtime ran: %v", err)
		}
	})
}

// A compiled module the cache cannot take (a full disk; here its directory
// is a link to nowhere, where nothing is found and nothing can be
// written): wazero says so after keeping the module compiled, and the
// compile is not the task's failure (the kind's tasks failed their first
// attempt "not a WebAssembly module wazero can compile: … no space left").
func TestCompileGoesOnWhenTheCacheCannotBeWritten(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := New(ctx, 16, CacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	if _, err := r.Compile(ctx, tinyKind("first")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Dir(cacheFile(t, dir))
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "gone"), sub); err != nil {
		t.Fatal(err)
	}
	m, err := r.Compile(ctx, tinyKind("second"))
	if err != nil {
		t.Fatalf("a compile whose module the cache could not take: %v", err)
	}
	if _, release, err := m.Kind(ctx, "second", nil); err != nil {
		t.Fatal(err)
	} else {
		release()
	}
}
