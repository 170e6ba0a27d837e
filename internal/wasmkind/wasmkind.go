// Package wasmkind runs map-reduce kinds uploaded as WebAssembly modules
// (docs/wasm-abi.md), sandboxed with wazero: no filesystem, network,
// environment or real clock, a memory cap per instance, and calls that end
// when their context does. A module is compiled once per content hash and
// instantiated afresh for every task, so that nothing a task left behind
// reaches the next.
package wasmkind

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/mrcluster/mrcluster/internal/job"
)

// ABIVersion is the version of docs/wasm-abi.md this host speaks.
const ABIVersion = 1

// Limits on what a module may hand back.
const (
	MaxKey   = 64 << 10 // bytes of one emitted key
	MaxValue = 16 << 20 // bytes of one emitted value, combined or reduced value, or output line
	// mapBatch is how many bytes of records cross into the module at once.
	mapBatch = 256 << 10
	// maxReduceInput bounds one key's values, sent to the module at once.
	maxReduceInput = 256 << 20
)

// exports the ABI requires of a module.
var exports = []string{"mrk_alloc", "mrk_info", "mrk_params", "mrk_map", "mrk_combine", "mrk_reduce", "mrk_format"}

// Hash is the content hash that names a module's version.
func Hash(wasm []byte) string {
	h := sha256.Sum256(wasm)
	return hex.EncodeToString(h[:])
}

// MaxCompiled bounds how many compiled modules a runtime keeps: the least
// recently used beyond it are freed once no task runs them (a compiled Go
// module is tens of MiB of machine code; a cluster may hold hundreds of
// versions).
const MaxCompiled = 16

// ErrEvicted is the error of Module.Kind on a module freed meanwhile:
// compile it again.
var ErrEvicted = errors.New("the compiled module was freed to make room for others: compile it again")

// Runtime compiles and runs modules.
type Runtime struct {
	rt       wazero.Runtime
	cache    wazero.CompilationCache // nil without CacheDir
	sums     *cacheSums              // of the cache's files; nil without CacheDir
	dropped  []string                // the cache's files New found damaged and removed
	memoryMB int

	mu   sync.Mutex
	mods map[string]*Module // by hash
	tick uint64             // counts uses, for the least recently used
}

// Option configures a Runtime.
type Option func(*options)

type options struct{ cacheDir string }

// CacheDir keeps compiled modules in dir too, so that a process started
// again does not compile them again (seconds for a Go module). dir must be
// writable by this user only: what is there is run as machine code.
func CacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// New returns a runtime whose instances have at most memoryMB MiB of memory.
func New(ctx context.Context, memoryMB int, opts ...Option) (*Runtime, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg := wazero.NewRuntimeConfig().
		WithMemoryLimitPages(uint32(memoryMB) * 16). // 64 KiB pages
		WithCloseOnContextDone(false)                // instrument's calls of yield do it, at full speed
	var cache wazero.CompilationCache
	var sums *cacheSums
	var dropped []string
	if o.cacheDir != "" {
		if err := os.MkdirAll(o.cacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("make the directory of compiled modules: %w", err)
		}
		var err error
		if sums, dropped, err = openCacheSums(o.cacheDir); err != nil {
			return nil, fmt.Errorf("check the compiled modules in %s: %w", o.cacheDir, err)
		}
		if cache, err = wazero.NewCompilationCacheWithDir(o.cacheDir); err != nil {
			return nil, fmt.Errorf("open the directory of compiled modules %s: %w", o.cacheDir, err)
		}
		cfg = cfg.WithCompilationCache(cache)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("set up WASI: %w", err)
	}
	_, err := rt.NewHostModuleBuilder(yieldModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(yield), nil, nil).Export(yieldName).
		Instantiate(ctx)
	if err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("set up the sandbox's yield: %w", err)
	}
	return &Runtime{rt: rt, cache: cache, sums: sums, dropped: dropped, memoryMB: memoryMB, mods: map[string]*Module{}}, nil
}

// Dropped returns the files of compiled modules New found damaged in the
// cache directory and removed (they are compiled again when needed).
func (r *Runtime) Dropped() []string { return r.dropped }

// yield is what an instrumented module calls every yieldEvery loop
// iterations and function calls: it stops the module once the call's
// context has ended or its deadline passed (before the timer that ends the
// context has run). That it is Go gives the scheduler and collector their
// chance too.
func yield(ctx context.Context, _ api.Module, _ []uint64) {
	if err := ctx.Err(); err != nil {
		panic(err)
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		panic(context.DeadlineExceeded)
	}
}

// Cached returns the module compiled before under hash.
func (r *Runtime) Cached(hash string) (*Module, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.mods[hash]
	if ok {
		r.tick++
		m.used = r.tick
	}
	return m, ok
}

// Drop frees the module compiled under hash, if any, once no task runs
// it: its kind was deleted.
func (r *Runtime) Drop(ctx context.Context, hash string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.mods[hash]; ok {
		r.evict(ctx, m)
	}
}

// evict takes m out of the cache and frees it now or, when tasks run it,
// when the last one ends. r.mu is held.
func (r *Runtime) evict(ctx context.Context, m *Module) {
	delete(r.mods, m.Hash)
	m.evicted = true
	if m.users == 0 && !m.closed {
		m.closed = true
		_ = m.cm.Close(context.WithoutCancel(ctx))
	}
}

// Compiled returns how many compiled modules the runtime holds.
func (r *Runtime) Compiled() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mods)
}

// Close frees every compiled module.
func (r *Runtime) Close(ctx context.Context) error {
	err := r.rt.Close(ctx)
	if r.cache != nil {
		err = errors.Join(err, r.cache.Close(ctx))
	}
	return err
}

// Info is what a module says of its kind.
type Info struct {
	ABI         int         `json:"abi"`
	Description string      `json:"description"`
	Params      []job.Param `json:"params"`
	Combine     bool        `json:"combine"`
	Format      bool        `json:"format"`
}

// Module is a compiled module.
type Module struct {
	r    *Runtime
	cm   wazero.CompiledModule
	Hash string
	Info Info

	// guarded by r.mu
	used    uint64 // r.tick at the last use
	users   int    // tasks running it
	evicted bool   // out of the cache: closed when users is 0
	closed  bool
}

// Compile compiles wasm, checks that it exports the ABI and asks it for
// its kind's description and params; a module compiled before under the
// same hash is returned at once. Its errors name what is wrong, for the
// person who uploaded it.
func (r *Runtime) Compile(ctx context.Context, wasm []byte) (*Module, error) {
	hash := Hash(wasm)
	r.mu.Lock()
	m, ok := r.mods[hash]
	r.mu.Unlock()
	if ok {
		return m, nil
	}
	code, err := instrument(wasm)
	if err != nil {
		return nil, fmt.Errorf("not a WebAssembly module the sandbox can run: %w", err)
	}
	cm, err := r.rt.CompileModule(ctx, code)
	if err != nil && r.cache != nil {
		// Once more: the cache's copy was damaged since the start (the
		// check removes it, and the module is compiled again), or the
		// compiled module could not be written to the cache (a full
		// disk), which wazero reports after keeping it in memory, where
		// the second compile finds it. A module wazero cannot compile
		// fails the same way twice.
		if r.sums != nil && strings.Contains(err.Error(), "compilationcache") {
			_, _ = r.sums.check()
		}
		cm, err = r.rt.CompileModule(ctx, code)
	}
	if err != nil {
		return nil, fmt.Errorf("not a WebAssembly module wazero can compile: %w", err)
	}
	if r.sums != nil {
		_ = r.sums.record() // unrecorded, the file is compiled again at the next start
	}
	have := cm.ExportedFunctions()
	var missing []string
	for _, name := range exports {
		if _, ok := have[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("the module does not export %s: build it with package github.com/mrcluster/mrcluster/wasm/guest (GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared), or see docs/wasm-abi.md", strings.Join(missing, ", "))
	}
	m = &Module{r: r, cm: cm, Hash: hash}
	in, err := m.instance(ctx)
	if err != nil {
		_ = cm.Close(ctx)
		return nil, err
	}
	defer in.close(ctx)
	out, err := in.call(ctx, "info", nil)
	if err == nil {
		err = json.Unmarshal(out, &m.Info)
	}
	switch {
	case err != nil:
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("the module's mrk_info failed: %w", err)
	case m.Info.ABI != ABIVersion:
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("the module speaks ABI version %d; this cluster speaks %d", m.Info.ABI, ABIVersion)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tick++
	if prev, ok := r.mods[hash]; ok {
		_ = cm.Close(ctx)
		prev.used = r.tick
		return prev, nil
	}
	m.used = r.tick
	r.mods[hash] = m
	for len(r.mods) > MaxCompiled {
		var oldest *Module
		for _, o := range r.mods {
			if o != m && (oldest == nil || o.used < oldest.used) {
				oldest = o
			}
		}
		r.evict(ctx, oldest)
	}
	return m, nil
}

// instance is one instantiation of a module: one task's, or one call's.
type instance struct {
	m      *Module
	mod    api.Module
	fns    map[string]api.Function
	stderr *limited
	dead   error // set once a call failed: the instance is not used again
}

func (m *Module) instance(ctx context.Context) (*instance, error) {
	stderr := &limited{max: 4 << 10}
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module at once
		WithStderr(stderr).
		WithStartFunctions() // called below, once the instance can be stopped
	mod, err := m.r.rt.InstantiateModule(withMemory(ctx), m.cm, cfg)
	if err != nil {
		return nil, m.explain(ctx, fmt.Errorf("start the module: %w", err), stderr)
	}
	in := &instance{m: m, mod: mod, fns: map[string]api.Function{}, stderr: stderr}
	for _, name := range exports {
		in.fns[strings.TrimPrefix(name, "mrk_")] = mod.ExportedFunction(name)
	}
	if start := mod.ExportedFunction("_initialize"); start != nil {
		if _, err := in.invoke(ctx, start); err != nil {
			in.close(ctx)
			return nil, m.explain(ctx, fmt.Errorf("start the module: %w", err), stderr)
		}
	}
	return in, nil
}

// invoke calls f, which stops when ctx ends (yield).
func (in *instance) invoke(ctx context.Context, f api.Function, params ...uint64) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return f.Call(ctx, params...)
}

func (in *instance) close(ctx context.Context) { _ = in.mod.Close(context.WithoutCancel(ctx)) }

// call writes input into the module, calls mrk_<fn> and returns the
// answer's payload, valid until the next call.
func (in *instance) call(ctx context.Context, fn string, input []byte) ([]byte, error) {
	if in.dead != nil {
		return nil, in.dead
	}
	out, err := in.do(ctx, fn, input)
	if err != nil {
		var failed *failure
		if !errors.As(err, &failed) {
			in.dead = err // a trap, an exit, a limit: the instance is done for
		}
	}
	return out, err
}

// failure is an error the kind's code returned: the instance stays usable.
type failure struct {
	msg       string
	skipRetry bool // status 2: the kind asks that the task not run again
}

func (f *failure) Error() string { return f.msg }

func (f *failure) Is(target error) bool { return f.skipRetry && target == job.ErrSkipRetry }

func (in *instance) do(ctx context.Context, fn string, input []byte) ([]byte, error) {
	res, err := in.invoke(ctx, in.fns["alloc"], uint64(len(input)))
	if err != nil {
		return nil, in.m.explain(ctx, err, in.stderr)
	}
	mem := in.mod.Memory()
	if len(input) > 0 && !mem.Write(uint32(res[0]), input) {
		return nil, fmt.Errorf("the module's mrk_alloc returned %d, outside its memory, for %d bytes", uint32(res[0]), len(input))
	}
	res, err = in.invoke(ctx, in.fns[fn], uint64(len(input)))
	if err != nil {
		return nil, in.m.explain(ctx, err, in.stderr)
	}
	ptr, n := uint32(res[0]>>32), uint32(res[0])
	out, ok := mem.Read(ptr, n)
	if !ok || n == 0 {
		return nil, fmt.Errorf("the module's mrk_%s answered %d bytes at %d, outside its memory: not an answer of the ABI", fn, n, ptr)
	}
	switch out[0] {
	case 0:
		return out[1:], nil
	case 1, 2:
		return nil, &failure{msg: string(out[1:min(len(out), 1+4096)]), skipRetry: out[0] == 2}
	default:
		return nil, fmt.Errorf("the module's mrk_%s answered with status %d: not an answer of the ABI", fn, out[0])
	}
}

// explain turns an error of wazero into what happened to the module.
func (m *Module) explain(ctx context.Context, err error, stderr *limited) error {
	var exit *sys.ExitError
	said := strings.TrimSpace(stderr.String())
	oom := strings.Contains(said, "out of memory")
	if lines := strings.SplitN(said, "\n", 4); len(lines) > 3 {
		said = strings.Join(lines[:3], " | ") + " …" // a Go runtime's goroutine dump follows
	} else {
		said = strings.Join(lines, " | ")
	}
	if said != "" {
		said = "; it wrote: " + said
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || pastDeadline(ctx):
		return fmt.Errorf("the module was stopped at the task's time limit (--task-timeout)%s", said)
	case ctx.Err() != nil:
		return fmt.Errorf("the module was stopped: its task was canceled%s", said)
	case oom:
		return fmt.Errorf("the module ran out of memory: an instance may use at most %d MiB (--wasm-memory-mb)%s", m.r.memoryMB, said)
	case errors.As(err, &exit):
		return fmt.Errorf("the module exited with code %d%s", exit.ExitCode(), said)
	default:
		return fmt.Errorf("the module trapped: %v%s", err, said)
	}
}

func pastDeadline(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// limited keeps the first max bytes written to it.
type limited struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (l *limited) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limited) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Kind returns the module's kind as one task's engine calls it, backed by
// an instance of its own that release frees. params are the job's.
func (m *Module) Kind(ctx context.Context, name string, params json.RawMessage) (k job.Kind, release func(), err error) {
	r := m.r
	r.mu.Lock()
	if m.closed {
		r.mu.Unlock()
		return job.Kind{}, nil, ErrEvicted
	}
	m.users++
	r.tick++
	m.used = r.tick
	r.mu.Unlock()
	done := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		m.users--
		if m.evicted && m.users == 0 && !m.closed {
			m.closed = true
			_ = m.cm.Close(context.WithoutCancel(ctx))
		}
	}
	in, err := m.instance(ctx)
	if err != nil {
		done()
		return job.Kind{}, nil, err
	}
	if _, err := in.call(ctx, "params", params); err != nil {
		in.close(ctx)
		done()
		return job.Kind{}, nil, fmt.Errorf("the module refused the job's params: %w", err)
	}
	t := &task{in: in, ctx: ctx}
	k = job.Kind{
		Name: name, Description: m.Info.Description, Params: m.Info.Params, Module: m.Hash, ReadsData: true,
		MapRecord: t.mapRecord, MapFlush: t.flush, ReduceKey: t.reduce,
	}
	if m.Info.Combine {
		k.Combine = t.combine
	}
	if m.Info.Format {
		k.Format = t.format
	}
	return k, func() { in.close(ctx); done() }, nil
}

// task adapts one instance to the engine's calls: records cross in
// batches of mapBatch bytes, pairs come back in batches.
type task struct {
	in    *instance
	ctx   context.Context
	batch []byte
}

func (t *task) mapRecord(ctx context.Context, rec job.Record, emit job.Emit) error {
	t.batch = appendBytes(t.batch, []byte(rec.File))
	t.batch = binary.LittleEndian.AppendUint64(t.batch, uint64(rec.Line))
	t.batch = appendBytes(t.batch, rec.Text)
	if len(t.batch) < mapBatch {
		return nil
	}
	return t.mapBatch(ctx, emit)
}

// flush maps the records batched so far, then asks the module for every
// pair it holds (a map call without records).
func (t *task) flush(ctx context.Context, emit job.Emit) error {
	if len(t.batch) > 0 {
		if err := t.mapBatch(ctx, emit); err != nil {
			return err
		}
	}
	return t.mapBatch(ctx, emit)
}

// mapBatch calls the module's map with the batch and emits its pairs.
func (t *task) mapBatch(ctx context.Context, emit job.Emit) error {
	out, err := t.in.call(ctx, "map", t.batch)
	t.batch = t.batch[:0]
	if err != nil {
		return &job.RecordError{Err: err}
	}
	for len(out) > 0 {
		k, rest, ok := cut(out, MaxKey)
		if !ok {
			return fmt.Errorf("the module emitted a key longer than %d bytes, or an answer that is not pairs of the ABI", MaxKey)
		}
		v, rest, ok := cut(rest, MaxValue)
		if !ok {
			return fmt.Errorf("the module emitted a value longer than %d bytes (key %.40q), or an answer that is not pairs of the ABI", MaxValue, k)
		}
		emit(k, v)
		out = rest
	}
	return nil
}

// combine cannot return an error: a failure panics, which fails the
// task's attempt as a panic of a built-in combiner does.
func (t *task) combine(key, a, b []byte) []byte {
	in := appendBytes(appendBytes(appendBytes(nil, key), a), b)
	out, err := t.in.call(t.ctx, "combine", in)
	if err == nil && len(out) > MaxValue {
		err = fmt.Errorf("the module's combine returned %d bytes, more than %d", len(out), MaxValue)
	}
	if err != nil {
		panic(fmt.Errorf("combine, key %.40q: %w", key, err))
	}
	return append(a[:0], out...)
}

func (t *task) reduce(ctx context.Context, key []byte, values iter.Seq[[]byte]) ([]byte, error) {
	// The values cross into the module's memory at once, where the
	// module reads them again: more than half of it never fits (a key of
	// 237 MB of values failed three attempts of 10 s each, out of memory,
	// before the bound of the input alone was reached).
	most := min(maxReduceInput, t.in.m.r.memoryMB<<20/2)
	in := appendBytes(nil, key)
	in = binary.LittleEndian.AppendUint64(in, 0)
	var n uint64
	for v := range values {
		if len(in) > most {
			return nil, fmt.Errorf("the values of key %.40q exceed %d MiB, which a module's reduce takes at once (at most half of the module's memory, --wasm-memory-mb %d): "+
				"give the kind a combiner, or emit fewer values under one key: %w", key, most>>20, t.in.m.r.memoryMB, job.ErrSkipRetry)
		}
		in = appendBytes(in, v)
		n++
	}
	binary.LittleEndian.PutUint64(in[4+len(key):], n)
	out, err := t.in.call(ctx, "reduce", in)
	if err != nil && strings.Contains(err.Error(), "ran out of memory") {
		return nil, fmt.Errorf("%w (the reduce took the %d MiB of values of key %.40q at once: a combiner, or fewer values under one key, needs less)", err, len(in)>>20, key)
	}
	if err != nil {
		return nil, err
	}
	if len(out) > MaxValue {
		return nil, fmt.Errorf("the module's reduce returned %d bytes, more than %d", len(out), MaxValue)
	}
	return bytes.Clone(out), nil
}

// format cannot return an error: a line the module fails to format is
// written "key value".
func (t *task) format(key, value []byte) []byte {
	out, err := t.in.call(t.ctx, "format", appendBytes(appendBytes(nil, key), value))
	if err != nil || len(out) > MaxValue {
		return append(append(append([]byte(nil), key...), ' '), value...)
	}
	return bytes.Clone(out)
}

func appendBytes(out, b []byte) []byte {
	out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
	return append(out, b...)
}

// cut reads one length-prefixed field of at most max bytes.
func cut(b []byte, max int) (field, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(max) || uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}
