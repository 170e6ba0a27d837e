package natsx

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
)

// A read of a bucket's entries that missed some (as an ordered consumer
// placed on a replica that lags does, in a cluster) is completed from the
// stream's leader: the keys it missed come back with their values and
// revisions, in revision order; deleted keys stay out.
func TestEntriesMissedByTheReadComeFromTheLeader(t *testing.T) {
	s, ctx := setupStore(t)
	k := s.Ports.Datasets.(kv)
	for _, key := range []string{"p.a", "p.b", "q.x", "p.c", "p.d"} {
		if _, err := k.Put(ctx, key, []byte("value of "+key)); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Delete(ctx, "p.d", 0); err != nil {
		t.Fatal(err)
	}
	whole, err := k.Entries(ctx, "p.")
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(whole); got != "[p.a p.b p.c]" {
		t.Fatalf("entries under p.: %s, want [p.a p.b p.c]", got)
	}

	// A read that saw only p.b.
	subject := "$KV." + k.kv.Bucket() + "."
	st, err := k.js.Stream(ctx, "KV_"+k.kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	partial := []store.Entry{whole[1]}
	got, err := k.completeEntries(ctx, st, "p.", partial, map[string]bool{subject + "p.b": true}, whole[1].Revision)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(whole) {
		t.Fatalf("the completed read is\n%v\nwant the whole read\n%v", got, whole)
	}

	// A read that saw nothing at all.
	if got, err = k.completeEntries(ctx, st, "p.", nil, map[string]bool{}, 0); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(whole) {
		t.Fatalf("the completed empty read is\n%v\nwant the whole read\n%v", got, whole)
	}

	// Nothing under a prefix: nothing added.
	if got, err = k.completeEntries(ctx, st, "none.", nil, map[string]bool{}, 0); err != nil || len(got) != 0 {
		t.Fatalf("entries under none.: %v, %v; want none", got, err)
	}
}

// A read made by a replica that had not yet applied the last writes (a
// file uploaded again, or deleted, just before a listing) is brought up to
// the leader's: a key written again after the read's last sequence comes
// with its new value and revision, a key deleted after it goes, a new key
// comes; what the read saw that nothing changed since stays.
func TestEntriesReadStaleAreBroughtUpToTheLeader(t *testing.T) {
	s, ctx := setupStore(t)
	k := s.Ports.Datasets.(kv)
	for _, key := range []string{"p.a", "p.b", "p.c"} {
		if _, err := k.Put(ctx, key, []byte("first "+key)); err != nil {
			t.Fatal(err)
		}
	}
	stale, err := k.Entries(ctx, "p.")
	if err != nil || len(stale) != 3 {
		t.Fatalf("entries: %v, %v", stale, err)
	}
	// What the leader took after the replica's read.
	if _, err := k.Put(ctx, "p.a", []byte("second p.a")); err != nil {
		t.Fatal(err)
	}
	if err := k.Delete(ctx, "p.b", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Put(ctx, "p.d", []byte("first p.d")); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Put(ctx, "q.x", []byte("elsewhere")); err != nil {
		t.Fatal(err)
	}
	want, err := k.Entries(ctx, "p.")
	if err != nil {
		t.Fatal(err)
	}
	st, err := k.js.Stream(ctx, "KV_"+k.kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	subject := "$KV." + k.kv.Bucket() + "."
	seen := map[string]bool{subject + "p.a": true, subject + "p.b": true, subject + "p.c": true}
	got, err := k.completeEntries(ctx, st, "p.", stale, seen, stale[2].Revision)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || string(got[1].Value) != "second p.a" {
		t.Fatalf("the stale read brought up to the leader is\n%v\nwant\n%v", got, want)
	}
	// A read that is current costs one request and changes nothing.
	if got, err = k.completeEntries(ctx, st, "p.", want, map[string]bool{subject + "p.a": true, subject + "p.c": true, subject + "p.d": true, subject + "p.b": true}, want[len(want)-1].Revision); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("a current read checked: %v, %v; want it as it was", got, err)
	}
}

// A server alone leads every stream and hosts every consumer: a read of
// entries there is whole, and is not checked again.
func TestEntriesOfAServerAloneAreNotCheckedAgain(t *testing.T) {
	s, ctx := setupStore(t)
	k := s.Ports.Datasets.(kv)
	for i := range 1500 { // more than a fetch's batch
		if _, err := k.Put(ctx, fmt.Sprintf("p.%04d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	got, checked, err := k.entries(ctx, "p.")
	if err != nil || len(got) != 1500 || checked {
		t.Fatalf("read %d entries of 1500 (%v), checked against the leader: %v; want all, unchecked", len(got), err, checked)
	}
}

// startCluster starts three embedded servers of a cluster named name,
// with the store set up as the servers of a cluster do (replicas 3).
func startCluster(t *testing.T, name string) ([]*Conn, []*Store) {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	conns := make([]*Conn, 3)
	errs := make(chan error, 3)
	for i := range conns {
		go func() {
			emb, err := StartEmbedded(EmbeddedConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", ServerName: fmt.Sprintf("s%d", i),
				ClusterName: name, ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes}, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Cleanup(func() { _ = emb.Stop(context.Background()) })
				conns[i], err = emb.Connect(name)
			}
			errs <- err
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		t.Cleanup(c.Close)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// As the servers of a cluster do: one makes the streams once the
	// cluster has formed, the others open them.
	var stores []*Store
	for i, c := range conns {
		for {
			var s *Store
			err := Available(ctx, c)
			if err == nil && i == 0 {
				sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
				s, err = Setup(sctx, c, StoreConfig{Replicas: 3, Shared: true})
				scancel()
			} else if err == nil {
				s, err = OpenServer(ctx, c)
			}
			if err == nil {
				stores = append(stores, s)
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("server %d: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return conns, stores
}

// In a cluster of three, a read of entries from each server is whole,
// whichever server its consumer was placed on; one placed elsewhere than
// on the stream's leader is checked against it.
func TestEntriesInAClusterAreWhole(t *testing.T) {
	_, stores := startCluster(t, "entries")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := stores[0].Ports.Datasets.(kv)
	for i := range 300 {
		if _, err := k.Put(ctx, fmt.Sprintf("p.%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 4 {
		for i, s := range stores {
			got, checked, err := s.Ports.Datasets.(kv).entries(ctx, "p.")
			if err != nil || len(got) != 300 {
				t.Fatalf("round %d, server %d: read %d entries of 300 (%v; checked against the leader: %v)", round, i, len(got), err, checked)
			}
		}
	}
}

func keysOf(es []store.Entry) string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return fmt.Sprint(keys)
}
