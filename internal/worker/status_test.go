package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

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
