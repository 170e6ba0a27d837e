package store_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// Roomy refuses at once an object of known size larger than the room left,
// and puts the others: of unknown size, small, or within the room.
func TestRoomyRefusesWhatDoesNotFit(t *testing.T) {
	ctx := context.Background()
	room := int64(3 << 20)
	b := store.Roomy{Blobs: memstore.New(memstore.Config{}).Output, Room: func() (int64, error) { return room, nil }}
	big := bytes.Repeat([]byte("x"), 4<<20)

	if err := b.Put(ctx, "big", bytes.NewReader(big)); !errors.Is(err, store.ErrNoRoom) {
		t.Fatalf("4 MiB in memory with 3 MiB of room: %v", err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "staged"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(big); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "big", f); !errors.Is(err, store.ErrNoRoom) {
		t.Fatalf("a file of 4 MiB with 3 MiB of room: %v", err)
	}
	if _, err := f.Seek(2<<20, io.SeekStart); err != nil { // 2 MiB left to read
		t.Fatal(err)
	}
	if err := b.Put(ctx, "half", f); err != nil {
		t.Fatalf("the last 2 MiB of a file with 3 MiB of room: %v", err)
	}
	if err := b.Put(ctx, "unknown", io.MultiReader(bytes.NewReader(big))); err != nil {
		t.Fatalf("an object of unknown size is put (the store refuses it if it must): %v", err)
	}
	room = 0
	if err := b.Put(ctx, "small", bytes.NewReader(big[:1000])); err != nil {
		t.Fatalf("a small object is put without asking: %v", err)
	}
	if got, err := b.GetBytes(ctx, "half"); err != nil || len(got) != 2<<20 {
		t.Fatalf("the object put: %d bytes, %v", len(got), err)
	}
}

// blocking holds every Put until released.
type blocking struct {
	store.Blobs
	entered, release chan struct{}
}

func (b blocking) Put(ctx context.Context, name string, r io.Reader) error {
	b.entered <- struct{}{}
	<-b.release
	return b.Blobs.Put(ctx, name, r)
}

// Two outputs that each fit in the room, and not both: the second is
// refused while the first is being put.
func TestRoomyCountsThePutsUnderWay(t *testing.T) {
	ctx := context.Background()
	inner := blocking{Blobs: memstore.New(memstore.Config{}).Output, entered: make(chan struct{}), release: make(chan struct{})}
	b := store.Roomy{Blobs: inner, Room: func() (int64, error) { return 5 << 20, nil }, Putting: new(atomic.Int64)}
	data := bytes.Repeat([]byte("y"), 3<<20)
	first := make(chan error, 1)
	go func() { first <- b.Put(ctx, "first", bytes.NewReader(data)) }()
	<-inner.entered
	if err := b.Put(ctx, "second", bytes.NewReader(data)); !errors.Is(err, store.ErrNoRoom) {
		t.Fatalf("3 MiB with 5 MiB of room, 3 MiB being put: %v", err)
	}
	close(inner.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	go func() { <-inner.entered }()
	if err := b.Put(ctx, "second", bytes.NewReader(data)); err != nil {
		t.Fatalf("3 MiB with 5 MiB of room once the first put ended: %v", err)
	}
}
