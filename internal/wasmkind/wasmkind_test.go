package wasmkind_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/wasmkind"
)

// Build builds a Go program of the module (a directory from its root) as
// a WebAssembly module.
func Build(t testing.TB, dir string) []byte { return apitest.BuildWasm(t, dir) }

func runtime(t *testing.T, memoryMB int) *wasmkind.Runtime {
	t.Helper()
	r, err := wasmkind.New(context.Background(), memoryMB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

type pair struct{ k, v string }

// counts adds up the values of each key.
func counts(t *testing.T, pairs []pair) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, p := range pairs {
		n, err := strconv.Atoi(p.v)
		if err != nil {
			t.Fatalf("value %q of key %q", p.v, p.k)
		}
		out[p.k] += n
	}
	return out
}

// mapAll maps lines with k as the engine does: record by record, then the
// flush.
func mapAll(ctx context.Context, k job.Kind, lines []string) ([]pair, error) {
	var out []pair
	emit := func(key, v []byte) { out = append(out, pair{string(key), string(v)}) }
	for i, l := range lines {
		if err := k.MapRecord(ctx, job.Record{File: "f.txt", Line: int64(i + 1), Text: []byte(l)}, emit); err != nil {
			return out, err
		}
	}
	if k.MapFlush != nil {
		if err := k.MapFlush(ctx, emit); err != nil {
			return out, err
		}
	}
	return out, nil
}

// The example word count, run through the module, emits what the
// built-in wordcount emits, combines and reduces as it does, across batch
// boundaries (a split larger than one batch).
func TestWordCountModuleMatchesTheBuiltIn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, err := runtime(t, 64).Compile(ctx, Build(t, "examples/wasm-wordcount"))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Info.Combine || m.Info.Format || !strings.Contains(m.Info.Description, "word") {
		t.Fatalf("info = %+v", m.Info)
	}
	k, release, err := m.Kind(ctx, "mywc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	text := corpus(t)
	lines := strings.Split(string(text), "\n")
	got, err := mapAll(ctx, k, lines)
	if err != nil {
		t.Fatal(err)
	}
	builtin, _ := kinds.Builtin(1).Lookup("wordcount")
	want, err := mapAll(ctx, builtin, lines)
	if err != nil {
		t.Fatal(err)
	}
	// The module folds each batch's pairs with its combiner: the counts
	// per word are what must be equal.
	if g, w := counts(t, got), counts(t, want); len(text) < 1<<20 || !maps.Equal(g, w) || len(got) >= len(want) {
		t.Fatalf("the module emitted %d pairs (%d words), the built-in %d (%d words), input %d bytes", len(got), len(g), len(want), len(w), len(text))
	}
	if c := k.Combine([]byte("w"), []byte("40"), []byte("2")); string(c) != "42" {
		t.Fatalf("combine 40 and 2 = %q", c)
	}
	v, err := k.ReduceKey(ctx, []byte("w"), slices.Values([][]byte{[]byte("1"), []byte("2"), []byte("39")}))
	if err != nil || string(v) != "42" {
		t.Fatalf("reduce = %q, %v", v, err)
	}
	if _, err := k.ReduceKey(ctx, []byte("w"), slices.Values([][]byte{[]byte("x")})); err == nil || !strings.Contains(err.Error(), "not a decimal integer") {
		t.Fatalf("reduce of a non-number: %v", err)
	}
}

// corpus returns the test corpus (kinds.Corpus), concatenated: several
// batches.
func corpus(t *testing.T) []byte {
	t.Helper()
	docs, source := kinds.Corpus(1)
	t.Logf("corpus: %s", source)
	var out []byte
	for _, d := range docs {
		out = append(out, d.Data...)
	}
	return out
}

// A module refused at upload says what is wrong with it.
func TestCompileRefusesWhatIsNotAKind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := runtime(t, 64)
	for _, c := range []struct {
		name string
		wasm []byte
		want string
	}{
		{"not wasm", []byte("hello"), "not a WebAssembly module"},
		{"a WASI program", Build(t, "internal/wasmkind/testdata/noexports"), "does not export mrk_alloc, mrk_info"},
	} {
		if _, err := r.Compile(ctx, c.wasm); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// Every way a module can misbehave fails the call with a message that
// says which, and the runtime runs other modules' tasks meanwhile and
// after.
func TestSandboxFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := runtime(t, 32)
	wc, err := r.Compile(ctx, Build(t, "examples/wasm-wordcount"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dir, line string
		timeout   time.Duration
		want      string
	}{
		{"loop", "x", 300 * time.Millisecond, "time limit"},
		{"alloc", "x", time.Minute, "out of memory: an instance may use at most 32 MiB"},
		{"exit", "x", time.Minute, "exited with code 3"},
		{"bigkey", "x", time.Minute, "key longer than 65536 bytes"},
		{"garbage", "x", time.Minute, "outside its memory: not an answer of the ABI"},
		{"fails", "boom", time.Minute, "file f.txt line 1: boom"},
		{"fails", "hopeless", time.Minute, "file f.txt line 1: this line cannot be read: not to be retried"},
		{"fails", "panic", time.Minute, "panic: assignment to entry in nil map"},
	}
	for _, c := range cases {
		t.Run(c.dir+"/"+c.line, func(t *testing.T) {
			t.Parallel()
			m, err := r.Compile(ctx, Build(t, "internal/wasmkind/testdata/"+c.dir))
			if err != nil {
				t.Fatal(err)
			}
			tctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			k, release, err := m.Kind(tctx, c.dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			start := time.Now()
			_, err = mapAll(tctx, k, []string{c.line})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if skip := c.line == "hopeless"; errors.Is(err, job.ErrSkipRetry) != skip {
				t.Fatalf("err = %v: asks not to be retried %t, want %t", err, !skip, skip)
			}
			if c.dir == "loop" && time.Since(start) > 30*time.Second {
				t.Fatalf("the loop was stopped after %s", time.Since(start))
			}
			// The same runtime still runs a good module.
			good, release2, err := wc.Kind(ctx, "wc", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer release2()
			if got, err := mapAll(ctx, good, []string{"a b a"}); err != nil || fmt.Sprint(counts(t, got)) != "map[a:2 b:1]" {
				t.Fatalf("after the failure, a good module mapped %v, %v", got, err)
			}
		})
	}
}

// A key whose values are more than half the module's memory is refused
// before they cross, for good (no attempt can mend it), saying what to do;
// fewer values under one key reduce.
func TestReduceOfASkewedKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, err := runtime(t, 32).Compile(ctx, Build(t, "examples/wasm-wordcount"))
	if err != nil {
		t.Fatal(err)
	}
	k, release, err := m.Kind(ctx, "wc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	one := bytes.Repeat([]byte("1"), 15) // 15 ones: a count of 111,111,111,111,111
	values := func(n int) func(func([]byte) bool) {
		return func(yield func([]byte) bool) {
			for range n {
				if !yield(one) {
					return
				}
			}
		}
	}
	_, err = k.ReduceKey(ctx, []byte("the"), values(1<<20)) // 19 MiB of values, 16 at most
	if err == nil || !errors.Is(err, job.ErrSkipRetry) || !strings.Contains(err.Error(), "exceed 16 MiB") || !strings.Contains(err.Error(), "combiner") {
		t.Fatalf("a key of 19 MiB of values in a module of 32 MiB: %v", err)
	}
	if v, err := k.ReduceKey(ctx, []byte("the"), values(1000)); err != nil || string(v) != "111111111111111000" {
		t.Fatalf("a key of 1,000 values: %s, %v", v, err)
	}
}

// A version is named by its content: the same bytes, the same hash.
func TestHashNamesTheContent(t *testing.T) {
	t.Parallel()
	a, b := wasmkind.Hash([]byte("a")), wasmkind.Hash([]byte("b"))
	if a == b || len(a) != 64 || a != wasmkind.Hash([]byte("a")) {
		t.Fatalf("hashes %s %s", a, b)
	}
}

// BenchmarkWordCountMap maps the test corpus with the example module and
// with the built-in wordcount, each emitting into a table of combined
// values as the engine's map buffer does.
// wordCountModule compiles the example word count in a runtime of its
// own, closed at the benchmark's end.
func wordCountModule(b *testing.B) *wasmkind.Module {
	ctx := context.Background()
	r, err := wasmkind.New(ctx, 256)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close(ctx) })
	m, err := r.Compile(ctx, Build(b, "examples/wasm-wordcount"))
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func BenchmarkWordCountMap(b *testing.B) {
	ctx := context.Background()
	m := wordCountModule(b)
	docs, _ := kinds.Corpus(1)
	var lines [][]byte
	var size int64
	for _, d := range docs {
		size += int64(len(d.Data))
		lines = append(lines, bytes.Split(d.Data, []byte("\n"))...)
	}
	run := func(b *testing.B, k job.Kind) {
		b.SetBytes(size)
		for b.Loop() {
			table := map[string][]byte{}
			emit := func(key, v []byte) {
				if cur, ok := table[string(key)]; ok {
					table[string(key)] = k.Combine(key, cur, v)
				} else {
					table[string(key)] = bytes.Clone(v)
				}
			}
			for i, l := range lines {
				if err := k.MapRecord(ctx, job.Record{File: "f.txt", Line: int64(i + 1), Text: l}, emit); err != nil {
					b.Fatal(err)
				}
			}
			if k.MapFlush != nil {
				if err := k.MapFlush(ctx, emit); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("module", func(b *testing.B) {
		k, release, err := m.Kind(ctx, "mywc", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer release()
		run(b, k)
	})
	b.Run("builtin", func(b *testing.B) {
		k, _ := kinds.Builtin(1).Lookup("wordcount")
		run(b, k)
	})
}

// BenchmarkTaskInstance is what every task of an uploaded kind costs
// before its first record: an instance of the module (its data copied in,
// the Go runtime of the guest started), the job's params, and its end.
func BenchmarkTaskInstance(b *testing.B) {
	ctx := context.Background()
	m := wordCountModule(b)
	emit := func(key, v []byte) {}
	for b.Loop() {
		k, release, err := m.Kind(ctx, "mywc", nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := k.MapRecord(ctx, job.Record{File: "f.txt", Line: 1, Text: []byte("a few words")}, emit); err != nil {
			b.Fatal(err)
		}
		if err := k.MapFlush(ctx, emit); err != nil {
			b.Fatal(err)
		}
		release()
	}
}
