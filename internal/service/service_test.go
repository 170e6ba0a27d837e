package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/coordinator"
	"github.com/mrcluster/mrcluster/internal/dataset"
	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/kinds"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
	"github.com/mrcluster/mrcluster/internal/view"
)

// The commands and queries on the memory store, with the real
// coordinator and read model: no worker runs, so jobs stay queued.

type fixture struct {
	ctx      context.Context
	svc      *Service
	writable error
}

func newFixture(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	st := memstore.New(memstore.Config{})
	log := slog.New(slog.DiscardHandler)
	v := view.New(view.Config{Store: st, Hub: event.NewHub(), Logger: log})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(context.Background()) })
	<-v.Ready()
	ds := &dataset.Store{KV: st.Datasets, Blocks: st.Blocks}
	c := coordinator.New(coordinator.Config{Store: st, Datasets: ds, Kinds: kinds.Builtin(0), MaxAttempts: 1, Logger: log,
		Running: v.Running, Unqueued: v.Unqueued})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	f := &fixture{ctx: ctx}
	cfg := Config{Coordinator: c, View: v, Datasets: ds, Kinds: kinds.Builtin(0), MaxPartitions: 100,
		Writable: func() error { return f.writable }}
	if mod != nil {
		mod(&cfg)
	}
	f.svc = New(cfg)
	return f
}

func TestBadSpecsAreRefusedOnceWithTheirReason(t *testing.T) {
	f := newFixture(t, nil)
	admitted := 0
	admit := func() error { admitted++; return nil }
	for spec, want := range map[*job.Spec]string{
		{Kind: "nope", Partitions: 1}:                             `unknown kind "nope"`,
		{Kind: "noop", Partitions: 0}:                             "partitions must be an integer from 1 to 100",
		{Kind: "noop", Partitions: 101}:                           "partitions must be an integer from 1 to 100",
		{Kind: "wordcount", Partitions: 2}:                        "input is required",
		{Kind: "noop", Partitions: 1, Input: []string{"x"}}:       "reads no data",
		{Kind: "wordcount", Partitions: 1, Input: []string{".x"}}: "starts with '.'",
		{Kind: "grep", Partitions: 1, Input: []string{"x"}}:       "params.pattern is required",
	} {
		_, err := f.svc.Submit(f.ctx, *spec, admit)
		if job.ErrorCode(err) != job.EInvalid || !strings.Contains(err.Error(), want) {
			t.Errorf("submit %+v: %v; want an invalid-input error saying %q", *spec, err, want)
		}
	}
	if admitted != 0 {
		t.Fatalf("bad specs were admitted %d times: the rate counts valid submits only", admitted)
	}
}

// A submit answers once the read model holds the job: the next query sees it.
func TestSubmitIsReadYourWrites(t *testing.T) {
	f := newFixture(t, nil)
	for range 20 {
		j, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := f.svc.cfg.View.Get(j.ID); !ok {
			t.Fatalf("job %s was answered before the read model had it", j.ID)
		}
	}
	if _, err := f.svc.Job(f.ctx, "noop_nope"); job.ErrorCode(err) != job.ENotFound {
		t.Fatalf("a job that does not exist: %v", err)
	}
}

func TestSubmitIsAdmittedAgainstTheQueueTheStoreAndTheCaller(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxQueuedTasks = 5 })
	if _, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 3}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 3}, nil)
	if job.ErrorCode(err) != job.EBusy || !strings.Contains(err.Error(), "3 tasks waiting") {
		t.Fatalf("a submit over the queue bound: %v; want busy, saying how many wait", err)
	}
	_, err = f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 6}, nil)
	if job.ErrorCode(err) != job.ETooLarge || !strings.Contains(err.Error(), "6 tasks, more than the 5") {
		t.Fatalf("a job with more tasks than the bound itself: %v; want too large: waiting would not help", err)
	}
	f.writable = errors.New("the disk of the store is full")
	if _, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1}, nil); job.ErrorCode(err) != job.EUnavailable || !strings.Contains(err.Error(), "disk") {
		t.Fatalf("a submit while the store cannot write: %v", err)
	}
	f.writable = nil
	_, err = f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1}, func() error { return job.Errorf(job.EBusy, "slow down") })
	if job.ErrorCode(err) != job.EBusy {
		t.Fatalf("a submit its caller does not admit: %v", err)
	}
}

func TestSubmitIsAdmittedAgainstTheUnfinishedJobs(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxUnfinishedJobs = 3 })
	first, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	specs := []job.Spec{{Kind: "noop", Partitions: 1}, {Kind: "noop", Partitions: 1}, {Kind: "noop", Partitions: 1}}
	_, err = f.svc.SubmitBatch(f.ctx, specs, "", nil)
	if job.ErrorCode(err) != job.EBusy || !strings.Contains(err.Error(), "1 jobs not finished and this batch would add 3") || !strings.Contains(err.Error(), "--max-unfinished-jobs") {
		t.Fatalf("a batch over the bound of unfinished jobs: %v; want busy, saying how many", err)
	}
	big := append(specs, specs...)
	if _, err = f.svc.SubmitBatch(f.ctx, big, "", nil); job.ErrorCode(err) != job.ETooLarge || !strings.Contains(err.Error(), "could never be admitted") {
		t.Fatalf("a batch larger than the bound itself: %v; want too large: waiting would not help", err)
	}
	if _, err := f.svc.SubmitBatch(f.ctx, specs[:2], "", nil); err != nil {
		t.Fatalf("a batch that fits: %v", err)
	}
	if _, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1}, nil); job.ErrorCode(err) != job.EBusy {
		t.Fatalf("a submit over the bound: %v; want busy", err)
	}
	if _, err := f.svc.Cancel(f.ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	for v := f.svc.cfg.View; ; { // until the read model sees the cancel
		changed := v.Changed()
		if v.Unfinished() == 2 {
			break
		}
		select {
		case <-changed:
		case <-f.ctx.Done():
			t.Fatalf("the read model holds %d jobs unfinished after the cancel; want 2", v.Unfinished())
		}
	}
	if _, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1}, nil); err != nil {
		t.Fatalf("a submit once a job finished: %v", err)
	}
	if _, err := f.svc.Retry(f.ctx, first.ID, nil); job.ErrorCode(err) != job.EBusy {
		t.Fatalf("a retry over the bound: %v; want busy", err)
	}
}

func TestADatasetAnUnfinishedJobReadsCannotChange(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxFileBytes = 100 })
	text := "a b\nc\n"
	if _, err := f.svc.PutFile(f.ctx, "d", "f.txt", strings.NewReader(text), int64(len(text))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutFile(f.ctx, "d", "big.txt", strings.NewReader(strings.Repeat("x", 101)), 101); job.ErrorCode(err) != job.ETooLarge {
		t.Fatalf("a file over the bound: %v; want too large", err)
	}
	j, err := f.svc.Submit(f.ctx, job.Spec{Kind: "wordcount", Partitions: 1, Input: []string{"d"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.PutFile(f.ctx, "d", "f.txt", strings.NewReader("new\n"), 4); job.ErrorCode(err) != job.EConflict || !strings.Contains(err.Error(), j.ID) {
		t.Fatalf("replacing a file a queued job reads: %v; want a conflict naming the job", err)
	}
	if err := f.svc.DeleteDataset(f.ctx, "d"); job.ErrorCode(err) != job.EConflict {
		t.Fatalf("deleting a dataset a queued job reads: %v; want a conflict", err)
	}
	if _, err := f.svc.Output(f.ctx, j.ID); job.ErrorCode(err) != job.EConflict {
		t.Fatalf("the output of a queued job: %v; want a conflict", err)
	}
	if _, err := f.svc.Cancel(f.ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	// The view learns of the cancel a moment later.
	deadline := time.Now().Add(10 * time.Second)
	for {
		changed := f.svc.cfg.View.Changed() // taken first: no change falls between
		err := f.svc.DeleteDataset(f.ctx, "d")
		if err == nil {
			break
		}
		if job.ErrorCode(err) != job.EConflict || time.Now().After(deadline) {
			t.Fatalf("deleting a dataset after its job was canceled: %v", err)
		}
		select {
		case <-changed:
		case <-f.ctx.Done():
			t.Fatal(f.ctx.Err())
		}
	}
	if ds, err := f.svc.Datasets(f.ctx); err != nil || len(ds) != 0 {
		t.Fatalf("datasets after the delete: %+v %v", ds, err)
	}
}

func TestBatchIsValidatedFirstAndStoredWhole(t *testing.T) {
	f := newFixture(t, nil)
	admitted := 0
	admit := func() error { admitted++; return nil }
	_, err := f.svc.SubmitBatch(f.ctx, []job.Spec{{Kind: "noop", Partitions: 1}, {Kind: "noop", Partitions: 2}, {Kind: "nope", Partitions: 1}}, "", admit)
	if job.ErrorCode(err) != job.EInvalid || !strings.Contains(err.Error(), "jobs[2]") || !strings.Contains(err.Error(), `unknown kind "nope"`) {
		t.Fatalf("a batch with a bad spec: %v; want invalid, naming jobs[2]", err)
	}
	if jobs, _, _ := f.svc.cfg.View.List(f.ctx, view.Filter{}, 10, ""); len(jobs) != 0 || admitted != 0 {
		t.Fatalf("a refused batch stored %d jobs and was admitted %d times", len(jobs), admitted)
	}
	specs := make([]job.Spec, 50)
	for i := range specs {
		specs[i] = job.Spec{Kind: "noop", Partitions: 1 + i%3}
	}
	jobs, err := f.svc.SubmitBatch(f.ctx, specs, "k", admit)
	if err != nil || len(jobs) != 50 || admitted != 1 {
		t.Fatalf("a batch of 50: %d jobs, %v, admitted %d times", len(jobs), err, admitted)
	}
	for i, j := range jobs {
		if j.Partitions != specs[i].Partitions {
			t.Fatalf("job %d has %d partitions; want the order of the specs", i, j.Partitions)
		}
		if _, ok := f.svc.cfg.View.Get(j.ID); !ok {
			t.Fatalf("job %d answered before the read model had it", i)
		}
	}
	again, err := f.svc.SubmitBatch(f.ctx, specs, "k", admit)
	if err != nil || len(again) != 50 || again[7].ID != jobs[7].ID || !again[7].Replayed {
		t.Fatalf("the batch again with its key: %v; want the same 50 jobs, replayed", err)
	}
	// The batch's key is not a single submit's key.
	one, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1, IdempotencyKey: "k"}, nil)
	if err != nil || one.Replayed {
		t.Fatalf("a single submit with the batch's key: %+v %v", one, err)
	}
	if _, err := f.svc.SubmitBatch(f.ctx, make([]job.Spec, 1001), "", nil); job.ErrorCode(err) != job.EInvalid {
		t.Fatalf("a batch of 1001: %v", err)
	}
}

// A read the caller waits for is made again while the store says it is
// unavailable (a leader election, a server continued after a pause), for
// a moment; any other answer is returned at once.
func TestReadAgainWhileTheStoreIsUnavailable(t *testing.T) {
	ctx := context.Background()
	calls := 0
	err := readAgain(ctx, func() error {
		if calls++; calls < 3 {
			return job.Errorf(job.EUnavailable, "the job store is not answering")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("%v after %d calls; want success at the third", err, calls)
	}
	calls = 0
	err = readAgain(ctx, func() error { calls++; return job.Errorf(job.ENotFound, "no such job") })
	if job.ErrorCode(err) != job.ENotFound || calls != 1 {
		t.Fatalf("%v after %d calls; want not found at once", err, calls)
	}
	calls = 0
	start := time.Now()
	err = readAgain(ctx, func() error { calls++; return job.Errorf(job.EUnavailable, "down") })
	if job.ErrorCode(err) != job.EUnavailable || calls < 5 || time.Since(start) < readWithin {
		t.Fatalf("%v after %d calls in %s; want unavailable after trying for %s", err, calls, time.Since(start), readWithin)
	}
}

// Every task carries its job's params: a submit whose params times tasks
// would queue more than job.MaxParamCopies is refused as too large, saying
// how to fit, and stores nothing. 1 MB of params on 10,000 partitions
// once queued 10 GB of tasks and took the server to 15 GB of memory.
func TestParamsCopiedIntoManyTasksAreRefused(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxPartitions = 10_000 })
	params := func(n int) json.RawMessage { return json.RawMessage(`{"x":"` + strings.Repeat("a", n) + `"}`) }
	_, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 10_000, Params: params(200 << 10)}, nil)
	if job.ErrorCode(err) != job.ETooLarge || !strings.Contains(err.Error(), "go into each of the job's 10000 tasks") || !strings.Contains(err.Error(), "keep params under 6710 bytes for 10000 tasks") {
		t.Fatalf("200 KiB of params on 10,000 partitions: %v; want too large, saying how small params must be", err)
	}
	// A job's record holds its params, and must fit in one message.
	_, err = f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1, Params: params(1 << 20)}, nil)
	if job.ErrorCode(err) != job.ETooLarge || !strings.Contains(err.Error(), "at most 262144 (256 KiB)") {
		t.Fatalf("1 MiB of params: %v; want too large", err)
	}
	if _, err := f.svc.Submit(f.ctx, job.Spec{Kind: "noop", Partitions: 1000, Params: params(6000)}, nil); err != nil {
		t.Fatalf("6 KB of params on 1,000 partitions (5.7 MiB): %v", err)
	}
	specs := make([]job.Spec, 20)
	for i := range specs {
		specs[i] = job.Spec{Kind: "noop", Partitions: 1000, Params: params(4000)} // 3.8 MiB each, 76 MiB in all
	}
	_, err = f.svc.SubmitBatch(f.ctx, specs, "", nil)
	if job.ErrorCode(err) != job.ETooLarge || !strings.Contains(err.Error(), "the batch's params go into each of its jobs' tasks") {
		t.Fatalf("a batch of 20 jobs with 4 MB of params each in their tasks: %v; want too large", err)
	}
	specs[3].Partitions = 3_000_000
	_, err = f.svc.SubmitBatch(f.ctx, specs, "", nil)
	if job.ErrorCode(err) != job.EInvalid || !strings.Contains(err.Error(), "jobs[3]: partitions") {
		t.Fatalf("a bad spec among them: %v; want it named first", err)
	}
	if jobs, _, _ := f.svc.cfg.View.List(f.ctx, view.Filter{}, 10, ""); len(jobs) != 1 {
		t.Fatalf("%d jobs stored; want only the one that fits", len(jobs))
	}
}

// One submit queues at most MaxSubmitTasks tasks, whatever the queue's
// bound: a batch of 100 jobs of 10,000 partitions held 1.6 GB in the
// server and never went in within its deadline (503 after 18 s, every
// time). It is refused at once as too large; a smaller batch goes in.
func TestOneSubmitQueuesABoundedNumberOfTasks(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxPartitions = 10_000; c.MaxQueuedTasks = 1_000_000 })
	specs := make([]job.Spec, 11)
	for i := range specs {
		specs[i] = job.Spec{Kind: "noop", Partitions: 10_000}
	}
	admitted := 0
	_, err := f.svc.SubmitBatch(f.ctx, specs, "", func() error { admitted++; return nil })
	if job.ErrorCode(err) != job.ETooLarge || !strings.Contains(err.Error(), "110000 tasks, more than the 100000 one submit may queue") || admitted != 0 {
		t.Fatalf("a batch of 110,000 tasks: %v (admitted %d times); want too large, before the caller's admit", err, admitted)
	}
	jobs, err := f.svc.SubmitBatch(f.ctx, specs[:4], "", nil)
	if err != nil || len(jobs) != 4 {
		t.Fatalf("a batch of 40,000 tasks: %d jobs, %v", len(jobs), err)
	}
}
