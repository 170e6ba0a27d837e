package app_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
)

// A job submitted with a delay or a run_at is scheduled until then —
// listed, counted apart from the queue, cancelable — and its tasks are
// queued at its time, also when the server that accepted it was stopped
// and started again meanwhile.
func TestScheduledJobs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := setup(t, func(c *app.Config) { c.DataDir = dir })
	c := b.client().API()
	ctx := apitest.Context(t)

	var apiErr *client.Error
	for _, bad := range []struct{ body, says string }{
		{`{"kind":"noop","partitions":1,"delay":"soon"}`, "delay must be a duration"},
		{`{"kind":"noop","partitions":1,"run_at":"tomorrow"}`, "run_at must be a time in RFC 3339"},
		{`{"kind":"noop","partitions":1,"run_at":"2030-01-01T00:00:00Z","delay":"1s"}`, "run_at or delay, not both"},
		{`{"kind":"noop","partitions":1,"delay":"9000h"}`, "delay is 9000h0m0s away; at most"},
		{`{"kind":"noop","partitions":1,"run_at":"2099-01-01T00:00:00Z"}`, "run_at is"},
	} {
		if r := b.do(t, "POST", "/api/v1/jobs", bad.body); r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), bad.says) {
			t.Errorf("%s: %d %s, want 400 saying %q", bad.body, r.Status, r.Body, bad.says)
		}
	}

	runAt := time.Now().Add(3 * time.Second).UTC()
	later, err := c.Submit(ctx, client.Spec{Kind: "noop", Partitions: 3, RunAt: &runAt})
	if err != nil {
		t.Fatal(err)
	}
	canceled, err := c.Submit(ctx, client.Spec{Kind: "noop", Partitions: 2, Delay: "3s"})
	if err != nil {
		t.Fatal(err)
	}
	if later.State != "scheduled" || later.RunAt == nil || !later.RunAt.Equal(runAt) || later.Tasks.Queued != 0 {
		t.Fatalf("a job with run_at: %+v", later)
	}
	if l, err := c.Jobs(ctx, client.ListOptions{State: "scheduled"}); err != nil || len(l.Jobs) != 2 {
		t.Fatalf("scheduled jobs: %+v %v", l, err)
	}
	if q, err := c.Queue(ctx); err != nil || q.Depth != 0 {
		t.Fatalf("queue while the jobs wait for their time: %+v %v", q, err)
	}
	if j, err := c.Cancel(ctx, canceled.ID); err != nil || j.State != client.Canceled {
		t.Fatalf("cancel a scheduled job: %+v %v", j, err)
	}

	// The server stops and starts again before the time.
	if err := b.srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	b = setup(t, func(c *app.Config) { c.DataDir = dir })
	c = b.client().API()
	done := b.await(t, later.ID, terminal)
	if done.State != client.Succeeded || done.Result.Sum != 3 {
		t.Fatalf("the scheduled job: %s", apitest.Describe(done))
	}
	var queuedAt time.Time
	for _, s := range done.History {
		if s.State == "queued" {
			queuedAt = s.At
		}
	}
	// Within a second of its time (a scheduler looks every 250 ms); the
	// bound here leaves room for a loaded test machine.
	if queuedAt.Before(runAt) || queuedAt.After(runAt.Add(5*time.Second)) || done.History[0].State != "scheduled" {
		t.Fatalf("queued at %s for a run_at of %s; history %+v", queuedAt, runAt, done.History)
	}
	if j := b.job(t, canceled.ID); j.State != client.Canceled || j.Tasks.Done != 0 {
		t.Fatalf("the job canceled before its time: %s", apitest.Describe(j))
	}
	if _, err := c.Cancel(ctx, later.ID); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("cancel of the finished job: %v", err)
	}
}
