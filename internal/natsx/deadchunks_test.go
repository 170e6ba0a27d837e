package natsx

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// refusingPurges is a stream whose purges are refused while refuse is set
// (a full disk refuses them as it refused the put).
type refusingPurges struct {
	jetstream.Stream
	refuse  atomic.Bool
	refused atomic.Int32
}

func (r *refusingPurges) Purge(ctx context.Context, opts ...jetstream.StreamPurgeOpt) error {
	if r.refuse.Load() {
		r.refused.Add(1)
		return errors.New("nats: insufficient resources")
	}
	return r.Stream.Purge(ctx, opts...)
}

// failingAfter reads n bytes of data, then fails.
type failingAfter struct {
	r io.Reader
}

func (f *failingAfter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("the upload's connection was cut")
	}
	return n, err
}

// chunkMsgs counts the messages the bucket's stream holds under its
// chunks' subjects.
func chunkMsgs(ctx context.Context, t *testing.T, st jetstream.Stream, bucket string) uint64 {
	t.Helper()
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+bucket+".C.>"))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// A put that fails midway (its reader's error) whose purge the store
// refuses (a full disk) leaves its chunks for a moment only: they are
// purged in the background once the store takes the purge; they stayed
// for good, in a bucket that never expires, just when the disk needed
// the space.
func TestChunksOfAFailedPutAreRemovedOnceTheStoreTakesThePurge(t *testing.T) {
	s, ctx := setupStore(t)
	defer s.Close()
	b := s.blobs(s.Blocks, BlocksBucket, false)
	st := &refusingPurges{Stream: b.st}
	st.refuse.Store(true)
	b.st = st
	b.dead.every = 20 * time.Millisecond
	data := bytes.Repeat([]byte("a block of a dataset "), 20000) // 420 KB: 4 chunks
	err := b.put(ctx, "ds/f/u1/0", &failingAfter{r: bytes.NewReader(data)})
	if err == nil {
		t.Fatal("a put whose reader failed succeeded")
	}
	if n := chunkMsgs(ctx, t, b.st, BlocksBucket); n == 0 {
		t.Fatal("no chunks left by the refused purge: the test shows nothing")
	}
	for st.refused.Load() < 3 { // the put's own, then the background's
		if ctx.Err() != nil {
			t.Fatal("the refused purge is not tried again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.refuse.Store(false)
	for chunkMsgs(ctx, t, b.st, BlocksBucket) > 0 || b.dead.waiting() > 0 {
		if ctx.Err() != nil {
			t.Fatalf("the failed put's chunks are still there (%d messages)", chunkMsgs(context.Background(), t, b.st, BlocksBucket))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A put that succeeds is untouched by it.
	if err := b.put(ctx, "ds/f/u2/0", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got := readAll(ctx, t, b, "ds/f/u2/0"); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes of %d", len(got), len(data))
	}
}

// lostAnswer is a JetStream whose synchronous publishes are stored but
// answered with an error (the answer lost: a deadline, an election), or
// not stored at all (drop).
type lostAnswer struct {
	jetstream.JetStream
	drop bool
}

func (l lostAnswer) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if !l.drop {
		if _, err := l.JetStream.PublishMsg(ctx, m, opts...); err != nil {
			return nil, err
		}
	}
	return nil, context.DeadlineExceeded
}

// An object's info whose publish the store took but whose answer was lost
// is a stored object: its put succeeds and it reads back whole (its chunks
// were purged under it, and the object could not be read). One whose
// publish the store did not take fails, its chunks purged.
func TestAnObjectWhoseInfoWasStoredDespiteAnErrorIsKept(t *testing.T) {
	s, ctx := setupStore(t)
	defer s.Close()
	b := s.blobs(s.Output, OutputBucket, true)
	data := bytes.Repeat([]byte("reduce output "), 30000)
	b.js = lostAnswer{JetStream: s.JS}
	if err := b.put(ctx, "j/r0/abc", bytes.NewReader(data)); err != nil {
		t.Fatalf("a put whose info was stored, its answer lost: %v", err)
	}
	b.js = s.JS
	if got := readAll(ctx, t, b, "j/r0/abc"); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes of %d", len(got), len(data))
	}
	before := chunkMsgs(ctx, t, b.st, OutputBucket)
	b.js = lostAnswer{JetStream: s.JS, drop: true}
	if err := b.put(ctx, "j/r1/abc", bytes.NewReader(data)); err == nil {
		t.Fatal("a put whose info was not stored succeeded")
	}
	if after := chunkMsgs(ctx, t, b.st, OutputBucket); after != before {
		t.Fatalf("the failed put left %d chunks", after-before)
	}
}

func readAll(ctx context.Context, t *testing.T, b blobs, name string) []byte {
	t.Helper()
	data, err := b.GetBytes(ctx, name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return data
}
