package app_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
)

// maxOverlap is the most task attempts that ran at once, by their history.
func maxOverlap(tasks []client.TaskAttempt) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, a := range tasks {
		edges = append(edges, edge{a.StartedAt, 1}, edge{a.FinishedAt, -1})
	}
	sort.Slice(edges, func(i, j int) bool {
		return edges[i].at.Before(edges[j].at) || edges[i].at.Equal(edges[j].at) && edges[i].delta < edges[j].delta
	})
	n, most := 0, 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	return most
}

// A kind's concurrency limit holds in the whole cluster (measured from the
// task history), while another kind's job runs on the free workers; the
// kind's tasks queued before a limit is lifted move back and finish.
func TestKindConcurrencyLimit(t *testing.T) {
	t.Parallel()
	// slow's tasks wait for the gate, then run long enough to overlap.
	gate := make(chan struct{})
	slow := job.Kind{Name: "slow", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		select {
		case <-time.After(150 * time.Millisecond):
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}}
	b := setup(t, func(c *app.Config) { c.Kinds, c.Workers = testKinds(slow), 4 })
	c := b.client().API()
	ctx := apitest.Context(t)
	k, err := c.SetKindLimits(ctx, "slow", client.KindLimits{Concurrency: 2})
	if err != nil || k.Concurrency != 2 {
		t.Fatalf("set limits: %+v %v", k, err)
	}
	j := b.submit(t, "slow", 12)
	b.await(t, j.ID, func(j client.Job) bool { return j.Tasks.Running == 2 })
	// Two workers are held by the limited kind; another kind's job runs
	// on the two others meanwhile.
	other := b.await(t, b.submit(t, "noop", 4).ID, terminal)
	if other.State != client.Succeeded {
		t.Fatalf("another kind's job: %s", apitest.Describe(other))
	}
	close(gate)
	if d := b.await(t, j.ID, terminal); d.State != client.Succeeded || d.Result.Sum != 12 {
		t.Fatalf("the limited job: %s", apitest.Describe(d))
	}
	tasks, err := c.Tasks(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := maxOverlap(tasks); n > 2 || n < 1 {
		t.Fatalf("%d tasks of a kind limited to 2 ran at once", n)
	}

	// Lifted while a job waits: its tasks leave the kind's lane and run
	// on every worker (the gate is open now).
	j2 := b.submit(t, "slow", 12)
	b.await(t, j2.ID, func(j client.Job) bool { return j.Tasks.Done >= 1 })
	if k, err := c.SetKindLimits(ctx, "slow", client.KindLimits{Concurrency: 0}); err != nil || k.Concurrency != 0 {
		t.Fatalf("lift the limit: %+v %v", k, err)
	}
	if d := b.await(t, j2.ID, terminal); d.State != client.Succeeded || d.Result.Sum != 12 {
		t.Fatalf("the job after the limit was lifted: %s", apitest.Describe(d))
	}
	tasks, err = c.Tasks(ctx, j2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := maxOverlap(tasks); n < 3 {
		t.Fatalf("after the limit was lifted, at most %d tasks ran at once on 4 workers", n)
	}
	if r := b.do(t, "PUT", "/api/v1/kinds/slow/limits", `{"concurrency":-1}`); r.Status != 400 {
		t.Fatalf("a negative limit: %d %s", r.Status, r.Body)
	}
	if r := b.do(t, "PUT", "/api/v1/kinds/nope/limits", `{"concurrency":1}`); r.Status != 404 {
		t.Fatalf("a limit on no kind: %d %s", r.Status, r.Body)
	}
}

// A kind's rate limit holds in the whole cluster: of 12 tasks at 3 a
// second, the k-th to start cannot start before k/3 seconds (less the
// window already begun) after the submit. Starts trail the fetch that took
// the window's starts, so only this lower bound is certain under load.
func TestKindRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) { c.Workers = 4 })
	c := b.client().API()
	ctx := apitest.Context(t)
	if k, err := c.SetKindLimits(ctx, "noop", client.KindLimits{Rate: "3/s"}); err != nil || k.Rate != "3/s" || k.Concurrency != 0 {
		t.Fatalf("set a rate: %+v %v", k, err)
	}
	submitted := time.Now()
	j := b.await(t, b.submit(t, "noop", 12).ID, terminal)
	if j.State != client.Succeeded {
		t.Fatalf("the rate-limited job: %s", apitest.Describe(j))
	}
	tasks, err := c.Tasks(ctx, j.ID)
	if err != nil || len(tasks) != 12 {
		t.Fatalf("tasks: %d %v", len(tasks), err)
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].StartedAt.Before(tasks[j].StartedAt) })
	for k, a := range tasks {
		if earliest := submitted.Add(time.Duration(k/3-1) * time.Second); a.StartedAt.Before(earliest) {
			t.Fatalf("task %d of 12 started %s after the submit: more than 3 a second", k+1, a.StartedAt.Sub(submitted))
		}
	}
	if r := b.do(t, "PUT", "/api/v1/kinds/noop/limits", `{"rate":"fast"}`); r.Status != 400 {
		t.Fatalf("a bad rate: %d %s", r.Status, r.Body)
	}
}
