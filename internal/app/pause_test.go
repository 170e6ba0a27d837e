package app_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
)

// Pausing a kind takes its jobs' waiting tasks out of the queue and holds
// its new jobs: none of their tasks starts while other kinds' jobs run;
// a task running at the pause finishes. Resumed, they run to their end.
func TestPauseAndResumeAKind(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 8)
	hold, release := held(started)
	b := setup(t, func(c *app.Config) { c.Kinds, c.Workers = testKinds(hold), 1 })
	c := b.client().API()
	ctx := apitest.Context(t)

	// One worker: partition 0 runs (and is held there), 1 to 3 wait.
	j := b.submit(t, "hold", 4)
	apitest.Recv(t, started, "the held task to start")
	k, err := c.PauseKind(ctx, "hold")
	if err != nil || !k.Paused || k.PausedSince == nil {
		t.Fatalf("pause: %+v %v", k, err)
	}
	j = b.await(t, j.ID, func(j client.Job) bool { return j.Paused })
	later := b.submit(t, "hold", 2) // submitted while paused: held at once
	if !later.Paused {
		t.Fatalf("a job of a paused kind submitted: %+v", later)
	}
	close(release) // the running task finishes; the others must not start
	b.await(t, j.ID, func(j client.Job) bool { return j.Tasks.Done == 1 })
	other := b.await(t, b.submit(t, "noop", 3).ID, terminal) // the queue moves on for other kinds
	if other.State != client.Succeeded {
		t.Fatalf("a job of another kind while one is paused: %s", apitest.Describe(other))
	}
	if len(started) != 0 {
		t.Fatalf("%d tasks of the paused kind started", len(started))
	}
	b.client().AwaitIdleWorkers(t, 1) // statuses trail results
	if q, err := c.Queue(ctx); err != nil || q.Depth != 3+2 || len(q.Jobs) != 2 || q.More ||
		q.Jobs[0] != (client.QueuedJob{Job: j.ID, Kind: "hold", Waiting: 3}) || q.Jobs[1] != (client.QueuedJob{Job: later.ID, Kind: "hold", Waiting: 2}) {
		t.Fatalf("queue while paused: %+v %v; want its 5 waiting tasks counted, in its 2 jobs, oldest first", q, err)
	}
	// A shorter list: the oldest job, and word of more.
	var first client.Queue
	if r := b.do(t, "GET", "/api/v1/queue?limit=1", ""); r.Status != http.StatusOK {
		t.Fatalf("queue with limit 1: %d %s", r.Status, r.Body)
	} else if r.JSON(t, &first); first.Depth != 5 || len(first.Jobs) != 1 || first.Jobs[0].Job != j.ID || !first.More {
		t.Fatalf("queue with limit 1: %+v; want the oldest job and more", first)
	}
	for _, bad := range []string{"0", "x", "10001"} {
		if r := b.do(t, "GET", "/api/v1/queue?limit="+bad, ""); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "limit must be an integer from 1 to 10000") {
			t.Fatalf("queue with limit %s: %d %s; want 400 naming the limit", bad, r.Status, r.Body)
		}
	}
	kinds, err := c.Kinds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		if k.Paused != (k.Name == "hold") {
			t.Fatalf("kinds list: %s paused=%v", k.Name, k.Paused)
		}
	}

	if k, err := c.ResumeKind(ctx, "hold"); err != nil || k.Paused {
		t.Fatalf("resume: %+v %v", k, err)
	}
	for _, id := range []string{j.ID, later.ID} {
		if d := b.await(t, id, terminal); d.State != client.Succeeded || d.Paused || d.Result.Sum != int64(d.Partitions) {
			t.Fatalf("after the resume: %s", apitest.Describe(d))
		}
	}
	var apiErr *client.Error
	if _, err := c.PauseKind(ctx, "nope"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("pause of an unknown kind: %v", err)
	}
}

// A task that failed and waits to run again (its retry backoff) when its
// kind is paused does not run while the kind is paused: its pool does not
// queue it again once its job took its tasks out of the queue. Resumed,
// the job queues it, and it runs once more, as its next attempt.
func TestAFailedTaskDoesNotRunAgainWhileItsKindIsPaused(t *testing.T) {
	t.Parallel()
	runs := make(chan int, 8)
	release := make(chan struct{})
	var n atomic.Int32
	flaky := job.Kind{Name: "flaky", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		run := int(n.Add(1))
		runs <- run
		if run > 1 {
			return 1, nil
		}
		select { // the first run fails once the test has paused the kind
		case <-release:
			return 0, errorString("the service this task calls is down")
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}}
	b := setup(t, func(c *app.Config) { c.Kinds, c.Workers, c.RetryBackoff = testKinds(flaky), 1, time.Millisecond })
	c := b.client().API()
	ctx := apitest.Context(t)

	j := b.submit(t, "flaky", 1)
	apitest.Recv(t, runs, "the flaky job to run")
	if _, err := c.PauseKind(ctx, "flaky"); err != nil {
		t.Fatal(err)
	}
	b.await(t, j.ID, func(j client.Job) bool { return j.Paused })
	close(release) // the first run fails; its retry waits 1 ms
	for {
		tasks, err := c.Tasks(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(tasks) > 0 {
			if tasks[0].State != "failed" {
				t.Fatalf("the first run: %+v; want failed", tasks[0])
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the failed run never reached the task history")
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The one worker takes the queue's tasks in order: a retry queued
	// after the failure would run before this job's task.
	if other := b.await(t, b.submit(t, "noop", 1).ID, terminal); other.State != client.Succeeded {
		t.Fatalf("a job of another kind while one is paused: %s", apitest.Describe(other))
	}
	if len(runs) != 0 {
		t.Fatalf("run %d of the paused kind's failed task started while it was paused", <-runs)
	}
	if _, err := c.ResumeKind(ctx, "flaky"); err != nil {
		t.Fatal(err)
	}
	if d := b.await(t, j.ID, terminal); d.State != client.Succeeded {
		t.Fatalf("after the resume: %s", apitest.Describe(d))
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("the task ran %d times; want 2 (a failed run, one after the resume)", got)
	}
	// The run after the resume goes on from the history: attempt 2.
	tasks, err := c.Tasks(ctx, j.ID)
	if err != nil || len(tasks) != 2 || tasks[0].Attempt != 1 || tasks[0].State != "failed" || tasks[1].Attempt != 2 || tasks[1].State != "done" {
		t.Fatalf("history %+v %v; want attempt 1 failed, attempt 2 done", tasks, err)
	}
}

// A pause takes hold at once, whatever the backlog: the server takes the
// waiting tasks of a paused kind's jobs out of the queue a job at a time,
// and meanwhile the workers start none of them (they hold those they
// fetched). Before, with 2,000 jobs queued, tasks kept starting until
// the last job was reached.
func TestAPauseHoldsAtOnceWithABacklog(t *testing.T) {
	t.Parallel()
	var starts, after atomic.Int32
	var paused atomic.Bool
	firstRuns := make(chan struct{}, 1)
	tick := job.Kind{Name: "tick", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		if paused.Load() {
			after.Add(1)
		}
		if starts.Add(1) == 20 {
			firstRuns <- struct{}{}
		}
		select {
		case <-time.After(2 * time.Millisecond):
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}}
	b := setup(t, func(c *app.Config) { c.Kinds, c.Workers = testKinds(tick), 2 })
	c := b.client().API()
	ctx := apitest.Context(t)
	var last client.Job
	for range 2 {
		specs := make([]client.Spec, 1000)
		for i := range specs {
			specs[i] = client.Spec{Kind: "tick", Partitions: 1}
		}
		jobs, err := c.SubmitBatch(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		last = jobs[len(jobs)-1]
	}
	apitest.Recv(t, firstRuns, "the schedule's first job to run")
	if _, err := c.PauseKind(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	paused.Store(true)
	// The newest job is the last the server holds (oldest first).
	b.await(t, last.ID, func(j client.Job) bool { return j.Paused })
	// A worker may have passed its look at the kind a moment before the
	// pause, and started its task a moment after.
	if n := after.Load(); n > 2 {
		t.Fatalf("%d tasks of the paused kind started after the pause was answered (2 workers)", n)
	}
	if _, err := c.ResumeKind(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	if j := b.await(t, last.ID, terminal); j.State != client.Succeeded {
		t.Fatalf("the newest job after the resume: %s", apitest.Describe(j))
	}
	// The 2,000 jobs' runs take a minute or more on a loaded machine
	// under the race detector: the wait is not apitest's 90 s in all.
	dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var counts client.JobCounts
	for counts.Succeeded != 2000 {
		q, err := c.Queue(dctx)
		if err != nil && dctx.Err() == nil {
			t.Fatal(err)
		}
		if err == nil {
			counts = q.Counts
		}
		select {
		case <-dctx.Done():
			t.Fatalf("after the resume: %+v; want the 2,000 jobs succeeded", counts)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
