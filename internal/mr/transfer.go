package mr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Transfers between a task and the object store never run under the kind's
// own code: a map or reduce function may take hours, while the NATS client
// bounds a call without a deadline by its 5 s default. So map outputs and
// reduce outputs are staged (in memory, then on disk) and stored after the
// user code is done, and a reduce's inputs are downloaded before it starts;
// each transfer has a deadline of its own that follows its size.

// StoreCallTimeout bounds one small call to the store (an info, a delete).
// It is short: a call cut off by a change of a stream's leader in a cluster
// is better failed and run again than waited for.
const StoreCallTimeout = 10 * time.Second

// TransferTimeout is the deadline of moving size bytes to or from the
// object store: ten seconds, plus a second per 512 KiB.
func TransferTimeout(size int64) time.Duration {
	return StoreCallTimeout + time.Duration(size/(512<<10))*time.Second
}

// ErrMissingInput marks a committed input of a task that is no longer in
// the store: the task can never succeed, however often it runs.
var ErrMissingInput = errors.New("a committed input of the task is missing from the store")

// stage holds what a task writes before it is stored: in memory up to
// stageMemory, then in a file of dir.
type stage struct {
	dir  string
	mem  bytes.Buffer
	file *os.File
	size int64
}

const stageMemory = 1 << 20

func (s *stage) Write(p []byte) (int, error) {
	s.size += int64(len(p))
	if s.file == nil && s.mem.Len()+len(p) <= stageMemory {
		return s.mem.Write(p)
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "stage-")
		if err != nil {
			return 0, fmt.Errorf("stage task output on disk: %w", err)
		}
		s.file = f
		if _, err := s.mem.WriteTo(f); err != nil {
			return 0, fmt.Errorf("stage task output on disk: %w", err)
		}
	}
	n, err := s.file.Write(p)
	if err != nil {
		err = fmt.Errorf("stage task output on disk: %w", err)
	}
	return n, err
}

func (s *stage) reader() (io.Reader, error) {
	if s.file == nil {
		return bytes.NewReader(s.mem.Bytes()), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return s.file, nil
}

func (s *stage) close() {
	if s.file != nil {
		_ = s.file.Close()
		_ = os.Remove(s.file.Name())
	}
}

// putStaged stores what write writes as object name. write runs first, with
// no deadline (it may run user code); the store then gets a deadline that
// follows the size. A failure of the store is a *job.StoreError.
func putStaged(ctx context.Context, e *Env, blobs store.Blobs, dir, name string, write func(io.Writer) error) error {
	s := &stage{dir: dir}
	defer s.close()
	if err := write(s); err != nil {
		return err
	}
	return s.store(ctx, e, blobs, name)
}

// putAgainFor bounds how long a task's staged output is stored again when
// the store does not take it (a leader being elected, its server paused or
// cut off): the code that made it (a map of an hour, a reduce) is not run
// again for a store away for a moment. The task's lease is renewed
// meanwhile. A store with no room for it is not tried again here: the
// task's pool waits for room (worker.Pool), a wait of its own.
const putAgainFor = 2 * time.Minute

// putAgainWait is the wait before the first store again, doubling up to
// putAgainMax: tests make it short.
var putAgainWait = time.Second

const putAgainMax = 10 * time.Second

// store puts what was staged as object name, again after a failure of
// the store that may pass, for up to putAgainFor.
func (s *stage) store(ctx context.Context, e *Env, blobs store.Blobs, name string) error {
	var since time.Time
	for wait := putAgainWait; ; wait = min(2*wait, putAgainMax) {
		err := s.storeOnce(ctx, blobs, name)
		if err == nil || !mayPass(err) {
			return err
		}
		first := since.IsZero()
		if first {
			since = time.Now()
		}
		if time.Since(since)+wait > putAgainFor {
			return err
		}
		if e != nil && e.Log != nil {
			level := slog.LevelDebug
			if first {
				level = slog.LevelWarn
			}
			e.Log.Log(ctx, level, "could not store a task's output; trying again in a while, the task keeps its lease meanwhile", "object", name, "bytes", s.size, "retry_in", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// mayPass reports whether err, a task's output's store that failed, may
// succeed if tried again: a store that did not answer, not one that has no
// room, or found the object changed, gone or damaged.
func mayPass(err error) bool {
	var se *job.StoreError
	return errors.As(err, &se) && !errors.Is(err, store.ErrNoRoom) && !errors.Is(err, store.ErrNotFound) &&
		!errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrDamaged)
}

// storeOnce puts what was staged as object name, once.
func (s *stage) storeOnce(ctx context.Context, blobs store.Blobs, name string) error {
	r, err := s.reader()
	if err != nil {
		return fmt.Errorf("read staged output %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, TransferTimeout(s.size))
	defer cancel()
	if err := blobs.Put(ctx, name, r); err != nil {
		if ctx.Err() != nil && context.Cause(ctx) != context.DeadlineExceeded {
			return ctx.Err() // canceled: the job ended or the worker stops
		}
		return &job.StoreError{Err: fmt.Errorf("store %s (%d bytes): %w", name, s.size, err)}
	}
	return nil
}

// parallelTransfers bounds the transfers of one task in flight at once. A
// job of many map tasks and reducers moves many small objects, each a
// round trip or two to the store: one after the other, a map of 200
// reducers spent ~120 ms storing its runs and a reduce of 2,000 maps up
// to a second reading them.
const parallelTransfers = 8

// group runs transfers, at most parallelTransfers at once; the first
// failure cancels the others and is what wait returns.
type group struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context) *group {
	g := &group{sem: make(chan struct{}, parallelTransfers)}
	g.ctx, g.cancel = context.WithCancelCause(ctx)
	return g
}

// do runs fn once a transfer slot is free; false when the group failed
// (fn was not run).
func (g *group) do(fn func(ctx context.Context) error) bool {
	select {
	case g.sem <- struct{}{}:
	case <-g.ctx.Done():
		return false
	}
	g.wg.Go(func() {
		defer func() { <-g.sem }()
		if err := fn(g.ctx); err != nil {
			g.fail(err)
		}
	})
	return true
}

func (g *group) fail(err error) {
	g.once.Do(func() { g.err = err; g.cancel(err) })
}

// wait waits for the transfers under way and returns the first failure.
func (g *group) wait() error {
	g.wg.Wait()
	g.cancel(nil)
	return g.err
}

// putAll stores n objects: name(i) with what write(i, w) writes. The
// writes run in order, one after the other, with no deadline; the stores
// run parallelTransfers at once.
func putAll(ctx context.Context, e *Env, blobs store.Blobs, dir string, n int, name func(int) string, write func(int, io.Writer) error) error {
	g := newGroup(ctx)
	for i := range n {
		s := &stage{dir: dir}
		if err := write(i, s); err != nil {
			s.close()
			g.fail(err)
			break
		}
		if !g.do(func(ctx context.Context) error {
			defer s.close()
			return s.store(ctx, e, blobs, name(i))
		}) {
			s.close()
			break
		}
	}
	return g.wait()
}

// An input of a reduce of at most inputInMemory bytes is held in memory,
// as long as the task's inputs held so make at most inputsInMemory: a
// file for each of the thousands of tiny runs of a job of many maps and
// reducers spent more CPU on creating files than on everything else.
const (
	inputInMemory   = 256 << 10
	inputsInMemory  = 16 << 20
	inputReadBuffer = 32 << 10
)

// input is an object read from the store, in memory or in a file of its
// own, at its start.
type input struct {
	io.Reader
	size int64
	file *os.File
}

// Close removes the input's file, if it has one.
func (in *input) Close() {
	if in != nil && in.file != nil {
		_ = in.file.Close()
		_ = os.Remove(in.file.Name())
	}
}

// downloadAll reads objects name(0) … name(n-1), parallelTransfers at
// once: small ones into memory, the others into files of dir. A failure
// says which input: "the output of <what> i". An input missing or damaged
// does not stop the others: the *InputError of the first lost one names
// every lost one (Lost), so that they are made again at once, not one
// reduce attempt each. On failure nothing is left open. downloaded is
// called after each input is read.
func downloadAll(ctx context.Context, blobs store.Blobs, dir string, n int, what string, name func(int) (string, error), downloaded func()) ([]*input, error) {
	inputs := make([]*input, n)
	var inMemory atomic.Int64
	var mu sync.Mutex
	lost := map[int]error{}
	g := newGroup(ctx)
	for i := range n {
		obj, err := name(i)
		if err != nil {
			g.fail(err)
			break
		}
		if !g.do(func(ctx context.Context) error {
			in, err := download(ctx, blobs, dir, obj, &inMemory)
			if errors.Is(err, ErrMissingInput) || errors.Is(err, store.ErrDamaged) {
				mu.Lock()
				lost[i] = err
				mu.Unlock()
				return nil
			}
			if err != nil {
				return &InputError{Index: i, Err: fmt.Errorf("read the output of %s %d: %w", what, i, err)}
			}
			inputs[i] = in
			downloaded()
			return nil
		}) {
			break
		}
	}
	err := g.wait()
	if err == nil && len(lost) > 0 {
		idx := slices.Sorted(maps.Keys(lost))
		err = &InputError{Index: idx[0], Lost: idx, Err: fmt.Errorf("read the output of %s %d: %w", what, idx[0], lost[idx[0]])}
	}
	if err != nil {
		for _, in := range inputs {
			in.Close()
		}
		return nil, err
	}
	return inputs, nil
}

// download reads object name, into memory when it is small and
// inMemory, what the task holds so, leaves room, else into a file of dir.
// A missing object is ErrMissingInput; other failures are *job.StoreError.
func download(ctx context.Context, blobs store.Blobs, dir, name string, inMemory *atomic.Int64) (*input, error) {
	limit := int64(0)
	if inMemory.Load()+inputInMemory <= inputsInMemory {
		limit = inputInMemory
	}
	sctx, cancel := context.WithTimeout(ctx, TransferTimeout(limit))
	data, size, err := blobs.GetSmall(sctx, name, limit)
	cancel()
	if err != nil {
		return nil, readErr(ctx, name, err)
	}
	if data != nil || size == 0 {
		inMemory.Add(size)
		return &input{Reader: bytes.NewReader(data), size: size}, nil
	}
	f, err := os.CreateTemp(dir, "input-")
	if err != nil {
		return nil, fmt.Errorf("make a file for task input %s: %w", name, err)
	}
	in := &input{size: size, file: f}
	gctx, cancel := context.WithTimeout(ctx, TransferTimeout(size))
	defer cancel()
	obj, err := blobs.Get(gctx, name)
	if err != nil {
		in.Close()
		return nil, readErr(ctx, name, err)
	}
	defer obj.Close()
	if _, err := io.Copy(f, obj); err != nil {
		in.Close()
		return nil, readErr(ctx, name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		in.Close()
		return nil, err
	}
	in.Reader = f
	return in, nil
}

// InputError is the error of reading input Index of a task: the output of
// map task Index, for a reduce. Lost, when set, lists every input found
// missing or damaged, Index among them.
type InputError struct {
	Index int
	Lost  []int
	Err   error
}

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// readErr is the error of reading object name: ErrMissingInput when it is
// not there, store.ErrDamaged as it is, the context's when the task
// ended, else a *job.StoreError.
func readErr(ctx context.Context, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrMissingInput, name)
	case errors.Is(err, store.ErrDamaged):
		return err // reading it again gives the same answer
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return &job.StoreError{Err: fmt.Errorf("read %s: %w", name, err)}
}
