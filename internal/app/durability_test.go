package app_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/natsx"
)

// A job stored by a server that died before it queued the job's tasks is
// completed by the next server on the same data directory.
func TestInterruptedSubmitIsRequeued(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	emb, err := natsx.StartEmbedded(natsx.EmbeddedConfig{DataDir: dir, Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := apitest.Context(t)
	store, err := natsx.Setup(ctx, nc, natsx.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	j := job.New(job.NewID("noop", time.Now()), job.Spec{Kind: "noop", Partitions: 5}, time.Now().UTC())
	data, _ := json.Marshal(j)
	if _, err := store.Jobs.Create(ctx, j.ID, data); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	_ = emb.Stop(context.Background())

	b := setup(t, func(c *app.Config) { c.DataDir = dir })
	got := b.awaitState(t, j.ID, client.Succeeded)
	if !reflect.DeepEqual(got.Result.Values, apitest.Values(5, 1)) {
		t.Fatalf("result = %+v", got.Result)
	}
}

// Finished results survive a restart, and a stopping server lets its
// running task finish while the waiting ones stay queued for the next.
func TestStopLeavesQueuedTasksForTheNextServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	blk := newBlocker()
	one := func(c *app.Config) {
		c.DataDir = dir
		c.Workers = 1
		c.Kinds = testKinds(blk.kind())
	}
	b := setup(t, one)
	done := b.submit(t, "noop", 3)
	done1 := b.awaitState(t, done.ID, client.Succeeded)
	j := b.submit(t, "block", 4)
	<-blk.started

	events := b.dial(t, "/api/v1/events")
	stopped := make(chan struct{})
	go func() {
		_ = b.srv.Stop(context.Background())
		close(stopped)
	}()
	// Release the running task only once the worker says it is stopping:
	// the server must let it finish, and take no other.
	for {
		var w struct{ Workers []job.WorkerStatus }
		b.do(t, "GET", "/api/v1/workers", "").JSON(t, &w)
		if len(w.Workers) == 1 && w.Workers[0].Stopping && w.Workers[0].Busy {
			break
		}
		var ev map[string]any
		readJSON(t, events, &ev)
	}
	close(blk.release)
	<-stopped
	if n := blk.calls.Load(); n != 1 {
		t.Fatalf("the stopping server ran %d tasks, want only the one running", n)
	}

	b2 := setup(t, func(c *app.Config) { one(c); c.Workers = 4 })
	got := b2.awaitState(t, j.ID, client.Succeeded)
	if !reflect.DeepEqual(got.Result.Values, apitest.Values(4, 1)) {
		t.Fatalf("result after restart = %+v", got.Result)
	}
	if again := b2.job(t, done.ID); !reflect.DeepEqual(again.Result, done1.Result) || again.State != client.Succeeded {
		t.Fatalf("finished job after restart = %s, want %+v", apitest.Describe(again), done1.Result)
	}
	var l struct{ Jobs []client.Job }
	b2.do(t, "GET", "/api/v1/jobs", "").JSON(t, &l)
	if len(l.Jobs) != 2 {
		t.Fatalf("%d jobs after restart, want 2", len(l.Jobs))
	}
}
