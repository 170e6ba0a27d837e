package natsx

import (
	"encoding/json"
	"testing"
	"time"
)

// A worker process reads the room of the cluster's stores from the
// servers' probes: the least of the recent ones; a probe without a room,
// an old one, and another value of the bucket (a lease) do not count.
func TestRoomFromTheProbes(t *testing.T) {
	s, ctx := setupStore(t)
	if _, err := s.RoomFunc()(); err == nil {
		t.Fatal("a room read with no probe written")
	}
	big, small, older := int64(900<<20), int64(40<<20), int64(1<<20)
	if err := s.Probe(ctx, "server-a", &big); err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(ctx, "server-b", &small); err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(ctx, "server-c", nil); err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(probe{At: time.Now().Add(-time.Minute), Room: &older})
	if _, err := s.Health.Put(ctx, "server-d", old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Health.Put(ctx, "reconcile", []byte(time.Now().Format(time.RFC3339Nano)+" server-a")); err != nil {
		t.Fatal(err)
	}
	room, err := s.RoomFunc()()
	if err != nil || room != small {
		t.Fatalf("room %d, %v; want %d, the least of the recent probes", room, err, small)
	}
}
