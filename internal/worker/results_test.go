package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// Results that pile up are stored together, but never in a message larger
// than maxResultMessage: NATS refuses one over its max_payload, and the
// tasks behind it would run again for ever.
func TestResultMessagesStaySmall(t *testing.T) {
	f := newFixture(t)
	p := New(Config{Store: f.store, Kinds: f.kinds, Concurrency: 1, Name: "test", Logger: slog.New(slog.DiscardHandler)})
	var batch []finished
	for i := range 100 {
		r := job.TaskResult{Job: "wordcount_x", Partition: i, Phase: job.PhaseReduce, Attempt: 1}
		for range job.PreviewLines {
			r.Preview = append(r.Preview, job.NewPreview([]byte(strings.Repeat("k", 1000)), strings.Repeat("l", 1000)))
		}
		batch = append(batch, finished{result: r})
	}
	p.store(batch)
	got := map[int]bool{}
	messages := 0
	for len(got) < len(batch) {
		err := f.store.Results.Fetch(f.ctx, 100, time.Second, func(d store.Delivery) {
			messages++
			if len(d.Data()) > maxResultMessage {
				t.Errorf("a message of %d bytes; want at most %d", len(d.Data()), maxResultMessage)
			}
			rs, err := store.DecodeResults(d.Data())
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				got[r.Partition] = true
			}
			_ = d.Ack()
		})
		if err != nil || f.ctx.Err() != nil {
			t.Fatalf("%d of %d results stored (%v)", len(got), len(batch), err)
		}
	}
	if messages < 2 || messages > 8 {
		t.Fatalf("%d messages for 100 results of about 6 KiB; want them split in a few", messages)
	}
}

// refusing is a stream whose first publishes fail, as a store
// that does not answer (a partition) fails them.
type refusing struct {
	store.Stream
	left atomic.Int32
	// only, when set, says which publishes may be refused.
	only func(msgs []store.Message) bool
	// passed counts the publishes only picks that were stored.
	passed atomic.Int32
}

func (r *refusing) Publish(ctx context.Context, msgs ...store.Message) []error {
	picked := r.only == nil || r.only(msgs)
	if picked && r.left.Add(-1) >= 0 {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = fmt.Errorf("no acknowledgement from the store: %w", context.DeadlineExceeded)
		}
		return errs
	}
	errs := r.Stream.Publish(ctx, msgs...)
	if picked && errs[0] == nil {
		r.passed.Add(1)
	}
	return errs
}

// refuseResults makes the fixture's results stream refuse its first n
// publishes.
func (f *fixture) refuseResults(n int32) *refusing {
	r := &refusing{Stream: f.store.Results}
	r.left.Store(n)
	s := *f.store
	s.Results = r
	f.store = &s
	return r
}

// refuseTasks makes the fixture's task queue refuse its first n
// publishes that only picks (any when nil).
func (f *fixture) refuseTasks(n int32, only func(msgs []store.Message) bool) *refusing {
	r := &refusing{Stream: f.store.Tasks, only: only}
	r.left.Store(n)
	s := *f.store
	s.Tasks = r
	f.store = &s
	return r
}

// failsFirst is kind "k", whose first run fails and every later one
// returns 1; runs counts them.
func failsFirst(runs *atomic.Int32) job.Kind {
	return job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) {
		if runs.Add(1) == 1 {
			return 0, errors.New("flaky input")
		}
		return 1, nil
	}}
}

// A task whose result the store does not take for a while (its server
// paused, a leader being elected, a full disk) is not run again: the pool
// holds the result, renews the task's lease, and stores it once the store
// takes it.
func TestResultsTheStoreRefusesAreStoredAgainNotRunAgain(t *testing.T) {
	var runs atomic.Int32
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) {
		runs.Add(1)
		return 1, nil
	}})
	results := f.refuseResults(3)
	f.pool(1, func(c *Config) { c.storeAgainWait = 20 * time.Millisecond })
	f.queue(task("j1", 0, 1))
	rs := f.results(1)
	if len(rs) != 1 || !rs[0].Final() || rs[0].Attempt != 1 || rs[0].Error != "" || rs[0].Value != 1 {
		t.Fatalf("results: %+v; want the first attempt's, alone", rs)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the task ran %d times; want once, its result stored again", n)
	}
	if left := results.left.Load(); left >= 0 {
		t.Fatalf("%d refusals left: the result was stored before the store took anything", left+1)
	}
	info, err := f.store.Tasks.Info(f.ctx)
	if err != nil || info.Waiting+info.Leased != 0 {
		t.Fatalf("queue: %+v, %v; want the task acked once its result was stored", info, err)
	}
}

// A task whose result could not be stored in storeAgainFor runs again, and
// the history says why: the records of its interrupted runs are stored
// with its final result, in one message, even when the store refused
// everything at the time they were made (each is also sent when it is
// made; a record stored twice is shown once).
func TestAnUnstoredResultsRunIsRecordedWithTheNextOne(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	f.refuseResults(4)
	f.pool(1, func(c *Config) {
		c.storeAgainWait = 10 * time.Millisecond
		c.storeAgainFor = 15 * time.Millisecond // given up at the second refusal
	})
	f.queue(task("j1", 0, 1))
	rs := f.results(1)
	final := rs[len(rs)-1]
	if !final.Final() || final.Error != "" || final.Attempt < 2 || final.Failures != 0 {
		t.Fatalf("final result: %+v; want a later attempt, no failures (max attempts 1)", final)
	}
	if len(rs) != final.Attempt {
		t.Fatalf("results: %+v; want a record of each of the %d interrupted runs, then the final one", rs, final.Attempt-1)
	}
	for i, r := range rs[:len(rs)-1] {
		if r.Outcome != job.OutcomeInterrupted || r.Attempt != i+1 || !strings.Contains(r.Error, "could not be stored") || r.Worker == "" {
			t.Fatalf("record %d: %+v; want attempt %d interrupted, its result not stored", i, r, i+1)
		}
	}
}

// A task whose run failed or was lost carries the record to its final
// result: a store that refused the record when it was made (a partition)
// still gets it, in the final result's message.
func TestFailedAndLostRunsAreCarriedToTheFinalResult(t *testing.T) {
	var runs atomic.Int32
	f := newFixture(t, failsFirst(&runs))
	// A worker takes the task and dies with it: its second delivery is
	// the pool's, which notes the lost run, fails, and runs it again.
	f.queue(task("j1", 0, 3))
	var held int
	if err := f.store.Tasks.Fetch(f.ctx, 1, 5*time.Second, func(store.Delivery) { held++ }); err != nil || held != 1 {
		t.Fatalf("the dead worker's fetch: %d tasks, %v", held, err)
	}
	f.refuseResults(2) // the lost run's record and the failed one's, each on its own
	f.pool(1, func(c *Config) { c.storeAgainWait = 20 * time.Millisecond })
	rs := f.results(1)
	// The refused records are also sent again (a record stored twice is
	// shown once). The refusals may also fall on the final result (the
	// two records then went out in one call): it is sent again too.
	final := rs[len(rs)-1]
	byAttempt := map[int]string{}
	for _, r := range rs[:len(rs)-1] {
		if _, twice := byAttempt[r.Attempt]; twice {
			t.Fatalf("results: %+v; attempt %d recorded twice", rs, r.Attempt)
		}
		byAttempt[r.Attempt] = r.Outcome
	}
	if !final.Final() || len(byAttempt) != final.Attempt-1 || byAttempt[1] != job.OutcomeLost || byAttempt[2] != job.OutcomeFailed {
		t.Fatalf("results: %+v; want the lost run (1), the failed one (2), any interrupted ones, then the final attempt", rs)
	}
}

// A failed task's retry that the store does not take when its backoff
// ends (the copy that queues it again) is tried again while the pool
// holds the task, not let go: let go, it came back from the queue after
// the ack wait as a lost run.
func TestARetryTheStoreDoesNotTakeIsQueuedAgainLater(t *testing.T) {
	var runs atomic.Int32
	f := newFixture(t, failsFirst(&runs))
	f.queue(task("j1", 0, 3))
	tasks := f.refuseTasks(2, nil)
	f.pool(1, func(c *Config) { c.storeAgainWait = 20 * time.Millisecond })
	rs := f.results(1)
	final := rs[len(rs)-1]
	if !final.Final() || final.Error != "" || final.Attempt != 2 {
		t.Fatalf("final result: %+v; want the second attempt's, done", final)
	}
	for _, r := range rs[:len(rs)-1] {
		if r.Outcome != job.OutcomeFailed || r.Attempt != 1 {
			t.Fatalf("results: %+v; want the first attempt failed, and nothing lost", rs)
		}
	}
	if left := tasks.left.Load(); left >= 0 {
		t.Fatalf("%d refusals of the retry's copy left; want both met", left+1)
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("the task ran %d times; want twice", n)
	}
}
