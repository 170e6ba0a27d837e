package natsx

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// setupBlobs sets the store up on an embedded server of the test's own.
func setupBlobs(t *testing.T) (*Store, context.Context) {
	t.Helper()
	nc := embedded(t, t.TempDir(), "blobs")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := Setup(ctx, nc, StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

// An object of one chunk is written and read without the library's Put
// and Get: the library reads what it wrote, and a chunk whose bytes
// changed is refused, not served.
func TestBlobsOfOneChunk(t *testing.T) {
	s, ctx := setupBlobs(t)
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
	st, err := s.JS.Stream(ctx, "OBJ_"+ShuffleBucket)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(data)
	tampered[100] ^= 1
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$O."+ShuffleBucket+".C."+info.NUID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JS.Publish(ctx, "$O."+ShuffleBucket+".C."+info.NUID, tampered); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Ports.Shuffle.GetBytes(ctx, "j/m0/abc/0"); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("a changed chunk read as %d bytes, %v; want it damaged", len(got), err)
	}
	if r, err := s.Ports.Shuffle.Get(ctx, "j/m0/abc/0"); !errors.Is(err, store.ErrDamaged) {
		if err == nil {
			b, _ := io.ReadAll(r)
			t.Fatalf("a changed chunk opened: %d bytes; want it damaged", len(b))
		}
		t.Fatalf("open of a changed chunk: %v; want it damaged", err)
	}

	// Data gone while its info stays: not found, as a deleted object.
	if err := s.Ports.Shuffle.Put(ctx, "j/m1/abc/0", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	info, _ = s.Shuffle.GetInfo(ctx, "j/m1/abc/0")
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$O."+ShuffleBucket+".C."+info.NUID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ports.Shuffle.GetBytes(ctx, "j/m1/abc/0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an object whose chunk is gone: %v; want ErrNotFound", err)
	}
}

// A byte flipped in a stream's file on disk, inside an object of several
// chunks: JetStream finds the record damaged when it reads it and will not
// serve it; the read says the object is damaged, at once (the library's
// read waited for the chunk until its deadline, and a task reading a
// dataset block so was run again, for ever).
func TestBlobsDamagedOnDisk(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func() (*Embedded, *Store) {
		emb, err := StartEmbedded(EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := emb.Connect("blobs")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		s, err := Setup(ctx, nc, StoreConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return emb, s
	}
	emb, s := start()
	data := make([]byte, 3*chunkSize+100) // four chunks
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	if err := s.Ports.Blocks.Put(ctx, "ds/f/u/0", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Ports.Blocks.GetBytes(ctx, "ds/f/u/0"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(data))
	}
	if err := emb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "jetstream", "jetstream", "*", "streams", "OBJ_"+BlocksBucket, "msgs", "*.blk"))
	if len(files) != 1 {
		t.Fatalf("block files of the blocks' stream: %v", files)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(raw, data[chunkSize+1000:chunkSize+1040]) // inside the second chunk
	if at < 0 {
		t.Fatal("the second chunk's bytes are not in the file")
	}
	raw[at] ^= 0x20
	if err := os.WriteFile(files[0], raw, 0o600); err != nil {
		t.Fatal(err)
	}
	emb, s = start()
	defer emb.Stop(context.Background())
	began := time.Now()
	if got, err := s.Ports.Blocks.GetBytes(ctx, "ds/f/u/0"); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("a damaged object read as %d bytes, %v; want it damaged", len(got), err)
	}
	r, err := s.Ports.Blocks.Get(ctx, "ds/f/u/0")
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("a damaged object read through Get: %v; want it damaged", err)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Fatalf("the damage was found after %v: a read waited for the damaged chunk", took)
	}
}

// A reader slower than the library's time (a client downloading a job's
// output slowly) is served to the end: the read goes on with requests from
// where it was.
func TestBlobsSlowReader(t *testing.T) {
	defer func(d time.Duration) { libraryBase = d }(libraryBase)
	libraryBase = 300 * time.Millisecond
	s, ctx := setupBlobs(t)
	data := make([]byte, 5*chunkSize+17)
	for i := range data {
		data[i] = byte(i % 251)
	}
	if err := s.Ports.Output.Put(ctx, "j/r0/abc", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	r, err := s.Ports.Output.Get(ctx, "j/r0/abc")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := make([]byte, chunkSize+1000)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * libraryBase) // the reader is slow: the library's time runs out
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("the rest after a pause: %v", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(data))
	}
	if !r.(*stalling).byReq {
		t.Fatal("the read did not go on with requests: the test did not test that")
	}
}
