package app_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/client"
	"github.com/mrcluster/mrcluster/internal/apitest"
	"github.com/mrcluster/mrcluster/internal/app"
)

// A cron schedule submits one job per tick, each naming the schedule and
// its tick; it is listed with its next time and last jobs, paused (no job),
// resumed and deleted (its jobs stay). Bad schedules answer 400 naming the
// field, a taken name 409, an unknown one 404.
func TestCronSchedules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client().API()
	ctx := apitest.Context(t)

	for _, bad := range []struct{ body, says string }{
		{`{"name":"x","job":{"kind":"noop","partitions":1}}`, "cron is required"},
		{`{"name":"x","cron":"*/5 * * * *"}`, "job is required"},
		{`{"name":"x","cron":"every minute","job":{"kind":"noop","partitions":1}}`, `cron "every minute"`},
		{`{"name":"x","cron":"0 0 30 2 *","job":{"kind":"noop","partitions":1}}`, "never fires"},
		{`{"name":"x","cron":"* * * * *","timezone":"Mars/Base","job":{"kind":"noop","partitions":1}}`, `timezone "Mars/Base"`},
		{`{"name":"x","cron":"* * * * *","missed":"sometimes","job":{"kind":"noop","partitions":1}}`, `missed must be "skip" or "run_once"`},
		{`{"name":"x","cron":"* * * * *","overlap":"forbid","job":{"kind":"noop","partitions":1}}`, `overlap must be "allow"`},
		{`{"name":"x","cron":"* * * * *","job":{"kind":"nope","partitions":1}}`, `job: unknown kind "nope"`},
		{`{"name":"x","cron":"* * * * *","job":{"kind":"noop","partitions":1,"delay":"5s"}}`, "remove run_at and delay"},
		{`{"name":"x","cron":"* * * * *","job":{"kind":"noop","partitions":1,"colour":1}}`, `unknown field "colour"`},
		{`{"name":"a b","cron":"* * * * *","job":{"kind":"noop","partitions":1}}`, "schedule name"},
		{`{"name":"x","cron":"* * * * *","job":{"kind":"wordcount","partitions":1,"input":["nothing-here"]}}`, "nothing-here"},
		{`{"name":"x","cron":"* * * * *","job":{"kind":"noop"}}`, "partitions is required"},
		{`{"name":"x","cron":"* * * * *","job":{"kind":"wordcount","input":["nothing-here"]}}`, "nothing-here"},
	} {
		r := b.do(t, "POST", "/api/v1/schedules", bad.body)
		var e struct{ Error struct{ Message string } }
		r.JSON(t, &e)
		if r.Status/100 != 4 || !strings.Contains(e.Error.Message, bad.says) {
			t.Errorf("%s: %d %s, want 4xx saying %q", bad.body, r.Status, r.Body, bad.says)
		}
	}

	sc, err := c.AddSchedule(ctx, client.NewSchedule{Name: "every-second", Cron: "* * * * * *", Timezone: "Europe/Paris",
		Job: client.Spec{Kind: "noop", Partitions: 2, Timeout: "1m", MaxAttempts: 7}})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Missed != "skip" || sc.Next == nil || sc.Job.Timeout != "1m0s" || sc.Job.MaxAttempts != 7 || sc.Timezone != "Europe/Paris" {
		t.Fatalf("new schedule: %+v", sc)
	}
	var apiErr *client.Error
	if _, err := c.AddSchedule(ctx, client.NewSchedule{Name: "every-second", Cron: "@hourly", Job: client.Spec{Kind: "noop", Partitions: 1}}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("a second schedule of the same name: %v", err)
	}

	sc = b.client().AwaitSchedule(t, "every-second", func(s client.Schedule) bool { return s.Fired >= 3 })
	for i, f := range sc.Jobs {
		j := b.await(t, f.Job, terminal)
		if j.State != client.Succeeded || j.Schedule != "every-second" || j.Tick == nil || !j.Tick.Equal(f.Tick) || j.Tick.Nanosecond() != 0 || j.Timeout != "1m0s" || j.MaxAttempts != 7 {
			t.Fatalf("job %s of the schedule: %+v", f.Job, j)
		}
		if i > 0 && !sc.Jobs[i-1].Tick.After(f.Tick) {
			t.Fatalf("ticks not newest first, one per tick: %+v", sc.Jobs)
		}
	}

	// Paused: no job, however long; no next time.
	if sc, err = c.PauseSchedule(ctx, "every-second"); err != nil || !sc.Paused || sc.Next != nil {
		t.Fatalf("pause: %+v %v", sc, err)
	}
	paused := sc.Fired
	pausedAt := time.Now()
	probe := b.submit(t, "noop", 1) // a job through the whole cluster, then more than a tick
	b.await(t, probe.ID, terminal)
	b.client().AwaitSchedule(t, "every-second", func(client.Schedule) bool { return time.Since(pausedAt) > 2*time.Second })
	if sc, _ = c.Schedule(ctx, "every-second"); sc.Fired != paused {
		t.Fatalf("a paused schedule fired: %d jobs, %d when paused", sc.Fired, paused)
	}
	if sc, err = c.ResumeSchedule(ctx, "every-second"); err != nil || sc.Paused || sc.Next == nil {
		t.Fatalf("resume: %+v %v", sc, err)
	}
	sc = b.client().AwaitSchedule(t, "every-second", func(s client.Schedule) bool { return s.Fired > paused })
	if sc.Jobs[0].Tick.Before(pausedAt.Add(2 * time.Second)) {
		t.Fatalf("a tick slept through while paused was fired on resume: %+v (paused at %s)", sc.Jobs[0], pausedAt)
	}

	list, err := c.Schedules(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "every-second" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := c.DeleteSchedule(ctx, "every-second"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Schedule(ctx, "every-second"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("a deleted schedule: %v", err)
	}
	if err := c.DeleteSchedule(ctx, "every-second"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("delete again: %v", err)
	}
	if j := b.job(t, sc.Jobs[0].Job); j.Schedule != "every-second" {
		t.Fatalf("a deleted schedule's job: %+v", j)
	}
}

// Ticks missed while the (only) server was down: a schedule with missed
// run_once makes one job for the newest missed tick; one with skip makes
// none for them. Both go on with the ticks after the start.
// A scheduled data job without a partition count gets the cluster's
// choice at each tick, from its input then (one per worker here).
func TestScheduledDataJobWithoutPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.client().PutFile(t, "notes", "a.txt", []byte("the cat and the dog\n"))
	sc, err := b.client().API().AddSchedule(apitest.Context(t), client.NewSchedule{Name: "count", Cron: "* * * * * *",
		Job: client.Spec{Kind: "wordcount", Input: []string{"notes"}}})
	if err != nil || sc.Job.Partitions != 0 {
		t.Fatalf("a schedule of a data job without partitions: %+v %v", sc, err)
	}
	sc = b.client().AwaitSchedule(t, "count", func(s client.Schedule) bool { return s.Fired >= 1 && len(s.Jobs) > 0 })
	j := b.await(t, sc.Jobs[len(sc.Jobs)-1].Job, terminal)
	if j.State != client.Succeeded || j.Partitions != 4 {
		t.Fatalf("the schedule's job: %s, %d partitions; want succeeded, 4 (one per worker)", apitest.Describe(j), j.Partitions)
	}
}

func TestCronMissedTicks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	short := func(c *app.Config) { c.DataDir, c.ScheduleMissedAfter = dir, 500*time.Millisecond }
	b := setup(t, short)
	c := b.client().API()
	ctx := apitest.Context(t)
	for _, policy := range []string{"skip", "run_once"} {
		if _, err := c.AddSchedule(ctx, client.NewSchedule{Name: policy, Cron: "* * * * * *", Missed: policy, Job: client.Spec{Kind: "noop", Partitions: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	b.client().AwaitSchedule(t, "run_once", func(s client.Schedule) bool { return s.Fired >= 1 })
	if err := b.srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	time.Sleep(4 * time.Second) // the whole cluster down for four ticks: what is tested is the gap
	restarting := time.Now()
	b = setup(t, short)
	started := time.Now()
	// Ticks two seconds or more before the restart are surely missed: the
	// server was down, and takes them late by more than 500 ms.
	count := func(s client.Schedule, from, to time.Time) int {
		n := 0
		for _, f := range s.Jobs {
			if f.Tick.After(from) && f.Tick.Before(to) {
				n++
			}
		}
		return n
	}
	for _, policy := range []string{"skip", "run_once"} {
		s := b.client().AwaitSchedule(t, policy, func(s client.Schedule) bool { return s.LastTick != nil && s.LastTick.After(started) })
		missed := count(s, stopped, restarting.Add(-2*time.Second))
		switch policy {
		case "skip":
			if missed != 0 || s.Skipped < 2 {
				t.Fatalf("skip: %d jobs for missed ticks, %d skipped: %+v", missed, s.Skipped, s)
			}
		case "run_once":
			// The first stand-in after the stop is the gap's. Another is a
			// tick taken more than 500 ms late, as happens on a loaded
			// machine, by the first server before the stop or by the
			// restarted one after the gap's: it stands for that late tick
			// (or ticks).
			// The schedule lists its jobs newest first: read oldest first.
			jobs := slices.Clone(s.Jobs)
			slices.SortFunc(jobs, func(a, b client.ScheduledJob) int { return a.Tick.Compare(b.Tick) })
			var gap *client.ScheduledJob
			for i, f := range jobs {
				switch {
				case f.Missed == 0 || !f.Tick.After(stopped):
				case gap == nil:
					gap = &jobs[i]
					if f.Missed < 2 || f.Tick.Before(restarting.Add(-2*time.Second)) {
						t.Fatalf("run_once: job %+v stands for the missed ticks, not for the newest of them (stopped at %s, restarted at %s, started at %s); the schedule's jobs: %+v", f, stopped, restarting, started, s.Jobs)
					}
				case !f.Tick.After(gap.Tick):
					t.Fatalf("run_once: job %+v stands for missed ticks again after %+v stood for the gap", f, *gap)
				}
			}
			if missed > 0 || gap == nil || s.Skipped != 0 {
				t.Fatalf("run_once: %d jobs for missed ticks, none standing for them: %+v", missed, s)
			}
		}
		if count(s, started, time.Now()) < 1 {
			t.Fatalf("%s: no tick after the start fired: %+v", policy, s)
		}
	}
}

// A schedule with overlap skip makes no job while the job of its last
// fired tick runs (each such tick is counted and said), and fires again
// once it has finished.
func TestScheduleOverlapSkip(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	b := setup(t, func(c *app.Config) { c.Kinds = testKinds(gatedKind(gate)) })
	c := b.client()
	sc, err := c.API().AddSchedule(apitest.Context(t), client.NewSchedule{Name: "slow", Cron: "* * * * * *", Overlap: "skip", Job: client.Spec{Kind: "gated", Partitions: 1}})
	if err != nil || sc.Overlap != "skip" {
		t.Fatalf("add: %+v %v", sc, err)
	}
	sc = c.AwaitSchedule(t, "slow", func(s client.Schedule) bool { return s.Skipped >= 2 })
	if sc.Fired != 1 || !strings.Contains(sc.LastError, sc.Jobs[0].Job) || !strings.Contains(sc.LastError, "overlap: skip") {
		t.Fatalf("ticks while the first job runs: %+v", sc)
	}
	close(gate)
	b.await(t, sc.Jobs[0].Job, terminal)
	c.AwaitSchedule(t, "slow", func(s client.Schedule) bool { return s.Fired >= 2 })
}
