package natsx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mrcluster/mrcluster/internal/store"
)

// setupStore sets the store up on an embedded server of the test's own.
func setupStore(t *testing.T) (*Store, context.Context) {
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

// startOn starts an embedded server on dir and sets the store up on it.
func startOn(ctx context.Context, t *testing.T, dir string) (*Embedded, *Store) {
	t.Helper()
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

// flipIn inverts 8 bytes of the one message file of stream in dir, at the
// first place it holds marker.
func flipIn(t *testing.T, dir, stream string, marker []byte) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "jetstream", "jetstream", "*", "streams", stream, "msgs", "*.blk"))
	if len(files) != 1 {
		t.Fatalf("message files of %s: %v", stream, files)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(raw, marker)
	if at < 0 {
		t.Fatalf("%s does not hold %q", files[0], marker)
	}
	for i := at; i < at+8 && i < len(raw); i++ {
		raw[i] ^= 0xff
	}
	if err := os.WriteFile(files[0], raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A job's task history with a message damaged on disk: a read returns the
// others and says some are damaged, in seconds; it waited for its deadline
// and failed, and every GET of the job's tasks answered 503 "try again".
func TestHistoryDamagedOnDisk(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	emb, s := startOn(ctx, t, dir)
	for i := range 5 {
		msg := store.Message{Key: "j1", Data: []byte(fmt.Sprintf(`[{"partition":%d,"note":"result number %d"}]`, i, i))}
		for _, err := range s.Ports.Results.Publish(ctx, msg) {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := emb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	flipIn(t, dir, ResultsStream, []byte("result number 2"))
	emb, s = startOn(ctx, t, dir)
	defer emb.Stop(context.Background())
	began := time.Now()
	got, err := s.Ports.Results.Read(ctx, "j1", 100)
	if !errors.Is(err, store.ErrDamaged) || len(got) != 4 {
		t.Fatalf("a history with a damaged message: %d messages, %v; want the 4 readable ones and ErrDamaged", len(got), err)
	}
	t.Logf("the read took %v", time.Since(began))
	for _, m := range got {
		if bytes.Contains(m, []byte("number 2")) {
			t.Fatalf("the damaged message was served: %s", m)
		}
	}
}

// An object of one chunk is written and read without the library's Put
// and Get: the library reads what it wrote, and a chunk whose bytes
// changed is refused, not served.
func TestBlobsOfOneChunk(t *testing.T) {
	s, ctx := setupStore(t)
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

	// Data gone while its info stays, as JetStream drops a record it
	// finds damaged: damaged (it read as deleted before).
	if err := s.Ports.Shuffle.Put(ctx, "j/m1/abc/0", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	info, _ = s.Shuffle.GetInfo(ctx, "j/m1/abc/0")
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("$O."+ShuffleBucket+".C."+info.NUID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ports.Shuffle.GetBytes(ctx, "j/m1/abc/0"); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("an object whose chunk is gone and whose info stays: %v; want it damaged", err)
	}
	// A deleted object is not found.
	if err := s.Ports.Shuffle.Delete(ctx, "j/m1/abc/0"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ports.Shuffle.GetBytes(ctx, "j/m1/abc/0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a deleted object: %v; want ErrNotFound", err)
	}
}

// A byte flipped in a stream's file on disk, inside an object of several
// chunks: JetStream finds the record damaged when it reads it and will not
// serve it; the read says the object is damaged, at once (the library's
// read waited for the chunk until its deadline, and a task reading a
// dataset block so was run again, for ever). The library is given far more
// time than the test: the read must find the damage by the stall, not by
// that time running out (a damaged output of 100 MB stalled its download
// for 30 s).
func TestBlobsDamagedOnDisk(t *testing.T) {
	defer func(d time.Duration) { pushBase = d }(pushBase)
	pushBase = 10 * time.Minute
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func() (*Embedded, *Store) { return startOn(ctx, t, dir) }
	emb, s := start()
	data := make([]byte, 3*chunkSize+100) // four chunks
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	if err := s.Ports.Blocks.Put(ctx, "ds/f/u/0", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Ports.Blocks.GetBytes(ctx, "ds/f/u/0")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(data))
	}
	if cap(got) > len(data)+bytes.MinRead {
		t.Errorf("a read of %d bytes held %d: its buffer grew as it met the end", len(data), cap(got))
	}
	small := bytes.Repeat([]byte("0123456789 one chunk "), 100)
	if err := s.Ports.Blocks.Put(ctx, "ds/g/u/0", bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	if err := emb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	flipIn(t, dir, "OBJ_"+BlocksBucket, data[chunkSize+1000:chunkSize+1040]) // inside the second chunk
	flipIn(t, dir, "OBJ_"+BlocksBucket, small[500:540])
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
	// An object of one chunk, that chunk damaged: damaged too, not gone
	// (it read as deleted before).
	if got, err := s.Ports.Blocks.GetBytes(ctx, "ds/g/u/0"); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("a damaged object of one chunk read as %d bytes, %v; want it damaged", len(got), err)
	}
	if _, _, err := s.Ports.Blocks.GetSmall(ctx, "ds/g/u/0", 1<<20); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("a damaged object of one chunk read with GetSmall: %v; want it damaged", err)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Fatalf("the damage was found after %v: a read waited for the damaged chunk", took)
	}
}

// A reader slower than the library's time (a client downloading a job's
// output slowly) is served to the end: the read goes on with requests from
// where it was.
func TestBlobsSlowReader(t *testing.T) {
	defer func(d time.Duration) { pushBase = d }(pushBase)
	pushBase = 300 * time.Millisecond
	s, ctx := setupStore(t)
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
	time.Sleep(2 * pushBase) // the reader is slow: the library's time runs out
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

// Objects of several chunks are written by the store's own publishes, in
// the library's format (the library reads them, digest checked), into a
// bucket whose names are used again (an object replaced leaves none of
// its chunks behind) and into one whose are not, and no put leaves a
// goroutine behind: the library's Put left one blocked for good at most
// puts made amid others (nats.go's resetPendingAcksOnReconnect; the
// dataset tests' goleak check, leak_test.go there, found 59 to 87 of them
// in a run).
func TestBlobsOfManyChunks(t *testing.T) {
	s, ctx := setupStore(t)
	// The store's publisher starts its own goroutines at its first
	// asynchronous publish, for the connection's life.
	for _, b := range []store.Blobs{s.Ports.Shuffle, s.Ports.Blocks} {
		if err := b.Put(ctx, "warm-up", bytes.NewReader(make([]byte, 2*chunkSize))); err != nil {
			t.Fatal(err)
		}
	}
	const publisher = "jetstream.(*jetStream).resetPendingAcksOnReconnect"
	before := goroutinesIn(publisher)
	for _, c := range []struct {
		b      store.Blobs
		os     jetstream.ObjectStore
		bucket string
	}{{s.Ports.Blocks, s.Blocks, BlocksBucket}, {s.Ports.Shuffle, s.Shuffle, ShuffleBucket}} {
		for i, n := range []int{128<<10 + 1, 4 << 20, 9*128<<10 + 5, 3 << 20} {
			name := fmt.Sprintf("d/f/u/%d", i%2) // the third and fourth replace the first two
			data := bytes.Repeat([]byte{byte('a' + i)}, n)
			var old *jetstream.ObjectInfo
			if i >= 2 {
				old, _ = c.os.GetInfo(ctx, name)
			}
			if err := c.b.Put(ctx, name, io.LimitReader(bytes.NewReader(data), int64(n))); err != nil { // no Len: read to its end
				t.Fatalf("%s: put of %d bytes: %v", c.bucket, n, err)
			}
			info, err := c.os.GetInfo(ctx, name)
			if want := uint32((n + chunkSize - 1) / chunkSize); err != nil || info.Size != uint64(n) || info.Chunks != want {
				t.Fatalf("%s: the library's info of %d bytes: %+v, %v; want %d chunks", c.bucket, n, info, err, want)
			}
			got, err := c.os.GetBytes(ctx, name) // checks the digest
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: the library read %d bytes, %v; want %d", c.bucket, len(got), err, n)
			}
			if got, err := c.b.GetBytes(ctx, name); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: read %d bytes, %v; want %d", c.bucket, len(got), err, n)
			}
			if old != nil && c.bucket == BlocksBucket {
				st, err := s.JS.Stream(ctx, "OBJ_"+c.bucket)
				if err != nil {
					t.Fatal(err)
				}
				sinfo, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+c.bucket+".C."+old.NUID))
				if err != nil || len(sinfo.State.Subjects) != 0 {
					t.Fatalf("%s: the replaced object's chunks: %v, %v; want none left", c.bucket, sinfo.State.Subjects, err)
				}
				subject := "$O." + c.bucket + ".C." + info.NUID
				if sinfo, err := st.Info(ctx, jetstream.WithSubjectFilter(subject)); err != nil || sinfo.State.Subjects[subject] != uint64(info.Chunks) {
					t.Fatalf("%s: the new object's chunks: %v, %v; want %d", c.bucket, sinfo.State.Subjects, err, info.Chunks)
				}
			}
		}
	}
	// Many at once, as a task's transfers and a dataset's uploads go.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte(i)}, 3*chunkSize+i)
			errs <- s.Ports.Blocks.Put(ctx, fmt.Sprintf("d/g/u/%d", i), bytes.NewReader(data))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("puts at once: %v", err)
		}
	}
	// Every put is over once it returns: nothing of it runs on.
	if n := goroutinesIn(publisher); n > before {
		t.Fatalf("%d goroutines in %s after the puts, %d before", n, publisher, before)
	}
}

// goroutinesIn counts the goroutines whose stack holds function f. (The
// count of all of them moves with the embedded server's own, an ordered
// consumer's server side left until the server drops it.)
func goroutinesIn(f string) int {
	buf := make([]byte, 8<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, f) {
			n++
		}
	}
	return n
}

// A reader that neither reads an object to its end nor closes it leaves
// nothing of its read once the read's time is up: its consumer is
// deleted, and no fetch runs on. (The library's read, which the store
// used before, left its goroutine waiting for good to hand such a reader
// its next chunk: a CI run's leak check.)
func TestAnAbandonedReadLeavesNothing(t *testing.T) {
	defer func(d time.Duration) { pushBase = d }(pushBase)
	pushBase = 300 * time.Millisecond
	s, ctx := setupStore(t)
	if err := s.Ports.Output.Put(ctx, "j/r0/abandoned", bytes.NewReader(make([]byte, 8*chunkSize))); err != nil {
		t.Fatal(err)
	}
	r, err := s.Ports.Output.Get(ctx, "j/r0/abandoned")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if n := consumersOf(ctx, t, s, OutputBucket); n != 1 {
		t.Fatalf("%d consumers read the object; want 1: the test did not test a read through a consumer", n)
	}
	// r is neither read on nor closed, on purpose.
	awaitNoReads(ctx, t, s, OutputBucket, 10*time.Second)
}

// Reads cut short by their callers' deadlines, at any point of their
// making and reading, leave nothing running and no consumer behind. The
// library's Get, which the store used before, returned an error with a
// chunk on its way when its context ended while it made its consumer, and
// its goroutine waited for good on a pipe no one read: 18 of 3,000 reads
// such as these (found by a CI run's leak check in internal/app).
func TestReadsCutShortLeaveNothing(t *testing.T) {
	s, _ := setupStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := bytes.Repeat([]byte("cut short "), 4*chunkSize/10)
	if err := s.Ports.Output.Put(ctx, "j/r0/cut", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	whole, cut := 0, 0
	for i := range 1500 {
		rctx, cancel := context.WithTimeout(ctx, time.Duration(150+i%1200)*time.Microsecond)
		var got []byte
		var err error
		if i%2 == 0 {
			got, err = s.Ports.Output.GetBytes(rctx, "j/r0/cut")
		} else {
			var r io.ReadCloser
			if r, err = s.Ports.Output.Get(rctx, "j/r0/cut"); err == nil {
				got, err = io.ReadAll(r)
				r.Close()
			}
		}
		cancel()
		switch {
		case err == nil && !bytes.Equal(got, data):
			t.Fatalf("read %d: %d bytes, not the %d written", i, len(got), len(data))
		case err == nil:
			whole++
		case rctx.Err() == nil:
			t.Fatalf("read %d failed before its deadline: %v", i, err)
		default:
			cut++
		}
	}
	t.Logf("%d reads whole, %d cut short", whole, cut)
	if cut == 0 {
		t.Fatal("no read was cut short: the test did not test that")
	}
	// A consumer whose making was cut short goes once idle for a read's
	// time: the test waits for that too.
	awaitNoReads(ctx, t, s, OutputBucket, pushTime(uint64(len(data)))+30*time.Second)
}

// consumersOf counts the consumers of bucket's stream.
func consumersOf(ctx context.Context, t *testing.T, s *Store, bucket string) int {
	t.Helper()
	st, err := s.JS.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Consumers
}

// awaitNoReads waits until no consumer reads bucket and no goroutine of an
// object read (a fetch, or the library's read) runs.
func awaitNoReads(ctx context.Context, t *testing.T, s *Store, bucket string, within time.Duration) {
	t.Helper()
	reads := func() int {
		return goroutinesIn("jetstream.(*pullConsumer).fetch") + goroutinesIn("jetstream.(*obs).Get")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), within+10*time.Second)
	defer cancel()
	for deadline := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		n, g := consumersOf(ctx, t, s, bucket), reads()
		if n == 0 && g == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the reads: %d consumers of %s left, %d goroutines of object reads", within, n, bucket, g)
		}
	}
}
