package app_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
)

// A task that fails is run again, with backoff, up to --max-attempts; only
// then does its job fail, naming the attempts.
func TestFailedTasksAreRetried(t *testing.T) {
	t.Parallel()
	var flakyCalls, brokenCalls, panicCalls atomic.Int32
	flaky := job.Kind{Name: "flaky", Map: func(_ context.Context, tk job.Task) (int64, error) {
		if tk.Partition == 1 && flakyCalls.Add(1) <= 2 {
			return 0, errors.New("the disk hiccuped")
		}
		return 1, nil
	}}
	broken := job.Kind{Name: "broken", Map: func(_ context.Context, tk job.Task) (int64, error) {
		brokenCalls.Add(1)
		return 0, errors.New("the input is corrupt")
	}}
	panicky := job.Kind{Name: "panicky", Map: func(context.Context, job.Task) (int64, error) {
		panicCalls.Add(1)
		panic("boom")
	}}
	b := setup(t, func(c *app.Config) {
		c.Kinds = testKinds(flaky, broken, panicky)
		c.MaxAttempts = 3
	})

	j := b.submit(t, "flaky", 3)
	if j = b.await(t, j.ID, terminal); j.State != client.Succeeded || j.Result.Sum != 3 {
		t.Fatalf("a task that fails twice, then succeeds: %+v", j)
	}
	if n := flakyCalls.Load(); n != 3 {
		t.Fatalf("partition 1 ran %d times, want 3", n)
	}

	j = b.submit(t, "broken", 1)
	if j = b.await(t, j.ID, terminal); j.State != client.Failed || !strings.Contains(j.Error, "attempt 3 of 3") || !strings.Contains(j.Error, "the input is corrupt") {
		t.Fatalf("a task that always fails: %+v", j)
	}
	if n := brokenCalls.Load(); n != 3 {
		t.Fatalf("the broken task ran %d times, want 3", n)
	}

	j = b.submit(t, "panicky", 1)
	if j = b.await(t, j.ID, terminal); j.State != client.Failed || !strings.Contains(j.Error, "panicked: boom") {
		t.Fatalf("a task that panics: %+v", j)
	}
	if n := panicCalls.Load(); n != 3 {
		t.Fatalf("the panicking task ran %d times, want 3", n)
	}
	// The workers survived it all.
	ok := b.submit(t, "noop", 8)
	b.awaitState(t, ok.ID, client.Succeeded)
}
