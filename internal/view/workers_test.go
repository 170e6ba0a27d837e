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

// A worker's process that goes while it runs a task leaves the view
// knowing which worker ran that attempt, and since when: a pool
// restarted under the same name (a new process id), or a status that
// goes (expired, deleted). A worker that goes idle, or a task that moves
// on to another, leaves nothing; nor does a run of another epoch or copy.
func TestTheWorkerOfALostRunIsRemembered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := memstore.New(memstore.Config{})
	hub := event.NewHub()
	v := New(Config{Store: st, Hub: hub, Logger: slog.New(slog.DiscardHandler)})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(ctx) })
	<-v.Ready()
	sub := hub.Subscribe(64)
	defer hub.Unsubscribe(sub)
	// await waits for the event of worker key's change, which the view
	// sends once it applied it.
	await := func(typ, key string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case e := <-sub.C:
				switch d := e.Data.(type) {
				case job.WorkerStatus:
					if e.Type == typ && d.Key == key {
						return
					}
				case map[string]string:
					if e.Type == typ && d["key"] == key {
						return
					}
				}
			case <-timeout:
				t.Fatalf("no %s event of worker %s", typ, key)
			}
		}
	}
	began := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	put := func(key string, pid int, s job.WorkerStatus) {
		t.Helper()
		s.Key, s.Pool, s.PID, s.Host, s.LastSeen = key, "p", pid, "h", time.Now()
		if s.Busy {
			s.TaskStartedAt = &began
		}
		b, _ := json.Marshal(s)
		if _, err := st.Workers.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
		await("worker.status", key)
	}
	task := func(id string, partition, attempt int) job.WorkerStatus {
		return job.WorkerStatus{Busy: true, JobID: id, Phase: job.PhaseMap, Partition: partition, Attempt: attempt, Epoch: 1}
	}
	lost := func(id string, partition, attempt int) job.TaskResult {
		return job.TaskResult{Job: id, Phase: job.PhaseMap, Partition: partition, Attempt: attempt, Epoch: 1, Outcome: job.OutcomeLost}
	}

	put("p.1", 10, task("a", 0, 1))
	put("p.1", 10, task("a", 0, 2))    // the same process moved on
	put("p.1", 11, job.WorkerStatus{}) // restarted: the old process went mid-attempt 2
	put("p.2", 20, task("b", 3, 1))
	put("p.2", 20, job.WorkerStatus{}) // went idle
	if err := st.Workers.Delete(ctx, "p.2", 0); err != nil {
		t.Fatal(err)
	}
	await("worker.left", "p.2")
	put("p.3", 30, task("c", 1, 4))
	if err := st.Workers.Delete(ctx, "p.3", 0); err != nil { // its status went mid-run
		t.Fatal(err)
	}
	await("worker.left", "p.3")

	for _, c := range []struct {
		r      job.TaskResult
		worker string
	}{
		{lost("a", 0, 2), "p.1"},
		{lost("a", 0, 1), ""},
		{lost("b", 3, 1), ""},
		{lost("c", 1, 4), "p.3"},
		{func() job.TaskResult { r := lost("c", 1, 4); r.Epoch = 2; return r }(), ""},
		{func() job.TaskResult { r := lost("c", 1, 4); r.Backup = true; return r }(), ""},
	} {
		w, started, ok := v.LostRun(c.r)
		if w != c.worker || ok != (c.worker != "") || ok && !started.Equal(began) {
			t.Errorf("lost run of job %s, partition %d, attempt %d, epoch %d, backup %v: worker %q (%v), started %v; want %q",
				c.r.Job, c.r.Partition, c.r.Attempt, c.r.Epoch, c.r.Backup, w, ok, started, c.worker)
		}
	}
}
