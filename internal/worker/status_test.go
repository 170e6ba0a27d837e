package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// failingKV refuses its first puts, as a bucket whose leader is being
// elected does.
type failingKV struct {
	*memstore.KV
	fail atomic.Int32
}

func (k *failingKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if k.fail.Add(-1) >= 0 {
		return 0, errors.New("nats: no responders available for request")
	}
	return k.KV.Put(ctx, key, value)
}

// Statuses the store did not take are written again within a second, not
// at the next heartbeat (here an hour away), and the failures are reported
// once a heartbeat, not once each.
func TestFailedHeartbeatIsWrittenAgainSoon(t *testing.T) {
	kv := &failingKV{KV: memstore.NewKV()}
	kv.fail.Store(3)
	r := &reporter{kv: kv, interval: 10 * time.Millisecond, heartbeat: time.Hour,
		status: []job.WorkerStatus{{Key: "pool.0"}, {Key: "pool.1"}}, dirty: make([]bool, 2)}
	// Watched before the reporter starts: every write is seen.
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	w, err := kv.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	var reported atomic.Int32
	done := make(chan struct{})
	go func() {
		r.run(ctx, func(error) { reported.Add(1) })
		close(done)
	}()
	defer func() { cancel(); <-done }()
	written := map[string]bool{}
	for len(written) < 2 {
		select {
		case e := <-w.Updates():
			if e != nil {
				written[e.Key] = true
			}
		case <-wctx.Done():
			t.Fatalf("the statuses were not written again after three failed writes (written: %v)", written)
		}
	}
	if n := reported.Load(); n != 1 {
		t.Fatalf("three failed writes reported %d times; want once a heartbeat", n)
	}
}

// A pool of this pool's name whose process on this host is stopped
// (SIGSTOP, Ctrl-Z) is no dead one, though its heartbeat does not move:
// the new pool refuses to start beside it, saying how to go on; once that
// process is gone, it starts.
func TestAStoppedPoolOfTheSameNameIsNotTakenForDead(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = other.Wait(); close(exited) }()
	t.Cleanup(func() { _ = other.Process.Kill(); <-exited })
	if err := other.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The stop is seen in /proc once the process took it.
	for !stopped(other.Process.Pid) {
		select {
		case <-f.ctx.Done():
			t.Fatal("the other process never showed as stopped")
		case <-time.After(time.Millisecond):
		}
	}
	then := time.Now().Add(-time.Minute).UTC()
	data, _ := json.Marshal(job.WorkerStatus{Key: "test.0", Pool: "test", Host: "here", PID: other.Process.Pid, StartedAt: then, LastSeen: then})
	if _, err := f.store.Workers.Put(f.ctx, "test.0", data); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Store: f.store, Datasets: &dataset.Store{KV: f.store.Datasets, Blocks: f.store.Blocks}, Kinds: f.kinds,
		Concurrency: 1, Name: "test", Host: "here", Logger: slog.New(slog.DiscardHandler)}
	err := New(cfg).Start(f.ctx)
	if !errors.Is(err, ErrNameInUse) || !strings.Contains(err.Error(), fmt.Sprintf("is stopped on this host (process %d", other.Process.Pid)) || !strings.Contains(err.Error(), "kill -CONT") {
		t.Fatalf("a pool started beside a stopped one of its name: %v", err)
	}
	_ = other.Process.Kill()
	<-exited
	p := New(cfg)
	if err := p.Start(f.ctx); err != nil {
		t.Fatalf("once the stopped process is gone: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = p.Stop(ctx)
}

// startPool starts a pool named test of f whose statuses are written
// every heartbeat, and stops it at the end of the test.
func startPool(t *testing.T, f *fixture, heartbeat time.Duration) *Pool {
	t.Helper()
	cfg := Config{Store: f.store, Datasets: &dataset.Store{KV: f.store.Datasets, Blocks: f.store.Blocks}, Kinds: f.kinds,
		Concurrency: 2, Name: "test", Host: "here", Logger: slog.New(slog.DiscardHandler)}
	p := New(cfg)
	p.rep.heartbeat = heartbeat
	if err := p.Start(f.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

// A pool whose name another process took while it was paused (its status
// expired, or another host's heartbeat stood still, and the other wrote
// its own status under the name) finds it at its next write, says so, and
// writes nothing more: neither its statuses over the other's nor, at its
// stop, their deletion. Before, both ran side by side, each overwriting
// the other's statuses.
func TestAPoolWhoseNameWasTakenStops(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	p := startPool(t, f, 20*time.Millisecond)
	then := time.Now().UTC()
	theirs, _ := json.Marshal(job.WorkerStatus{Key: "test.1", Pool: "test", Index: 1, Host: "elsewhere", PID: 42, StartedAt: then, LastSeen: then})
	if _, err := f.store.Workers.Put(f.ctx, "test.1", theirs); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-p.Replaced():
	case <-f.ctx.Done():
		t.Fatal("the pool never noticed that another process took its name")
	}
	if _, ok := errors.AsType[*ReplacedError](err); !ok || !errors.Is(err, ErrNameInUse) || !strings.Contains(err.Error(), "on host elsewhere, process 42") || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("the pool's error: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	e, err := f.store.Workers.Get(f.ctx, "test.1")
	if err != nil || string(e.Value) != string(theirs) {
		t.Fatalf("the other process's status after this pool's stop: %q, %v; want it as it wrote it", e.Value, err)
	}
	if keys, err := f.store.Workers.Keys(f.ctx); err != nil || len(keys) != 1 {
		t.Fatalf("statuses after the stop: %v, %v; want only the other process's (this pool's own one removed)", keys, err)
	}
}

// A pool whose name another process took as it was stopping (the other
// started seeing it leave) finds it at the stop's last write, and leaves
// the other's status as it is.
func TestAPoolStoppingAsItsNameIsTakenLeavesTheOthersStatus(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	p := startPool(t, f, time.Hour)
	then := time.Now().UTC()
	theirs, _ := json.Marshal(job.WorkerStatus{Key: "test.0", Pool: "test", Host: "elsewhere", PID: 42, StartedAt: then, LastSeen: then})
	if _, err := f.store.Workers.Put(f.ctx, "test.0", theirs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	e, err := f.store.Workers.Get(f.ctx, "test.0")
	if err != nil || string(e.Value) != string(theirs) {
		t.Fatalf("the other process's status after this pool's stop: %q, %v; want it as it wrote it", e.Value, err)
	}
	if _, err := f.store.Workers.Get(f.ctx, "test.1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("this pool's own other status after its stop: %v; want it removed", err)
	}
}

// A status that expired while its process was paused, with nobody taking
// the name, is written again, and the pool goes on; its stop removes it.
func TestAnExpiredStatusIsWrittenAgain(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	p := startPool(t, f, 20*time.Millisecond)
	w, err := f.store.Workers.Watch(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for e := range w.Updates() { // what is there: the end is a nil
		if e == nil {
			break
		}
	}
	if err := f.store.Workers.Delete(f.ctx, "test.0", 0); err != nil {
		t.Fatal(err)
	}
	for back := false; !back; {
		select {
		case e := <-w.Updates():
			back = e != nil && e.Key == "test.0" && !e.Deleted
		case err := <-p.Replaced():
			t.Fatalf("a pool whose status expired took itself for replaced: %v", err)
		case <-f.ctx.Done():
			t.Fatal("the expired status was never written again")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if keys, err := f.store.Workers.Keys(f.ctx); err != nil || len(keys) != 0 {
		t.Fatalf("statuses left after the stop: %v, %v", keys, err)
	}
}

// lostAnswerKV stores an update and then answers with an error, once, as a
// store whose answer was lost does.
type lostAnswerKV struct {
	*memstore.KV
	lose atomic.Bool
}

func (k *lostAnswerKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	n, err := k.KV.Update(ctx, key, value, rev)
	if err == nil && k.lose.CompareAndSwap(true, false) {
		return 0, context.DeadlineExceeded
	}
	return n, err
}

// A write of the pool's own whose answer was lost leaves the stored
// revision ahead of the pool's: the next write finds its own status there
// and goes on, rather than taking itself for replaced.
func TestAStatusWriteWhoseAnswerWasLostIsNoReplacement(t *testing.T) {
	kv := &lostAnswerKV{KV: memstore.NewKV()}
	now := time.Now().UTC()
	r := &reporter{kv: kv, interval: time.Hour, heartbeat: time.Hour,
		status: []job.WorkerStatus{{Key: "pool.0", Pool: "pool", Host: "here", PID: 7, StartedAt: now}}, dirty: make([]bool, 1)}
	ctx := context.Background()
	for i, lose := range []bool{false, true, false, false} {
		kv.lose.Store(lose)
		err := r.flush(ctx, true, now.Add(time.Duration(i)*time.Second))
		if lose != (err != nil) {
			t.Fatalf("write %d (answer lost: %v): %v", i, lose, err)
		}
	}
	e, err := kv.Get(ctx, "pool.0")
	var s job.WorkerStatus
	if err != nil || json.Unmarshal(e.Value, &s) != nil || !s.LastSeen.Equal(now.Add(3*time.Second)) || r.replaced != nil {
		t.Fatalf("after a lost answer: the status %+v (%v), replaced %v", s, err, r.replaced)
	}
}

// staleKV answers a get with the entry given, as a follower that has not
// seen the last writes does.
type staleKV struct {
	*lostAnswerKV
	stale *store.Entry
}

func (k *staleKV) Get(ctx context.Context, key string) (store.Entry, error) {
	if k.stale != nil {
		return *k.stale, nil
	}
	return k.KV.Get(ctx, key)
}

// A read answered by a copy older than the pool's last write decides
// nothing, even when it holds another process's status (the pool's
// previous process, before a restart under the same name): the write is
// tried again, not taken for a replacement.
func TestAStaleReadIsNoReplacement(t *testing.T) {
	kv := &staleKV{lostAnswerKV: &lostAnswerKV{KV: memstore.NewKV()}}
	now := time.Now().UTC()
	old, _ := json.Marshal(job.WorkerStatus{Key: "pool.0", Pool: "pool", Host: "here", PID: 6, StartedAt: now.Add(-time.Hour)})
	ctx := context.Background()
	first, err := kv.Put(ctx, "pool.0", old)
	if err != nil {
		t.Fatal(err)
	}
	r := &reporter{kv: kv, interval: time.Hour, heartbeat: time.Hour,
		status: []job.WorkerStatus{{Key: "pool.0", Pool: "pool", Host: "here", PID: 7, StartedAt: now}}, dirty: make([]bool, 1)}
	if err := r.flush(ctx, true, now); err != nil {
		t.Fatal(err)
	}
	kv.lose.Store(true)
	if err := r.flush(ctx, true, now.Add(time.Second)); err == nil {
		t.Fatal("a write whose answer was lost reported no error")
	}
	kv.stale = &store.Entry{Key: "pool.0", Value: old, Revision: first}
	if err := r.flush(ctx, true, now.Add(2*time.Second)); err == nil || r.replaced != nil {
		t.Fatalf("a write after a stale read: %v, replaced %v; want an error to try again, and no replacement", err, r.replaced)
	}
	kv.stale = nil
	if err := r.flush(ctx, true, now.Add(3*time.Second)); err != nil || r.replaced != nil {
		t.Fatalf("once the read is current: %v, replaced %v", err, r.replaced)
	}
}

// blockingKV's puts wait until their ctx ends, as a store that does not
// answer.
type blockingKV struct {
	*memstore.KV
	entered chan struct{}
}

func (k *blockingKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	k.entered <- struct{}{}
	<-ctx.Done()
	return 0, ctx.Err()
}

// A flush waits for one in flight only until its own ctx ends: the
// pool's stop is not held by a heartbeat stuck on a store that does not
// answer.
func TestAFlushDoesNotWaitPastItsDeadline(t *testing.T) {
	kv := &blockingKV{KV: memstore.NewKV(), entered: make(chan struct{}, 1)}
	r := &reporter{kv: kv, interval: time.Hour, heartbeat: time.Hour,
		status: []job.WorkerStatus{{Key: "pool.0"}}, dirty: make([]bool, 1)}
	stuck, release := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.flush(stuck, true, time.Now()); close(done) }()
	defer func() { release(); <-done }()
	<-kv.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	returned := make(chan struct{})
	go func() { _ = r.flush(ctx, true, time.Now()); close(returned) }()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("a flush waited behind a stuck one past its own deadline")
	}
}
