package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// The coordinator's logic on the memory store: each test runs in
// milliseconds, with a fake worker that takes tasks from the queue and
// publishes results as a real one does.

type fixture struct {
	t     *testing.T
	ctx   context.Context
	store *store.Store
	ds    *dataset.Store
	c     *Coordinator
}

// storeFixture is a fixture whose jobs bucket is wrap's, with no
// coordinator started yet.
func storeFixture(t *testing.T, wrap func(store.KV) store.KV) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s := memstore.New(memstore.Config{AckWait: time.Second})
	s.Jobs.KV = wrap(s.Jobs.KV)
	return &fixture{t: t, ctx: ctx, store: s, ds: &dataset.Store{KV: s.Datasets, Blocks: s.Blocks}}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := storeFixture(t, func(kv store.KV) store.KV { return kv })
	f.c = f.coordinator()
	return f
}

func (f *fixture) coordinator(tweaks ...func(*Config)) *Coordinator {
	cfg := Config{Store: f.store, Datasets: f.ds, Kinds: kinds.Builtin(0), MaxAttempts: 2,
		Logger: slog.New(slog.DiscardHandler)}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	c := New(cfg)
	if err := c.Start(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

// take fetches n tasks from the queue, acked.
func (f *fixture) take(n int) []job.Task {
	f.t.Helper()
	var out []job.Task
	for len(out) < n {
		err := f.store.Tasks.Fetch(f.ctx, n-len(out), time.Second, func(d store.Delivery) {
			t, err := store.DecodeTask(d.Data())
			if err != nil {
				f.t.Errorf("task message: %v", err)
			}
			_ = d.Ack()
			out = append(out, t)
		})
		if err != nil {
			f.t.Fatalf("fetch tasks: %v (have %d of %d)", err, len(out), n)
		}
	}
	return out
}

// queued counts the task messages waiting.
func (f *fixture) queued() int {
	f.t.Helper()
	info, err := f.store.Tasks.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return info.Waiting + info.Leased
}

// report stores results as a worker does: on the shared subject for a job
// that keeps its history in its record (one without a record yet: on its
// own).
func (f *fixture) report(rs ...job.TaskResult) {
	f.t.Helper()
	j, _, _ := f.store.Jobs.Get(f.ctx, rs[0].Job)
	m, err := store.ResultMessage(rs, j != nil && j.LogInRecord)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.Results.Publish(f.ctx, m)[0]; err != nil {
		f.t.Fatal(err)
	}
}

// await returns job id once cond holds for its stored record.
func (f *fixture) await(id string, cond func(*job.Job) bool) *job.Job {
	f.t.Helper()
	w, err := f.store.Jobs.KV.Watch(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	defer w.Stop()
	var last *job.Job
	for {
		select {
		case e := <-w.Updates():
			if e == nil || e.Key != id || e.Deleted {
				continue
			}
			j, err := store.DecodeJob(e.Value)
			if err != nil {
				f.t.Fatal(err)
			}
			if last = j; cond(j) {
				return j
			}
		case <-f.ctx.Done():
			f.t.Fatalf("job %s never got there; last seen %+v", id, last)
		}
	}
}

func result(t job.Task, value int64) job.TaskResult {
	now := time.Now().UTC()
	return job.TaskResult{Job: t.Job, Partition: t.Partition, Phase: t.Phase, Attempt: 1, Worker: "w.0", Value: value, StartedAt: now, FinishedAt: now, Epoch: t.Epoch}
}

// failure is a task's last failed attempt.
func failure(t job.Task, msg string) job.TaskResult {
	r := result(t, 0)
	r.Error = msg
	return r
}

func TestSubmitQueuesTasksThenResultsFinishTheJob(t *testing.T) {
	f := newFixture(t)
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != job.Queued || !j.Enqueued {
		t.Fatalf("submitted job: %s, enqueued %v", j.State, j.Enqueued)
	}
	tasks := f.take(3)
	for i, task := range tasks {
		f.report(result(task, int64(10*(i+1))))
	}
	done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Result == nil || done.Result.Sum != 60 {
		t.Fatalf("job after its results: %s %+v", done.State, done.Result)
	}
	if n := f.queued(); n != 0 {
		t.Fatalf("%d tasks queued after the job ended", n)
	}
}

// A submit whose input does not exist stores nothing (the spec's checks
// are the service's; this one needs the store).
func TestSubmitOfMissingInputStoresNothing(t *testing.T) {
	f := newFixture(t)
	if _, err := f.c.Submit(f.ctx, job.Spec{Kind: "wordcount", Partitions: 2, Input: []string{"missing"}}); job.ErrorCode(err) != job.EInvalid || !strings.Contains(err.Error(), `dataset "missing" does not exist`) {
		t.Fatalf("submit of a missing dataset: %v; want an invalid-input error naming it", err)
	}
	keys, _ := f.store.Jobs.KV.Keys(f.ctx)
	if len(keys) != 0 || f.queued() != 0 {
		t.Fatalf("a refused submit left %d jobs and %d tasks", len(keys), f.queued())
	}
}

func TestCancelDropsQueuedTasksAndStopsRunningOnes(t *testing.T) {
	f := newFixture(t)
	canceled := make(chan string, 1)
	unsub, err := f.store.Notices.OnCancelJob(func(id string, _ int) { canceled <- id })
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 5})
	if err != nil {
		t.Fatal(err)
	}
	running := f.take(1)[0]
	if _, err := f.c.Cancel(f.ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-canceled:
		if id != j.ID {
			t.Fatalf("cancel notice for %s", id)
		}
	case <-f.ctx.Done():
		t.Fatal("no cancel notice")
	}
	if n := f.queued(); n != 0 {
		t.Fatalf("%d tasks still queued after cancel", n)
	}
	// A result of the task that was running when the job was canceled
	// changes nothing.
	f.report(result(running, 1))
	if _, err := f.c.Cancel(f.ctx, j.ID); job.ErrorCode(err) != job.EConflict {
		t.Fatalf("second cancel: %v; want a conflict", err)
	}
	got, _, err := f.c.Get(f.ctx, j.ID)
	if err != nil || got.State != job.Canceled || got.Done != 0 {
		t.Fatalf("canceled job: %+v %v", got, err)
	}
}

func TestAFailedTaskFailsItsJobAndDropsTheRest(t *testing.T) {
	f := newFixture(t)
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	bad := result(f.take(1)[0], 0)
	bad.Error, bad.Failures = "the input of partition 1 is corrupt", 2
	f.report(bad)
	failed := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if failed.State != job.Failed || !strings.Contains(failed.Error, "corrupt") {
		t.Fatalf("job after a failed task: %s %q", failed.State, failed.Error)
	}
	// The rest are dropped just after the record says failed.
	waitFor(t, func() bool { return f.queued() == 0 })
}

// History-only records (a lost or retried attempt) never change the job.
func TestHistoryRecordsDoNotChangeTheJob(t *testing.T) {
	f := newFixture(t)
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	task := f.take(1)[0]
	lost := result(task, 0)
	lost.Outcome, lost.Error = job.OutcomeLost, "the worker stopped answering"
	f.report(lost)
	f.report(result(task, 7))
	done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Result.Sum != 7 {
		t.Fatalf("job: %s %+v", done.State, done.Result)
	}
	history, err := f.c.Tasks(f.ctx, j.ID)
	if err != nil || len(history) != 2 || history[0].Outcome != job.OutcomeLost && history[1].Outcome != job.OutcomeLost {
		t.Fatalf("task history: %+v %v; want the lost attempt and the final one", history, err)
	}
}

// A data job goes through its map phase, then its reduce phase, whose
// tasks are queued once however many servers start the phase.
func TestDataJobPhasesAndReducesQueuedOnce(t *testing.T) {
	f := newFixture(t)
	if _, err := f.ds.PutFile(f.ctx, "d", "a.txt", strings.NewReader("one two\nthree\n")); err != nil {
		t.Fatal(err)
	}
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "wordcount", Partitions: 2, Input: []string{"d"}, Reducers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if j.Phase != job.PhaseMap || len(j.Files) != 1 {
		t.Fatalf("submitted data job: phase %q, %d files", j.Phase, len(j.Files))
	}
	maps := f.take(2)
	for _, m := range maps {
		if m.Phase != job.PhaseMap || len(m.Split) == 0 {
			t.Fatalf("map task: %+v", m)
		}
		r := result(m, 1)
		r.Commit, r.Counters = fmt.Sprintf("c%d", m.Partition), &job.Counters{InputRecords: 1}
		f.report(r)
	}
	reducing := f.await(j.ID, func(j *job.Job) bool { return j.Phase == job.PhaseReduce && j.Enqueued })
	if !slices.Equal(reducing.MapCommits, []string{"c0", "c1"}) {
		t.Fatalf("map commits: %v", reducing.MapCommits)
	}
	// A second coordinator starting the same phase, as another server
	// applying a duplicate of the last map result would.
	other := f.coordinator()
	reducing.Enqueued = false
	other.startReduce(f.ctx, reducing)
	if n := f.queued(); n != 3 {
		t.Fatalf("%d reduce tasks queued; want 3, once each", n)
	}
	reduces := f.take(3)
	for _, r := range reduces {
		if r.Phase != job.PhaseReduce || !slices.Equal(r.Maps, []string{"c0", "c1"}) {
			t.Fatalf("reduce task: %+v", r)
		}
		res := result(r, 1)
		res.Commit, res.Counters = fmt.Sprintf("r%d", r.Partition), &job.Counters{ReduceOutputRecords: 1}
		f.report(res)
	}
	done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Counters.ReduceOutputRecords != 3 || done.Counters.InputRecords != 2 {
		t.Fatalf("data job: %s %+v", done.State, done.Counters)
	}
}

func TestIdempotentSubmitAnswersTheFirstJob(t *testing.T) {
	f := newFixture(t)
	first, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: "k1"})
	if err != nil || again.ID != first.ID || !again.Replayed {
		t.Fatalf("second submit with the key: %+v %v; want job %s, replayed", again, err, first.ID)
	}
	if n := f.queued(); n != 2 {
		t.Fatalf("%d tasks queued; want the first submit's 2 only", n)
	}
	other, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: "k2"})
	if err != nil || other.ID == first.ID {
		t.Fatalf("a submit with another key: %+v %v", other, err)
	}
}

// A key sent again with another request's fingerprint is refused and
// stores nothing; a key stored before fingerprints existed (no request in
// its value) answers its job to any request.
func TestIdempotencyKeyOfAnotherRequest(t *testing.T) {
	f := newFixture(t)
	first, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: "k1", Fingerprint: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 3, IdempotencyKey: "k1", Fingerprint: "b"})
	if job.ErrorCode(err) != job.EKeyReused || !strings.Contains(job.ErrorMessage(err), first.ID) {
		t.Fatalf("the key with another request: %v; want %s naming %s", err, job.EKeyReused, first.ID)
	}
	if n := f.queued(); n != 2 {
		t.Fatalf("%d tasks queued; want the first submit's 2 only", n)
	}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey("old"), []byte(first.ID+keyDone)); err != nil {
		t.Fatal(err)
	}
	again, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: "old", Fingerprint: "c"})
	if err != nil || again.ID != first.ID || !again.Replayed {
		t.Fatalf("a key stored without a request: %+v %v; want job %s", again, err, first.ID)
	}
}

// Results of a job whose record is not stored yet wait for it (a submit
// stores the tasks first); those of a job that will never exist go.
func TestResultsOfAnUnknownJob(t *testing.T) {
	f := newFixture(t)
	young := job.NewID("noop", time.Now())
	old := job.NewID("noop", time.Now().Add(-time.Hour))
	f.report(job.TaskResult{Job: old, Attempt: 1, Value: 1})
	f.report(job.TaskResult{Job: young, Attempt: 1, Value: 5})
	// The old job's result is dropped; the young one's comes back.
	f.awaitResults("the old job's dropped and the young one's held", func(info store.StreamInfo) bool {
		return info.Waiting == 0 && info.Leased == 1
	})
	if _, err := f.store.Jobs.Create(f.ctx, job.New(young, job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())); err != nil {
		t.Fatal(err)
	}
	done := f.await(young, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Result.Sum != 5 {
		t.Fatalf("the job whose record came after its result: %s %+v", done.State, done.Result)
	}
}

// Results of an old job the store answers "not found" for while the read
// model holds it unfinished are held, not dropped: the store's answer is
// wrong (a stream leader a partition deposed), and the results are what
// finishes the job once it answers right.
func TestResultsOfAJobTheReadModelHoldsAreNotDroppedOnNotFound(t *testing.T) {
	f := newFixture(t)
	old := job.NewID("noop", time.Now().Add(-time.Hour))
	_ = f.c.Stop(f.ctx)    // only the coordinator whose read model holds the job applies results
	var asked atomic.Int32 // the result's deliveries that asked the read model
	f.coordinator(func(c *Config) {
		c.State = func(id string) (job.State, bool) {
			if id != old {
				return "", false
			}
			asked.Add(1)
			return job.Running, true
		}
	})
	f.report(job.TaskResult{Job: old, Attempt: 1, Value: 7})
	// Delivered again after it was held: not dropped.
	for asked.Load() < 2 {
		select {
		case <-f.ctx.Done():
			t.Fatalf("the result was delivered %d times; want it held and delivered again", asked.Load())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The store answers again: the result finishes the job.
	if _, err := f.store.Jobs.Create(f.ctx, job.New(old, job.Spec{Kind: "noop", Partitions: 1}, time.Now().UTC())); err != nil {
		t.Fatal(err)
	}
	done := f.await(old, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Result.Sum != 7 {
		t.Fatalf("the job whose record the store did not find for a while: %s %+v", done.State, done.Result)
	}
}

// Results of a young job the read model saw deleted are dropped at once,
// not held for the minute a record on its way may take.
func TestResultsOfADeletedJobAreDropped(t *testing.T) {
	f := newFixture(t)
	deleted := job.NewID("noop", time.Now())
	f.coordinator(func(c *Config) { c.Deleted = func(id string) bool { return id == deleted } })
	_ = f.c.Stop(f.ctx) // only the coordinator that knows of the deletion applies results
	f.report(job.TaskResult{Job: deleted, Attempt: 1, Value: 1})
	f.awaitResults("the deleted job's dropped", func(info store.StreamInfo) bool {
		return info.Waiting == 0 && info.Leased == 0
	})
}

// awaitResults returns once the results stream's counts satisfy ok, looking
// every 10 ms (the memory store tells no one of its counts); it fails the
// test after 10 s, saying it wanted what.
func (f *fixture) awaitResults(what string, ok func(store.StreamInfo) bool) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := f.store.Results.Info(f.ctx)
		if err != nil {
			f.t.Fatal(err)
		}
		if ok(info) {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("results: %+v; want %s", info, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failingKV fails the failAt-th create, as a store that fills up would.
type failingKV struct {
	store.KV
	creates atomic.Int32
	failAt  int32
	batches atomic.Int32 // calls of CreateAll (failingAllKV)
}

func (k *failingKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if k.creates.Add(1) == k.failAt {
		return 0, errors.New("no space left on device")
	}
	return k.KV.Create(ctx, key, value)
}

// failingAllKV is a failingKV that creates many keys at once, as the
// JetStream store does: each through Create, so that failAt applies.
type failingAllKV struct{ *failingKV }

func (k failingAllKV) CreateAll(ctx context.Context, keys []string, values [][]byte) ([]uint64, []error) {
	k.batches.Add(1)
	revs, errs := make([]uint64, len(keys)), make([]error, len(keys))
	for i, key := range keys {
		revs[i], errs[i] = k.Create(ctx, key, values[i])
	}
	return revs, errs
}

// A batch whose third record cannot be stored leaves nothing: the records
// already created and every task are withdrawn, whether the records are
// created one by one or all at once.
func TestAFailedBatchLeavesNothing(t *testing.T) {
	for _, all := range []bool{false, true} {
		f := newFixture(t)
		failing := &failingKV{KV: f.store.Jobs.KV, failAt: 3}
		f.store.Jobs.KV = failing
		if all {
			f.store.Jobs.KV = failingAllKV{failing}
		}
		specs := []job.Spec{{Kind: "noop", Partitions: 2}, {Kind: "noop", Partitions: 2}, {Kind: "noop", Partitions: 2}, {Kind: "noop", Partitions: 2}}
		if _, err := f.c.SubmitBatch(f.ctx, specs, ""); job.ErrorCode(err) != job.EUnavailable {
			t.Fatalf("a batch the store fails (all at once: %v): %v; want unavailable", all, err)
		}
		if n := failing.batches.Load(); all && n != 1 {
			t.Fatalf("the records were created in %d calls of CreateAll; want 1", n)
		}
		waitFor(t, func() bool {
			keys, _ := f.store.Jobs.KV.Keys(f.ctx)
			return len(keys) == 0 && f.queued() == 0
		})
	}
}

// waitFor waits until cond holds: for what the coordinator does just after
// a write it has no event for (purges, withdrawals).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("still not so after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A failed job retried runs its unfinished partitions only, in a new
// epoch: a late result of the failed epoch is not applied (it would fail
// the job again), and a second coordinator that saw the job fail (its
// stub says finished) applies the retried epoch's results all the same.
func TestRetryRunsUnfinishedTasksInANewEpoch(t *testing.T) {
	f := newFixture(t)
	other := f.coordinator() // a second server sharing the results
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	tasks := f.take(4)
	f.report(result(tasks[0], 1), result(tasks[1], 1))
	// Two coordinators share the results: the failure, reported at once,
	// could be applied by one before the other applies these two.
	f.await(j.ID, func(j *job.Job) bool { return j.Done == 2 })
	f.report(failure(tasks[2], "boom"))
	failed := f.await(j.ID, func(j *job.Job) bool { return j.State == job.Failed })
	if failed.Done != 2 {
		t.Fatalf("failed job: %+v", failed)
	}
	for _, c := range []*Coordinator{f.c, other} { // each learns the end, as a stub
		if _, _, err := c.Get(f.ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		c.put(failed, 0)
	}
	if _, err := f.c.Retry(f.ctx, j.ID); job.ErrorCode(err) != "" {
		t.Fatal(err)
	}
	if _, err := f.c.Retry(f.ctx, j.ID); job.ErrorCode(err) != job.EConflict {
		t.Fatalf("a second retry of a queued job: %v", err)
	}
	// Only the other server applies results from now on: its stub of the
	// failed job must not make it drop the retried epoch's.
	if err := f.c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	again := f.take(2)
	if again[0].Epoch != 1 || again[0].Partition != 2 || again[1].Partition != 3 {
		t.Fatalf("retried tasks: %+v; want partitions 2 and 3 of epoch 1", again)
	}
	// The failed epoch's partition 3 ends late, failing: not applied.
	f.report(failure(tasks[3], "late"))
	f.report(result(again[0], 1), result(again[1], 1))
	done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Result.Sum != 4 || done.Epoch != 1 {
		t.Fatalf("retried job: %+v", done)
	}
	var steps []string
	for _, s := range done.History {
		steps = append(steps, s.State)
	}
	if got := strings.Join(steps, ","); got != "queued,running,failed,retried,queued,running,succeeded" {
		t.Fatalf("history %s", got)
	}
	if _, err := other.Retry(f.ctx, j.ID); job.ErrorCode(err) != job.EConflict || !strings.Contains(err.Error(), "rerun it") {
		t.Fatalf("retry of a succeeded job: %v", err)
	}
}

// A job stored without its tasks (its server died between the record and
// the publish) is queued by the next coordinator to start: from the read
// model's list of unqueued jobs when it has one, by a scan of every record
// when not. A held job (its kind paused) is left alone.
func TestStartQueuesJobsLeftUnqueued(t *testing.T) {
	for _, withView := range []bool{true, false} {
		t.Run(fmt.Sprintf("view=%v", withView), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s := memstore.New(memstore.Config{AckWait: time.Second})
			f := &fixture{t: t, ctx: ctx, store: s, ds: &dataset.Store{KV: s.Datasets, Blocks: s.Blocks}}
			lost := job.New(job.NewID("noop", time.Now()), job.Spec{Kind: "noop", Partitions: 3}, time.Now().UTC())
			held := job.New(job.NewID("noop", time.Now()), job.Spec{Kind: "noop", Partitions: 2}, time.Now().UTC())
			held.Held = true
			for _, j := range []*job.Job{lost, held} {
				if _, err := s.Jobs.Create(ctx, j); err != nil {
					t.Fatal(err)
				}
			}
			cfg := Config{Store: s, Datasets: f.ds, Kinds: kinds.Builtin(0), MaxAttempts: 2, Logger: slog.New(slog.DiscardHandler)}
			if withView {
				cfg.Unqueued = func() []string { return []string{lost.ID} } // the view leaves held jobs out
			}
			c := New(cfg)
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Stop(context.Background()) })
			tasks := f.take(3)
			for _, tk := range tasks {
				if tk.Job != lost.ID {
					t.Fatalf("queued a task of %s", tk.Job)
				}
			}
			if got, _, err := c.Get(ctx, lost.ID); err != nil || !got.Enqueued {
				t.Fatalf("the lost job after the start: %+v %v", got, err)
			}
			if n := f.queued(); n != 0 {
				t.Fatalf("%d more tasks queued (the held job's?)", n)
			}
		})
	}
}

// A burst of start notices grows the coordinator's map of them; once they
// are handled the map is copied small (maps do not shrink by themselves).
func TestMapsGrownByABurstAreCopiedSmall(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	for i := range 5000 {
		f.c.noteStarted(job.TaskStarted{Job: fmt.Sprintf("gone_%d", i), Worker: "w.0", StartedAt: now})
	}
	f.c.mu.Lock()
	high := f.c.startsHigh
	f.c.mu.Unlock()
	if high < 2*1024 { // notices handled meanwhile may have kept it below 5,000
		t.Fatalf("high %d after 5,000 notices", high)
	}
	for {
		f.c.mu.Lock()
		n, now := len(f.c.starts), f.c.startsHigh
		f.c.mu.Unlock()
		if n == 0 && now < high/4 { // copied when it held less than a quarter
			return
		}
		select {
		case <-f.ctx.Done():
			t.Fatalf("%d notices left, high %d of %d: the map was not copied small", n, now, high)
		case <-time.After(startDelay / 2):
		}
	}
}

// Small jobs keep their task history in their records: one message of
// the shared subject carries several jobs' results, each job gets its own,
// once however often the message comes, and nothing of them is filed
// under the jobs' own keys of the results stream.
func TestSmallJobsLogTheirTasksInTheirRecords(t *testing.T) {
	f := newFixture(t)
	a, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	big, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: job.MaxLogInRecordPartitions + 1})
	if err != nil {
		t.Fatal(err)
	}
	if !a.LogInRecord || !b.LogInRecord || big.LogInRecord {
		t.Fatalf("log in record: %v %v %v; want the two small jobs only", a.LogInRecord, b.LogInRecord, big.LogInRecord)
	}
	tasks := f.take(2 + 1 + job.MaxLogInRecordPartitions + 1)
	var rs []job.TaskResult
	for _, task := range tasks {
		if !task.LogInRecord {
			continue
		}
		if task.Job == a.ID && task.Partition == 0 {
			failed := result(task, 0)
			failed.Outcome, failed.Error, failed.Failures = job.OutcomeFailed, "flaky", 1
			rs = append(rs, failed)
		}
		rs = append(rs, result(task, 3))
	}
	if len(rs) != 4 {
		t.Fatalf("%d results of small jobs' tasks; want 4", len(rs))
	}
	m, err := store.ResultMessage(rs, true)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a redelivery changes nothing
		if err := f.store.Results.Publish(f.ctx, m)[0]; err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range []*job.Job{a, b} {
		done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
		if done.State != job.Succeeded || done.Result.Sum != int64(3*j.Partitions) {
			t.Fatalf("job %s: %s %+v", j.ID, done.State, done.Result)
		}
	}
	waitFor(t, func() bool { // the copy of the message is applied too
		info, err := f.store.Results.Info(f.ctx)
		return err == nil && info.Waiting == 0 && info.Leased == 0
	})
	for _, j := range []*job.Job{a, b} {
		history, err := f.c.Tasks(f.ctx, j.ID)
		want := j.Partitions + map[bool]int{true: 1}[j.ID == a.ID]
		if err != nil || len(history) != want {
			t.Fatalf("task history of %s: %+v %v; want %d attempts", j.ID, history, err, want)
		}
		if own, err := f.store.Results.Read(f.ctx, j.ID, 10); err != nil || len(own) != 0 {
			t.Fatalf("results filed under job %s: %d %v; want none", j.ID, len(own), err)
		}
	}
	if err := f.c.Delete(f.ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Tasks(f.ctx, a.ID); job.ErrorCode(err) != job.ENotFound {
		t.Fatalf("task history of a deleted job: %v; want not found", err)
	}
	// Applied shared messages leave the stream: a deleted job's results do
	// not stay there for the stream's 7 days.
	if shared, err := f.store.Results.Read(f.ctx, store.SharedResults, 10); err != nil || len(shared) != 2 {
		t.Fatalf("shared results messages before the purge: %d %v; want the 2 published", len(shared), err)
	}
	f.c.purgeShared(f.ctx)
	if shared, err := f.store.Results.Read(f.ctx, store.SharedResults, 10); err != nil || len(shared) != 0 {
		t.Fatalf("shared results messages after the purge: %d %v; want none", len(shared), err)
	}
}

// countingKV counts the reads of a bucket.
type countingKV struct {
	store.KV
	gets atomic.Int32
}

func (k *countingKV) Get(ctx context.Context, key string) (store.Entry, error) {
	k.gets.Add(1)
	return k.KV.Get(ctx, key)
}

// A start notice of a job the read model has seen finish reads nothing: a
// burst of small jobs leaves a notice for each, mostly of jobs finished by
// the time it is due, and long gone from the coordinator's cache.
func TestStartNoticesOfFinishedJobsReadNothing(t *testing.T) {
	f := newFixture(t)
	kv := &countingKV{KV: f.store.Jobs.KV}
	f.store.Jobs.KV = kv
	f.c.cfg.State = func(id string) (job.State, bool) {
		if id == "noop_finished" {
			return job.Succeeded, true
		}
		return "", false
	}
	f.c.markStarted(f.ctx, job.TaskStarted{Job: "noop_finished", Worker: "w.0", StartedAt: time.Now()})
	if n := kv.gets.Load(); n != 0 {
		t.Fatalf("%d reads for a notice of a job known finished; want none", n)
	}
	f.c.markStarted(f.ctx, job.TaskStarted{Job: "noop_unknown", Worker: "w.0", StartedAt: time.Now()})
	if n := kv.gets.Load(); n != 1 {
		t.Fatalf("%d reads for a notice of a job the read model does not know; want its record read", n)
	}
}

// cachedRecords counts the unfinished jobs' records in the cache, as
// found, and as counted.
func (c *Coordinator) cachedRecordsNow() (found, counted int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.cache {
		if !e.stub {
			found++
		}
	}
	return found, c.records
}

// submitMany submits n jobs of spec through c, one by one, and returns
// their ids.
func (f *fixture) submitMany(c *Coordinator, n int, spec job.Spec) []string {
	f.t.Helper()
	var ids []string
	for range n {
		j, err := c.Submit(f.ctx, spec)
		if err != nil {
			f.t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	return ids
}

// A backlog larger than the coordinator's cache of records is not all
// held in memory: the records past the bound are read from the store when
// their jobs change, and every job still ends right.
func TestBacklogLargerThanTheCacheOfRecords(t *testing.T) {
	f := newFixture(t)
	kv := &countingKV{KV: f.store.Jobs.KV}
	f.store.Jobs.KV = kv
	if err := f.c.Stop(f.ctx); err != nil { // c alone applies the results
		t.Fatal(err)
	}
	c := f.coordinator(func(cfg *Config) { cfg.CachedRecords = 3 })
	const n = 12
	ids := f.submitMany(c, n, job.Spec{Kind: "noop", Partitions: 2})
	if found, counted := c.cachedRecordsNow(); found != 3 || counted != 3 {
		t.Fatalf("%d records cached (counted %d) after %d submits; want the bound, 3", found, counted, n)
	}
	before := kv.gets.Load()
	tasks := f.take(2 * n)
	for _, task := range tasks {
		f.report(result(task, 1))
	}
	for _, id := range ids {
		if j := f.await(id, func(j *job.Job) bool { return j.State.Terminal() }); j.State != job.Succeeded || j.Result.Sum != 2 {
			t.Fatalf("job %s: %s, result %+v", id, j.State, j.Result)
		}
	}
	if reads := kv.gets.Load() - before; reads < n-3 {
		t.Fatalf("%d reads of records while %d jobs not cached finished; want one at least for each", reads, n-3)
	}
	if found, counted := c.cachedRecordsNow(); found != 0 || counted != 0 {
		t.Fatalf("%d records cached (counted %d) once every job finished; want none", found, counted)
	}
}

// Records of jobs that finished on another server (which applied their
// last results) leave this one's cache once its read model sees them
// finished, and so do the run times kept for their backups; those of jobs
// still unfinished stay.
func TestRecordsOfJobsFinishedElsewhereAreDropped(t *testing.T) {
	f := newFixture(t)
	f.c.cfg.State = func(id string) (job.State, bool) { // the read model, here the store itself
		j, _, err := f.store.Jobs.Get(f.ctx, id)
		if err != nil {
			return "", false
		}
		return j.State, true
	}
	var ids []string
	for range 4 {
		j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	for _, id := range ids[:3] { // finished by another server
		j, rev, err := f.store.Jobs.Get(f.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		j.State, j.FinishedAt = job.Canceled, &now
		if _, err := f.store.Jobs.Update(f.ctx, j, rev); err != nil {
			t.Fatal(err)
		}
	}
	if found, _ := f.c.cachedRecordsNow(); found != 4 {
		t.Fatalf("%d records cached after 4 submits", found)
	}
	// This server applied a result of each job (its run time is kept for
	// the job's backups) but not the last one.
	f.c.cfg.BackupAfter = time.Second
	for _, id := range ids {
		now := time.Now()
		f.c.noteDuration(&job.Job{ID: id}, job.TaskResult{Job: id, Phase: job.PhaseMap, StartedAt: now.Add(-time.Second), FinishedAt: now})
	}
	f.c.dropFinishedRecords()
	found, counted := f.c.cachedRecordsNow()
	f.c.mu.Lock()
	_, kept := f.c.cache[ids[3]]
	durs := len(f.c.durs)
	f.c.mu.Unlock()
	if found != 1 || counted != 1 || !kept {
		t.Fatalf("%d records cached (counted %d), the unfinished job's kept: %v; want only it", found, counted, kept)
	}
	if _, _, ok := f.c.median(ids[3], job.PhaseMap); !ok || durs != 1 {
		t.Fatalf("run times kept for %d jobs, the unfinished job's: %v; want only its", durs, ok)
	}
}

// The purge of a failed job's tasks that comes after a retry (the failure
// applied by another server, the retry quick) does not leave the retried
// epoch without tasks: the record says they are queued, and nothing would
// queue them again (seen under load: a retried job whose two tasks were
// never delivered).
func TestALatePurgeDoesNotDropARetrysTasks(t *testing.T) {
	f := newFixture(t)
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	tasks := f.take(2)
	f.report(failure(tasks[0], "boom"))
	failed := f.await(j.ID, func(j *job.Job) bool { return j.State == job.Failed })
	if _, err := f.c.Retry(f.ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	f.c.stopTasks(f.ctx, failed) // the failed epoch's purge, late
	again := f.take(2)
	if again[0].Epoch != 1 || again[1].Epoch != 1 {
		t.Fatalf("tasks after the late purge: %+v; want the retried epoch's", again)
	}
}

// slowPurge holds a purge of the task queue, once armed, until released.
type slowPurge struct {
	store.Stream
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowPurge) Purge(ctx context.Context, key string) error {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Stream.Purge(ctx, key)
}

// A retry on the server writing its job's failure waits until that
// failure's purge of the job's tasks is done: a retry's tasks published
// before the purge, and fetched by a worker, were queued a second time
// once the purge found the job retried (a task run twice, seen once in
// CI as TestRetry's partition run twice).
func TestARetryWaitsForItsFailuresPurge(t *testing.T) {
	f := newFixture(t)
	slow := &slowPurge{Stream: f.store.Tasks, entered: make(chan struct{}), release: make(chan struct{})}
	st := *f.store
	st.Tasks = slow
	if err := f.c.Stop(f.ctx); err != nil { // the fixture's: this one alone applies results
		t.Fatal(err)
	}
	c := f.coordinator(func(cfg *Config) { cfg.Store = &st })
	j, err := c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	tasks := f.take(2)
	slow.armed.Store(true)
	var once sync.Once
	release := func() { once.Do(func() { close(slow.release) }) }
	t.Cleanup(release)
	f.report(failure(tasks[0], "boom"))
	select {
	case <-slow.entered:
	case <-f.ctx.Done():
		t.Fatal("the failed job's tasks were never purged")
	}
	retried := make(chan error, 1)
	go func() {
		_, err := c.Retry(f.ctx, j.ID)
		retried <- err
	}()
	select {
	case err := <-retried:
		t.Fatalf("the retry was answered (%v) while its failure's purge was under way", err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	if err := <-retried; err != nil {
		t.Fatal(err)
	}
	again := f.take(2)
	if again[0].Epoch != 1 || again[1].Epoch != 1 || f.queued() != 0 {
		t.Fatalf("after the retry: %+v and %d more; want the retried epoch's two tasks once", again, f.queued())
	}
}

// A retry is answered the job as it made it, queued again, even when its
// tasks ran and failed before the answer (a task that fails at once):
// TestBatchedJobsRunInGroups was answered the failed job once.
func TestARetryIsAnsweredTheJobQueuedAgain(t *testing.T) {
	f := newFixture(t)
	held := &slowPublish{Stream: f.store.Tasks, after: true, entered: make(chan struct{}), release: make(chan struct{})}
	st := *f.store
	st.Tasks = held
	c := f.coordinator(func(cfg *Config) { cfg.Store = &st })
	j, err := c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.report(failure(f.take(1)[0], "boom"))
	f.await(j.ID, func(j *job.Job) bool { return j.State == job.Failed })
	held.armed.Store(true)
	var once sync.Once
	release := func() { once.Do(func() { close(held.release) }) }
	t.Cleanup(release)
	type answer struct {
		j   *job.Job
		err error
	}
	retried := make(chan answer, 1)
	go func() {
		j, err := c.Retry(f.ctx, j.ID)
		retried <- answer{j, err}
	}()
	select {
	case <-held.entered:
	case <-f.ctx.Done():
		t.Fatal("the retry never queued its task")
	}
	f.report(failure(f.take(1)[0], "boom again"))
	f.await(j.ID, func(j *job.Job) bool { return j.State == job.Failed && j.Epoch == 1 })
	release()
	a := <-retried
	if a.err != nil || a.j.State != job.Queued || a.j.Epoch != 1 {
		t.Fatalf("the retry's answer: %+v %v; want the job queued again in epoch 1", a.j, a.err)
	}
}

// slowPublish holds a publish of tasks, once armed, until released:
// before the tasks are queued, or after when after is set.
type slowPublish struct {
	store.Stream
	after   bool
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowPublish) Publish(ctx context.Context, msgs ...store.Message) []error {
	var errs []error
	if s.after {
		errs = s.Stream.Publish(ctx, msgs...)
	}
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
		}
	}
	if !s.after {
		errs = s.Stream.Publish(ctx, msgs...)
	}
	return errs
}

// The repair loop passes over a job whose tasks this server is queuing:
// a retry whose publish took longer than the loop's period (a loaded
// server) had its tasks queued a second time by the loop.
func TestTheRepairLoopLeavesTasksBeingQueuedAlone(t *testing.T) {
	f := newFixture(t)
	slow := &slowPublish{Stream: f.store.Tasks, entered: make(chan struct{}), release: make(chan struct{})}
	st := *f.store
	st.Tasks = slow
	if err := f.c.Stop(f.ctx); err != nil {
		t.Fatal(err)
	}
	var unqueued atomic.Value
	unqueued.Store([]string{})
	passes := make(chan struct{}, 100)
	c := f.coordinator(func(cfg *Config) {
		cfg.Store = &st
		cfg.RepairEvery = 20 * time.Millisecond
		cfg.Unqueued = func() []string {
			select {
			case passes <- struct{}{}:
			default:
			}
			return unqueued.Load().([]string)
		}
	})
	j, err := c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.report(failure(f.take(1)[0], "boom"))
	f.await(j.ID, func(j *job.Job) bool { return j.State == job.Failed })
	slow.armed.Store(true)
	retried := make(chan error, 1)
	go func() {
		_, err := c.Retry(f.ctx, j.ID)
		retried <- err
	}()
	select {
	case <-slow.entered:
	case <-f.ctx.Done():
		t.Fatal("the retry never published its tasks")
	}
	// The read model would list the job as unqueued now: its record says
	// queued, not marked enqueued. Let the loop look at it a few times.
	unqueued.Store([]string{j.ID})
	for range len(passes) {
		<-passes
	}
	for range 5 {
		select {
		case <-passes:
		case <-f.ctx.Done():
			t.Fatal("the repair loop stopped")
		}
	}
	close(slow.release)
	if err := <-retried; err != nil {
		t.Fatal(err)
	}
	unqueued.Store([]string{})
	again := f.take(1)
	if again[0].Epoch != 1 || f.queued() != 0 {
		t.Fatalf("after the retry: %+v and %d more; want the retried task once", again, f.queued())
	}
}

// A finished job leaves a stub: its epoch under a packed copy of its id,
// no record (a burst's last 10,000 records, each an allocation amid its
// garbage, kept pages from being handed back). The stub still tells a late
// result of that epoch or an earlier one to go away, not one of a later
// epoch; and stubs are bounded.
func TestFinishedJobLeavesAStub(t *testing.T) {
	f := newFixture(t)
	c := f.c
	j := &job.Job{ID: strings.Clone("noop_" + strings.Repeat("a", 26)), Kind: "noop", State: job.Running, Epoch: 2}
	c.put(j, 5)
	done := j.Clone()
	done.State = job.Succeeded
	c.put(done, 6)
	c.mu.Lock()
	var key string
	var e entry
	for k, v := range c.cache {
		if k == j.ID {
			key, e = k, v
		}
	}
	c.mu.Unlock()
	if !e.stub || e.job != nil || e.epoch != 2 {
		t.Fatalf("cache entry of a finished job: stub %v, record %v, epoch %d; want a stub of epoch 2 without a record", e.stub, e.job != nil, e.epoch)
	}
	if unsafe.StringData(key) == unsafe.StringData(done.ID) || unsafe.StringData(key) == unsafe.StringData(j.ID) {
		t.Fatal("the stub is keyed by the record's own id string; want a packed copy")
	}
	if !c.finished(j.ID, 1) || !c.finished(j.ID, 2) || c.finished(j.ID, 3) {
		t.Fatalf("finished(epoch 1, 2, 3) = %v %v %v; want true true false", c.finished(j.ID, 1), c.finished(j.ID, 2), c.finished(j.ID, 3))
	}
	// A start notice of the finished job reads nothing.
	c.noteStarted(job.TaskStarted{Job: j.ID, Worker: "w.0", StartedAt: time.Now()})
	c.mu.Lock()
	_, waits := c.starts[j.ID]
	c.mu.Unlock()
	if waits {
		t.Fatal("a start notice of a finished job waits to mark it running")
	}
	for i := range maxStubs + 10 {
		c.put(&job.Job{ID: fmt.Sprintf("noop_%026d", i), Kind: "noop", State: job.Succeeded}, 1)
	}
	c.mu.Lock()
	n := len(c.cache)
	c.mu.Unlock()
	if n != maxStubs || c.finished(j.ID, 2) {
		t.Fatalf("after %d more finished jobs the cache holds %d (first one still there: %v); want %d, the first gone", maxStubs+10, n, c.finished(j.ID, 2), maxStubs)
	}
}

// A keyed submit that succeeds leaves its key pending (a write fewer for
// every keyed submit); a retry finds the jobs all stored, answers them and
// marks the key done. A key left pending by a submit that never answered
// (its server died after storing the job) is answered at once, not after
// orphanAge; one whose jobs are not all stored yet waits.
func TestIdempotencyKeyIsMarkedDoneByItsRetry(t *testing.T) {
	f := newFixture(t)
	value := func(key string) string {
		t.Helper()
		e, err := f.store.Idempotency.Get(f.ctx, idempotencyKey(key))
		if err != nil {
			t.Fatal(err)
		}
		return string(e.Value)
	}
	first, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1, IdempotencyKey: "k", Fingerprint: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if v := value("k"); strings.HasSuffix(v, keyDone) || !strings.HasPrefix(v, first.ID) {
		t.Fatalf("the key after its submit: %q; want pending, naming %s", v, first.ID)
	}
	again, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1, IdempotencyKey: "k", Fingerprint: "a"})
	if err != nil || again.ID != first.ID || !again.Replayed {
		t.Fatalf("the retry: %+v %v; want job %s replayed", again, err, first.ID)
	}
	if v := value("k"); !strings.HasSuffix(v, keyDone) {
		t.Fatalf("the key after a retry was answered: %q; want done", v)
	}
	// The first submit, had it failed after all, finds the key answered
	// and keeps its job.
	claim := &keyClaim{key: "\x00k", fingerprint: "a", ids: []string{first.ID}}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(claim.key), claim.value(true)); err != nil {
		t.Fatal(err)
	}
	if r := f.c.markWithdrawing(claim, time.Second); r != keyAnswered {
		t.Fatalf("the mark of a key a retry marked done: %d; want keyAnswered", r)
	}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(claim.key), claim.value(false)); err != nil {
		t.Fatal(err)
	}
	if r := f.c.markWithdrawing(claim, time.Second); r != keyWithdraw {
		t.Fatalf("the mark of a pending key: %d; want keyWithdraw", r)
	}
	if v := value(claim.key); v != string(claim.value(false))+keyWithdrawing {
		t.Fatalf("a key marked withdrawing holds %q", v)
	}
	f.c.releaseWithdrawn(claim)
	if _, err := f.store.Idempotency.Get(f.ctx, idempotencyKey(claim.key)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a key released after its jobs were withdrawn is still there: %v", err)
	}

	// Pending, its job stored, its submit never answered: answered now.
	orphan, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	crashed := &keyClaim{key: "crashed", ids: []string{orphan.ID}}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(crashed.key), crashed.value(false)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	defer cancel()
	got, err := f.c.Submit(ctx, job.Spec{Kind: "noop", Partitions: 1, IdempotencyKey: "crashed"})
	if err != nil || got.ID != orphan.ID || !got.Replayed {
		t.Fatalf("a key left pending with its job stored: %+v %v; want job %s replayed", got, err, orphan.ID)
	}

	// Pending, its job not stored (yet): the retry waits, then says so.
	inFlight := &keyClaim{key: "in-flight", ids: []string{job.NewID("noop", time.Now())}}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(inFlight.key), inFlight.value(false)); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(f.ctx, 300*time.Millisecond)
	defer cancel2()
	if _, err := f.c.Submit(short, job.Spec{Kind: "noop", Partitions: 1, IdempotencyKey: "in-flight"}); job.ErrorCode(err) != job.EUnavailable || !strings.Contains(job.ErrorMessage(err), "in progress") {
		t.Fatalf("a key whose submit is in flight: %v; want %s, in progress", err, job.EUnavailable)
	}
	if n := f.queued(); n != 2 {
		t.Fatalf("%d tasks queued; want the two jobs' only", n)
	}
}

// cutKV stands for a store this server cannot reach while cut is set: its
// reads and conditional writes fail (creates and puts go through); after
// the cut, the first read that goes through is told on back.
type cutKV struct {
	store.KV
	cut     atomic.Bool
	refused chan struct{} // a read refused while cut, if there is room
	back    chan struct{}
	once    sync.Once
}

var errCut = errors.New("no route to the store")

func (k *cutKV) Get(ctx context.Context, key string) (store.Entry, error) {
	if k.cut.Load() {
		select {
		case k.refused <- struct{}{}:
		default:
		}
		return store.Entry{}, errCut
	}
	e, err := k.KV.Get(ctx, key)
	if k.back != nil {
		k.once.Do(func() { close(k.back) })
	}
	return e, err
}

func (k *cutKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if k.cut.Load() {
		return 0, errCut
	}
	return k.KV.Update(ctx, key, value, rev)
}

func (k *cutKV) Delete(ctx context.Context, key string, rev uint64) error {
	if k.cut.Load() {
		return errCut
	}
	return k.KV.Delete(ctx, key, rev)
}

// lostCreateKV stores a create and loses its answer.
type lostCreateKV struct{ cutKV }

func (k *lostCreateKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if _, err := k.KV.Create(ctx, key, value); err != nil {
		return 0, err
	}
	return 0, errCut
}

// A keyed submit fails on a server cut off from the store after its job
// was stored (the create's answer lost); the client's retry on another
// server finds the job stored and is answered it. The first server, once
// it reaches the store again, finds its key marked and leaves the job in
// place however long the cut lasted (withdrawing it after giving up on the
// release, as a first version did after 15 s, would remove a job a client
// was told is stored).
func TestFailedSubmitKeepsTheJobItsRetryWasAnswered(t *testing.T) {
	releaseWait = 5 * time.Millisecond
	t.Cleanup(func() { releaseWait = time.Second })
	f := newFixture(t)
	cutStore := *f.store
	keys := &cutKV{KV: f.store.Idempotency, back: make(chan struct{}), refused: make(chan struct{}, 16)}
	records := &lostCreateKV{cutKV{KV: f.store.Jobs.KV}}
	cutStore.Idempotency, cutStore.Jobs = keys, &store.Jobs{KV: records}
	cutOff := f.coordinator(func(cfg *Config) { cfg.Store = &cutStore })
	keys.cut.Store(true)
	records.cut.Store(true)
	spec := job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: "order-9", Fingerprint: "a"}
	if j, err := cutOff.Submit(f.ctx, spec); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a submit whose record's answer was lost: %+v %v; want %s", j, err, job.EUnavailable)
	}
	retried, err := f.c.Submit(f.ctx, spec)
	if err != nil || !retried.Replayed {
		t.Fatalf("the retry on a server that reaches the store: %+v %v; want the stored job, replayed", retried, err)
	}
	// The cut lasts through eight tries of the release (the answer's, then
	// 5 ms doubling): a release that gave up would have withdrawn the job.
	for i := range 8 {
		select {
		case <-keys.refused:
		case <-f.ctx.Done():
			t.Fatalf("the cut-off server stopped trying to release its key after %d tries", i)
		}
		if _, _, err := f.store.Jobs.Get(f.ctx, retried.ID); err != nil {
			t.Fatalf("the job a retry was answered is gone while the first server is cut off: %v", err)
		}
		if n := f.queued(); n != 2 {
			t.Fatalf("%d tasks queued while the first server is cut off; want the job's 2 (withdrawn?)", n)
		}
	}
	keys.cut.Store(false)
	select {
	case <-keys.back:
	case <-f.ctx.Done():
		t.Fatal("the cut-off server never tried to release its key again")
	}
	if err := cutOff.Stop(f.ctx); err != nil { // waits for what the release decided
		t.Fatal(err)
	}
	if _, _, err := f.store.Jobs.Get(f.ctx, retried.ID); err != nil {
		t.Fatalf("the job a retry was answered was withdrawn: %v", err)
	}
	if n := f.queued(); n != 2 {
		t.Fatalf("%d tasks queued; want the job's 2", n)
	}
}

// A keyed submit fails after its job was stored (the create's answer
// lost), and its server cannot withdraw the job (it died doing so, here:
// cut off from the records). Its key stays marked withdrawing, and the
// client's retry on another server withdraws the job before it makes a new
// one: only the job the client was answered is stored and queued. (The key
// used to be released before the withdraw, and the retry's job ran beside
// the failed submit's, seen in the chaos test.)
func TestRetryWithdrawsTheJobsOfAFailedSubmit(t *testing.T) {
	f := newFixture(t)
	cutStore := *f.store
	records := &lostCreateKV{cutKV{KV: f.store.Jobs.KV}}
	cutStore.Jobs = &store.Jobs{KV: records}
	cutOff := f.coordinator(func(cfg *Config) { cfg.Store = &cutStore })
	records.cut.Store(true)
	spec := job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: "order-10", Fingerprint: "a"}
	if j, err := cutOff.Submit(f.ctx, spec); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a submit whose record's answer was lost: %+v %v; want %s", j, err, job.EUnavailable)
	}
	if err := cutOff.Stop(f.ctx); err != nil { // waits for its withdraw, which fails
		t.Fatal(err)
	}
	e, err := f.store.Idempotency.Get(f.ctx, idempotencyKey("order-10"))
	if err != nil || !strings.HasSuffix(string(e.Value), keyWithdrawing) {
		t.Fatalf("the key of a submit that could not withdraw its job: %q %v; want it marked withdrawing", e.Value, err)
	}
	failed, _, _, _, _ := parseKeyValue(string(e.Value))
	if _, _, err := f.store.Jobs.Get(f.ctx, failed[0]); err != nil {
		t.Fatalf("the failed submit's job is not stored (%v): the test stores it, for the retry to withdraw", err)
	}
	retried, err := f.c.Submit(f.ctx, spec)
	if err != nil || retried.Replayed || retried.ID == failed[0] {
		t.Fatalf("the retry: %+v %v; want a new job", retried, err)
	}
	if _, _, err := f.store.Jobs.Get(f.ctx, failed[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the failed submit's job after the retry: %v; want it withdrawn", err)
	}
	if n := f.queued(); n != 2 {
		t.Fatalf("%d tasks queued; want the retry's job's 2", n)
	}
	again, err := f.c.Submit(f.ctx, spec)
	if err != nil || again.ID != retried.ID || !again.Replayed {
		t.Fatalf("a second retry: %+v %v; want job %s replayed", again, err, retried.ID)
	}
}

// blindKV stores a create and loses its answer, and cannot read: the
// submit cannot tell whether its record is stored. Deletes go through.
type blindKV struct{ store.KV }

func (k blindKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if _, err := k.KV.Create(ctx, key, value); err != nil {
		return 0, err
	}
	return 0, errCut
}

func (blindKV) Get(context.Context, string) (store.Entry, error) { return store.Entry{}, errCut }

// A submit without an idempotency key that fails after its record may be
// stored answers only once what it stored is withdrawn (while the store
// takes the deletes): no retry can find the job, and a server that died
// after answering would leave it to run, unknown to its client.
func TestFailedSubmitWithoutAKeyAnswersOnceWithdrawn(t *testing.T) {
	f := newFixture(t)
	blind := *f.store
	blind.Jobs = &store.Jobs{KV: blindKV{f.store.Jobs.KV}}
	c := f.coordinator(func(cfg *Config) { cfg.Store = &blind })
	if j, err := c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 3}); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a submit whose record's answer was lost: %+v %v; want %s", j, err, job.EUnavailable)
	}
	// At once, not after the coordinator's stop.
	if n := f.queued(); n != 0 {
		t.Fatalf("%d tasks queued when the failed submit answered; want none", n)
	}
	jobs, err := f.store.Jobs.KV.Keys(f.ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if len(jobs) != 0 {
		t.Fatalf("records stored when the failed submit answered: %v; want none", jobs)
	}
}

// fullKV refuses deletes for want of room, refusals times.
type fullKV struct {
	store.KV
	refusals atomic.Int32
	tries    atomic.Int32
}

func (k *fullKV) Delete(ctx context.Context, key string, rev uint64) error {
	k.tries.Add(1)
	if k.refusals.Add(-1) >= 0 {
		return fmt.Errorf("%w: insufficient resources", store.ErrNoRoom)
	}
	return k.KV.Delete(ctx, key, rev)
}

// The withdraw of a failed submit's job goes on through a store that has
// no room for a while (a full disk refuses the deletion's marker): given up
// at the first refusal, it left the job to run once the disk had room,
// though its client was told the submit failed.
func TestWithdrawWaitsOutAFullStore(t *testing.T) {
	noRoomWait = 10 * time.Millisecond
	t.Cleanup(func() { noRoomWait = 4 * time.Second })
	f := newFixture(t)
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	full := *f.store
	records := &fullKV{KV: f.store.Jobs.KV}
	records.refusals.Store(2)
	full.Jobs = &store.Jobs{KV: records}
	c := f.coordinator(func(cfg *Config) { cfg.Store = &full })
	if !c.withdraw(j.ID, true, "") {
		t.Fatalf("the withdraw through a store refusing twice for want of room failed (%d tries)", records.tries.Load())
	}
	if _, _, err := f.store.Jobs.Get(f.ctx, j.ID); !errors.Is(err, store.ErrNotFound) || records.tries.Load() != 3 {
		t.Fatalf("the record after the withdraw: %v, %d deletes tried; want it gone, at the third", err, records.tries.Load())
	}
	c.mu.Lock()
	tombs := slices.Clone(c.tombs)
	c.mu.Unlock()
	if len(tombs) != 1 || tombs[0].id != j.ID {
		t.Fatalf("the deletion markers noted to purge: %v; want the withdrawn job's", tombs)
	}
}

// lateCreateKV stores a create, says so on stored, waits for proceed, and
// answers once the caller's deadline has passed: a server that stalled.
type lateCreateKV struct {
	store.KV
	stored  chan string
	proceed chan struct{}
}

func (k *lateCreateKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if _, err := k.KV.Create(ctx, key, value); err != nil {
		return 0, err
	}
	k.stored <- key
	<-k.proceed
	<-ctx.Done()
	return 0, ctx.Err()
}

// A keyed submit stores its job past its deadline (its server stalled),
// after a retry found it surely over with nothing stored and took its key
// over with a job of its own, which its client was answered. The late job
// is no one's: it is withdrawn and the late submit answers 503, rather
// than run beside the retry's. A late submit whose key is still its own
// answers its job.
func TestLateSubmitWithdrawsItsJobsWhenARetryTookItsKey(t *testing.T) {
	f := newFixture(t)
	lateStore := *f.store
	records := &lateCreateKV{KV: f.store.Jobs.KV, stored: make(chan string), proceed: make(chan struct{})}
	lateStore.Jobs = &store.Jobs{KV: records}
	late := f.coordinator(func(cfg *Config) { cfg.Store = &lateStore })
	submit := func(key string) (chan *job.Job, chan error) {
		jobs, errs := make(chan *job.Job, 1), make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
			defer cancel()
			j, err := late.Submit(ctx, job.Spec{Kind: "noop", Partitions: 2, IdempotencyKey: key, Fingerprint: "a"})
			jobs <- j
			errs <- err
		}()
		return jobs, errs
	}

	jobs, errs := submit("order-11")
	first := <-records.stored
	retry := &keyClaim{key: "order-11", fingerprint: "a", ids: []string{job.NewID("noop", time.Now())}}
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(retry.key), retry.value(false)); err != nil {
		t.Fatal(err)
	}
	records.proceed <- struct{}{}
	if j, err := <-jobs, <-errs; job.ErrorCode(err) != job.EUnavailable || !strings.Contains(job.ErrorMessage(err), "a retry with its Idempotency-Key made the jobs") {
		t.Fatalf("a submit stored past its deadline after a retry took its key: %+v %v; want %s naming the retry", j, err, job.EUnavailable)
	}

	jobs, errs = submit("order-12")
	second := <-records.stored
	records.proceed <- struct{}{}
	if j, err := <-jobs, <-errs; err != nil || j.ID != second {
		t.Fatalf("a submit stored past its deadline whose key is its own: %+v %v; want job %s", j, err, second)
	}
	if err := late.Stop(f.ctx); err != nil { // waits for the withdraw
		t.Fatal(err)
	}
	if _, _, err := f.store.Jobs.Get(f.ctx, first); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the late job beside the retry's: %v; want it withdrawn", err)
	}
	if n := f.queued(); n != 2 {
		t.Fatalf("%d tasks queued; want the second job's 2", n)
	}
}

// Results of jobs past the cache of records are applied to the read
// model's record of each (Config.Record), not to one read from the store:
// in a burst of more jobs than the cache holds, three results in four were
// a read. A record the read model holds that the store has moved past
// fails its compare-and-set, and the store's is read and applied to.
func TestResultsPastTheCacheApplyToTheReadModelsRecord(t *testing.T) {
	f := newFixture(t)
	if err := f.c.Stop(f.ctx); err != nil { // c alone applies the results
		t.Fatal(err)
	}
	type held struct {
		j   *job.Job
		rev uint64
	}
	var mu sync.Mutex
	model := map[string]held{}
	c := f.coordinator(func(cfg *Config) {
		cfg.CachedRecords = 3
		cfg.Record = func(id string) (*job.Job, uint64, bool) {
			mu.Lock()
			defer mu.Unlock()
			h, ok := model[id]
			return h.j, h.rev, ok
		}
	})
	const n = 12
	ids := f.submitMany(c, n, job.Spec{Kind: "noop", Partitions: 2})
	var stale string
	for _, id := range ids {
		j, rev, err := f.store.Jobs.Get(f.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		model[id] = held{j, rev}
		c.mu.Lock()
		_, cached := c.cache[id]
		c.mu.Unlock()
		if !cached && stale == "" {
			// The store moves on (another server's write) after the read
			// model saw this one.
			stale = id
			j.Priority = job.MaxPriority
			if _, err := f.store.Jobs.Update(f.ctx, j, rev); err != nil {
				t.Fatal(err)
			}
		}
	}
	kv := &countingKV{KV: f.store.Jobs.KV}
	f.store.Jobs.KV = kv
	for _, task := range f.take(2 * n) {
		f.report(result(task, 1))
	}
	for _, id := range ids {
		j := f.await(id, func(j *job.Job) bool { return j.State.Terminal() })
		if j.State != job.Succeeded || j.Result.Sum != 2 {
			t.Fatalf("job %s: %s, result %+v", id, j.State, j.Result)
		}
		if id == stale && j.Priority != job.MaxPriority {
			t.Fatalf("job %s: the store's last write was lost (priority %d): its results were written over a stale record", id, j.Priority)
		}
	}
	// The stale record's compare-and-set failed once and read the store
	// once; the reports above read each job's record once (report).
	if reads := kv.gets.Load() - int32(2*n); reads != 1 {
		t.Fatalf("%d reads of records by the coordinator while %d jobs past its cache finished; want 1, the stale one's", reads, n-3)
	}
}

// A retry whose key a submit still storing its jobs holds waits without
// reading their records while the read model does not know them all (a
// retry of a batch read a thousand records every 50 ms, loading the store
// that submit waited for), and is answered the jobs once it does.
func TestARetryWaitsForAPendingSubmitWithoutReadingItsJobs(t *testing.T) {
	f := newFixture(t)
	if err := f.c.Stop(f.ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	c := f.coordinator(func(cfg *Config) {
		cfg.State = func(id string) (job.State, bool) {
			mu.Lock()
			defer mu.Unlock()
			return job.Queued, seen[id]
		}
	})
	specs := []job.Spec{{Kind: "noop", Partitions: 1}, {Kind: "noop", Partitions: 1}}
	now := time.Now()
	a := job.New(job.NewID("noop", now), specs[0], now.UTC())
	b := job.New(job.NewID("noop", now), specs[1], now.UTC())
	// The first submit of the batch (on another server) claimed the key
	// and has stored one record of two.
	claim := &keyClaim{key: "batch\x00k", fingerprint: fingerprint(specs), ids: []string{a.ID, b.ID}}
	if _, err := f.store.Idempotency.Create(f.ctx, idempotencyKey(claim.key), claim.value(false)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Jobs.Create(f.ctx, a); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	seen[a.ID] = true
	mu.Unlock()
	kv := &countingKV{KV: f.store.Jobs.KV}
	f.store.Jobs.KV = kv
	ctx, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := c.SubmitBatch(ctx, specs, "k"); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a retry while the first submit stores its jobs: %v; want unavailable, still in progress", err)
	}
	if n := kv.gets.Load(); n != 0 {
		t.Fatalf("the retry read %d job records while the read model knew only one of the two", n)
	}
	if _, err := f.store.Jobs.Create(f.ctx, b); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	seen[b.ID] = true
	mu.Unlock()
	jobs, err := c.SubmitBatch(f.ctx, specs, "k")
	if err != nil || len(jobs) != 2 || jobs[0].ID != a.ID || jobs[1].ID != b.ID || !jobs[0].Replayed {
		t.Fatalf("the retry once both are stored: %v %+v; want %s and %s replayed", err, jobs, a.ID, b.ID)
	}
}

// A batch whose server died midway (its tasks queued, one record of three
// stored, its key left pending) is made whole by the client's retry once
// that submit is surely over: the retry stores the two missing records
// under their ids, without queueing their tasks again, and is answered the
// three, not a new batch beside the stored one. Meanwhile the retry waits;
// a batch that stored no record is replaced by a new one (its tasks may be
// in the queue in part: completed, they would run twice); past orphanAge
// the missing jobs' tasks are queued again (their first results were
// dropped); and the submit, had it only stalled, keeps its jobs.
func TestARetryCompletesABatchWhoseServerDiedMidway(t *testing.T) {
	f := newFixture(t)
	specs := []job.Spec{{Kind: "noop", Partitions: 1, Fingerprint: "a"}, {Kind: "short", Partitions: 2, Fingerprint: "b"}, {Kind: "noop", Partitions: 1, Fingerprint: "c"}}
	n := 0
	// died claims a key at at, as a submit of specs does, queues the tasks
	// of every job, stores the first records and dies.
	died := func(at time.Time, records int) *keyClaim {
		t.Helper()
		n++
		claim := &keyClaim{key: fmt.Sprintf("batch\x00k%d", n), fingerprint: fingerprint(specs)}
		if _, err := f.store.Idempotency.Create(f.ctx, idempotencyKey(claim.key), nil); err != nil {
			t.Fatal(err)
		}
		for i, s := range specs {
			j := job.New(job.NewID(s.Kind, at), s, at.UTC())
			claim.ids = append(claim.ids, j.ID)
			if _, err := f.c.publishTasks(f.ctx, j); err != nil {
				t.Fatal(err)
			}
			if i < records {
				j.Enqueued = true
				if _, err := f.store.Jobs.Create(f.ctx, j); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(claim.key), claim.value(false)); err != nil {
			t.Fatal(err)
		}
		return claim
	}
	key := func(claim *keyClaim) string {
		t.Helper()
		e, err := f.store.Idempotency.Get(f.ctx, idempotencyKey(claim.key))
		if err != nil {
			t.Fatal(err)
		}
		return string(e.Value)
	}
	retry := func(ctx context.Context, claim *keyClaim) ([]*job.Job, error) {
		return f.c.SubmitBatch(ctx, specs, strings.TrimPrefix(claim.key, "batch\x00"))
	}
	answered := func(what string, claim *keyClaim, jobs []*job.Job, err error) {
		t.Helper()
		if err != nil || len(jobs) != len(specs) {
			t.Fatalf("%s: %v, %d jobs; want the %d of the batch", what, err, len(jobs), len(specs))
		}
		for i, j := range jobs {
			if j.ID != claim.ids[i] || !j.Replayed || j.Kind != specs[i].Kind || j.Partitions != specs[i].Partitions {
				t.Fatalf("%s: job %d is %s %s/%d replayed %v; want %s, the batch's own", what, i, j.ID, j.Kind, j.Partitions, j.Replayed, claim.ids[i])
			}
			stored, _, err := f.store.Jobs.Get(f.ctx, j.ID)
			if err != nil || !stored.Enqueued {
				t.Fatalf("%s: job %d of the completed batch: %+v %v; want stored, queued", what, i, stored, err)
			}
		}
		if v := key(claim); v != string(claim.value(true)) {
			t.Fatalf("%s: the key after the retry is %q; want done, naming the batch", what, v)
		}
	}
	over := time.Now().Add(-SubmitTimeout - completeAfter - 5*time.Second)

	// Within its deadline and the margin, the submit may still be storing.
	short, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := retry(short, died(time.Now(), 1)); job.ErrorCode(err) != job.EUnavailable || !strings.Contains(job.ErrorMessage(err), "in progress") {
		t.Fatalf("a retry while the batch may still be stored: %v; want unavailable, in progress", err)
	}

	// Long past it: completed, the tasks left as they are.
	crashed := died(over, 1)
	queued := f.queued()
	jobs, err := retry(f.ctx, crashed)
	answered("the retry of a batch whose submit died midway", crashed, jobs, err)
	if n := f.queued(); n != queued {
		t.Fatalf("%d tasks queued after the retry, %d before: want none queued again", n, queued)
	}
	again, err := retry(f.ctx, crashed)
	if err != nil || len(again) != 3 || again[1].ID != crashed.ids[1] {
		t.Fatalf("a second retry: %v %+v; want the same 3 jobs", err, again)
	}
	other := slices.Clone(specs)
	other[0].Fingerprint = "z"
	if _, err := f.c.SubmitBatch(f.ctx, other, strings.TrimPrefix(crashed.key, "batch\x00")); job.ErrorCode(err) != job.EKeyReused {
		t.Fatalf("another request under a completed batch's key: %v; want %s", err, job.EKeyReused)
	}

	// No record stored: the retry stores a new batch (the tasks of the
	// first, never to have a record, are dropped when met).
	none := died(over, 0)
	queued = f.queued()
	jobs, err = retry(f.ctx, none)
	if err != nil || len(jobs) != 3 || jobs[0].Replayed || slices.Contains(none.ids, jobs[0].ID) {
		t.Fatalf("a retry of a batch that stored no record: %v %+v; want a new batch", err, jobs)
	}
	if v := key(none); !strings.HasPrefix(v, jobs[0].ID+",") {
		t.Fatalf("the key of a batch that stored no record, after a retry: %q; want the new batch's", v)
	}
	if n := f.queued() - queued; n != 4 {
		t.Fatalf("%d tasks queued by the new batch; want its 4", n)
	}

	// Past orphanAge: the missing jobs' tasks queued again.
	old := died(time.Now().Add(-orphanAge-time.Second), 1)
	queued = f.queued()
	jobs, err = retry(f.ctx, old)
	answered("the retry of a batch past orphanAge", old, jobs, err)
	if n := f.queued() - queued; n != 3 {
		t.Fatalf("%d tasks queued by the retry past orphanAge; want the missing jobs' 3", n)
	}

	// A key taken over by a retry that did not finish is completed by the
	// next at once; the stalled submit, failing, keeps its jobs.
	taken := died(time.Now(), 2)
	if _, err := f.store.Idempotency.Put(f.ctx, idempotencyKey(taken.key), append(taken.value(false), keyTaken...)); err != nil {
		t.Fatal(err)
	}
	if r := f.c.markWithdrawing(taken, time.Second); r != keyAnswered {
		t.Fatalf("the mark of a key a retry took over: %d; want keyAnswered (the jobs stay)", r)
	}
	jobs, err = retry(f.ctx, taken)
	answered("the retry of a taken key", taken, jobs, err)

	// A store that takes no conditional write now: the retry says so at
	// once, rather than read the batch's records again until its deadline.
	refused := died(over, 0)
	reads := &countingKV{KV: f.store.Jobs.KV}
	f.store.Jobs.KV = reads
	f.store.Idempotency = noUpdateKV{f.store.Idempotency}
	if _, err := retry(f.ctx, refused); job.ErrorCode(err) != job.EUnavailable || !strings.Contains(job.ErrorMessage(err), "take over") {
		t.Fatalf("a retry whose key cannot be written: %v; want unavailable", err)
	}
	if n := reads.gets.Load(); n > int32(len(specs)) {
		t.Fatalf("the retry read %d job records; want the batch's %d once", n, len(specs))
	}
}

// noUpdateKV refuses conditional writes, as a store that lost its quorum.
type noUpdateKV struct{ store.KV }

func (noUpdateKV) Update(context.Context, string, []byte, uint64) (uint64, error) {
	return 0, errCut
}

// A task run twice under one attempt (the queue delivered it again after
// a crash) shows both runs in the job's history, the one applied second
// marked superseded: in a small job's record as in a larger job's own
// results.
func TestARepeatedRunIsSuperseded(t *testing.T) {
	f := newFixture(t)
	small, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	big, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: job.MaxLogInRecordPartitions + 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range f.take(1 + big.Partitions) {
		first := result(task, 1)
		if task.Partition != 0 {
			f.report(first)
			continue
		}
		again := first
		again.Worker, again.FinishedAt = "other.1", first.FinishedAt.Add(time.Millisecond)
		f.report(first, again)
	}
	for _, j := range []*job.Job{small, big} {
		done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
		if done.State != job.Succeeded || done.Result.Sum != int64(j.Partitions) {
			t.Fatalf("job %s: %s %+v; want each partition counted once", j.ID, done.State, done.Result)
		}
		var history []Attempt
		waitFor(t, func() bool {
			history, err = f.c.Tasks(f.ctx, j.ID)
			return err == nil && len(history) == j.Partitions+1
		})
		var superseded []string
		for _, a := range history {
			if a.Superseded {
				superseded = append(superseded, fmt.Sprintf("%d %s", a.Partition, a.Worker))
			}
		}
		if len(superseded) != 1 || superseded[0] != "0 other.1" {
			t.Fatalf("job %s: superseded %v; want the second run of partition 0 alone: %+v", j.ID, superseded, history)
		}
	}
}

// flakyDeleteKV stores a create and loses its answer, cannot be read, and
// refuses the first deletes, as a store electing a leader does.
type flakyDeleteKV struct {
	lostCreateKV
	refuse  atomic.Int32
	full    atomic.Bool // refuse for want of space instead
	deletes atomic.Int32
}

func (k *flakyDeleteKV) Delete(ctx context.Context, key string, rev uint64) error {
	k.deletes.Add(1)
	if k.full.Load() {
		return errors.New("insufficient storage resources available")
	}
	if k.refuse.Add(-1) >= 0 {
		return fmt.Errorf("%w: no response from stream", store.ErrNotStored)
	}
	return k.KV.Delete(ctx, key, rev)
}

// A submit whose record was stored, with the create's answer lost and the
// record not to be read back, fails; its client may send it again as a
// new job. The record is deleted though the store refuses the first
// deletes: it is tried again, not left to run beside the retry's job.
func TestAFailedSubmitsRecordIsDeletedOnceTheStoreTakesIt(t *testing.T) {
	f := newFixture(t)
	kv := &flakyDeleteKV{lostCreateKV: lostCreateKV{cutKV{KV: f.store.Jobs.KV}}}
	kv.cut.Store(true)
	kv.refuse.Store(3)
	f.store.Jobs.KV = kv
	if _, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1}); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a submit whose record cannot be confirmed: %v; want unavailable", err)
	}
	waitFor(t, func() bool {
		keys, _ := kv.KV.Keys(f.ctx)
		return len(keys) == 0 && f.queued() == 0
	})
	if n := kv.refuse.Load(); n >= 0 {
		t.Fatalf("the record is gone with %d refusals left; want all 3 spent", n+1)
	}

	// A delete refused for another reason (a full disk, whose every
	// refused write the NATS server logs) is not tried again.
	kv.full.Store(true)
	kv.deletes.Store(0)
	if _, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1}); job.ErrorCode(err) != job.EUnavailable {
		t.Fatalf("a second submit whose record cannot be confirmed: %v; want unavailable", err)
	}
	// The tasks are purged after the record's delete is given up: then
	// its count is final.
	waitFor(t, func() bool { return kv.deletes.Load() > 0 && f.queued() == 0 })
	if n := kv.deletes.Load(); n != 1 {
		t.Fatalf("a delete refused for want of space was tried %d times; want once", n)
	}
}

// A straggler gets its backup copy only while a worker is idle: with every
// worker busy, a copy would take a worker from other jobs' queued work, or
// wait in the queue until its task had finished anyway.
func TestBackupsWaitForAnIdleWorker(t *testing.T) {
	f := newFixture(t)
	// The fixture's only coordinator applies the results; their run times
	// are kept once BackupAfter is set.
	c := f.c
	c.cfg.BackupAfter = 100 * time.Millisecond
	j, err := c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	tasks := f.take(4)
	slices.SortFunc(tasks, func(a, b job.Task) int { return a.Partition - b.Partition })
	now := time.Now().UTC()
	for _, tk := range tasks[:3] {
		r := result(tk, 1)
		r.StartedAt = now.Add(-10 * time.Millisecond)
		f.report(r)
	}
	f.await(j.ID, func(j *job.Job) bool { return j.Done == 3 })
	// The run times are kept just after the record's write the watch saw:
	// without them no copy is made, and the first look would pass for
	// nothing.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c.mu.Lock()
		kept := len(c.durs[j.ID][job.PhaseMap])
		c.mu.Unlock()
		if kept == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d run times kept after 3 results", kept)
		}
	}
	slow := now.Add(-5 * time.Second)
	statuses := []job.WorkerStatus{
		{Key: "w.0", Busy: true, JobID: j.ID, Phase: job.PhaseMap, Partition: 3, Attempt: 1, TaskStartedAt: &slow},
		{Key: "w.1", Busy: true, JobID: "noop_other", Phase: job.PhaseMap, TaskStartedAt: &now},
		{Key: "w.2", Stopping: true},
	}
	c.cfg.Running = func() []job.WorkerStatus { return statuses } // the loop is not running: Running was nil at Start
	c.lookForStragglers(f.ctx, time.Now())
	if n := f.queued(); n != 0 {
		t.Fatalf("%d tasks queued with no worker idle; want no backup copy yet", n)
	}
	statuses = append(statuses, job.WorkerStatus{Key: "w.3"})
	c.lookForStragglers(f.ctx, time.Now())
	copies := f.take(1)
	if tk := copies[0]; !tk.Backup || tk.Partition != 3 {
		t.Fatalf("queued %+v; want a backup copy of partition 3", tk)
	}
	if got, _, err := f.store.Jobs.Get(f.ctx, j.ID); err != nil || !slices.Equal(got.Backups, []string{"map/3"}) {
		t.Fatalf("backups %v (%v); want map/3", got.Backups, err)
	}
}

// A reduce task is weighed by its input before it gets a backup copy: one
// that reads ten times the median finished reducer's bytes (a hot key) may
// run ten times as long, for a copy would take as long; one that reads as
// much as the others, or less, waits the usual twice the median. Map
// tasks (splits of equal size), and reduces whose inputs are unknown or
// tiny, are not weighed.
func TestAReduceIsWeighedByItsInputBeforeABackup(t *testing.T) {
	c := &Coordinator{cfg: Config{BackupAfter: time.Second}}
	const mib = 1 << 20
	j := &job.Job{Phase: job.PhaseReduce, Reducers: 4, ReduceInputBytes: []int64{mib, mib, 10 * mib, 0}}
	for _, tc := range []struct {
		name        string
		job         *job.Job
		p           int
		median      time.Duration
		medianInput int64
		want        time.Duration
	}{
		{"a reducer of the median input", j, 0, 2 * time.Second, mib, 4 * time.Second},
		{"a hot key's reducer", j, 2, 2 * time.Second, mib, 40 * time.Second},
		{"an empty reducer", j, 3, 2 * time.Second, mib, 4 * time.Second},
		{"finished reducers' inputs unknown", j, 2, 2 * time.Second, -1, 4 * time.Second},
		{"at least BackupAfter", j, 2, 10 * time.Millisecond, mib, time.Second},
		{"tiny inputs", &job.Job{Phase: job.PhaseReduce, Reducers: 2, ReduceInputBytes: []int64{100, 200 << 10}}, 1, 2 * time.Second, 100, 4 * time.Second},
		{"a map task", &job.Job{Phase: job.PhaseMap, Reducers: 4, ReduceInputBytes: j.ReduceInputBytes}, 2, 2 * time.Second, mib, 4 * time.Second},
	} {
		if got := c.straggling(tc.job, tc.p, tc.median, tc.medianInput); got != tc.want {
			t.Errorf("%s: a backup after %s; want %s", tc.name, got, tc.want)
		}
	}
}

// flaky is a jobs bucket whose reads fail while fail is set, as a store
// of a cluster electing a leader answers.
type flaky struct {
	store.KV
	fail atomic.Bool
}

func (k *flaky) Get(ctx context.Context, key string) (store.Entry, error) {
	if k.fail.Load() {
		return store.Entry{}, errors.New("nats: JetStream system temporarily unavailable")
	}
	return k.KV.Get(ctx, key)
}

// A store that cannot be read as the coordinator starts does not stop the
// start (the server would exit): the job left unqueued is queued by the
// repair loop once the store answers.
func TestStartGoesOnWhenTheStoreCannotBeReadYet(t *testing.T) {
	bucket := &flaky{}
	f := storeFixture(t, func(kv store.KV) store.KV { bucket.KV = kv; return bucket })
	ctx, s := f.ctx, f.store
	lost := job.New(job.NewID("noop", time.Now()), job.Spec{Kind: "noop", Partitions: 2}, time.Now().UTC())
	if _, err := s.Jobs.Create(ctx, lost); err != nil {
		t.Fatal(err)
	}
	bucket.fail.Store(true)
	c := New(Config{Store: s, Datasets: f.ds, Kinds: kinds.Builtin(0), MaxAttempts: 2, Logger: slog.New(slog.DiscardHandler),
		Unqueued: func() []string { return []string{lost.ID} }, RepairEvery: 20 * time.Millisecond})
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start with the store not answering reads: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	if n := f.queued(); n != 0 {
		t.Fatalf("%d tasks queued while the job could not be read", n)
	}
	bucket.fail.Store(false)
	for _, tk := range f.take(2) {
		if tk.Job != lost.ID {
			t.Fatalf("queued a task of %s", tk.Job)
		}
	}
	// The repair loop marks the job queued after it publishes its tasks.
	f.await(lost.ID, func(j *job.Job) bool { return j.Enqueued })
}

// A task whose result is stored but cannot be applied yet (the store does
// not take the job's write: a partition) is not lost: the repair's look at
// a stuck queue leaves it alone, where it queued it again and it ran
// twice with no reason recorded (TestPartitions in CI). Once the store
// takes the write, the result is applied and the job counts each task
// once.
func TestAResultWaitingForTheStoreIsNotTakenForALostTask(t *testing.T) {
	bucket := &cutUpdates{}
	f := storeFixture(t, func(kv store.KV) store.KV { bucket.KV = kv; return bucket })
	f.c = f.coordinator()
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	bucket.cut.Store(true)
	tasks := f.take(1)
	f.report(result(tasks[0], 1))
	for !f.c.resultsWaiting(j.ID) {
		select {
		case <-f.ctx.Done():
			t.Fatal("the coordinator never failed to apply the result")
		case <-time.After(10 * time.Millisecond):
		}
	}
	queuedAgain, err := f.c.Reconcile(f.ctx, map[string]int{j.ID: 2})
	if err != nil {
		t.Fatal(err)
	}
	if queuedAgain != 0 {
		t.Fatalf("the look queued %d tasks again; want none: the taken task's result waits for the store", queuedAgain)
	}
	bucket.cut.Store(false)
	f.await(j.ID, func(j *job.Job) bool { return j.Done == 1 })
	for _, task := range f.take(1) {
		f.report(result(task, 1))
	}
	done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Done != 2 {
		t.Fatalf("job ended %s with %d tasks done; want succeeded with 2", done.State, done.Done)
	}
	if n := f.queued(); n != 0 {
		t.Fatalf("%d task messages left in the queue; want none", n)
	}
}

// A task whose result is stored but held by a coordinator that died before
// applying it (its lease runs out only after the consumer's ack wait) is
// not lost either: the repair's look at a stuck queue waits for the results
// stored before it to be applied, where it queued the task again and it ran
// twice with nothing in its history to say why (a chaos run, 2026-12-07:
// servers SIGKILLed, the result applied 0.7 s after the task was queued
// again).
func TestAResultHeldByADeadCoordinatorIsNotTakenForALostTask(t *testing.T) {
	f := storeFixture(t, func(kv store.KV) store.KV { return kv })
	f.store.Results = memstore.NewStream(time.Second, false) // a lease of 1 s, not 10
	first := f.coordinator()
	j, err := first.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(f.ctx); err != nil { // it dies: nothing applies results now
		t.Fatal(err)
	}
	tasks := f.take(2)
	f.report(result(tasks[0], 1), result(tasks[1], 1))
	// A coordinator takes the results and dies before it acknowledges them:
	// they stay leased to it for the ack wait (1 s here).
	held := 0
	if err := f.store.Results.Fetch(f.ctx, 1, time.Second, func(store.Delivery) { held++ }); err != nil || held != 1 {
		t.Fatalf("took %d result messages (%v); want the one", held, err)
	}
	settle := reconcileSettle
	reconcileSettle = 50 * time.Millisecond
	t.Cleanup(func() { reconcileSettle = settle })
	second := f.coordinator()
	queuedAgain, err := second.Reconcile(f.ctx, map[string]int{j.ID: 2})
	if err != nil {
		t.Fatal(err)
	}
	if queuedAgain != 0 || f.queued() != 0 {
		t.Fatalf("the look queued %d tasks again (%d in the queue); want none: their results wait for their lease to run out", queuedAgain, f.queued())
	}
	done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if done.State != job.Succeeded || done.Done != 2 {
		t.Fatalf("job ended %s with %d tasks done; want succeeded with 2", done.State, done.Done)
	}
	// Once they are applied, the job has ended: a look queues nothing of
	// it. (That a floor that never moves does not hold a look back for
	// ever is TestAStuckResultsConsumerDoesNotHoldTheRepairBack's.)
	if queuedAgain, err := second.Reconcile(f.ctx, map[string]int{j.ID: 2}); err != nil || queuedAgain != 0 {
		t.Fatalf("a look at the ended job queued %d tasks (%v)", queuedAgain, err)
	}
}

// A results' consumer whose acknowledged floor never moves (a result
// JetStream will not serve) does not hold the repair back for ever: once
// the floor has stood still for twice the ack wait, tasks lost from the
// queue are queued again.
func TestAStuckResultsConsumerDoesNotHoldTheRepairBack(t *testing.T) {
	f := storeFixture(t, func(kv store.KV) store.KV { return kv })
	f.store.Results = stuckFloor{memstore.NewStream(time.Second, false)} // leases of 1 s, not 10
	settle, behind := reconcileSettle, behindFor
	reconcileSettle, behindFor = 10*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { reconcileSettle, behindFor = settle, behind })
	f.c = f.coordinator()
	other, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.report(result(f.take(1)[0], 1)) // a result stored: the floor, stuck at 0, is below it
	f.await(other.ID, func(j *job.Job) bool { return j.State.Terminal() })
	j, err := f.c.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	f.take(2) // taken, and no result will come: lost
	if n, err := f.c.Reconcile(f.ctx, map[string]int{j.ID: 2}); err != nil || n != 0 {
		t.Fatalf("the first look queued %d tasks (%v); want none while results may still be applied", n, err)
	}
	for {
		n, err := f.c.Reconcile(f.ctx, map[string]int{j.ID: 2})
		if err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if n != 0 || f.ctx.Err() != nil {
			t.Fatalf("a look queued %d tasks again; want both once the floor stood still long enough (%v)", n, f.ctx.Err())
		}
	}
	for _, task := range f.take(2) {
		f.report(result(task, 1))
	}
	if done := f.await(j.ID, func(j *job.Job) bool { return j.State.Terminal() }); done.State != job.Succeeded || done.Done != 2 {
		t.Fatalf("job ended %s with %d tasks done; want succeeded with 2", done.State, done.Done)
	}
}

// stuckFloor is a results stream whose consumer never acknowledges past
// sequence 0, to Info.
type stuckFloor struct{ store.Stream }

func (s stuckFloor) Info(ctx context.Context) (store.StreamInfo, error) {
	info, err := s.Stream.Info(ctx)
	info.Acked = 0
	return info, err
}

// cutUpdates refuses conditional writes while cut, as a store cut off by a
// partition.
type cutUpdates struct {
	store.KV
	cut atomic.Bool
}

func (k *cutUpdates) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if k.cut.Load() {
		return 0, errCut
	}
	return k.KV.Update(ctx, key, value, rev)
}
