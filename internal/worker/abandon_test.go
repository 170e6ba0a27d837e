package worker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// stuckKind's map never looks at its context: it returns when released,
// as a kind compiled in with a loop that never checks ctx.Done().
func stuckKind(release <-chan struct{}) job.Kind {
	return job.Kind{Name: "k", Map: func(_ context.Context, t job.Task) (int64, error) {
		if t.Job == "stuck" {
			<-release
		}
		return 1, nil
	}}
}

// A task whose code ignores its timeout fails once the grace after it has
// passed, saying so, and its worker takes the next task: it used to keep
// its worker, and its job, for ever.
func TestATaskIgnoringItsTimeoutIsGivenUp(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := newFixture(t, stuckKind(release))
	f.pool(1, func(c *Config) { c.abandonAfter = 200 * time.Millisecond })
	stuck := task("stuck", 0, 1)
	stuck.Timeout = 100 * time.Millisecond
	f.queue(stuck, task("next", 0, 1))
	rs := f.results(2)
	if len(rs) != 2 || rs[0].Job != "stuck" || !rs[0].Final() ||
		!strings.Contains(rs[0].Error, "timed out after 100ms (the job's timeout)") || !strings.Contains(rs[0].Error, "did not return within 200ms") {
		t.Fatalf("results: %+v; want the stuck task's failure saying it timed out and was given up", rs)
	}
	if rs[1].Job != "next" || rs[1].Error != "" {
		t.Fatalf("then %+v; want the next task done by the same worker", rs[1])
	}
}

// A worker stopping gives up a task that ignores the stop, within about a
// second past its shutdown time, and gives the task back to the queue,
// ahead of a task queued after it.
func TestStopGivesUpATaskIgnoringIt(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := newFixture(t, stuckKind(release))
	p := f.pool(1)
	f.queue(task("stuck", 0, 1))
	awaitLeased(t, f)
	f.queue(task("newer", 0, 1))
	ctx, cancel := context.WithTimeout(f.ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Stop took %s with a task ignoring it; want about 1.2s", took)
	}
	info, err := f.store.Tasks.Info(f.ctx)
	if err != nil || info.Waiting != 2 {
		t.Fatalf("queue after the stop: %+v, %v; want the task given back beside the newer one", info, err)
	}
	// It keeps its place: before the task queued while it ran.
	var got []string
	if err := f.store.Tasks.FetchFrom(f.ctx, job.DefaultPriority, 1, func(d store.Delivery) { got = append(got, d.Key()) }); err != nil || len(got) != 1 || got[0] != "stuck" {
		t.Fatalf("the next task fetched: %v, %v; want the one given back", got, err)
	}
}

// A task given back to the queue goes to the lane it came from: a limited
// kind's copy went to a priority lane, round the kind's limits.
func TestAGivenBackTaskKeepsItsKindsLane(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := newFixture(t, stuckKind(release))
	if err := f.store.Tasks.SetLane(f.ctx, "k", 1, ""); err != nil {
		t.Fatal(err)
	}
	p := f.pool(1)
	stuck := task("stuck", 0, 1)
	stuck.Lane = "k"
	f.queue(stuck)
	awaitLeased(t, f)
	ctx, cancel := context.WithTimeout(f.ctx, 200*time.Millisecond)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for pr := job.MinPriority; pr <= job.MaxPriority; pr++ {
		if err := f.store.Tasks.FetchFrom(f.ctx, pr, 10, func(d store.Delivery) {
			t.Errorf("the task given back is in the lane of priority %d; want its kind's", pr)
		}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	if err := f.store.Tasks.Fetch(f.ctx, 10, time.Second, func(d store.Delivery) { got = append(got, d.Key()) }); err != nil || len(got) != 1 {
		t.Fatalf("fetched %v, %v; want the task given back, from its kind's lane", got, err)
	}
}

// awaitLeased waits until the queue has a task leased.
func awaitLeased(t *testing.T, f *fixture) {
	t.Helper()
	for {
		info, err := f.store.Tasks.Info(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Leased == 1 {
			return
		}
		select {
		case <-f.ctx.Done():
			t.Fatal("the task never started")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// hanging is a stream whose publishes are never answered, as a store cut
// off: each waits until its context ends.
type hanging struct {
	store.Stream
	started chan struct{} // closed at the first publish
	once    sync.Once
}

func (h *hanging) Publish(ctx context.Context, msgs ...store.Message) []error {
	h.once.Do(func() { close(h.started) })
	<-ctx.Done()
	errs := make([]error, len(msgs))
	for i := range errs {
		errs[i] = fmt.Errorf("no acknowledgement from the store: %w", ctx.Err())
	}
	return errs
}

// A pool stopping while its store does not take its results ends within a
// couple of seconds past its stop's deadline, its task left to the queue,
// and does not crash: the results it could not store were given up only
// when their store call's own 10 s ran out, after the stop had closed the
// channel the retry writes the history record to (a panic: send on a
// closed channel, seen on a worker process stopped after its servers).
func TestAStopWhoseResultsAreNotStoredEndsSoonAfterItsDeadline(t *testing.T) {
	f := newFixture(t, job.Kind{Name: "k", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	results := &hanging{Stream: f.store.Results, started: make(chan struct{})}
	s := *f.store
	s.Results = results
	f.store = &s
	p := f.pool(1)
	f.queue(task("j1", 0, 1))
	select {
	case <-results.started:
	case <-f.ctx.Done():
		t.Fatal("the task's result was never sent to the store")
	}
	ctx, cancel := context.WithTimeout(f.ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 200*time.Millisecond+leaveGrace+2*time.Second {
		t.Fatalf("Stop took %s; want its 200ms and the %s grace after it", took, leaveGrace)
	}
	info, err := f.store.Tasks.Info(f.ctx)
	if err != nil || info.Waiting+info.Leased != 1 {
		t.Fatalf("queue after the stop: %+v, %v; want the task whose result was not stored still in it", info, err)
	}
}
