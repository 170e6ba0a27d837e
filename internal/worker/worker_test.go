package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// The pool's logic on the memory store: tasks go in the queue, results
// come out of the results stream, in milliseconds.

type fixture struct {
	t     *testing.T
	ctx   context.Context
	store *store.Store
	kinds *job.Registry
}

func newFixture(t *testing.T, ks ...job.Kind) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &fixture{t: t, ctx: ctx, store: memstore.New(memstore.Config{AckWait: time.Second}), kinds: job.NewRegistry(ks...)}
}

func (f *fixture) pool(concurrency int, mod ...func(*Config)) *Pool {
	f.t.Helper()
	cfg := Config{Store: f.store, Datasets: &dataset.Store{KV: f.store.Datasets, Blocks: f.store.Blocks}, Kinds: f.kinds,
		Concurrency: concurrency, Name: "test", Host: "here", Logger: slog.New(slog.DiscardHandler), RetryBackoff: 10 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	p := New(cfg)
	if err := p.Start(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(ctx)
	})
	return p
}

func (f *fixture) queue(tasks ...job.Task) {
	f.t.Helper()
	msgs, err := store.TaskMessages(tasks, false)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, err := range f.store.Tasks.Publish(f.ctx, msgs...) {
		if err != nil {
			f.t.Fatal(err)
		}
	}
}

// results collects task results from the results stream until n final
// ones came, and returns every one, history records included, as a job's
// history shows them: a record stored twice (when it was made, and carried
// with the final result) once.
func (f *fixture) results(n int) []job.TaskResult {
	f.t.Helper()
	var out []job.TaskResult
	finals := 0
	for finals < n {
		err := f.store.Results.Fetch(f.ctx, 100, time.Second, func(d store.Delivery) {
			rs, err := store.DecodeResults(d.Data())
			if err != nil {
				f.t.Errorf("result message: %v", err)
			}
			_ = d.Ack()
			for _, r := range rs {
				out = append(out, r)
				if r.Final() {
					finals++
				}
			}
		})
		if err != nil {
			f.t.Fatalf("fetch results: %v (have %+v)", err, out)
		}
	}
	return job.DropRepeated(out)
}

func task(id string, partition, maxAttempts int) job.Task {
	return job.Task{Job: id, Kind: "k", Phase: job.PhaseMap, Partition: partition, Partitions: 8, MaxAttempts: maxAttempts}
}

func TestPoolRunsTasksAndReportsResults(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(_ context.Context, t job.Task) (int64, error) { return int64(t.Partition * 10), nil }})
	f.pool(2)
	for p := range 8 {
		f.queue(task("j1", p, 1))
	}
	got := map[int]int64{}
	for _, r := range f.results(8) {
		if r.Error != "" || r.Attempt != 1 || r.Worker == "" {
			t.Fatalf("result: %+v", r)
		}
		got[r.Partition] = r.Value
	}
	for p := range 8 {
		if got[p] != int64(p*10) {
			t.Fatalf("partition %d: %d", p, got[p])
		}
	}
	// A worker acks its task once its result is stored: the last acks may
	// come just after the results are read.
	for {
		info, err := f.store.Tasks.Info(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Waiting+info.Leased == 0 {
			return
		}
		select {
		case <-f.ctx.Done():
			t.Fatalf("queue after the results: %+v; want every task acked", info)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A failed attempt is recorded, retried after the backoff, and counts
// toward the task's attempts; the last one's failure is its final word.
func TestFailedAttemptsAreRetriedUpToMaxAttempts(t *testing.T) {
	var runs atomic.Int32
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) {
		if runs.Add(1) < 3 {
			return 0, errors.New("flaky input")
		}
		return 1, nil
	}})
	f.pool(1)
	f.queue(task("j1", 0, 3))
	rs := f.results(1)
	if len(rs) != 3 || rs[0].Outcome != job.OutcomeFailed || rs[1].Outcome != job.OutcomeFailed || !rs[2].Final() {
		t.Fatalf("results: %+v; want two failed attempts then the final one", rs)
	}
	if last := rs[2]; last.Error != "" || last.Attempt != 3 || last.Failures != 2 {
		t.Fatalf("final result: %+v; want attempt 3 with 2 failures before it", last)
	}

	runs.Store(-100) // fails every time from now on
	f.queue(task("j2", 0, 2))
	rs = f.results(1)
	if len(rs) != 2 || rs[1].Error == "" || !rs[1].Final() || rs[1].Failures != 2 {
		t.Fatalf("results of a task failing every time: %+v; want one retry, then a final failure", rs)
	}
}

// A task whose worker died (its lease ran out) runs again; the lost run is
// recorded, and does not count as a failed attempt.
func TestALostRunIsRecordedNotCountedAsAFailure(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	f.queue(task("j1", 0, 1))
	// A worker takes the task and dies with it.
	var held int
	if err := f.store.Tasks.Fetch(f.ctx, 1, 5*time.Second, func(store.Delivery) { held++ }); err != nil || held != 1 {
		t.Fatalf("the dead worker's fetch: %d tasks, %v", held, err)
	}
	f.pool(1)
	rs := f.results(1)
	if len(rs) != 2 || rs[0].Outcome != job.OutcomeLost || rs[0].Attempt != 1 {
		t.Fatalf("results: %+v; want the lost run, then the final one", rs)
	}
	if final := rs[1]; !final.Final() || final.Error != "" || final.Attempt != 2 || final.Failures != 0 {
		t.Fatalf("final result: %+v; want attempt 2, no failures (max attempts 1)", final)
	}
}

// A cancel notice stops a job's running task; it reports nothing, and the
// pool drops the job's tasks of that epoch queued after it, but runs those
// of a later epoch (the job was retried).
func TestCancelStopsARunningTask(t *testing.T) {
	started := make(chan struct{}, 1)
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		if t.Job == "j1" && t.Epoch == 0 && t.Partition == 0 {
			started <- struct{}{}
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return 2, nil
	}})
	f.pool(1)
	f.queue(task("j1", 0, 1))
	select {
	case <-started:
	case <-f.ctx.Done():
		t.Fatal("the task never started")
	}
	if err := f.store.Notices.CancelJob("j1", 0); err != nil {
		t.Fatal(err)
	}
	// The next tasks run once the canceled one let its worker go: the
	// canceled epoch's is dropped, the retry's runs.
	f.queue(task("j1", 1, 1))
	retried := task("j1", 2, 1)
	retried.Epoch = 1
	f.queue(retried)
	f.queue(task("j2", 0, 1))
	rs := f.results(2)
	if len(rs) != 2 || rs[0].Job != "j1" || rs[0].Partition != 2 || rs[0].Epoch != 1 || rs[1].Job != "j2" {
		t.Fatalf("results: %+v; want j1's partition 2 of epoch 1, then j2's", rs)
	}
}

// A stop notice stops the other copies of a task a copy finished, and
// each stopped copy says so in the history: it showed nothing of them.
func TestStopNoticeStopsOtherCopies(t *testing.T) {
	started := make(chan struct{}, 1)
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		if t.Backup {
			return 1, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		return 0, ctx.Err()
	}})
	p := f.pool(1)
	f.queue(task("j1", 3, 1))
	select {
	case <-started:
	case <-f.ctx.Done():
		t.Fatal("the task never started")
	}
	if err := f.store.Notices.StopTask("j1", job.PhaseMap, 3); err != nil {
		t.Fatal(err)
	}
	backup := task("j1", 3, 1)
	backup.Backup = true
	f.queue(backup)
	rs := f.results(1)
	for !slices.ContainsFunc(rs, func(r job.TaskResult) bool { return r.Outcome == job.OutcomeStopped }) {
		// The stopped copy's record may come after the backup's result.
		err := f.store.Results.Fetch(f.ctx, 100, time.Second, func(d store.Delivery) {
			more, _ := store.DecodeResults(d.Data())
			_ = d.Ack()
			rs = append(rs, more...)
		})
		if err != nil {
			t.Fatalf("fetch results: %v (have %+v)", err, rs)
		}
	}
	var finals, stopped []job.TaskResult
	for _, r := range rs {
		if r.Final() {
			finals = append(finals, r)
		} else {
			stopped = append(stopped, r)
		}
	}
	if len(finals) != 1 || !finals[0].Backup {
		t.Fatalf("results: %+v; want the backup's only", finals)
	}
	if len(stopped) != 1 || stopped[0].Outcome != job.OutcomeStopped || stopped[0].Backup || stopped[0].Partition != 3 || stopped[0].Worker == "" ||
		!strings.Contains(stopped[0].Error, "another copy of this task finished first") {
		t.Fatalf("history records beside the result: %+v; want the stopped copy's, saying why", stopped)
	}
	// The stopped copy leaves the running tasks once its map returned,
	// which may come after the backup's result was stored.
	for {
		p.mu.Lock()
		running := fmt.Sprint(p.running)
		n := len(p.running)
		p.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-f.ctx.Done():
			t.Fatalf("tasks still tracked as running: %s", running)
		case <-time.After(time.Millisecond):
		}
	}
}

// withPriority is task t of the given priority.
func withPriority(t job.Task, p int) job.Task {
	t.Priority = p
	return t
}

// One worker takes the waiting tasks highest priority first, each
// priority in its order.
func TestPriorityOrder(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	f.queue(withPriority(task("low", 0, 1), 1), task("default", 0, 1), withPriority(task("high", 0, 1), 4),
		withPriority(task("mid", 0, 1), 3), withPriority(task("high", 1, 1), 4), task("default", 1, 1))
	f.pool(1)
	var got []string
	for _, r := range f.results(6) {
		got = append(got, fmt.Sprintf("%s/%d", r.Job, r.Partition))
	}
	if want := "high/0 high/1 mid/0 default/0 default/1 low/0"; strings.Join(got, " ") != want {
		t.Fatalf("ran %v; want %s", got, want)
	}
}

// A pool of tasks slower than a fetch's budget fetches for its idle
// workers only, woken by each worker that finishes. The wake once went to
// the pool's second fetcher, which only waits, and left the first asleep
// until its next look (a second), after every task: here, with looks an
// hour apart, that is a stall.
func TestSlowTasksWakeTheFetcher(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) {
		time.Sleep(2 * batchBudget) // slower than a fetch's budget
		return 1, nil
	}})
	var tasks []job.Task
	for i := range 30 {
		tasks = append(tasks, task("j", i, 1))
	}
	f.queue(tasks...)
	f.pool(1, func(c *Config) { c.recheck = time.Hour })
	if rs := f.results(30); len(rs) != 30 {
		t.Fatalf("%d results", len(rs))
	}
}

// A steady flow of high-priority tasks does not starve a low one: past the
// aging period it runs, long before the flow ends.
func TestLowPriorityIsNotStarved(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(_ context.Context, t job.Task) (int64, error) {
		if t.Job == "high" {
			time.Sleep(20 * time.Millisecond) // a task of some length: the flood lasts a second
		}
		return 1, nil
	}})
	var flood []job.Task
	for i := range 50 {
		flood = append(flood, withPriority(task("high", i, 1), 4))
	}
	f.queue(flood...)
	f.queue(withPriority(task("low", 0, 1), 1))
	f.pool(1, func(c *Config) { c.PriorityAging = 100 * time.Millisecond })
	rs := f.results(51)
	for i, r := range rs {
		if r.Job == "low" {
			if i >= 40 {
				t.Fatalf("the low task ran %dth of 51: it waited for most of the flood", i+1)
			}
			return
		}
	}
	t.Fatal("the low task never ran")
}

// A task lost with its worker MaxLostRuns times in a row is taken for what
// kills its workers: the next worker fails it without running it, and the
// history shows the lost runs before the final failure.
func TestATaskLostTooOftenInARowFailsWithoutRunning(t *testing.T) {
	var ran atomic.Int32
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { ran.Add(1); return 1, nil }})
	poison := task("j1", 0, 3)
	poison.MaxLostRuns, poison.Lost, poison.Runs = 3, 1, 1 // one run lost in an earlier copy
	f.queue(poison)
	// Two workers take it and die with it (its lease runs out each time).
	for range 2 {
		var held int
		if err := f.store.Tasks.Fetch(f.ctx, 1, 5*time.Second, func(store.Delivery) { held++ }); err != nil || held != 1 {
			t.Fatalf("a dying worker's fetch: %d tasks, %v", held, err)
		}
	}
	f.pool(1)
	rs := f.results(1)
	if len(rs) != 3 || rs[0].Outcome != job.OutcomeLost || rs[1].Outcome != job.OutcomeLost || rs[0].Attempt != 2 || rs[1].Attempt != 3 {
		t.Fatalf("results: %+v; want the two lost runs of this copy, then the final one", rs)
	}
	final := rs[2]
	if !final.Final() || !final.Unretried || final.Attempt != 4 || !strings.Contains(final.Error, "last 3 runs in a row ended with their worker lost") || !strings.Contains(final.Error, "--max-lost-runs 3") {
		t.Fatalf("final result: %+v; want a failure naming the lost runs and the flag", final)
	}
	if n := ran.Load(); n != 0 {
		t.Fatalf("the task ran %d times; a task lost too often must not run again", n)
	}
}

// Lost runs are counted in a row: a run that ends with a word from its
// worker (here a failure) queues the next copy with the count at zero.
func TestLostRunsAreCountedInARow(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 0, errors.New("flaky") }})
	flaky := task("j1", 0, 5)
	flaky.MaxLostRuns, flaky.Lost = 3, 2
	f.queue(flaky)
	p := f.pool(1, func(c *Config) { c.RetryBackoff = time.Hour })
	var failed []job.TaskResult
	for len(failed) == 0 {
		err := f.store.Results.Fetch(f.ctx, 10, time.Second, func(d store.Delivery) {
			rs, _ := store.DecodeResults(d.Data())
			_ = d.Ack()
			failed = append(failed, rs...)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if failed[0].Outcome != job.OutcomeFailed {
		t.Fatalf("first result: %+v; want a failed attempt", failed[0])
	}
	// Stopping the pool queues the waiting retry at once.
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var next []job.Task
	if err := f.store.Tasks.Fetch(f.ctx, 1, 5*time.Second, func(d store.Delivery) {
		tk, err := store.DecodeTask(d.Data())
		if err != nil {
			t.Error(err)
		}
		next = append(next, tk)
	}); err != nil || len(next) != 1 {
		t.Fatalf("the retry's copy: %+v, %v", next, err)
	}
	if next[0].Lost != 0 || next[0].Runs != 1 || next[0].Failures != 1 {
		t.Fatalf("the copy queued after a failed run: lost %d, runs %d, failures %d; want 0, 1, 1", next[0].Lost, next[0].Runs, next[0].Failures)
	}
}

// A pool of fast tasks fetches many at once; when one of them is slow, the
// others wait in the pool. Those that left the queue meanwhile (their job
// took them out: its kind paused, or moved lanes; the job ended) are not
// run once a worker is free: they ran during the pause before.
func TestTasksThatLeftTheQueueWhileWaitingInThePoolDoNotRun(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{}, 1)
	var heldRuns atomic.Int32
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		switch t.Job {
		case "slow":
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		case "held":
			heldRuns.Add(1)
		}
		return 1, nil
	}})
	f.pool(1, func(c *Config) { c.waitedLong = time.Nanosecond })
	// Fast tasks first: the pool learns to fetch many at once.
	for p := range 32 {
		f.queue(task("warm", p, 1))
	}
	f.results(32)
	var batch []job.Task
	batch = append(batch, task("slow", 0, 1))
	for p := range 8 {
		batch = append(batch, task("held", p, 1))
	}
	f.queue(batch...)
	<-started
	info, err := f.store.Tasks.Info(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Leased < 2 {
		t.Fatalf("the pool holds %d tasks while the slow one runs; want the held job's fetched with it (%+v)", info.Leased, info)
	}
	if err := f.store.Tasks.Purge(f.ctx, "held"); err != nil {
		t.Fatal(err)
	}
	close(release)
	f.queue(task("after", 0, 1)) // fetched after the held ones: runs after them
	for _, r := range f.results(2) {
		if r.Job == "held" {
			t.Fatalf("a task taken out of the queue ran: %+v", r)
		}
	}
	if n := heldRuns.Load(); n != 0 {
		t.Fatalf("%d tasks taken out of the queue while they waited in the pool ran", n)
	}
}

// A pool starts no task of a paused kind: it holds (parks) the tasks it
// fetched, while other kinds' run. One its job takes out of the queue (the
// pause reached it) is dropped without a run; once the kind resumes, the
// others go back to the queue and run.
func TestTasksOfAPausedKindAreParkedNotStarted(t *testing.T) {
	var paused atomic.Bool
	var runs atomic.Int32
	f := newFixture(t,
		job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { runs.Add(1); return 1, nil }},
		job.Kind{Name: "o", Map: func(context.Context, job.Task) (int64, error) { return 2, nil }})
	pool := f.pool(2, func(c *Config) { c.Paused = func(kind string) bool { return kind == "k" && paused.Load() } })
	of := func(id, kind string, p int) job.Task {
		t := task(id, p, 1)
		t.Kind = kind
		return t
	}
	paused.Store(true)
	f.queue(of("j1", "k", 0), of("j1", "k", 1), of("j1", "k", 2), of("j2", "o", 0), of("j2", "o", 1))
	for _, r := range f.results(2) {
		if r.Job != "j2" {
			t.Fatalf("a task of the paused kind ran: %+v", r)
		}
	}
	// The pause reaches j1: its server takes its tasks out of the queue.
	if err := f.store.Tasks.Purge(f.ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	f.queue(of("j3", "k", 0), of("j3", "k", 1))
	for parked := map[string]int{}; parked["j1"] != 0 || parked["j3"] != 2; {
		clear(parked)
		pool.parkMu.Lock()
		for _, t := range pool.parked {
			parked[t.Job]++
		}
		pool.parkMu.Unlock()
		select {
		case <-f.ctx.Done():
			t.Fatalf("parked: %v; want j1's tasks, taken out of the queue, dropped and j3's two parked", parked)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := runs.Load(); n != 0 {
		t.Fatalf("%d tasks of the paused kind ran", n)
	}
	paused.Store(false)
	for _, r := range f.results(2) {
		if r.Job != "j3" || r.Error != "" {
			t.Fatalf("after the resume: %+v; want j3's tasks", r)
		}
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d tasks of the resumed kind ran; want j3's 2 (j1's were taken out of the queue)", n)
	}
}

// A task parked for its kind's pause that its job never takes out of the
// queue (its server failed to) goes back to the queue's end after a while,
// still unstarted: a pool full of such tasks would fetch nothing else.
func TestAParkedTaskGoesBackToTheQueueAfterAWhile(t *testing.T) {
	var runs atomic.Int32
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { runs.Add(1); return 1, nil }})
	pool := f.pool(1, func(c *Config) {
		c.Paused = func(string) bool { return true }
		c.parkLimit = 50 * time.Millisecond
	})
	f.queue(task("j1", 0, 1))
	leases := map[*lease]bool{}
	for len(leases) < 3 {
		pool.parkMu.Lock()
		for l := range pool.parked {
			leases[l] = true
		}
		pool.parkMu.Unlock()
		select {
		case <-f.ctx.Done():
			t.Fatalf("the parked task was parked under %d leases; want it given back and fetched again", len(leases))
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := runs.Load(); n != 0 {
		t.Fatalf("the task of the paused kind ran %d times", n)
	}
}

// lookForEndedOften makes the pools of the test look at the records of
// their long-running tasks' jobs every 20 ms (stopEnded), as of tasks
// running that long.
func lookForEndedOften(t *testing.T) {
	old := endedEvery
	t.Cleanup(func() { endedEvery = old }) // after the pool's stop, made later
	endedEvery = 20 * time.Millisecond
}

// A job that ended while its cancel notice was missed (the worker was cut
// off, or reconnecting) has its running tasks stopped all the same, once
// the pool reads the job's record: those of a finished job, and those of
// an earlier run of a job since retried. A job not found (archived, and
// this process keeps no index of the archive) has its task stopped once
// the queue no longer holds the task's message, and not before.
func TestTasksOfAJobEndedWithoutANoticeAreStopped(t *testing.T) {
	lookForEndedOften(t)
	started, stopped := make(chan string, 4), make(chan string, 4)
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		started <- t.Job
		<-ctx.Done()
		stopped <- t.Job
		return 0, ctx.Err()
	}})
	now := time.Now().UTC()
	canceled := job.New("k_canceled", job.Spec{Kind: "k", Partitions: 1}, now)
	retried := job.New("k_retried", job.Spec{Kind: "k", Partitions: 1}, now)
	for _, j := range []*job.Job{canceled, retried} {
		if _, err := f.store.Jobs.Create(f.ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	f.pool(4)
	f.queue(task(canceled.ID, 0, 1), task(retried.ID, 0, 1), task("k_gone", 0, 1), task("k_unread", 0, 1))
	for range 4 {
		select {
		case <-started:
		case <-f.ctx.Done():
			t.Fatal("the tasks never started")
		}
	}
	// The records change, a task leaves the queue; no notice is sent.
	update := func(id string, change func(*job.Job)) {
		j, rev, err := f.store.Jobs.Get(f.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		change(j)
		if _, err := f.store.Jobs.Update(f.ctx, j, rev); err != nil {
			t.Fatal(err)
		}
	}
	update(canceled.ID, func(j *job.Job) { j.State = job.Canceled })
	update(retried.ID, func(j *job.Job) { j.Epoch = 1 })
	if err := f.store.Tasks.Purge(f.ctx, "k_gone"); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 3 {
		select {
		case id := <-stopped:
			got[id] = true
		case <-f.ctx.Done():
			t.Fatalf("stopped: %v; want the canceled, retried and gone jobs' tasks stopped", got)
		}
	}
	if got["k_unread"] {
		t.Fatalf("stopped: %v; the task of a job not found whose message is still queued must go on", got)
	}
	if err := f.store.Tasks.Purge(f.ctx, "k_unread"); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-stopped:
		if id != "k_unread" {
			t.Fatalf("stopped %s again", id)
		}
	case <-f.ctx.Done():
		t.Fatal("the task of a job not found was not stopped once its message left the queue")
	}
}

// A copy of a task that another copy finished (a backup won, its stop
// notice missed) is stopped once the pool reads the job's record, which
// shows the task done; the job's other task, not done, goes on. The
// stopped copy says so in the history.
func TestACopyOfATaskDoneElsewhereIsStopped(t *testing.T) {
	lookForEndedOften(t)
	started, stopped := make(chan int, 2), make(chan int, 2)
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		started <- t.Partition
		<-ctx.Done()
		stopped <- t.Partition
		return 0, ctx.Err()
	}})
	j := job.New("k_backedup", job.Spec{Kind: "k", Partitions: 8}, time.Now().UTC())
	rev, err := f.store.Jobs.Create(f.ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	f.pool(2)
	f.queue(task(j.ID, 0, 1), task(j.ID, 1, 1))
	for range 2 {
		select {
		case <-started:
		case <-f.ctx.Done():
			t.Fatal("the tasks never started")
		}
	}
	// Another copy of partition 0 finished: its result is in the record.
	j.Values.Set(0, 1)
	j.Done, j.State = 1, job.Running
	if _, err := f.store.Jobs.Update(f.ctx, j, rev); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-stopped:
		if n != 0 {
			t.Fatalf("stopped partition %d; want 0, the one done elsewhere", n)
		}
	case <-f.ctx.Done():
		t.Fatal("the copy of the task done elsewhere was not stopped")
	}
	var rs []job.TaskResult
	for len(rs) == 0 {
		err := f.store.Results.Fetch(f.ctx, 100, time.Second, func(d store.Delivery) {
			more, _ := store.DecodeResults(d.Data())
			_ = d.Ack()
			rs = append(rs, more...)
		})
		if err != nil {
			t.Fatalf("fetch results: %v", err)
		}
	}
	if len(rs) != 1 || rs[0].Partition != 0 || rs[0].Outcome != job.OutcomeStopped {
		t.Fatalf("history records: %+v; want partition 0's copy stopped", rs)
	}
	select {
	case n := <-stopped:
		t.Fatalf("partition %d, not done, was stopped too", n)
	case <-time.After(5 * endedEvery):
	}
}

// The wait for room starts when the store first refuses a task's output,
// not when its run began: a run longer than the wait is not failed at its
// first refusal, never having waited.
func TestALongRunTheStoreHasNoRoomForWaitsForRoom(t *testing.T) {
	var runs atomic.Int32
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) {
		if runs.Add(1) == 1 {
			time.Sleep(300 * time.Millisecond) // longer than the wait for room
			return 0, &job.StoreError{Err: fmt.Errorf("store map output: %w", store.ErrNoRoom)}
		}
		return 1, nil
	}})
	f.pool(1, func(c *Config) { c.RoomWait = 200 * time.Millisecond })
	f.queue(task("j1", 0, 1))
	rs := f.results(1)
	if len(rs) != 2 || rs[0].Outcome != job.OutcomeInterrupted || !rs[1].Final() || rs[1].Error != "" {
		t.Fatalf("results: %+v; want the run the store had no room for interrupted, then the task done", rs)
	}
}

// A backup copy that waited in the queue until its task was done (the
// original finished first) or its job ended is acked and not run; a copy
// of a task still running elsewhere runs.
func TestABackupCopyOfAFinishedTaskIsNotRun(t *testing.T) {
	started := make(chan string, 4)
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		started <- fmt.Sprintf("%s/%d", t.Job, t.Partition)
		return 1, nil
	}})
	running := job.New("k_running", job.Spec{Kind: "k", Partitions: 8}, time.Now().UTC())
	running.Values.Set(0, 1) // partition 0 done by its first copy
	running.Done, running.State = 1, job.Running
	ended := job.New("k_ended", job.Spec{Kind: "k", Partitions: 8}, time.Now().UTC())
	ended.State = job.Canceled
	for _, j := range []*job.Job{running, ended} {
		if _, err := f.store.Jobs.Create(f.ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	backup := func(t job.Task) job.Task { t.Backup = true; return t }
	f.queue(backup(task(running.ID, 0, 1)), backup(task(ended.ID, 3, 1)), backup(task(running.ID, 1, 1)))
	f.pool(1)
	rs := f.results(1)
	if len(rs) != 1 || rs[0].Job != running.ID || rs[0].Partition != 1 || !rs[0].Backup {
		t.Fatalf("results %+v; want the backup copy of %s's partition 1 alone", rs, running.ID)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err := f.store.Tasks.Info(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Waiting+info.Leased == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks still queued: %+v", info)
		}
	}
	close(started)
	var ran []string
	for s := range started {
		ran = append(ran, s)
	}
	if want := running.ID + "/1"; len(ran) != 1 || ran[0] != want {
		t.Fatalf("ran %v; want only %s", ran, want)
	}
}
