package mr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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
func putStaged(ctx context.Context, blobs store.Blobs, dir, name string, write func(io.Writer) error) error {
	s := &stage{dir: dir}
	defer s.close()
	if err := write(s); err != nil {
		return err
	}
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

// download copies object name into a file of dir, opened at its start.
// A missing object is ErrMissingInput; other failures are *job.StoreError.
func download(ctx context.Context, blobs store.Blobs, dir, name string) (*os.File, error) {
	ictx, cancel := context.WithTimeout(ctx, StoreCallTimeout)
	size, err := blobs.Size(ictx, name)
	cancel()
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrMissingInput, name)
		}
		return nil, &job.StoreError{Err: fmt.Errorf("read %s: %w", name, err)}
	}
	f, err := os.CreateTemp(dir, "input-")
	if err != nil {
		return nil, fmt.Errorf("make a file for task input %s: %w", name, err)
	}
	fail := func(err error) (*os.File, error) {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, err
	}
	gctx, cancel := context.WithTimeout(ctx, TransferTimeout(size))
	defer cancel()
	obj, err := blobs.Get(gctx, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fail(fmt.Errorf("%w: %s", ErrMissingInput, name))
		}
		return fail(&job.StoreError{Err: fmt.Errorf("read %s: %w", name, err)})
	}
	defer obj.Close()
	if _, err := io.Copy(f, obj); err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(&job.StoreError{Err: fmt.Errorf("read %s: %w", name, err)})
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, nil
}
