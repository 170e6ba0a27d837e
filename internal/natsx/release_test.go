package natsx

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
)

// A task held by a process that died is given back by another process
// with its lease, the delivery's acknowledgement subject: it is delivered
// again at once, counted as a second delivery, not after the ack wait (10
// minutes here). A lease that is not one refuses.
func TestReleaseGivesAHeldTaskBackAtOnce(t *testing.T) {
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emb.Stop(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(name string) *Store {
		t.Helper()
		nc, err := emb.Connect(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		s, err := Setup(ctx, nc, StoreConfig{AckWait: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	dead, other := open("dead"), open("other")
	if err := dead.Ports.Tasks.Publish(ctx, store.Message{Key: "nap_1", Data: []byte(`{}`)})[0]; err != nil {
		t.Fatal(err)
	}
	var lease string
	for lease == "" {
		if err := dead.Ports.Tasks.Fetch(ctx, 1, time.Second, func(d store.Delivery) { lease = d.Lease() }); err != nil {
			t.Fatal(err)
		}
	}
	// Held: nothing to deliver.
	if err := other.Ports.Tasks.Fetch(ctx, 1, 200*time.Millisecond, func(d store.Delivery) {
		t.Errorf("delivered %s while its lease runs", d.Key())
	}); err != nil {
		t.Fatal(err)
	}
	if err := other.Ports.Tasks.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got == 0 {
		if err := other.Ports.Tasks.Fetch(ctx, 1, time.Second, func(d store.Delivery) {
			got++
			if d.Key() != "nap_1" || d.Delivered() != 2 {
				t.Errorf("delivered %s, delivery %d; want nap_1's second", d.Key(), d.Delivered())
			}
			_ = d.Ack()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Ports.Tasks.Release(ctx, "mr.task.nap_1"); err == nil {
		t.Error("a release of a subject that is no acknowledgement's was sent")
	}
}
