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
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("is stopped on this host (process %d", other.Process.Pid)) || !strings.Contains(err.Error(), "kill -CONT") {
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
