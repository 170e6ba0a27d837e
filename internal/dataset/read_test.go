package dataset

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// stalling answers its first reads only when their deadline passes, as a
// stream leader whose server is paused does; later ones read the store.
type stalling struct {
	*memstore.Blobs
	stalls  int32
	calls   atomic.Int32
	budgets []time.Duration // each call's time to its deadline
}

func (s *stalling) GetBytes(ctx context.Context, name string) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok {
		s.budgets = append(s.budgets, time.Until(d))
	}
	if s.calls.Add(1) <= s.stalls {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Blobs.GetBytes(ctx, name)
}

// A read held by a replica that stopped answering is given up after one
// attempt's deadline and made again, with twice the time; a block that is
// not there is not read again.
func TestBlockReadTriesAgainAfterAStall(t *testing.T) {
	defer func(d time.Duration) { blockAttemptTimeout = d }(blockAttemptTimeout)
	blockAttemptTimeout = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	blobs := &stalling{Blobs: memstore.NewBlobs(), stalls: 2}
	if err := blobs.Put(ctx, "b", bytes.NewReader([]byte("the block"))); err != nil {
		t.Fatal(err)
	}
	s := &Store{Blocks: blobs}
	got, err := s.readBlock(ctx, "b")
	if err != nil || string(got) != "the block" || blobs.calls.Load() != 3 {
		t.Fatalf("read %q, %v in %d attempts; want the block in 3 (two stalled)", got, err, blobs.calls.Load())
	}
	if b := blobs.budgets; len(b) != 3 || b[1] < 3*b[0]/2 || b[2] < 3*b[1]/2 {
		t.Fatalf("the attempts had %v; want each about twice the one before", b)
	}
	blobs.calls.Store(0)
	blobs.stalls = 0
	if _, err := s.readBlock(ctx, "missing"); !errors.Is(err, store.ErrNotFound) || blobs.calls.Load() != 1 {
		t.Fatalf("a missing block: %v in %d attempts; want not found in 1", err, blobs.calls.Load())
	}
	// A read that never gets an answer ends with its caller's deadline.
	blobs.calls.Store(0)
	blobs.stalls = 1 << 30
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := s.readBlock(short, "b"); err == nil || blobs.calls.Load() < 2 {
		t.Fatalf("a read that never answers: %v after %d attempts; want an error after several", err, blobs.calls.Load())
	}
}
