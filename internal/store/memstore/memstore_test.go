package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
	"github.com/mrcluster/mrcluster/internal/store/storetest"
)

func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) *store.Store {
		return memstore.New(memstore.Config{AckWait: storetest.AckWait})
	})
}

// A delivery's lease given back by another holder is delivered again at
// once (the ack wait here is ten minutes); a lease of an earlier delivery
// gives nothing back.
func TestReleaseGivesTheLatestDeliveryBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := memstore.New(memstore.Config{AckWait: 10 * time.Minute})
	if err := s.Tasks.Publish(ctx, store.Message{Key: "nap_1", Data: []byte("t")})[0]; err != nil {
		t.Fatal(err)
	}
	take := func(wait time.Duration) []store.Delivery {
		t.Helper()
		var ds []store.Delivery
		if err := s.Tasks.Fetch(ctx, 1, wait, func(d store.Delivery) { ds = append(ds, d) }); err != nil {
			t.Fatal(err)
		}
		return ds
	}
	first := take(5 * time.Second)
	if len(first) != 1 {
		t.Fatalf("fetched %d messages, want 1", len(first))
	}
	if err := s.Tasks.Release(ctx, first[0].Lease()); err != nil {
		t.Fatal(err)
	}
	second := take(time.Second)
	if len(second) != 1 || second[0].Delivered() != 2 {
		t.Fatalf("a released message was not delivered again at once, as its second delivery (%d)", len(second))
	}
	if err := s.Tasks.Release(ctx, first[0].Lease()); err != nil {
		t.Fatal(err)
	}
	if again := take(100 * time.Millisecond); len(again) != 0 {
		t.Errorf("a release of an earlier delivery gave the message back again")
	}
	if err := s.Tasks.Release(ctx, "nonsense"); err == nil {
		t.Error("a lease that is no delivery's was taken")
	}
}
