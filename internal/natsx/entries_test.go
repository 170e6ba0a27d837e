package natsx

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/store"
)

// A read of a bucket's entries that missed some (as an ordered consumer
// placed on a replica that lags does, in a cluster) is completed from the
// stream's leader: the keys it missed come back with their values and
// revisions, in revision order; deleted keys stay out.
func TestEntriesMissedByTheReadComeFromTheLeader(t *testing.T) {
	nc := embedded(t, t.TempDir(), "entries")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Setup(ctx, nc, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
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
	partial := []store.Entry{whole[1]}
	got, err := k.completeEntries(ctx, "p.", partial, map[string]bool{subject + "p.b": true})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(whole) {
		t.Fatalf("the completed read is\n%v\nwant the whole read\n%v", got, whole)
	}

	// A read that saw nothing at all.
	if got, err = k.completeEntries(ctx, "p.", nil, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(whole) {
		t.Fatalf("the completed empty read is\n%v\nwant the whole read\n%v", got, whole)
	}

	// Nothing under a prefix: nothing added.
	if got, err = k.completeEntries(ctx, "none.", nil, map[string]bool{}); err != nil || len(got) != 0 {
		t.Fatalf("entries under none.: %v, %v; want none", got, err)
	}
}

func keysOf(es []store.Entry) string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return fmt.Sprint(keys)
}
