package dataset

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// counted is a read of blocks that counts its calls; while gate is open
// (not nil) a read waits for it to close.
type counted struct {
	calls atomic.Int32
	gate  chan struct{}
}

func (r *counted) read(name string) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		r.calls.Add(1)
		if r.gate != nil {
			select {
			case <-r.gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return []byte("block " + name), nil
	}
}

// Tasks that read one block at once share one read; a block read again
// soon after is kept for the next tasks; one read once is not kept.
func TestBlockCacheSharesBlocksOfSmallSplits(t *testing.T) {
	ctx := context.Background()
	var c blockCache
	r := &counted{gate: make(chan struct{})}
	var wg sync.WaitGroup
	got := make([][]byte, 4)
	for i := range got {
		wg.Go(func() {
			b, err := c.get(ctx, "b0", r.read("b0"))
			if err != nil {
				t.Error(err)
			}
			got[i] = b
		})
	}
	// Every task but the reader waits on its read.
	for {
		c.mu.Lock()
		rd := c.reads["b0"]
		joined := rd != nil && rd.joined
		c.mu.Unlock()
		if joined {
			break
		}
		time.Sleep(time.Millisecond) // polling a state no event announces
	}
	close(r.gate)
	wg.Wait()
	r.gate = nil
	for i, b := range got {
		if string(b) != "block b0" {
			t.Fatalf("task %d got %q", i, b)
		}
	}
	if n := r.calls.Load(); n > 2 { // a task late to the read reads again, and keeps it
		t.Fatalf("4 tasks at once read the block %d times", n)
	}
	before := r.calls.Load()
	for range 10 {
		if _, err := c.get(ctx, "b0", r.read("b0")); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.calls.Load() - before; n != 0 {
		t.Fatalf("a shared block was read %d more times by the next tasks", n)
	}

	// Read once: not kept. Read again soon: kept.
	c.get(ctx, "b1", r.read("b1"))
	if kept(&c, "b1") {
		t.Fatal("a block read once is kept")
	}
	c.get(ctx, "b1", r.read("b1"))
	if !kept(&c, "b1") {
		t.Fatal("a block read twice in a row is not kept")
	}
}

func kept(c *blockCache, name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.kept {
		if k.name == name {
			return true
		}
	}
	return false
}

// At most cachedBlocks are kept, the least recently used going first;
// what is not asked for in blockKeep goes, and a worker left idle keeps
// nothing.
func TestBlockCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	var c blockCache
	r := &counted{}
	for i := range cachedBlocks + 2 {
		name := fmt.Sprint("b", i)
		c.get(ctx, name, r.read(name))
		c.get(ctx, name, r.read(name))
	}
	c.mu.Lock()
	n := len(c.kept)
	c.mu.Unlock()
	if n != cachedBlocks {
		t.Fatalf("%d blocks kept, want %d", n, cachedBlocks)
	}
	if kept(&c, "b0") || kept(&c, "b1") || !kept(&c, fmt.Sprint("b", cachedBlocks+1)) {
		t.Fatal("not the most recently used blocks kept")
	}
	c.mu.Lock()
	for i := range c.kept {
		c.kept[i].used = c.kept[i].used.Add(-blockKeep)
	}
	for name := range c.asked {
		c.asked[name] = c.asked[name].Add(-blockKeep)
	}
	c.mu.Unlock()
	c.swept()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.kept) != 0 || len(c.asked) != 0 || c.sweep != nil {
		t.Fatalf("idle: %d blocks and %d names kept, sweep armed %v", len(c.kept), len(c.asked), c.sweep != nil)
	}
}

// A task whose shared read failed for the reader's own reason (its task
// canceled) reads the block for itself.
func TestBlockCacheReaderCanceled(t *testing.T) {
	var c blockCache
	r := &counted{gate: make(chan struct{})}
	readerCtx, cancel := context.WithCancel(context.Background())
	failed := make(chan error, 1)
	go func() {
		_, err := c.get(readerCtx, "b", r.read("b"))
		failed <- err
	}()
	for r.calls.Load() == 0 {
		time.Sleep(time.Millisecond) // polling a state no event announces
	}
	got := make(chan []byte, 1)
	go func() {
		b, err := c.get(context.Background(), "b", func(ctx context.Context) ([]byte, error) {
			r.calls.Add(1)
			return []byte("block b"), nil
		})
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	for {
		c.mu.Lock()
		joined := c.reads["b"] != nil && c.reads["b"].joined
		c.mu.Unlock()
		if joined {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-failed; !errors.Is(err, context.Canceled) {
		t.Fatalf("the canceled reader got %v", err)
	}
	if b := <-got; string(b) != "block b" {
		t.Fatalf("the task that waited got %q", b)
	}
}
