package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
