package schedule

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// queue is a fake of the service's submit: one job per idempotency key, as
// the coordinator makes it.
type queue struct {
	mu    sync.Mutex
	byKey map[string]*job.Job
	jobs  []*job.Job
	fail  error // answered, without a job, while set
}

func (q *queue) submit(_ context.Context, spec job.Spec) (*job.Job, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return nil, q.fail
	}
	if j, ok := q.byKey[spec.IdempotencyKey]; ok {
		return j, nil
	}
	j := job.New(fmt.Sprintf("%s_%d", spec.Kind, len(q.jobs)), spec, time.Now())
	q.byKey[spec.IdempotencyKey] = j
	q.jobs = append(q.jobs, j)
	return j, nil
}

func (q *queue) ticks() []time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []time.Time
	for _, j := range q.jobs {
		out = append(out, *j.Tick)
	}
	return out
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// servers returns n schedulers on one store, as n servers of a cluster,
// with a shared clock; they follow the store but do not fire on their own:
// the test steps them.
func servers(t *testing.T, n int, kv store.KV, q *queue, c *clock) []*Scheduler {
	t.Helper()
	var out []*Scheduler
	for range n {
		s := New(Config{KV: kv, Submit: q.submit, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			MissedAfter: time.Minute, Every: time.Hour, Now: c.Now})
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Stop(context.Background()) })
		out = append(out, s)
	}
	return out
}

// round steps every server until none has a due tick, each seeing the
// others' writes first (as its watch would bring them).
func round(t *testing.T, kv store.KV, ss []*Scheduler, name string) {
	t.Helper()
	for range 1000 {
		any := false
		for _, s := range ss {
			sync2(t, kv, s, name)
			if s.step(t.Context(), name) {
				any = true
			}
		}
		if !any {
			return
		}
	}
	t.Fatal("schedule keeps firing")
}

// sync2 makes s hold the stored record of name.
func sync2(t *testing.T, kv store.KV, s *Scheduler, name string) {
	t.Helper()
	e, err := kv.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	s.apply(&e)
}

func setup(t *testing.T, servers2 int, missed string) (*queue, *clock, store.KV, []*Scheduler) {
	t.Helper()
	q := &queue{byKey: map[string]*job.Job{}}
	c := &clock{now: time.Date(2026, 12, 1, 10, 0, 30, 0, time.UTC)}
	kv := memstore.New(memstore.Config{}).Schedules
	ss := servers(t, servers2, kv, q, c)
	if _, err := ss[0].Add(t.Context(), Schedule{Name: "nightly", Cron: "*/5 * * * *", Missed: missed, Job: JobSpec{Kind: "noop", Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	return q, c, kv, ss
}

// Three servers watching one schedule for an hour of five-minute ticks make
// exactly one job per tick, each with its tick's time.
func TestOneJobPerTickAcrossServers(t *testing.T) {
	q, c, kv, ss := setup(t, 3, Skip)
	for range 60 * 6 {
		c.add(10 * time.Second)
		round(t, kv, ss, "nightly")
	}
	ticks := q.ticks()
	if len(ticks) != 12 {
		t.Fatalf("%d jobs in an hour of */5, want 12: %v", len(ticks), ticks)
	}
	for i, tk := range ticks {
		want := time.Date(2026, 12, 1, 10, 5*(i+1), 0, 0, time.UTC)
		if !tk.Equal(want) {
			t.Fatalf("job %d has tick %s, want %s", i, tk, want)
		}
	}
	sc, _ := ss[1].Get("nightly")
	if sc.Fired != 12 || len(sc.Jobs) != keepJobs || sc.Jobs[keepJobs-1].Job != q.jobs[11].ID || sc.Pending != nil {
		t.Fatalf("record after an hour: %+v", sc)
	}
	if next := Next(sc, c.Now()); !next.Equal(time.Date(2026, 12, 1, 11, 5, 0, 0, time.UTC)) {
		t.Fatalf("next tick %s", next)
	}
}

// A server that took a tick and died before submitting it leaves it
// pending: another submits it once takeOver has passed, with the same key,
// so a submit the dead one got through is not doubled.
func TestPendingTickTakenOver(t *testing.T) {
	q, c, kv, ss := setup(t, 2, Skip)
	c.add(5 * time.Minute) // 10:05:30: the 10:05 tick is due
	// Server 0 takes the tick and submits, then "dies" before recording.
	e, _ := ss[0].lookup("nightly")
	p := &Pending{Tick: time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC), Since: c.Now()}
	if _, ok := ss[0].update(t.Context(), e, func(sc *Schedule) { sc.Pending = p }); !ok {
		t.Fatal("could not take the tick")
	}
	sc, _ := ss[0].Get("nightly")
	spec := sc.Job.Spec()
	spec.Schedule, spec.Tick = sc.Name, p.Tick
	spec.IdempotencyKey = fmt.Sprintf("schedule\x00%s\x00%d\x00%d", sc.Name, sc.CreatedAt.UnixNano(), p.Tick.UnixNano())
	first, _ := q.submit(t.Context(), spec)

	live := ss[1:]
	round(t, kv, live, "nightly")
	if sc, _ := ss[1].Get("nightly"); sc.Pending == nil {
		t.Fatal("a tick another server took was fired before takeOver")
	}
	c.add(takeOver)
	round(t, kv, live, "nightly")
	sc, _ = ss[1].Get("nightly")
	if sc.Pending != nil || sc.Fired != 1 || sc.Jobs[0].Job != first.ID || len(q.jobs) != 1 {
		t.Fatalf("after the take-over: record %+v, %d jobs", sc, len(q.jobs))
	}
}

// Missed ticks (no server ran for an hour): skip fires none of them;
// run_once fires one, for the newest; both go on with the next tick.
func TestMissedTicks(t *testing.T) {
	for _, policy := range []string{Skip, RunOnce} {
		t.Run(policy, func(t *testing.T) {
			q, c, kv, ss := setup(t, 2, policy)
			c.add(time.Hour) // 11:00:30: 12 ticks; 10:05 … 10:55 are missed, 11:00 is not
			round(t, kv, ss, "nightly")
			ticks := q.ticks()
			sc, _ := ss[0].Get("nightly")
			var want []time.Time
			if policy == RunOnce {
				want = append(want, time.Date(2026, 12, 1, 10, 55, 0, 0, time.UTC))
			} else if sc.Skipped != 11 {
				t.Fatalf("skipped %d, want 11", sc.Skipped)
			}
			want = append(want, time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC))
			if fmt.Sprint(ticks) != fmt.Sprint(want) {
				t.Fatalf("jobs for ticks %v, want %v", ticks, want)
			}
		})
	}
}

// A refused job (its dataset deleted) skips the tick with the reason on
// the record; a store failure is tried again until the tick is missed.
func TestFailures(t *testing.T) {
	q, c, kv, ss := setup(t, 1, Skip)
	q.fail = job.Errorf(job.EInvalid, "dataset \"books\" not found")
	c.add(5 * time.Minute)
	round(t, kv, ss, "nightly")
	sc, _ := ss[0].Get("nightly")
	if sc.LastError == "" || sc.Fired != 0 || !sc.Last.Equal(time.Date(2026, 12, 1, 10, 5, 0, 0, time.UTC)) {
		t.Fatalf("after a refused job: %+v", sc)
	}

	q.fail = job.Unavailable("job store", fmt.Errorf("timeout"))
	c.add(5 * time.Minute) // the 10:10 tick
	round(t, kv, ss, "nightly")
	if sc, _ := ss[0].Get("nightly"); sc.Pending == nil {
		t.Fatalf("a store failure dropped the tick: %+v", sc)
	}
	q.fail = nil
	c.add(takeOver)
	round(t, kv, ss, "nightly")
	sc, _ = ss[0].Get("nightly")
	if sc.Fired != 1 || sc.LastError != "" || !q.jobs[0].Tick.Equal(time.Date(2026, 12, 1, 10, 10, 0, 0, time.UTC)) {
		t.Fatalf("after the store came back: %+v", sc)
	}
}

// A stand-in for missed ticks (run_once) whose submit fails for want of
// the store (a cluster just started again) is tried again, not dropped:
// it is late by its nature, and counts from when it was taken.
func TestMissedTicksStandInSurvivesAStoreFailure(t *testing.T) {
	q, c, kv, ss := setup(t, 1, RunOnce)
	c.add(time.Hour) // 11:00:30: 10:05 … 10:55 are missed
	q.fail = job.Unavailable("job store", fmt.Errorf("no leader yet"))
	round(t, kv, ss, "nightly")
	sc, _ := ss[0].Get("nightly")
	if sc.Pending == nil || sc.Pending.Missed == 0 || sc.LastError != "" {
		t.Fatalf("a store failure dropped the stand-in for the missed ticks: %+v", sc)
	}
	q.fail = nil
	c.add(takeOver)
	round(t, kv, ss, "nightly")
	if len(q.jobs) == 0 || !q.jobs[0].Tick.Equal(time.Date(2026, 12, 1, 10, 55, 0, 0, time.UTC)) {
		t.Fatalf("jobs after the store came back: %+v; want the stand-in for 10:55 first", q.jobs)
	}
}

// Paused, a schedule fires nothing; resumed, it goes on from the next tick
// after the resume, not with the ticks it slept through.
func TestPauseResume(t *testing.T) {
	q, c, kv, ss := setup(t, 1, RunOnce)
	if _, err := ss[0].Pause(t.Context(), "nightly"); err != nil {
		t.Fatal(err)
	}
	c.add(2 * time.Hour)
	round(t, kv, ss, "nightly")
	if len(q.jobs) != 0 {
		t.Fatalf("a paused schedule fired %v", q.ticks())
	}
	if _, err := ss[0].Resume(t.Context(), "nightly"); err != nil {
		t.Fatal(err)
	}
	c.add(5 * time.Minute)
	round(t, kv, ss, "nightly")
	if ticks := q.ticks(); len(ticks) != 1 || !ticks[0].Equal(time.Date(2026, 12, 1, 12, 5, 0, 0, time.UTC)) {
		t.Fatalf("after resume: %v", ticks)
	}
}

func TestParse(t *testing.T) {
	for _, bad := range []struct{ cron, tz string }{
		{"", ""}, {"* * *", ""}, {"61 * * * *", ""}, {"0 0 30 2 *", ""}, {"TZ=UTC * * * * *", ""}, {"* * * * *", "Mars/Base"},
		{"@every 0s", ""}, {"@every 1ms", ""}, {"@every 1500ms", ""}, {"@every -5s", ""}, {"@every soon", ""},
	} {
		if err := Check(bad.cron, bad.tz); job.ErrorCode(err) != job.EInvalid {
			t.Errorf("Check(%q, %q) = %v, want an invalid-input error", bad.cron, bad.tz, err)
		}
	}
	// A schedule stored before Check held @every to whole seconds fires
	// as it did.
	if _, _, err := Parse("@every 0s", ""); err != nil {
		t.Errorf("Parse of a stored @every 0s: %v", err)
	}
	for _, good := range []string{"*/5 * * * *", "*/2 * * * * *", "@hourly", "@every 90s", "@every 1s", "@every 1h30m", "0 9 * * MON-FRI"} {
		if err := Check(good, "Europe/Paris"); err != nil {
			t.Errorf("Check(%q): %v", good, err)
		}
	}
}

// With overlap skip, a tick while the job of the last tick fired has not
// finished makes no job: it is counted as skipped and said why; once that
// job has finished, the next tick fires again. With allow (the default,
// and a record of an earlier version without the field), ticks fire
// whatever runs.
func TestOverlapSkipWhileTheLastJobRuns(t *testing.T) {
	q, c, kv, ss := setup(t, 2, Skip)
	if _, err := ss[0].Add(t.Context(), Schedule{Name: "long", Cron: "*/5 * * * *", Overlap: Skip, Job: JobSpec{Kind: "long", Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ss[0].Add(t.Context(), Schedule{Name: "bad", Cron: "*/5 * * * *", Overlap: "forbid", Job: JobSpec{Kind: "long", Partitions: 1}}); job.ErrorCode(err) != job.EInvalid {
		t.Fatalf("overlap forbid: %v", err)
	}
	var mu sync.Mutex
	running := map[string]bool{}
	for _, s := range ss {
		s.SetUnfinished(func(id string) bool {
			mu.Lock()
			defer mu.Unlock()
			return running[id]
		})
	}
	kindJobs := func(kind string) (out []*job.Job) {
		q.mu.Lock()
		defer q.mu.Unlock()
		for _, j := range q.jobs {
			if j.Kind == kind {
				out = append(out, j)
			}
		}
		return out
	}
	tick := func() {
		c.add(5 * time.Minute)
		round(t, kv, ss, "long")
		round(t, kv, ss, "nightly")
	}
	tick() // 10:05: the first job, which runs on
	first := kindJobs("long")
	if len(first) != 1 {
		t.Fatalf("%d jobs at the first tick", len(first))
	}
	mu.Lock()
	running[first[0].ID], running[kindJobs("noop")[0].ID] = true, true
	mu.Unlock()
	tick() // 10:10 and 10:15: skipped, the first job still runs
	tick()
	sc, _ := ss[1].Get("long")
	if n := len(kindJobs("long")); n != 1 || sc.Skipped != 2 || !strings.Contains(sc.LastError, first[0].ID) || !strings.Contains(sc.LastError, "overlap: skip") {
		t.Fatalf("%d jobs while the first ran; record %+v", n, sc)
	}
	if n := len(kindJobs("noop")); n != 3 {
		t.Fatalf("a schedule of overlap allow made %d jobs in three ticks while its first ran", n)
	}
	mu.Lock()
	running[first[0].ID] = false
	mu.Unlock()
	tick() // 10:20: fires again
	sc, _ = ss[0].Get("long")
	if n := len(kindJobs("long")); n != 2 || sc.Fired != 2 || sc.LastError != "" || sc.Overlap != Skip {
		t.Fatalf("%d jobs once the first finished; record %+v", n, sc)
	}
}
