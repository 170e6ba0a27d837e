package view

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A read-your-write wait ends when its job arrives (in the epoch asked
// for), not at another job's change, and leaves nothing behind when its
// context ends first.
func TestAwaitEpochWaitsForItsJob(t *testing.T) {
	t.Parallel()
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	v.loaded()
	now := time.Now()
	a := job.New(job.NewID("noop", now), job.Spec{Kind: "noop", Partitions: 1}, now)
	b := job.New(job.NewID("noop", now.Add(time.Millisecond)), job.Spec{Kind: "noop", Partitions: 1}, now)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	done := make(chan struct{})
	go func() { v.AwaitEpoch(ctx, a.ID, 1); close(done) }()
	waiting := func() int {
		v.mu.RLock()
		defer v.mu.RUnlock()
		return len(v.waiters[a.ID])
	}
	for waiting() == 0 { // the wait is registered
		select {
		case <-done:
			t.Fatal("the wait ended before its job existed")
		case <-time.After(time.Millisecond):
		}
	}
	v.applyJobs([]*store.Entry{record(t, b)}, false) // another job
	v.applyJobs([]*store.Entry{record(t, a)}, false) // a, in epoch 0
	select {
	case <-done:
		t.Fatal("the wait for epoch 1 ended at epoch 0, or at another job's change")
	case <-time.After(50 * time.Millisecond):
	}
	retried := a.Clone()
	retried.Epoch = 1
	v.applyJobs([]*store.Entry{record(t, retried)}, false)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the wait did not end once its job was there in epoch 1")
	}
	if n := waiting(); n != 0 {
		t.Fatalf("%d waiters left for a job whose wait ended", n)
	}
	// Already there: at once.
	v.AwaitEpoch(ctx, b.ID, 0)
	// A wait whose context ends leaves no waiter.
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop()
	v.AwaitEpoch(short, "noop_never", 0)
	v.mu.RLock()
	n := len(v.waiters)
	v.mu.RUnlock()
	if n != 0 {
		t.Fatalf("%d jobs with waiters after every wait ended", n)
	}
}
