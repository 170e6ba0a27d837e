package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// stalled is a task queue whose leases are not renewed while stall is
// set: what a paused process (SIGSTOP, a suspended machine) or one starved
// of CPU looks like to the queue, which then delivers its messages again.
type stalled struct {
	store.Stream
	stall *atomic.Bool
	again chan struct{} // closed at the first delivery made again
	once  *sync.Once
}

func (s stalled) wrap(fn func(store.Delivery)) func(store.Delivery) {
	return func(d store.Delivery) {
		if d.Delivered() > 1 {
			s.once.Do(func() { close(s.again) })
		}
		fn(stalledDelivery{d, s.stall})
	}
}

func (s stalled) Fetch(ctx context.Context, max int, wait time.Duration, fn func(store.Delivery)) error {
	return s.Stream.Fetch(ctx, max, wait, s.wrap(fn))
}

func (s stalled) FetchFrom(ctx context.Context, priority, max int, fn func(store.Delivery)) error {
	return s.Stream.FetchFrom(ctx, priority, max, s.wrap(fn))
}

type stalledDelivery struct {
	store.Delivery
	stall *atomic.Bool
}

func (d stalledDelivery) InProgress() error {
	if d.stall.Load() {
		return nil
	}
	return d.Delivery.InProgress()
}

// A task whose lease ran out while its worker still runs it (the process
// was paused) and that the queue delivers again to the same pool runs
// once: the running attempt answers for the new delivery and acks it. Two
// runs were seen after a server was paused for 45 s: every task running
// at the pause ran twice, recorded as "lost".
func TestARedeliveryOfARunningTaskIsNotRunAgain(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	release := make(chan struct{})
	f := newFixture(t, job.Kind{Name: "slow", Map: func(ctx context.Context, _ job.Task) (int64, error) {
		runs.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return 7, nil
	}})
	var stall atomic.Bool
	stall.Store(true)
	q := stalled{Stream: f.store.Tasks, stall: &stall, again: make(chan struct{}), once: &sync.Once{}}
	f.store.Tasks = q
	p := f.pool(2)
	f.queue(job.Task{Job: "slow_1", Kind: "slow", Partition: 0, Partitions: 1, MaxAttempts: 1})
	// The memory store's ack wait is a second: the message comes back to
	// the pool, whose idle worker fetches it, while the first still runs.
	select {
	case <-q.again:
	case <-f.ctx.Done():
		t.Fatal("the queue never delivered the task again")
	}
	stall.Store(false)
	close(release)
	rs := f.results(1)
	// Both deliveries were handled (the second one adopted by the running
	// attempt, or acked as done) before the runs are counted.
	for p.assigned.Load() != 0 {
		select {
		case <-p.idleWake:
		case <-f.ctx.Done():
			t.Fatal("the pool's workers never went idle")
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the task ran %d times", n)
	}
	for _, r := range rs {
		if r.Outcome == job.OutcomeLost || r.Value != 7 {
			t.Fatalf("results: %+v", rs)
		}
	}
	// Nothing is left in the queue, held or waiting.
	if info, err := f.store.Tasks.Info(f.ctx); err != nil || info.Waiting+info.Leased != 0 {
		t.Fatalf("after the run: %+v (%v)", info, err)
	}
}
