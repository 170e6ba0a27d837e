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
	apitest.Recv(t, blk.started, "a block task to start")

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
	apitest.Recv(t, stopped, "the server to stop")
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

// A server restarted on a store of thousands of finished jobs starts, lists
// them all and runs new ones. (It panicked at start with more than 1,024:
// a read-model entry looked queued before its first record was applied.)
func TestRestartWithThousandsOfFinishedJobs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := setup(t, func(c *app.Config) { c.DataDir = dir; c.SubmitRate = 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api := client.New(b.srv.URL(), "")
	const n = 1500
	var last client.Job
	for range n / 500 {
		specs := make([]client.Spec, 500)
		for i := range specs {
			specs[i] = client.Spec{Kind: "noop", Partitions: 1}
		}
		jobs, err := api.SubmitBatch(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		last = jobs[len(jobs)-1]
	}
	b.awaitState(t, last.ID, client.Succeeded)
	count := func(api *client.Client) int {
		seen := 0
		var page client.JobList
		for {
			var err error
			if page, err = api.Jobs(ctx, client.ListOptions{Limit: 500, Cursor: page.NextCursor}); err != nil {
				t.Fatal(err)
			}
			seen += len(page.Jobs)
			if page.NextCursor == "" {
				return seen
			}
		}
	}
	for count(api) != n {
		select {
		case <-ctx.Done():
			t.Fatal("the jobs never all listed")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := b.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	b2 := setup(t, func(c *app.Config) { c.DataDir = dir })
	if got := count(client.New(b2.srv.URL(), "")); got != n {
		t.Fatalf("%d jobs listed after the restart; want %d", got, n)
	}
	j := b2.submit(t, "noop", 2)
	b2.awaitState(t, j.ID, client.Succeeded)
}
