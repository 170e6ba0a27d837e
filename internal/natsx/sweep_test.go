package natsx

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// cutShort writes n chunks of an object whose put never wrote its info
// (its process killed between the two) and returns their subject.
func cutShort(ctx context.Context, t *testing.T, s *Store, bucket string, n int) string {
	t.Helper()
	subject := "$O." + bucket + ".C." + nuid.Next()
	for i := range n {
		m := nats.NewMsg(subject)
		m.Data = bytes.Repeat([]byte{byte('a' + i)}, chunkSize)
		if _, err := s.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	return subject
}

func subjectMsgs(ctx context.Context, t *testing.T, st jetstream.Stream, subject string) uint64 {
	t.Helper()
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// The chunks of puts cut short by a crash are found and purged once they
// are old enough that no put can still be writing them; every object an
// info names, replaced, deleted or empty ones beside, stays whole.
func TestSweepRemovesTheChunksOfPutsCutShort(t *testing.T) {
	s, ctx := setupStore(t)
	defer s.Close()
	out := s.blobs(s.Output, OutputBucket, false)
	blocks := s.blobs(s.Blocks, BlocksBucket, true)
	big := bytes.Repeat([]byte("the output of a reduce task "), 20000) // 560 KB: 5 chunks
	puts := map[string][]byte{"job1/r0": big, "job1/r1": []byte("small"), "job1/empty": nil}
	for name, data := range puts {
		if err := out.put(ctx, name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.put(ctx, "job1/r1", bytes.NewReader([]byte("replaced"))); err != nil {
		t.Fatal(err)
	}
	puts["job1/r1"] = []byte("replaced")
	if err := out.put(ctx, "job2/r0", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if err := out.Delete(ctx, "job2/r0"); err != nil {
		t.Fatal(err)
	}
	if err := blocks.put(ctx, "ds/f/u1/0", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	puts["block"] = big
	deadOut := cutShort(ctx, t, s, OutputBucket, 3)
	deadBlock := cutShort(ctx, t, s, BlocksBucket, 1)
	liveOut := chunkMsgs(ctx, t, out.st, OutputBucket) - 3

	// Fresh, they may be a put's under way: kept.
	swept, err := s.SweepChunks(ctx, time.Hour)
	if err != nil || len(swept) != 0 {
		t.Fatalf("a sweep of chunks younger than its bound purged %+v (err %v)", swept, err)
	}
	if n := subjectMsgs(ctx, t, out.st, deadOut); n != 3 {
		t.Fatalf("the chunks of a put that may be under way: %d of 3 left", n)
	}

	swept, err = s.SweepChunks(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]SweptChunks{
		OutputBucket: {Bucket: OutputBucket, Objects: 1, Messages: 3},
		BlocksBucket: {Bucket: BlocksBucket, Objects: 1, Messages: 1},
	}
	if len(swept) != len(want) {
		t.Fatalf("swept %+v, want %+v", swept, want)
	}
	for _, sw := range swept {
		if sw != want[sw.Bucket] {
			t.Fatalf("swept %+v, want %+v", sw, want[sw.Bucket])
		}
	}
	for _, subject := range []string{deadOut, deadBlock} {
		if n := subjectMsgs(ctx, t, s.objStreams[OutputBucket], subject) + subjectMsgs(ctx, t, s.objStreams[BlocksBucket], subject); n != 0 {
			t.Fatalf("%d chunks left on %s", n, subject)
		}
	}
	if n := chunkMsgs(ctx, t, out.st, OutputBucket); n != liveOut {
		t.Fatalf("the outputs hold %d chunks after the sweep, want the live objects' %d", n, liveOut)
	}
	for name, data := range puts {
		b := out
		if name == "block" {
			b, name = blocks, "ds/f/u1/0"
		}
		got, err := b.GetBytes(ctx, name)
		if err != nil {
			t.Fatalf("%s after the sweep: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s after the sweep: %d bytes, want %d", name, len(got), len(data))
		}
	}
	if _, err := out.GetBytes(ctx, "job2/r0"); err == nil {
		t.Fatal("a deleted object reads after the sweep")
	}
}

// An info the sweep cannot read stops its bucket's sweep before anything
// of it is purged (the chunks it names cannot be told from dead ones);
// the other buckets are swept.
func TestSweepPurgesNothingOfABucketWithAnInfoItCannotRead(t *testing.T) {
	s, ctx := setupStore(t)
	defer s.Close()
	m := nats.NewMsg("$O." + OutputBucket + ".M.bm90LWpzb24")
	m.Data = []byte("not an object's info")
	if _, err := s.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	deadOut := cutShort(ctx, t, s, OutputBucket, 2)
	deadBlock := cutShort(ctx, t, s, BlocksBucket, 2)
	swept, err := s.SweepChunks(ctx, 0)
	if err == nil {
		t.Fatal("a sweep past an info it could not read reported no error")
	}
	if n := subjectMsgs(ctx, t, s.objStreams[OutputBucket], deadOut); n != 2 {
		t.Fatalf("the bucket with an unreadable info had %d of its 2 unnamed chunks left", n)
	}
	if n := subjectMsgs(ctx, t, s.objStreams[BlocksBucket], deadBlock); n != 0 {
		t.Fatalf("another bucket's unnamed chunks were not swept: %d left (swept %+v)", n, swept)
	}
}

// A deleted object leaves nothing in its stream (the library's Delete
// left its info, marked deleted, for good: a message and an index entry
// per job output and dataset block ever deleted); markers an earlier
// version left are swept, and a put of the same name after one stays.
func TestADeletedObjectLeavesNothing(t *testing.T) {
	s, ctx := setupStore(t)
	defer s.Close()
	out := s.blobs(s.Output, OutputBucket, false)
	big := bytes.Repeat([]byte("an output "), 30000) // 300 KB: 3 chunks
	subjects := func() map[string]uint64 {
		t.Helper()
		info, err := out.st.Info(ctx, jetstream.WithSubjectFilter("$O."+OutputBucket+".>"))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	for _, name := range []string{"job1/r0", "job1/r1"} {
		if err := out.put(ctx, name, bytes.NewReader(big)); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Delete(ctx, "job1/r0"); err != nil {
		t.Fatal(err)
	}
	if err := out.Delete(ctx, "job1/r0"); err != nil {
		t.Fatalf("a second delete: %v, want nothing to do", err)
	}
	if got := subjects(); len(got) != 2 || got[out.metaSubject("job1/r1")] != 1 {
		t.Fatalf("after a delete the stream holds %v; want job1/r1's info and chunks alone", got)
	}
	if _, err := out.GetBytes(ctx, "job1/r0"); err == nil {
		t.Fatal("a deleted object reads")
	}
	if got, err := out.GetBytes(ctx, "job1/r1"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the other object after the delete: %d bytes, %v", len(got), err)
	}

	// Markers as the library's Delete leaves them: swept, but for a name
	// put again since.
	for _, name := range []string{"old/r0", "old/r1"} {
		if err := out.put(ctx, name, bytes.NewReader(big)); err != nil {
			t.Fatal(err)
		}
		if err := s.Output.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.put(ctx, "old/r1", bytes.NewReader([]byte("put again"))); err != nil {
		t.Fatal(err)
	}
	swept, err := s.SweepChunks(ctx, time.Hour)
	if err != nil || len(swept) != 1 || swept[0] != (SweptChunks{Bucket: OutputBucket, Markers: 1}) {
		t.Fatalf("the sweep of one marker: %+v, %v", swept, err)
	}
	if got := subjects(); got[out.metaSubject("old/r0")] != 0 || got[out.metaSubject("old/r1")] != 1 {
		t.Fatalf("after the sweep: %v", got)
	}
	if got, err := out.GetBytes(ctx, "old/r1"); err != nil || string(got) != "put again" {
		t.Fatalf("the object put again after its marker: %q, %v", got, err)
	}
}
