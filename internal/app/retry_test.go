package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
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

// A job's own max_attempts overrides the server's --max-attempts, both
// ways, and a rerun keeps it; a bad one is refused naming the field.
func TestMaxAttemptsPerJob(t *testing.T) {
	t.Parallel()
	// fails fails every run of a job until params.ok_after of them.
	var mu sync.Mutex
	runs := map[string]int{}
	fails := job.Kind{Name: "fails", Map: func(_ context.Context, t job.Task) (int64, error) {
		mu.Lock()
		runs[t.Job]++
		n := runs[t.Job]
		mu.Unlock()
		var p struct {
			OKAfter int `json:"ok_after"`
		}
		_ = json.Unmarshal(t.Params, &p)
		if n <= p.OKAfter {
			return 0, fmt.Errorf("failure %d", n)
		}
		return 1, nil
	}}
	b := setup(t, func(c *app.Config) { c.Kinds, c.MaxAttempts = testKinds(fails), 3 })
	c := b.client().API()
	ctx := apitest.Context(t)
	submit := func(spec client.Spec) client.Job {
		t.Helper()
		j, err := c.Submit(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return b.await(t, j.ID, terminal)
	}
	// More than the server allows: five failures, then success.
	more := submit(client.Spec{Kind: "fails", Partitions: 1, Params: map[string]any{"ok_after": 5}, MaxAttempts: 6})
	if more.State != client.Succeeded || more.MaxAttempts != 6 {
		t.Fatalf("a job allowed 6 attempts that fails 5 times: %s (max_attempts %d)", apitest.Describe(more), more.MaxAttempts)
	}
	// Fewer: one failure fails it.
	fewer := submit(client.Spec{Kind: "fails", Partitions: 1, Params: map[string]any{"ok_after": 1}, MaxAttempts: 1})
	if fewer.State != client.Failed || !strings.Contains(fewer.Error, "attempt 1 of 1") {
		t.Fatalf("a job allowed 1 attempt that fails once: %s", apitest.Describe(fewer))
	}
	// None given: the server's 3.
	dflt := submit(client.Spec{Kind: "fails", Partitions: 1, Params: map[string]any{"ok_after": 3}})
	if dflt.State != client.Failed || dflt.MaxAttempts != 3 || !strings.Contains(dflt.Error, "attempt 3 of 3") {
		t.Fatalf("a job without max_attempts that fails 3 times: %s (max_attempts %d)", apitest.Describe(dflt), dflt.MaxAttempts)
	}
	// A rerun runs with the attempts of the job it copies: a new job,
	// which fails once too (the server's 3 would let it succeed).
	again, err := c.Rerun(ctx, fewer.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again = b.await(t, again.ID, terminal); again.MaxAttempts != 1 || again.State != client.Failed || !strings.Contains(again.Error, "attempt 1 of 1") {
		t.Fatalf("a rerun of a job of 1 attempt: %s (max_attempts %d)", apitest.Describe(again), again.MaxAttempts)
	}
	for _, bad := range []string{`0`, `101`, `"2"`, `1.5`, `-1`} {
		r := b.client().Do(t, "POST", "/api/v1/jobs", `{"kind":"fails","partitions":1,"max_attempts":`+bad+`}`)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "max_attempts must be an integer from 1 to 100") {
			t.Errorf("max_attempts %s: %d %s", bad, r.Status, r.Body)
		}
	}
}
