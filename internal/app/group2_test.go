package app_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
	"github.com/mrcluster/mrcluster/internal/job"
	mrstore "github.com/mrcluster/mrcluster/internal/store"
)

// The jobs of a group outlive their server: a restarted one shows the
// finished ones (from the store when it holds no more of them) and runs
// the ones queued.
func TestGroupsAcrossARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var e echo
	at := func(workers int) func(*app.Config) {
		return func(c *app.Config) {
			c.DataDir, c.Workers, c.RecentJobs, c.Kinds = dir, workers, 5, testKinds(e.kind())
		}
	}
	b := setup(t, at(4))
	c := b.client().API()
	ctx := apitest.Context(t)
	finished, err := c.SubmitBatch(ctx, echoSpecs(30, -1))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(finished))
	for i, j := range finished {
		ids[i] = j.ID
	}
	if _, err := c.WaitAll(ctx, ids, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	b = setup(t, at(0))
	c = b.client().API()
	queued, err := c.SubmitBatch(ctx, echoSpecs(20, -1))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	b = setup(t, at(4))
	c = b.client().API()
	for i, id := range ids {
		j, err := c.Job(ctx, id)
		if err != nil || j.State != client.Succeeded || j.Result == nil || j.Result.Sum != int64(i) {
			t.Fatalf("finished job %d after a restart: %s %v", i, apitest.Describe(j), err)
		}
	}
	for i, q := range queued {
		if j := b.await(t, q.ID, terminal); j.State != client.Succeeded || j.Result.Sum != int64(i) {
			t.Fatalf("queued job %d after a restart: %s", i, apitest.Describe(j))
		}
	}
	list, err := c.Jobs(ctx, client.ListOptions{Limit: 500})
	if err != nil || len(list.Jobs) != len(ids)+len(queued) {
		t.Fatalf("%d jobs listed after a restart, want %d: %v", len(list.Jobs), len(ids)+len(queued), err)
	}
}

// A job of a group goes at its own expires_at, not with its group's last
// job: the others of a batch ended long before one that still runs
// stayed until that one was past its retention too.
func TestAJobOfAGroupExpiresAtItsOwnTime(t *testing.T) {
	t.Parallel()
	e := echo{release: make(chan struct{})}
	b := setup(t, func(c *app.Config) {
		c.Retention, c.ForgetDeletedAfter, c.Kinds = 2*time.Second, 200*time.Millisecond, testKinds(e.kind())
	})
	c := b.client().API()
	ctx := apitest.Context(t)
	specs := echoSpecs(4, -1)
	specs[3].Params = map[string]any{"v": 3, "hold": true}
	jobs, err := c.SubmitBatch(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := job.GroupOf(jobs[0].ID); !ok {
		t.Fatalf("the batch's jobs are not of a group: %s", jobs[0].ID)
	}
	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	ended, err := c.WaitAll(ctx, []string{jobs[0].ID, jobs[1].ID, jobs[2].ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, done := range ended {
		awaitDeleted(ctx, t, c, events, done.ID)
		if gone := time.Now(); done.ExpiresAt == nil || gone.Before(*done.ExpiresAt) {
			t.Fatalf("job %s deleted at %v, before its expires_at: %s", done.ID, gone, apitest.Describe(done))
		}
	}
	if j := b.job(t, jobs[3].ID); j.State != client.Running {
		t.Fatalf("the job of the group that runs on, its others deleted: %s", apitest.Describe(j))
	}
	close(e.release)
	if j := b.await(t, jobs[3].ID, terminal); j.State != client.Succeeded || j.Result == nil || j.Result.Sum != 3 {
		t.Fatalf("the last job of the group: %s", apitest.Describe(j))
	}
	awaitDeleted(ctx, t, c, events, jobs[3].ID)
	group, _, _ := job.GroupOf(jobs[0].ID)
	if _, _, err := store(t, b).Ports.Jobs.Get(ctx, group); !errors.Is(err, mrstore.ErrNotFound) {
		t.Fatalf("the record of a group whose jobs all expired: %v", err)
	}
}

// A group goes with its retention once its last job is past it, and with
// it everything it stored.
func TestGroupsExpire(t *testing.T) {
	t.Parallel()
	var e echo
	b := setup(t, func(c *app.Config) {
		c.Retention, c.ForgetDeletedAfter, c.Kinds = time.Second, 200*time.Millisecond, testKinds(e.kind())
	})
	c := b.client().API()
	ctx := apitest.Context(t)
	jobs, err := c.SubmitBatch(ctx, echoSpecs(3, 1))
	if err != nil {
		t.Fatal(err)
	}
	events, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	var last time.Time
	for _, j := range jobs {
		done := b.await(t, j.ID, terminal)
		if done.ExpiresAt == nil || !done.ExpiresAt.Equal(done.FinishedAt.Add(time.Second)) {
			t.Fatalf("a finished job of a group: %s, expires %v", apitest.Describe(done), done.ExpiresAt)
		}
		if done.FinishedAt.After(last) {
			last = *done.FinishedAt
		}
	}
	for _, j := range jobs {
		awaitDeleted(ctx, t, c, events, j.ID)
	}
	if time.Now().Before(last.Add(time.Second)) {
		t.Fatal("a group deleted before its last job was past its retention")
	}
	group, _, _ := job.GroupOf(jobs[0].ID)
	s := store(t, b)
	if _, _, err := s.Ports.Jobs.Get(ctx, group); !errors.Is(err, mrstore.ErrNotFound) {
		t.Fatalf("the record of an expired group: %v", err)
	}
}

// A group's jobs log their ends at debug (a line a job at info was a fifth
// of a busy server's CPU), a failure at warn as any job's, and the group
// one line at info when its last job ends.
func TestAGroupLogsOneLineWhenItEnds(t *testing.T) {
	t.Parallel()
	var e echo
	logs := &app.LockedBuffer{}
	b := setup(t, func(c *app.Config) {
		c.GroupBatches = true
		c.Kinds = testKinds(e.kind())
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	c := b.client().API()
	ctx := apitest.Context(t)
	jobs, err := c.SubmitBatchWithKey(ctx, echoSpecs(5, 2), "")
	if err != nil {
		t.Fatal(err)
	}
	group, _, _ := job.GroupOf(jobs[0].ID)
	for {
		out := logs.String()
		if strings.Contains(out, `msg="jobs of a group ended" group=`+group) {
			if !strings.Contains(out, "jobs=5 succeeded=4 failed=1 canceled=0") {
				t.Fatalf("the group's line does not count 4 succeeded and 1 failed:\n%s", out)
			}
			if !strings.Contains(out, `level=WARN msg="job failed" job=`+jobs[2].ID) {
				t.Fatalf("no warning names the failed job %s:\n%s", jobs[2].ID, out)
			}
			if n := strings.Count(out, `msg="job succeeded"`); n != 0 {
				t.Fatalf("%d jobs of the group logged their success at info:\n%s", n, out)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no line says the group %s ended:\n%s", group, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
