package natsx

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// An object of one chunk is written and read without the library's Put
// and Get: the library reads what it wrote, and a chunk whose bytes
// changed is refused, not served.
func TestBlobsOfOneChunk(t *testing.T) {
	nc := embedded(t, t.TempDir(), "blobs")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Setup(ctx, nc, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("shuffle run "), 1000)
	if err := s.Ports.Shuffle.Put(ctx, "j/m0/abc/0", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	info, err := s.Shuffle.GetInfo(ctx, "j/m0/abc/0")
	if err != nil || info.Size != uint64(len(data)) || info.Chunks != 1 {
		t.Fatalf("the library's info of the object: %+v, %v", info, err)
	}
	got, err := s.Shuffle.GetBytes(ctx, "j/m0/abc/0") // checks the digest
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the library read %d bytes, %v; want %d", len(got), err, len(data))
	}

	// Bytes that changed in the store: the chunk's message replaced.
	tampered := bytes.Clone(data)
	tampered[100] ^= 1
	if _, err := s.JS.Publish(ctx, "$O."+ShuffleBucket+".C."+info.NUID, tampered); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Ports.Shuffle.GetBytes(ctx, "j/m0/abc/0"); !errors.Is(err, jetstream.ErrDigestMismatch) {
		t.Fatalf("a changed chunk read as %d bytes, %v; want a digest mismatch", len(got), err)
	}
	if r, err := s.Ports.Shuffle.Get(ctx, "j/m0/abc/0"); !errors.Is(err, jetstream.ErrDigestMismatch) {
		if err == nil {
			b, _ := io.ReadAll(r)
			t.Fatalf("a changed chunk opened: %d bytes; want a digest mismatch", len(b))
		}
		t.Fatalf("open of a changed chunk: %v; want a digest mismatch", err)
	}

	// Data gone while its info stays: not found, as a deleted object.
	if err := s.Ports.Shuffle.Put(ctx, "j/m1/abc/0", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	info, _ = s.Shuffle.GetInfo(ctx, "j/m1/abc/0")
	st, err := s.JS.Stream(ctx, "OBJ_"+ShuffleBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$O."+ShuffleBucket+".C."+info.NUID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ports.Shuffle.GetBytes(ctx, "j/m1/abc/0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an object whose chunk is gone: %v; want ErrNotFound", err)
	}
}
