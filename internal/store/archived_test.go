package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// mute is an archive that holds nothing this server has read and cannot
// say how far it goes (its stream does not answer).
type mute struct{ empty *memstore.KV }

func (mute) Append(context.Context, string, []byte) (uint64, error) { return 0, errors.New("mute") }
func (mute) Read(context.Context, uint64) (string, []byte, error) {
	return "", nil, store.ErrNotFound
}
func (mute) Remove(context.Context, uint64) error { return nil }
func (mute) Last(context.Context) (uint64, error) {
	return 0, errors.New("context deadline exceeded")
}
func (m mute) Follow(ctx context.Context) (store.Watcher, error) { return m.empty.Watch(ctx) }

// A job in neither the bucket nor the part of the archive this server has
// read, whose archive does not say how far it goes, is not reported as
// missing: it may have finished and moved there while this server was
// paused (a server just continued answered 404 for such a job).
func TestAJobTheArchiveCannotAnswerForIsNotMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	jobs := &store.Jobs{KV: memstore.NewKV(), Archive: mute{memstore.NewKV()}}
	w, err := jobs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	_, _, err = jobs.Get(ctx, "noop_01m8ywrh8dfghcfehm908sgdv1")
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get with the archive mute: %v; want an error other than not found", err)
	}
}

// listArchive is an archive in memory, of the records given, whose Read
// answers not found once for the sequences in missOnce (a stream's leader
// that lagged, or a stale one on the far side of a partition).
type listArchive struct {
	mu       sync.Mutex
	keys     []string
	data     [][]byte
	missOnce map[uint64]bool
}

func (a *listArchive) Append(_ context.Context, key string, data []byte) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.keys, a.data = append(a.keys, key), append(a.data, data)
	return uint64(len(a.keys)), nil
}

func (a *listArchive) Read(_ context.Context, seq uint64) (string, []byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.missOnce[seq] {
		delete(a.missOnce, seq)
		return "", nil, store.ErrNotFound
	}
	if seq == 0 || seq > uint64(len(a.keys)) {
		return "", nil, store.ErrNotFound
	}
	return a.keys[seq-1], a.data[seq-1], nil
}

func (a *listArchive) Remove(context.Context, uint64) error { return nil }

func (a *listArchive) Last(context.Context) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return uint64(len(a.keys)), nil
}

// Follow sends the records there, then nil; none appended later.
func (a *listArchive) Follow(context.Context) (store.Watcher, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := &listWatcher{ch: make(chan *store.Entry, len(a.keys)+1)}
	for i, key := range a.keys {
		w.ch <- &store.Entry{Key: key, Value: a.data[i], Revision: uint64(i + 1)}
	}
	w.ch <- nil
	return w, nil
}

type listWatcher struct{ ch chan *store.Entry }

func (w *listWatcher) Updates() <-chan *store.Entry { return w.ch }
func (w *listWatcher) Stop()                        {}

// watched returns jobs over archive, which it gives a succeeded record of
// each id, once its watch has passed the stored records: the index holds
// their copies. The watch stops with the test.
func watched(ctx context.Context, t *testing.T, archive store.Archive, ids ...string) *store.Jobs {
	t.Helper()
	for _, id := range ids {
		record, err := json.Marshal(&job.Job{ID: id, Kind: "noop", Partitions: 1, State: job.Succeeded})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := archive.Append(ctx, id, record); err != nil {
			t.Fatal(err)
		}
	}
	jobs := &store.Jobs{KV: memstore.NewKV(), Archive: archive}
	w, err := jobs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	for e := range w.Updates() {
		if e == nil {
			break // the archive read, and the bucket
		}
	}
	return jobs
}

// A read of a finished job's archived copy that the archive answers "not
// found" once (its stream's leader lagged, or led no more on the far side
// of a partition) does not make the server forget the copy: the next read
// finds it. (The copy was dropped from the index at the first such answer,
// and the job answered 404 by that server for good: a partition test saw a
// job its read model showed succeeded whose history was 404 for 30 s.)
func TestACopyReadNotFoundOnceIsNotForgotten(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := "noop_01m8ywrh8dfghcfehm908sgdv1"
	jobs := watched(ctx, t, &listArchive{missOnce: map[uint64]bool{1: true}}, id)
	if _, _, err := jobs.Get(ctx, id); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the first read, whose copy the archive answered not found: %v; want an error other than not found (the index holds a copy)", err)
	}
	j, _, err := jobs.Get(ctx, id)
	if err != nil || j.State != job.Succeeded {
		t.Fatalf("the second read: %+v %v; want the job, succeeded", j, err)
	}
}

// refusing is an archive that refuses every removal (its store is gone)
// and counts the tries.
type refusing struct {
	listArchive
	tries atomic.Int32
}

func (a *refusing) Remove(ctx context.Context, _ uint64) error {
	a.tries.Add(1)
	return errors.New("nats: connection closed")
}

// A removal left for the background (a deleted job's copy the archive
// refused to remove) ends with Stop, within its bound, instead of trying
// again for 20 s after its server stopped; later ones are dropped. The
// package's goleak check sees what is left running.
func TestStopEndsTheBackgroundRemovals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	archive := &refusing{}
	ids := []string{"noop_01m8ywrh8dfghcfehm908sgdv1", "noop_01m8ywrh8dfghcfehm908sgdv2"}
	jobs := watched(ctx, t, archive, ids...)
	if err := jobs.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	for archive.tries.Load() < 2 { // the delete's own, then the background's
		select {
		case <-ctx.Done():
			t.Fatal("the refused removal was not tried again in the background")
		case <-time.After(10 * time.Millisecond):
		}
	}
	start := time.Now()
	jobs.Stop(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop took %v; want at most its 2 s bound and a little", d)
	}
	tries := archive.tries.Load()
	if err := jobs.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	// A second Stop waits for a background removal, were one started
	// after the first: its first try would be counted by then.
	jobs.Stop(ctx)
	if n := archive.tries.Load(); n != tries+1 {
		t.Fatalf("%d removals tried after Stop; want only the delete's own", n-tries)
	}
}

// counted is an archive whose removals are counted.
type counted struct {
	listArchive
	removals atomic.Int32
}

func (a *counted) Remove(context.Context, uint64) error {
	a.removals.Add(1)
	return nil
}

// A server's watch removes the copies of a job deleted by another process
// that died before removing them (its look comes a moment after the
// deletion), and a look not made yet when the watch stops is dropped with
// it: nothing of it runs on.
func TestAWatchRemovesTheCopiesADeleterLeft(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ids := []string{"noop_01m8ywrh8dfghcfehm908sgdv1", "noop_01m8ywrh8dfghcfehm908sgdv2"}
	deleteOnly := func(jobs *store.Jobs, id string) { // as a deleter that died
		t.Helper()
		if _, err := jobs.KV.Put(ctx, id, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if err := jobs.KV.Delete(ctx, id, 0); err != nil {
			t.Fatal(err)
		}
	}

	defer store.SetSeenDeletedAfter(50 * time.Millisecond)()
	archive := &counted{}
	deleteOnly(watched(ctx, t, archive, ids[0]), ids[0])
	for archive.removals.Load() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the copy of a job deleted elsewhere was not removed by the watch that saw its deletion")
		case <-time.After(10 * time.Millisecond):
		}
	}

	store.SetSeenDeletedAfter(time.Minute)
	archive = &counted{}
	jobs := &store.Jobs{KV: memstore.NewKV(), Archive: archive}
	if _, err := archive.Append(ctx, ids[1], []byte(`{"id":"`+ids[1]+`","kind":"noop","partitions":1,"state":"succeeded"}`)); err != nil {
		t.Fatal(err)
	}
	w, err := jobs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for e := range w.Updates() {
		if e == nil {
			break
		}
	}
	deleteOnly(jobs, ids[1])
	for e := range w.Updates() {
		if e != nil && e.Key == ids[1] { // the deletion, seen
			break
		}
	}
	w.Stop()
	for deadline := time.Now().Add(5 * time.Second); removing() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the look for a deleted job's copy still waits 5 s after its watch stopped")
		}
	}
	if n := archive.removals.Load(); n != 0 {
		t.Fatalf("%d removals after the watch stopped; want the look dropped", n)
	}
}

// refusingOnce is an archive that refuses the first removal of each copy
// (as a store that was electing a leader) and counts the others.
type refusingOnce struct {
	listArchive
	mu       sync.Mutex
	refused  map[uint64]bool
	removals atomic.Int32
}

func (a *refusingOnce) Remove(_ context.Context, seq uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.refused[seq] {
		a.refused[seq] = true
		return errors.New("nats: no response from stream")
	}
	a.removals.Add(1)
	return nil
}

// A copy whose removal a delete could not make is removed in the
// background at once, ahead of the looks the watch queued for the copies of
// jobs deleted elsewhere, which are due later: it waited behind all of
// them (a retention sweep of 100,000 jobs queues 100,000 looks on every
// server, each a read of the archive's leader).
func TestARemovalLeftByADeleteGoesBeforeTheWatchsLooks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer store.SetSeenDeletedAfter(time.Minute)()
	ids := []string{"noop_01m8ywrh8dfghcfehm908sgdv1", "noop_01m8ywrh8dfghcfehm908sgdv2"}
	archive := &refusingOnce{refused: map[uint64]bool{}}
	jobs := &store.Jobs{KV: memstore.NewKV(), Archive: archive}
	for _, id := range ids {
		if _, err := archive.Append(ctx, id, []byte(`{"id":"`+id+`","kind":"noop","partitions":1,"state":"succeeded"}`)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := jobs.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e == nil {
			break
		}
	}
	// Deleted elsewhere, by a deleter that died: this server's watch
	// queues a look for its copy, due in a minute.
	if _, err := jobs.KV.Put(ctx, ids[0], []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := jobs.KV.Delete(ctx, ids[0], 0); err != nil {
		t.Fatal(err)
	}
	for e := range w.Updates() {
		if e != nil && e.Key == ids[0] && e.Deleted {
			break
		}
	}
	// Deleted here: the archive refuses the delete's removal of its copy,
	// which is left to the background.
	if err := jobs.Delete(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	for archive.removals.Load() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the removal a delete left to the background waited behind a look due in a minute")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// removing counts the goroutines of background removals.
func removing() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "store.(*Jobs).removeQueued")
}
