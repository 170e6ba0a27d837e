package mr

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// DefaultSortBuffer is the memory a map task may hold before it spills.
const DefaultSortBuffer = 32 << 20

// minSortBuffer is the least SortBufferWithin sizes a buffer to: below, a
// map spills so often that its merge reads hundreds of runs.
const minSortBuffer = 4 << 20

// SortBufferWithin returns the sort buffer of each of workers map tasks
// running at once in a process whose soft memory limit is limit (0: none):
// configured, unless it is the default and the workers' buffers would
// take more than half the limit together; then that half shared among
// them, but not under 4 MiB. With the defaults (4 workers, 256 MiB) it
// is the default; 16 workers could hold 512 MiB of buffers under a
// 256 MiB limit, above which the collector runs ever more often. A size
// set by hand is kept.
func SortBufferWithin(configured, limit int64, workers int) int64 {
	if configured != DefaultSortBuffer || limit <= 0 || workers <= 0 {
		return configured
	}
	return min(configured, max(limit/2/int64(workers), minSortBuffer))
}

// Env is what the engine reads from and writes to.
type Env struct {
	Open    dataset.OpenBlock
	Shuffle store.Blobs
	Output  store.Blobs
	// SortBuffer bounds a map task's buffered output, in bytes.
	SortBuffer int64
	// TempDir holds spilled runs ("" means the system's).
	TempDir string
	// Log, when set, hears of outputs stored again.
	Log *slog.Logger
}

// Outcome is what a task reports besides its success.
type Outcome struct {
	Commit   string
	Counters job.Counters
	Preview  []job.Preview
	// PartBytes, of a map task, is the size of the run it wrote for each
	// reducer.
	PartBytes []int64
}

// ShuffleName names the run of reduce partition r written by attempt commit
// of map task m.
func ShuffleName(jobID string, m int, commit string, r int) string {
	return fmt.Sprintf("%s/m%d/%s/%d", jobID, m, commit, r)
}

// OutputName names the output of attempt commit of reduce task r.
func OutputName(jobID string, r int, commit string) string {
	return fmt.Sprintf("%s/r%d/%s", jobID, r, commit)
}

func newCommit() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Map runs map task t: reads its split, maps, combines, partitions and
// writes one sorted run per reduce partition, named by a fresh commit.
func (e *Env) Map(ctx context.Context, k job.Kind, t job.Task) (Outcome, error) {
	ctx = withParams(ctx, t)
	r := max(t.Reducers, 1)
	limit := e.SortBuffer
	if limit <= 0 {
		limit = DefaultSortBuffer
	}
	dir, release, err := taskDir(e.TempDir, "mrcluster-spill-")
	if err != nil {
		return Outcome{}, fmt.Errorf("make a spill directory: %w", err)
	}
	defer release()
	buf := &mapBuffer{parts: r, combine: k.Combine, limit: limit, dir: dir}
	if buf.combine != nil {
		buf.agg = map[string]int32{}
	}
	emit := buf.emit // one closure for the task, not one per record
	files, split, err := e.inputOf(ctx, t)
	if err != nil {
		buf.close()
		return Outcome{}, err
	}
	rp := &readProgress{p: job.ProgressOf(ctx), span: 1}
	for _, p := range split {
		rp.total += p.End - p.Start
	}
	rp.p.Set(0)
	n, lines, err := dataset.ReadSplit(ctx, e.Open, files, split, func(rec job.Record) error {
		rp.add(int64(len(rec.Text)) + 1)
		if err := k.MapRecord(ctx, rec, emit); err != nil {
			var located *job.RecordError
			if errors.As(err, &located) {
				return fmt.Errorf("map function, %w", err)
			}
			return fmt.Errorf("map function, file %s line %d: %w", rec.File, rec.Line, err)
		}
		return buf.err
	})
	if err == nil && k.MapFlush != nil {
		if err = k.MapFlush(ctx, emit); err != nil {
			err = fmt.Errorf("map function, %w", err)
		} else {
			err = buf.err
		}
	}
	if err != nil {
		buf.close()
		return Outcome{}, err
	}
	out := Outcome{Commit: newCommit(), Counters: job.Counters{InputBytes: n, InputRecords: lines, MapOutputRecords: buf.emitted},
		PartBytes: make([]int64, r)}
	defer buf.close()
	err = putAll(ctx, e, e.Shuffle, dir, r,
		func(p int) string { return ShuffleName(t.Job, t.Partition, out.Commit, p) },
		func(p int, w io.Writer) error {
			cw := &countWriter{w: w}
			err := buf.writePart(p, cw)
			out.PartBytes[p] = cw.n
			return err
		})
	if err != nil {
		return Outcome{}, fmt.Errorf("store map output: %w", err)
	}
	return out, nil
}

// inputOf returns the files map task t reads and its split of them: a
// task of many files names its job's list (FilesRef), read here.
func (e *Env) inputOf(ctx context.Context, t job.Task) ([]job.InputFile, []job.Piece, error) {
	if t.FilesRef == "" || len(t.Files) > 0 {
		return t.Files, t.Split, nil
	}
	gctx, cancel := context.WithTimeout(ctx, TransferTimeout(filesListSize))
	defer cancel()
	data, err := e.Output.GetBytes(gctx, t.FilesRef)
	if err != nil {
		return nil, nil, fmt.Errorf("read the list of the job's input files: %w", readErr(ctx, t.FilesRef, err))
	}
	var files []job.InputFile
	if err := json.Unmarshal(data, &files); err != nil {
		return nil, nil, fmt.Errorf("read the list of the job's input files, object %s: %w: %w", t.FilesRef, store.ErrDamaged, err)
	}
	return t.Input(files)
}

// filesListSize is the size a job's list of input files is read within
// the deadline of: about 300,000 files.
const filesListSize = 64 << 20

// Reduce runs reduce task t: merges partition t.Partition of every map
// output and reduces each key, writing the output under a fresh commit.
func (e *Env) Reduce(ctx context.Context, k job.Kind, t job.Task) (Outcome, error) {
	ctx = withParams(ctx, t)
	dir, release, err := taskDir(e.TempDir, "mrcluster-reduce-")
	if err != nil {
		return Outcome{}, fmt.Errorf("make a directory for the reduce's inputs: %w", err)
	}
	defer release()
	// Every input is on local disk before the reduce function runs, so no
	// read from the store waits on it.
	// Its progress: half the downloads, half the merge of what they read.
	prog := job.ProgressOf(ctx)
	prog.Set(0)
	var downloaded atomic.Int64
	inputs, err := downloadAll(ctx, e.Shuffle, dir, len(t.Maps), "map task", func(m int) (string, error) {
		if t.Maps[m] == "" {
			return "", fmt.Errorf("map task %d has no committed output", m)
		}
		return ShuffleName(t.Job, m, t.Maps[m], t.Partition), nil
	}, func() { prog.Set(0.5 * float64(downloaded.Add(1)) / float64(len(t.Maps))) })
	if err != nil {
		return Outcome{}, err
	}
	merged := &readProgress{p: prog, base: 0.5, span: 0.5}
	for _, in := range inputs {
		merged.total += in.size
	}
	srcs := make([]source, len(inputs))
	for m, in := range inputs {
		defer in.Close()
		srcs[m] = newRunReader(counted{in, merged}, in.size)
	}
	mg, err := newMerger(srcs)
	if err != nil {
		return Outcome{}, fmt.Errorf("read map outputs: %w", err)
	}
	out := Outcome{Commit: newCommit()}
	format := formatter(k)
	name := OutputName(t.Job, t.Partition, out.Commit)
	err = putStaged(ctx, e, e.Output, dir, name, func(w io.Writer) error {
		rw := newRunWriter(w)
		err := mg.groups(func(key []byte, values func(func([]byte) bool)) error {
			v, err := k.ReduceKey(ctx, key, values)
			if err != nil {
				return fmt.Errorf("reduce function, key %q: %w", key, err)
			}
			out.Counters.ReduceOutputRecords++
			if len(out.Preview) < job.PreviewLines {
				out.Preview = append(out.Preview, job.NewPreview(key, string(format(key, v))))
			}
			return rw.write(key, v)
		})
		if err != nil {
			return err
		}
		return rw.flush()
	})
	if err != nil {
		return Outcome{}, err
	}
	return out, nil
}

func withParams(ctx context.Context, t job.Task) context.Context {
	var p map[string]any
	_ = json.Unmarshal(t.Params, &p)
	return job.WithParams(ctx, p)
}

func formatter(k job.Kind) job.FormatFunc {
	if k.Format != nil {
		return k.Format
	}
	return func(key, value []byte) []byte {
		out := make([]byte, 0, len(key)+1+len(value))
		out = append(out, key...)
		out = append(out, ' ')
		return append(out, value...)
	}
}

// WriteOutput writes the output of finished job j to w: one line per key,
// ordered by key. A job that reads no data writes "partition value" lines.
func WriteOutput(ctx context.Context, output store.Blobs, k job.Kind, j *job.Job, w io.Writer) error {
	// A download streams to a client that may be slow: an hour, not the
	// NATS client's 5 s default for a call without a deadline.
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	bw := bufio.NewWriterSize(w, 64<<10)
	if !j.ReadsData() {
		for p, v := range j.Values.Done() {
			fmt.Fprintf(bw, "%d %d\n", p, v)
		}
		return bw.Flush()
	}
	var srcs []source
	for r, c := range j.ReduceCommits {
		obj, err := output.Get(ctx, OutputName(j.ID, r, c))
		if errors.Is(err, store.ErrDamaged) {
			return job.Errorf(job.EConflict, "part %d of the output of job %s is damaged in the store (%v): run the job again (mrcluster rerun %s)", r, j.ID, err, j.ID)
		}
		if err != nil {
			return fmt.Errorf("read output part %d of job %s: %w", r, j.ID, err)
		}
		defer obj.Close()
		srcs = append(srcs, newRunReader(obj, inputReadBuffer))
	}
	mg, err := newMerger(srcs)
	if err != nil {
		return fmt.Errorf("read output of job %s: %w", j.ID, err)
	}
	format := formatter(k)
	for {
		key, val, ok := mg.peek()
		if !ok {
			break
		}
		_, _ = bw.Write(format(key, val))
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
		if err := mg.advance(); err != nil {
			return fmt.Errorf("read output of job %s: %w", j.ID, err)
		}
	}
	return bw.Flush()
}

func deleteObject(ctx context.Context, blobs store.Blobs, name string) {
	ctx, cancel := context.WithTimeout(ctx, StoreCallTimeout)
	defer cancel()
	_ = blobs.Delete(ctx, name)
}

// DeleteJobObjects removes the committed intermediate outputs of j.
func DeleteJobObjects(ctx context.Context, shuffle store.Blobs, j *job.Job) {
	var names []string
	for m, c := range j.MapCommits {
		if c != "" {
			for r := range max(j.Reducers, 1) {
				names = append(names, ShuffleName(j.ID, m, c, r))
			}
		}
	}
	deleteObjects(ctx, shuffle, names)
}

// DeleteJobOutput removes the committed reduce outputs of j.
func DeleteJobOutput(ctx context.Context, output store.Blobs, j *job.Job) {
	var names []string
	for r, c := range j.ReduceCommits {
		if c != "" {
			names = append(names, OutputName(j.ID, r, c))
		}
	}
	deleteObjects(ctx, output, names)
}

// DeleteAttempt removes the objects of a task attempt that was not committed.
func DeleteAttempt(ctx context.Context, shuffle, output store.Blobs, j *job.Job, res job.TaskResult) {
	if res.Commit == "" {
		return
	}
	if res.Phase == job.PhaseReduce {
		deleteObject(ctx, output, OutputName(j.ID, res.Partition, res.Commit))
		return
	}
	names := make([]string, max(j.Reducers, 1))
	for r := range names {
		names[r] = ShuffleName(j.ID, res.Partition, res.Commit, r)
	}
	deleteObjects(ctx, shuffle, names)
}

// deleteObjects deletes the objects named, parallelTransfers at once (a
// job of M maps and R reducers stored M × R runs), as far as ctx lets it.
func deleteObjects(ctx context.Context, blobs store.Blobs, names []string) {
	g := newGroup(ctx)
	for _, name := range names {
		if !g.do(func(ctx context.Context) error { deleteObject(ctx, blobs, name); return nil }) {
			break
		}
	}
	_ = g.wait()
}

// mapBuffer holds a map task's output until it spills or ends.
type mapBuffer struct {
	parts   int
	combine job.CombineFunc
	limit   int64
	dir     string

	agg   map[string]int32 // with a combiner: key → index in hot and cold
	hot   []hotEntry
	cold  []coldEntry
	recs  []rec // without: sorted in place, by partition then key
	arena []byte
	size  int64

	emitted int64
	spills  []*spill
	sorted  bool      // the buffer is sorted (at the end, for writePart)
	mem     [][]int32 // with a combiner, sorted: one list of keys (their index in cold) per partition
	bounds  []int     // without: partition p is recs[bounds[p]:bounds[p+1]]
	err     error
}

// A key's combined value is kept as a fold so far (val) plus a run of n
// copies of one pending value not combined yet: a map emitting the same
// value again and again (a count of 1) costs one comparison of a word, and
// the run is folded in O(log n) combines. What every emit touches (hot) is
// 16 bytes per key, apart from the rest (cold), so that it stays in cache.
type hotEntry struct {
	pk uint64 // the pending value packed (pack), or bigPending
	n  int64
}

type coldEntry struct {
	key  string // the map's key, shared with it
	pend []byte // the pending value, when it does not pack
	val  []byte // nil until the first fold
	part int32
}

const bigPending = ^uint64(0)

// keyOverhead is what a key costs a buffer with a combiner beside its bytes
// and its value's: its map entry, its hot and cold entries, the slack of
// their growth, its value's allocation and its place in the sort's lists.
const keyOverhead = 176

// pack packs a value of up to 7 bytes with its length into a word.
func pack(v []byte) uint64 {
	if len(v) > 7 {
		return bigPending
	}
	x := uint64(len(v)) << 56
	for i, c := range v {
		x |= uint64(c) << (8 * i)
	}
	return x
}

func unpack(x uint64, buf *[8]byte) []byte {
	n := int(x >> 56)
	for i := range n {
		buf[i] = byte(x >> (8 * i))
	}
	return buf[:n]
}

// settle folds the pending run of key i into its value.
func (b *mapBuffer) settle(i int32) {
	h, c := &b.hot[i], &b.cold[i]
	if h.n == 0 {
		return
	}
	var key []byte // a copy for the combiner, made when one is called
	combine := func(x, y []byte) []byte {
		if key == nil {
			key = []byte(c.key)
		}
		return b.combine(key, x, y)
	}
	var small [8]byte
	pend := c.pend
	if h.pk != bigPending {
		pend = unpack(h.pk, &small)
	}
	// Fold n copies of pend by doubling: combine is associative.
	var acc []byte
	pow := bytes.Clone(pend)
	for n := h.n; n > 0; n >>= 1 {
		if n&1 == 1 {
			if acc == nil {
				acc = bytes.Clone(pow)
			} else {
				acc = combine(acc, pow)
			}
		}
		if n > 1 {
			pow = combine(pow, bytes.Clone(pow))
		}
	}
	if c.val == nil {
		c.val = acc
	} else {
		c.val = combine(c.val, acc)
	}
	h.n = 0
}

// setPending starts a new run of val for key i.
func (b *mapBuffer) setPending(i int32, val []byte, pk uint64) {
	b.hot[i] = hotEntry{pk: pk, n: 1}
	if pk == bigPending {
		b.cold[i].pend = append(b.cold[i].pend[:0], val...)
	} else {
		b.cold[i].pend = nil
	}
}

// rec is a record buffered without a combiner: its key at arena[off:],
// its value right after it. 24 bytes: a map of short records buffers
// millions of them.
type rec struct {
	off        int
	klen, vlen int32
	part       int32
}

// recOverhead is what a buffered record costs beside its bytes.
const recOverhead = int64(unsafe.Sizeof(rec{}))

type spill struct {
	f    *os.File
	offs []int64 // partition p is [offs[p], offs[p+1])
}

func partition(key []byte, n int) int {
	h := uint32(2166136261)
	for _, c := range key {
		h ^= uint32(c)
		h *= 16777619
	}
	return int(h % uint32(n))
}

func (b *mapBuffer) emit(key, val []byte) {
	b.emitted++
	if b.combine != nil {
		pk := pack(val)
		if i, ok := b.agg[string(key)]; ok {
			if h := &b.hot[i]; h.pk == pk && (pk != bigPending || bytes.Equal(val, b.cold[i].pend)) {
				h.n++
			} else {
				c := &b.cold[i]
				old := len(c.val) + len(c.pend)
				b.settle(i)
				b.setPending(i, val, pk)
				b.size += int64(len(c.val) + len(c.pend) - old)
			}
		} else {
			i, k := int32(len(b.hot)), string(key)
			b.agg[k] = i
			b.hot = append(b.hot, hotEntry{})
			b.cold = append(b.cold, coldEntry{key: k, part: int32(partition(key, b.parts))})
			b.setPending(i, val, pk)
			b.size += int64(len(key)+len(val)) + keyOverhead
		}
	} else {
		if len(key) > math.MaxInt32 || len(val) > math.MaxInt32 {
			if b.err == nil {
				b.err = fmt.Errorf("map function emitted a record of %d bytes; a key or a value may be at most 2 GiB", len(key)+len(val))
			}
			return
		}
		b.growArena(len(key) + len(val))
		r := rec{off: len(b.arena), klen: int32(len(key)), vlen: int32(len(val)), part: int32(partition(key, b.parts))}
		b.arena = append(append(b.arena, key...), val...)
		if len(b.recs) == cap(b.recs) {
			// Doubling, but never past what the limit lets the buffer hold.
			n := min(max(2*cap(b.recs), 1024), int(b.limit/recOverhead)+1)
			b.recs = slices.Grow(b.recs, max(n-len(b.recs), 1))
		}
		b.recs = append(b.recs, r)
		b.size += int64(len(key)+len(val)) + recOverhead
	}
	if b.size >= b.limit && b.err == nil {
		b.err = b.spill()
	}
}

// growArena makes room for n more bytes in the arena: doubling, but never
// past the limit (and the record that crosses it), so that a buffer
// holds at most about its limit, not twice it.
func (b *mapBuffer) growArena(n int) {
	if len(b.arena)+n <= cap(b.arena) {
		return
	}
	c := min(max(2*cap(b.arena), 64<<10), int(b.limit))
	b.arena = slices.Grow(b.arena, max(c, len(b.arena)+n)-len(b.arena))
}

// sort sorts the buffer by partition, then key: without a combiner the
// records in place (a list of every record, 48 bytes each, doubled the
// buffer's memory), with one the folded keys' indexes into per-partition
// lists of the right size (a list of every key and value, each key
// copied, had made a spill hold 1.8 times the buffer's limit).
func (b *mapBuffer) sort() {
	if b.combine != nil {
		n := make([]int, b.parts)
		for i := range b.cold {
			n[b.cold[i].part]++
		}
		out := make([][]int32, b.parts)
		for p := range out {
			out[p] = make([]int32, 0, n[p])
		}
		for i := range b.cold {
			c := &b.cold[i]
			b.settle(int32(i))
			out[c.part] = append(out[c.part], int32(i))
		}
		for _, ks := range out {
			slices.SortFunc(ks, func(x, y int32) int { return strings.Compare(b.cold[x].key, b.cold[y].key) })
		}
		b.mem = out
		return
	}
	slices.SortFunc(b.recs, func(x, y rec) int {
		if x.part != y.part {
			return cmp.Compare(x.part, y.part)
		}
		return bytes.Compare(b.arena[x.off:x.off+int(x.klen)], b.arena[y.off:y.off+int(y.klen)])
	})
	b.bounds = slices.Grow(b.bounds[:0], b.parts+1)[:b.parts+1]
	i := 0
	for p := range b.parts {
		b.bounds[p] = i
		for i < len(b.recs) && int(b.recs[i].part) == p {
			i++
		}
	}
	b.bounds[b.parts] = i
}

// part returns the sorted records of partition p; sort must have run.
func (b *mapBuffer) part(p int) source {
	if b.combine != nil {
		return &memSource{cold: b.cold, keys: b.mem[p]}
	}
	return &recSource{arena: b.arena, recs: b.recs[b.bounds[p]:b.bounds[p+1]]}
}

// spill writes the buffer, sorted, to a file and empties it.
func (b *mapBuffer) spill() error {
	f, err := os.CreateTemp(b.dir, "spill-")
	if err != nil {
		return fmt.Errorf("spill map output: %w", err)
	}
	s := &spill{f: f, offs: make([]int64, b.parts+1)}
	b.spills = append(b.spills, s)
	cw := &countWriter{w: f}
	rw := newRunWriter(cw)
	b.sort()
	for p := range b.parts {
		src := b.part(p)
		for src.next() == nil {
			if err := rw.write(src.record()); err != nil {
				return fmt.Errorf("spill map output: %w", err)
			}
		}
		if err := rw.flush(); err != nil {
			return fmt.Errorf("spill map output: %w", err)
		}
		s.offs[p+1] = cw.n
	}
	if b.agg != nil {
		clear(b.cold) // its keys and values, for the collector
		b.agg, b.hot, b.cold = map[string]int32{}, b.hot[:0], b.cold[:0]
	}
	b.recs, b.arena, b.size, b.mem = b.recs[:0], b.arena[:0], 0, nil
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writePart writes partition p of everything buffered and spilled, merged
// and combined, as one sorted run.
func (b *mapBuffer) writePart(p int, w io.Writer) error {
	if !b.sorted {
		b.sort()
		b.sorted = true
	}
	rw := newRunWriter(w)
	srcs := []source{b.part(p)}
	for _, s := range b.spills {
		srcs = append(srcs, newRunReader(io.NewSectionReader(s.f, s.offs[p], s.offs[p+1]-s.offs[p]), s.offs[p+1]-s.offs[p]))
	}
	mg, err := newMerger(srcs)
	if err != nil {
		return err
	}
	if b.combine == nil {
		for {
			k, v, ok := mg.peek()
			if !ok {
				return rw.flush()
			}
			if err := rw.write(k, v); err != nil {
				return err
			}
			if err := mg.advance(); err != nil {
				return err
			}
		}
	}
	var acc []byte
	err = mg.groups(func(key []byte, values func(func([]byte) bool)) error {
		acc = acc[:0]
		first := true
		for v := range values {
			if first {
				acc, first = append(acc, v...), false
			} else {
				acc = b.combine(key, acc, v)
			}
		}
		return rw.write(key, acc)
	})
	if err != nil {
		return err
	}
	return rw.flush()
}

func (b *mapBuffer) close() {
	for _, s := range b.spills {
		_ = s.f.Close()
	}
}

type memSource struct {
	cold []coldEntry
	keys []int32
	i    int
}

func (m *memSource) next() error {
	if m.i >= len(m.keys) {
		return io.EOF
	}
	m.i++
	return nil
}

// record returns the key's bytes (the map's own: not to be changed) and
// its folded value.
func (m *memSource) record() ([]byte, []byte) {
	c := &m.cold[m.keys[m.i-1]]
	return unsafe.Slice(unsafe.StringData(c.key), len(c.key)), c.val
}

// recSource reads sorted records of a buffer without a combiner.
type recSource struct {
	arena []byte
	recs  []rec
	i     int
}

func (s *recSource) next() error {
	if s.i >= len(s.recs) {
		return io.EOF
	}
	s.i++
	return nil
}

func (s *recSource) record() ([]byte, []byte) {
	r := s.recs[s.i-1]
	k := r.off + int(r.klen)
	return s.arena[r.off:k], s.arena[k : k+int(r.vlen)]
}
