package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// A process's watch of the job bucket takes the records that process
// wrote as they were, without decoding them again, and decodes the
// rest: earlier revisions, and records written by another process.
func TestAWatchTakesTheRecordsItsProcessWrote(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := memstore.NewKV()
	mine, other := &store.Jobs{KV: kv}, &store.Jobs{KV: kv}
	w, err := kv.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func() *store.Entry {
		t.Helper()
		for {
			select {
			case e := <-w.Updates():
				if e != nil {
					return e
				}
			case <-ctx.Done():
				t.Fatal("no entry from the watch")
			}
		}
	}
	same := func(what string, got, want *job.Job) {
		t.Helper()
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if string(g) != string(w) {
			t.Fatalf("%s: record %s, want %s", what, g, w)
		}
	}
	// taken reports whether got is the written record (its params shared),
	// not a decoding of its bytes.
	taken := func(got, written *job.Job) bool { return &got.Params[0] == &written.Params[0] }

	j := job.New("noop_01jz0000000000000000000000", job.Spec{Kind: "noop", Partitions: 2, Params: json.RawMessage(`{"n":1}`)}, time.Now())
	rev, err := mine.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	want := j.Clone()
	j.State = job.Failed // the writer's own copy changes after the write
	e := next()
	got, err := mine.Watched(e)
	if err != nil || !taken(got, j) {
		t.Fatalf("the watch decoded the record this process wrote (%v)", err)
	}
	same("taken", got, want)
	if again, _ := mine.Watched(e); again == got || taken(again, j) {
		t.Fatal("a written record was given twice")
	}

	// Two writes before the watch reads the first: the first is decoded
	// (what was remembered is the second), the second taken.
	j1 := want.Clone()
	j1.Done = 1
	if rev, err = mine.Update(ctx, j1, rev); err != nil {
		t.Fatal(err)
	}
	j2 := j1.Clone()
	j2.Done = 2
	if rev, err = mine.Update(ctx, j2, rev); err != nil {
		t.Fatal(err)
	}
	if got, _ := mine.Watched(next()); taken(got, j1) || got.Done != 1 {
		t.Fatalf("the first of two writes: done %d, taken %v; want decoded, done 1", got.Done, taken(got, j1))
	}
	if got, _ := mine.Watched(next()); !taken(got, j2) || got.Done != 2 {
		t.Fatalf("the second of two writes: done %d, taken %v; want taken, done 2", got.Done, taken(got, j2))
	}

	// Another process's write is decoded.
	j3 := j2.Clone()
	j3.Done = 3
	if _, err = other.Update(ctx, j3, rev); err != nil {
		t.Fatal(err)
	}
	if got, _ := mine.Watched(next()); taken(got, j3) || got.Done != 3 {
		t.Fatalf("another process's write: done %d, taken %v; want decoded, done 3", got.Done, taken(got, j3))
	}

	// A deletion reads as nil.
	if err := mine.Delete(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	if e := next(); !e.Deleted {
		t.Fatalf("entry %+v after the delete", e)
	} else if got, err := mine.Watched(e); got != nil || err != nil {
		t.Fatalf("a deletion read as %+v, %v", got, err)
	}
}
