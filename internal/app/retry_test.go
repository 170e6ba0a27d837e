package app_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
)

// Retry runs a failed job's unfinished tasks again in the same job (those
// whose value it kept do not run twice), and a canceled data job whole (its outputs were
// deleted): its output is the sequential one and its counters count each
// input byte once. A job that is not failed or canceled cannot be retried.
func TestRetry(t *testing.T) {
	t.Parallel()
	// flaky fails partition 2 in a job's first epoch, and not after. The
	// retried epoch's tasks wait for release, so that the test reads what
	// the retry kept before any of them ends, and count their runs.
	release := make(chan struct{})
	var mu sync.Mutex
	var ranFirst int
	again := map[int]int{} // runs of the retried epoch, by partition
	flaky := job.Kind{Name: "flaky", Map: func(ctx context.Context, t job.Task) (int64, error) {
		if t.Epoch == 0 {
			mu.Lock()
			ranFirst++
			mu.Unlock()
			if t.Partition == 2 {
				return 0, errorString("the service partition 2 calls was down")
			}
			return 1, nil
		}
		mu.Lock()
		again[t.Partition]++
		mu.Unlock()
		select {
		case <-release:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}}
	b := setup(t, func(c *app.Config) { c.Kinds, c.MaxAttempts = testKinds(flaky), 1 })
	c := b.client().API()
	ctx := apitest.Context(t)

	j := b.await(t, b.submit(t, "flaky", 4).ID, terminal)
	if j.State != client.Failed {
		t.Fatalf("flaky job: %s", apitest.Describe(j))
	}
	r, err := c.Retry(ctx, j.ID)
	if err != nil || r.State.Terminal() || r.Retries != 1 {
		t.Fatalf("retry: %+v %v", r, err)
	}
	// The partitions whose value the job kept: read from the retry's
	// answer, since a result of the first epoch may still be applied
	// after the job failed, until the retry.
	doneBefore := r.Tasks.Done
	close(release)
	j = b.await(t, j.ID, terminal)
	if j.State != client.Succeeded || j.Result.Sum != 4 || j.Retries != 1 || j.Error != "" {
		t.Fatalf("retried job: %s", apitest.Describe(j))
	}
	tasks, err := c.Tasks(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[int]int{}
	for _, a := range tasks {
		runs[a.Partition]++
	}
	mu.Lock()
	rerun := 0
	for _, n := range again {
		rerun += n
	}
	again2, first := again[2], ranFirst
	mu.Unlock()
	// The history holds the failure and every run of the retried epoch;
	// a run of the first epoch that ended after the retry is not applied
	// and not logged.
	if again2 != 1 || rerun != 4-doneBefore || runs[2] != 2 || len(tasks) < 1+rerun || len(tasks) > first+rerun {
		t.Fatalf("the retried epoch ran partition 2 %d times and %d tasks in all with %d partitions done before the retry (only the others should run again); history %v of %d+%d runs",
			again2, rerun, doneBefore, runs, first, rerun)
	}
	var apiErr *client.Error
	if _, err := c.Retry(ctx, j.ID); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("retry of a succeeded job: %v", err)
	}
	if _, err := c.Retry(ctx, "noop_01m8r2ryk6x0mek2na9q3n7xyj"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("retry of no job: %v", err)
	}

	docs := gutenberg(t)
	b.upload(t, "books", docs)
	var size int64
	for _, d := range docs {
		size += int64(len(d.Data))
	}
	wc := b.client().SubmitSpec(t, client.Spec{Kind: "wordcount", Input: []string{"books"}, Partitions: 8, Reducers: 3})
	// Canceled at once or after a few maps: either way it runs whole again.
	b.await(t, wc.ID, func(j client.Job) bool { return j.Tasks.Done >= 1 || j.State.Terminal() })
	if _, err := c.Cancel(ctx, wc.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Retry(ctx, wc.ID); err != nil {
		t.Fatal(err)
	}
	done := b.await(t, wc.ID, terminal)
	if done.State != client.Succeeded || done.Counters.InputBytes != size || done.Tasks.Done != 11 {
		t.Fatalf("retried wordcount: %s, %d input bytes of %d", apitest.Describe(done), done.Counters.InputBytes, size)
	}
	if got, want := b.client().Output(t, wc.ID), kinds.SeqWordCount(docs); got != want {
		t.Fatalf("retried wordcount's output: %s", diff(got, want))
	}
}
