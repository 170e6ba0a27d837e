package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// Concurrent compare-and-set writers of one JSON record lose no update:
// each conflict reads the record again.
func TestUpdateJSONLosesNoUpdate(t *testing.T) {
	kv := memstore.NewKV()
	ctx := context.Background()
	type counter struct{ N int }
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				if _, _, err := store.UpdateJSON(ctx, kv, "c", func(c *counter, _ bool) (bool, error) { c.N++; return true, nil }); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	c, rev, err := store.UpdateJSON(ctx, kv, "c", func(*counter, bool) (bool, error) { return false, nil })
	if err != nil || c.N != 200 || rev == 0 {
		t.Fatalf("counter %+v at revision %d, %v; want 200", c, rev, err)
	}
}

// electing is a bucket whose first watches are refused, as a store of a
// cluster electing a stream's leader refuses them.
type electing struct {
	store.KV
	mu      sync.Mutex
	refuse  int // watches still to refuse
	refused int
}

var errElecting = errors.New("nats: JetStream system temporarily unavailable")

func (r *electing) Watch(ctx context.Context) (store.Watcher, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse > 0 {
		r.refuse--
		r.refused++
		return nil, errElecting
	}
	return r.KV.Watch(ctx)
}

// A watch the store refuses for a moment is started again: a worker or
// server starting while a leader was elected exited, where it could wait.
// A store that goes on electing is given up on when the caller's context
// ends, with the store's error.
func TestFollowWaitsOutARefusedWatch(t *testing.T) {
	kv := &electing{KV: memstore.NewKV(), refuse: 2}
	if _, err := kv.Put(context.Background(), "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	run, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	var mu sync.Mutex
	seen := map[string]string{}
	apply := func(e *store.Entry) {
		mu.Lock()
		defer mu.Unlock()
		seen[e.Key] = string(e.Value)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := store.Follow(ctx, run, kv, &wg, apply); err != nil {
		t.Fatalf("Follow after %d refused watches: %v", kv.refused, err)
	}
	mu.Lock()
	got := seen["a"]
	mu.Unlock()
	if kv.refused != 2 || got != "1" {
		t.Fatalf("refused %d watches, read a=%q; want 2 refused, then a=1", kv.refused, got)
	}

	never := &electing{KV: memstore.NewKV(), refuse: 1 << 30}
	short, cancelShort := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancelShort()
	if err := store.Follow(short, run, never, &wg, apply); !errors.Is(err, errElecting) {
		t.Fatalf("Follow of a store that refuses every watch: %v, want its error", err)
	}
	if never.refused < 2 {
		t.Fatalf("a refused watch was tried %d times in 500 ms, want it tried again", never.refused)
	}
}
