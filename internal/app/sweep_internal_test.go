package app

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/natsx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// A running server finds and removes the chunks of writes a crash cut
// short (in the outputs' and the blocks' object stores), and nothing of
// the objects it holds: a job's output and a dataset read the same after.
func TestTheChunksOfUnfinishedWritesAreSwept(t *testing.T) {
	logs := &LockedBuffer{}
	srv := startInternal(t, func(cfg *Config) {
		// Sweeps run while the test uploads and runs its job, whose puts
		// must not be taken for cut short: a bound of seconds, not the
		// hour's, but well past a put's time between its last chunk and
		// its info on a loaded machine.
		cfg.ChunkSweepEvery = 2 * time.Second
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	ctx := apitest.Context(t)
	c := apitest.Client{URL: srv.URL()}
	text := strings.Repeat("the quick brown fox jumps over the lazy dog\n", 8000) // 352 KB: a block of 3 chunks
	c.PutFile(t, "fox", "a.txt", []byte(text))
	j := c.SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"fox"}, Partitions: 1, Reducers: 2})
	if j = c.Await(t, j.ID, func(j client.Job) bool { return j.State.Terminal() }); j.State != client.Succeeded {
		t.Fatalf("the word count ended %s", apitest.Describe(j))
	}
	out := c.Output(t, j.ID)

	chunks := func(bucket string) map[string]uint64 {
		t.Helper()
		st, err := srv.store.JS.Stream(ctx, "OBJ_"+bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+bucket+".C.>"))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	before := map[string]map[string]uint64{}
	dead := map[string]string{}
	for _, bucket := range []string{natsx.OutputBucket, natsx.BlocksBucket} {
		before[bucket] = chunks(bucket)
		if len(before[bucket]) == 0 {
			t.Fatalf("%s holds no chunks: the test shows nothing", bucket)
		}
		dead[bucket] = "$O." + bucket + ".C." + nuid.Next()
		for range 2 {
			m := nats.NewMsg(dead[bucket])
			m.Data = []byte(text[:1000])
			if _, err := srv.store.JS.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	for bucket, subject := range dead {
		for chunks(bucket)[subject] != 0 {
			select {
			case <-ctx.Done():
				t.Fatalf("the unnamed chunks on %s were not swept: %v", subject, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		if after := chunks(bucket); len(after) != len(before[bucket]) {
			t.Fatalf("%s held chunks on %v, now on %v", bucket, before[bucket], after)
		} else {
			for subject, n := range before[bucket] {
				if after[subject] != n {
					t.Fatalf("%s: %d chunks on %s, now %d", bucket, n, subject, after[subject])
				}
			}
		}
	}
	// The sweep says what it removed once it has swept every bucket: after
	// the chunks are gone (a make test run read the log between the two).
	for !strings.Contains(logs.String(), "removed the chunks of objects whose writes never finished") {
		select {
		case <-ctx.Done():
			t.Fatalf("the sweep said nothing of what it removed:\n%s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if again := c.Output(t, j.ID); again != out {
		t.Fatalf("the job's output changed after the sweep: %q, then %q", out, again)
	}
}
