package natsx

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// entry is a bucket entry as the library's watch hands it over.
type entry struct {
	key string
	rev uint64
}

func (e entry) Bucket() string                  { return "t" }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return nil }
func (e entry) Revision() uint64                { return e.rev }
func (e entry) Created() time.Time              { return time.Time{} }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// silent is the library's watch when the last stored entries left the
// bucket before they were delivered: it never says the stored ones are
// passed (no nil), and hands over only what the test gives it. Stopped,
// it closes its channel, as the library does once its subscription ended.
type silent struct{ ch chan jetstream.KeyValueEntry }

func (s silent) Updates() <-chan jetstream.KeyValueEntry { return s.ch }
func (s silent) Stop() error                             { close(s.ch); return nil }

// A watch says its stored entries are passed even when the library never
// does (the last of them left the bucket before their delivery: a server's
// start once waited for ever in CI): once they stop coming and the bucket
// holds none after the last one passed on, or before an entry written
// after the watch began; the library's own nil after that is dropped.
func TestAWatchSaysItsStoredEntriesArePassedWhenTheLibraryDoesNot(t *testing.T) {
	defer func(d time.Duration) { watchStuck = d }(watchStuck)
	watchStuck = 200 * time.Millisecond
	nc := embedded(t, t.TempDir(), "watch")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(nc.nc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := b.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, "KV_t")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV.t.k4")); err != nil { // the last stored entry leaves
		t.Fatal(err)
	}
	next := func(w *watcher, what string) *store.Entry {
		t.Helper()
		select {
		case e := <-w.Updates():
			return e
		case <-ctx.Done():
			t.Fatalf("no %s", what)
		}
		return nil
	}
	start := func() (*watcher, silent) {
		lib := silent{ch: make(chan jetstream.KeyValueEntry, 16)}
		w := &watcher{w: lib, st: st, bucket: "t", stored: 5, ch: make(chan *store.Entry), stop: make(chan struct{}), done: make(chan struct{})}
		go w.run(ctx)
		t.Cleanup(w.Stop)
		return w, lib
	}

	// The library hands over the four left, and nothing more.
	w, lib := start()
	for i := range 4 {
		lib.ch <- entry{fmt.Sprintf("k%d", i), uint64(i + 1)}
	}
	for i := range 4 {
		if e := next(w, "stored entry"); e == nil || e.Revision != uint64(i+1) {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	if e := next(w, "end of the stored entries"); e != nil {
		t.Fatalf("after the stored entries: %+v; want nil", e)
	}
	lib.ch <- nil // the library's, late: dropped
	lib.ch <- entry{"k9", 9}
	if e := next(w, "live entry"); e == nil || e.Revision != 9 {
		t.Fatalf("after the library's late nil: %+v; want the live entry", e)
	}

	// An entry written after the watch began comes after every stored one.
	w, lib = start()
	lib.ch <- entry{"k0", 1}
	lib.ch <- entry{"k7", 7}
	if e := next(w, "stored entry"); e == nil || e.Revision != 1 {
		t.Fatalf("first entry: %+v", e)
	}
	if e := next(w, "end of the stored entries"); e != nil {
		t.Fatalf("before a live entry: %+v; want nil", e)
	}
	if e := next(w, "live entry"); e == nil || e.Revision != 7 {
		t.Fatalf("the live entry: %+v", e)
	}
}

// A watch stopped while the library holds entries no one took (more than
// its channel's 256) leaves nothing running: the library's delivery
// goroutine waited on its channel for good.
func TestAStoppedWatchLeavesNothingRunning(t *testing.T) {
	s, ctx := setupStore(t)
	for i := range 600 {
		if _, err := s.Ports.Datasets.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	const library = "jetstream.(*kvs).WatchFiltered"
	before := goroutinesIn(library)
	w, err := s.Ports.Datasets.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e := <-w.Updates(); e == nil {
		t.Fatal("the watch's first entry is nil; want a stored entry")
	}
	// The library's channel full: its delivery goroutine waits to hand
	// over the next entry.
	lib := w.(*watcher).w.Updates()
	for deadline := time.Now().Add(10 * time.Second); len(lib) < cap(lib); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the library holds %d entries of 600, not the %d its channel takes", len(lib), cap(lib))
		}
	}
	w.Stop()
	if n := goroutinesIn(library); n > before {
		t.Fatalf("%d goroutines in %s after the watch stopped, %d before it began", n, library, before)
	}
}
