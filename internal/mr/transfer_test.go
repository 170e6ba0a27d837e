package mr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// refusingBlobs fails its first puts with err, as a store that does not
// answer (or has no room) fails them.
type refusingBlobs struct {
	store.Blobs
	left, puts atomic.Int32
	err        error
}

func (b *refusingBlobs) Put(ctx context.Context, name string, r io.Reader) error {
	b.puts.Add(1)
	if b.left.Add(-1) >= 0 {
		_, _ = io.Copy(io.Discard, r) // as far as a put gets before it fails
		return b.err
	}
	return b.Blobs.Put(ctx, name, r)
}

// A task's output the store does not take at first (a leader being
// elected, its server paused) is stored again, whole: the code that made
// it is not run again. One the store has no room for is not: the task's
// pool waits for room, a wait of its own.
func TestAnOutputTheStoreDoesNotTakeIsStoredAgain(t *testing.T) {
	defer func(w time.Duration) { putAgainWait = w }(putAgainWait)
	putAgainWait = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := make([]byte, 3*stageMemory/2) // staged in a file
	for i := range big {
		big[i] = byte(i)
	}
	for _, data := range [][]byte{[]byte("word 1\n"), big} {
		b := &refusingBlobs{Blobs: memstore.NewBlobs(), err: fmt.Errorf("no acknowledgement from the store: %w", context.DeadlineExceeded)}
		b.left.Store(3)
		writes := 0
		err := putStaged(ctx, &Env{}, b, t.TempDir(), "out", func(w io.Writer) error {
			writes++
			_, err := w.Write(data)
			return err
		})
		if err != nil || writes != 1 || b.puts.Load() != 4 {
			t.Fatalf("%d bytes: %v after %d writes and %d puts; want it stored at the fourth put, written once", len(data), err, writes, b.puts.Load())
		}
		if got, err := b.GetBytes(ctx, "out"); err != nil || string(got) != string(data) {
			t.Fatalf("%d bytes: stored %d bytes (%v); want them whole", len(data), len(got), err)
		}
	}
	b := &refusingBlobs{Blobs: memstore.NewBlobs(), err: fmt.Errorf("%w: disk full", store.ErrNoRoom)}
	b.left.Store(3)
	err := putStaged(ctx, &Env{}, b, t.TempDir(), "out", func(w io.Writer) error { _, err := w.Write([]byte("x")); return err })
	if !errors.Is(err, store.ErrNoRoom) || b.puts.Load() != 1 {
		t.Fatalf("no room: %v after %d puts; want the refusal at once", err, b.puts.Load())
	}
}
