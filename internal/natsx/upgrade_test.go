package natsx

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// A store made by a version before priority lanes (one consumer of the
// whole task stream, tasks on mr.task.<job>) opens, and its queued tasks
// are still delivered: the old consumer becomes the default lane's.
func TestSetupUpgradesTheTaskConsumer(t *testing.T) {
	nc := embedded(t, t.TempDir(), "upgrade")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc.nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: TasksStream, Subjects: []string{TaskSubject + ">"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: WorkersConsumer, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, TaskSubject+"noop_01m8r2ryk6x0mek2na9q3n7xyj", []byte("old")); err != nil {
		t.Fatal(err)
	}
	s, err := Setup(ctx, nc, StoreConfig{AckWait: time.Second})
	if err != nil {
		t.Fatalf("setup over a store of an earlier version: %v", err)
	}
	var got []string
	if err := s.Ports.Tasks.Fetch(ctx, 10, time.Second, func(d store.Delivery) { got = append(got, d.Key()+"/"+string(d.Data())); _ = d.Ack() }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "noop_01m8r2ryk6x0mek2na9q3n7xyj/old" {
		t.Fatalf("the task queued before the upgrade: %v", got)
	}
}
