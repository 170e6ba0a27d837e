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
	acked chan struct{} // closed when a delivery made again is acked
	ack   *sync.Once
}

func (s stalled) wrap(fn func(store.Delivery)) func(store.Delivery) {
	return func(d store.Delivery) {
		if d.Delivered() > 1 {
			s.once.Do(func() { close(s.again) })
		}
		fn(stalledDelivery{d, s})
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
	q stalled
}

func (d stalledDelivery) InProgress() error {
	if d.q.stall.Load() {
		return nil
	}
	return d.Delivery.InProgress()
}

func (d stalledDelivery) Ack() error {
	err := d.Delivery.Ack()
	if d.Delivered() > 1 {
		d.q.ack.Do(func() { close(d.q.acked) })
	}
	return err
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
	q := stalled{Stream: f.store.Tasks, stall: &stall, again: make(chan struct{}), once: &sync.Once{}, acked: make(chan struct{}), ack: &sync.Once{}}
	f.store.Tasks = q
	f.pool(2)
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
	// The second delivery is acked, by the attempt that adopted it, as
	// done, or (before the fix) after a run of its own: then the runs
	// are counted.
	select {
	case <-q.acked:
	case <-f.ctx.Done():
		t.Fatal("the delivery made again was never acked")
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
