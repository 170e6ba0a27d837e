package view

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// unreachableKV is a bucket whose reads fail while down is set.
type unreachableKV struct {
	store.KV
	down atomic.Bool
}

func (k *unreachableKV) Get(ctx context.Context, key string) (store.Entry, error) {
	if k.down.Load() {
		return store.Entry{}, errors.New("no responders: the bucket is electing a leader")
	}
	return k.KV.Get(ctx, key)
}

// A worker not heard of by the watch for the bucket's TTL is forgotten
// only once the store says its status is gone: a watch that fell behind
// (a leader election) made every server forget every live worker for a
// moment: the dashboard showed none.
func TestWorkerIsForgottenOnlyWhenTheStoreDropsIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := memstore.New(memstore.Config{})
	workers := &unreachableKV{KV: st.Workers}
	st.Workers = workers
	v := New(Config{Store: st, Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(ctx) })
	<-v.Ready()

	put := func(key string, busy bool) uint64 {
		t.Helper()
		b, _ := json.Marshal(job.WorkerStatus{Key: key, Pool: "p", Busy: busy, JobID: "long_1", LastSeen: time.Now()})
		rev, err := workers.Put(ctx, key, b)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	known := func(key string) (worker, bool) {
		v.mu.RLock()
		defer v.mu.RUnlock()
		w, ok := v.workers[key]
		return w, ok
	}
	rev := put("a", true)
	put("b", true)
	for {
		a, okA := known("a")
		if _, okB := known("b"); okA && okB && a.rev == rev {
			break
		}
		time.Sleep(time.Millisecond) // the watch's delivery: no event announces it to a test
	}
	// The watch delivered a's heartbeat at revision rev, and nothing for
	// a TTL since; the store holds a later one (the watch fell behind).
	later := put("a", true)
	for a, _ := known("a"); a.rev != later; a, _ = known("a") {
		time.Sleep(time.Millisecond)
	}
	v.mu.Lock()
	v.workers["a"] = worker{status: v.workers["a"].status, seen: time.Now().Add(-time.Minute), rev: rev}
	v.mu.Unlock()
	v.pruneWorkers(ctx, time.Now())
	if a, ok := known("a"); !ok || a.rev != later || time.Since(a.seen) > time.Minute/2 {
		t.Fatalf("worker a, whose later heartbeat the store holds: known %v at revision %d, want known at %d and seen now", ok, a.rev, later)
	}

	// The store cannot be read: the worker is kept, and asked about later.
	workers.down.Store(true)
	v.mu.Lock()
	v.workers["a"] = worker{status: v.workers["a"].status, seen: time.Now().Add(-time.Minute), rev: later}
	v.mu.Unlock()
	v.pruneWorkers(ctx, time.Now())
	if _, ok := known("a"); !ok {
		t.Fatal("worker a was forgotten while its status could not be read")
	}
	workers.down.Store(false)

	// Silent for the TTL at the revision the store still holds (the
	// bucket drops it a moment later): forgotten, as is a worker the store
	// no longer holds at all.
	v.mu.Lock()
	v.workers["ghost"] = worker{status: job.WorkerStatus{Key: "ghost"}, seen: time.Now().Add(-time.Minute), rev: 1}
	v.mu.Unlock()
	v.pruneWorkers(ctx, time.Now())
	if _, ok := known("a"); ok {
		t.Fatal("worker a, silent for a TTL at the revision the store holds, is still known")
	}
	if _, ok := known("ghost"); ok {
		t.Fatal("a worker whose status the store does not hold is still known")
	}
	if _, ok := known("b"); !ok {
		t.Fatal("worker b, heard of just now, was forgotten")
	}
	if got := v.Running(); len(got) != 1 || got[0].Key != "b" {
		t.Fatalf("running workers %v, want b alone", got)
	}
}
