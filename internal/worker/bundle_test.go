package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// memberTasks returns the first tasks of n jobs of group g.
func memberTasks(g string, n int) []job.Task {
	tasks := make([]job.Task, n)
	for i := range tasks {
		tasks[i] = job.Task{Job: g, Kind: "k", Phase: job.PhaseMap, Partition: i, Partitions: n, MaxAttempts: 1,
			Member: fmt.Sprintf("%s-m%d", g, i+1), Params: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i*10))}
	}
	return tasks
}

// The first tasks of a group's jobs go in one message, and a pool runs
// each of them, as the job it is, once; the message is acked once every
// task's result is stored.
func TestABundleRunsEveryJobOfItOnce(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	f := newFixture(t, job.Kind{Name: "k", Map: func(_ context.Context, t job.Task) (int64, error) {
		var p struct{ N int64 }
		if err := json.Unmarshal(t.Params, &p); err != nil {
			return 0, err
		}
		mu.Lock()
		seen[fmt.Sprintf("%s %d/%d", t.Job, t.Partition, t.Partitions)]++
		mu.Unlock()
		return p.N, nil
	}})
	tasks := memberTasks("g", 70)
	msgs, err := store.TaskMessages(tasks, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d messages for the first tasks of 70 jobs of a group; want 2 bundles (of up to %d)", len(msgs), job.MaxBundle)
	}
	f.queue(tasks...)
	f.pool(3)
	got := map[int]int64{}
	for _, r := range f.results(70) {
		if r.Error != "" || r.Attempt != 1 || r.Job != "g" {
			t.Fatalf("result: %+v", r)
		}
		got[r.Partition] = r.Value
	}
	for i := range 70 {
		if got[i] != int64(i*10) {
			t.Fatalf("job %d of the group: value %d, want %d", i, got[i], i*10)
		}
		if k := fmt.Sprintf("g-m%d 0/1", i+1); seen[k] != 1 {
			t.Fatalf("the code saw %q %d times, want once (it saw %v)", k, seen[k], seen)
		}
	}
	awaitQueue(t, f, func(i store.StreamInfo) bool { return i.Waiting+i.Leased == 0 }, "every bundle acked")
}

// heldKind is kind "k", whose tasks send their member to started and run
// until release is closed.
func heldKind(started chan<- string, release <-chan struct{}) job.Kind {
	return job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		started <- t.Member
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 1, nil
	}}
}

// awaitStarts waits for n tasks to say they started, failing with what
// otherwise.
func awaitStarts(t *testing.T, f *fixture, started <-chan string, n int, what string) {
	t.Helper()
	for range n {
		select {
		case <-started:
		case <-f.ctx.Done():
			t.Fatal(what)
		}
	}
}

// A pool with fewer idle workers than a bundle of slow tasks holds gives
// them all back, a message each, and runs them as any task: none waits
// here behind a task of minutes while other workers idle, and none is in a
// bundle this pool holds in part (which would run whole again should the
// pool die).
func TestABundleOfSlowTasksIsSharedOut(t *testing.T) {
	started := make(chan string, 8)
	release := make(chan struct{})
	f := newFixture(t, heldKind(started, release))
	f.queue(memberTasks("g", 4)...)
	f.pool(1)
	awaitStarts(t, f, started, 1, "no task of the bundle started")
	awaitQueue(t, f, func(i store.StreamInfo) bool { return i.Waiting == 3 && i.Leased == 1 }, "three tasks waiting, one running")
	single := 0
	if err := f.store.Tasks.Scan(f.ctx, func(data []byte) {
		if tk, err := store.DecodeTask(data); err == nil && len(tk.More) == 0 && tk.Member != "" {
			single++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if single != 4 {
		t.Fatalf("%d messages of one task each in the queue, want 4 (the bundle given back whole, a message a task)", single)
	}
	// A second pool runs one of them meanwhile.
	f.pool(1)
	awaitStarts(t, f, started, 1, "a task given back did not start on another pool")
	close(release)
	if rs := f.results(4); len(rs) != 4 {
		t.Fatalf("results: %+v", rs)
	}
}

// The message of a bundle is acked once every task of it is, and not at
// all when one was let go without an ack: the queue delivers it again.
func TestABundleIsAckedOnceAllItsTasksAre(t *testing.T) {
	for _, letGo := range []bool{false, true} {
		m := &countingDelivery{data: mustBundle(t, memberTasks("g", 3))}
		ps := parts(m, time.Second)
		if len(ps) != 3 {
			t.Fatalf("%d parts, want 3", len(ps))
		}
		seqs := map[uint64]bool{}
		for _, p := range ps {
			seqs[p.Seq()] = true
			if queueSeq(p) != m.Seq() {
				t.Fatalf("a part's queue sequence %d, want its message's %d", queueSeq(p), m.Seq())
			}
		}
		if len(seqs) != 3 {
			t.Fatalf("the parts' sequences %v are not distinct", seqs)
		}
		_ = ps[0].Ack()
		_ = ps[0].Ack() // twice: counted once
		if letGo {
			ps[1].(*part).letGo()
		} else {
			_ = ps[1].Ack()
		}
		if m.acks != 0 {
			t.Fatalf("the message acked with a task of it unended")
		}
		_ = ps[2].Ack()
		if want := map[bool]int{false: 1, true: 0}[letGo]; m.acks != want {
			t.Fatalf("let go %v: the message acked %d times, want %d", letGo, m.acks, want)
		}
	}
}

func mustBundle(t *testing.T, tasks []job.Task) []byte {
	t.Helper()
	msgs, err := store.TaskMessages(tasks, false)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	return msgs[0].Data
}

type countingDelivery struct {
	data []byte
	acks int
}

func (d *countingDelivery) Key() string             { return "g" }
func (d *countingDelivery) Data() []byte            { return d.data }
func (d *countingDelivery) Delivered() int          { return 1 }
func (d *countingDelivery) Priority() int           { return job.DefaultPriority }
func (d *countingDelivery) Seq() uint64             { return 42 }
func (d *countingDelivery) Stored() time.Time       { return time.Time{} }
func (d *countingDelivery) Ack() error              { d.acks++; return nil }
func (d *countingDelivery) Nak(time.Duration) error { return nil }
func (d *countingDelivery) Term() error             { return nil }
func (d *countingDelivery) InProgress() error       { return nil }
func (d *countingDelivery) Lease() string           { return "" }

func awaitQueue(t *testing.T, f *fixture, ok func(store.StreamInfo) bool, what string) {
	t.Helper()
	for {
		info, err := f.store.Tasks.Info(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok(info) {
			return
		}
		select {
		case <-f.ctx.Done():
			t.Fatalf("queue %+v; want %s", info, what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// The tasks of a bundle that run longer than the queue's ack wait keep the
// message leased: another pool does not get it and run them again.
func TestABundleOutlivingTheAckWaitStaysLeased(t *testing.T) {
	var mu sync.Mutex
	runs := map[string]int{}
	started := make(chan struct{}, 4)
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		mu.Lock()
		runs[t.Job]++
		mu.Unlock()
		started <- struct{}{}
		select {
		case <-time.After(2500 * time.Millisecond): // the ack wait is 1 s
		case <-ctx.Done():
		}
		return 1, nil
	}})
	f.queue(memberTasks("g", 2)...)
	f.pool(2)
	for range 2 {
		select {
		case <-started:
		case <-f.ctx.Done():
			t.Fatal("the bundle's tasks did not start")
		}
	}
	f.pool(2) // would get the message again, were its lease let lapse
	if rs := f.results(2); len(rs) != 2 {
		t.Fatalf("results: %+v", rs)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range runs {
		if n != 1 {
			t.Fatalf("job %s ran %d times, want once (runs %v)", id, n, runs)
		}
	}
}

// bundleOfFour stores a running group of four jobs of kind "k", ended
// as end says (its members from 0), and queues their tasks as a bundle;
// runs counts the runs of each job's task.
func bundleOfFour(t *testing.T, end map[int]job.State) (f *fixture, g *job.Job, runs func() map[string]int) {
	var mu sync.Mutex
	ran := map[string]int{}
	f = newFixture(t, job.Kind{Name: "k", Map: func(_ context.Context, t job.Task) (int64, error) {
		mu.Lock()
		ran[t.Job]++
		mu.Unlock()
		return 1, nil
	}})
	now := time.Now().UTC()
	specs := make([]job.Spec, 4)
	for i := range specs {
		specs[i] = job.Spec{Kind: "k", Partitions: 1}
	}
	g = job.NewGroup("k_81m96xe0qhs2zttkrtys995400", specs, now)
	g.State, g.Enqueued = job.Running, true
	for i, s := range end {
		g.Members[i].State, g.Members[i].FinishedAt = s, &now
	}
	if _, err := f.store.Jobs.Create(f.ctx, g); err != nil {
		t.Fatal(err)
	}
	f.queue(memberTasks(g.ID, 4)...)
	return f, g, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(ran)
	}
}

// A bundle delivered again (the pool that held it was lost) runs only the
// jobs of it that have not ended: the others' results are stored, and
// their group's record, read once, says so.
func TestABundleDeliveredAgainRunsOnlyItsJobsNotEnded(t *testing.T) {
	f, g, runs := bundleOfFour(t, map[int]job.State{0: job.Succeeded, 1: job.Succeeded, 2: job.Succeeded})
	// A pool takes the bundle and is lost: its lease runs out.
	if err := f.store.Tasks.Fetch(f.ctx, 1, time.Second, func(store.Delivery) {}); err != nil {
		t.Fatal(err)
	}
	f.pool(2)
	rs := f.results(1)
	awaitQueue(t, f, func(i store.StreamInfo) bool { return i.Waiting+i.Leased == 0 }, "the bundle acked")
	if got, want := runs(), map[string]int{g.ID + "-m4": 1}; !maps.Equal(got, want) {
		t.Fatalf("jobs run %v, want %v: only the job not ended; results %+v", got, want, rs)
	}
}

// A job of a group canceled before a pool could hear of it (the pool
// started after the cancel, as a server or worker process started again
// does) is not run from its bundle: the pool reads the group's record
// for a bundle stored before it subscribed to the cancel notices. It ran
// before, its result dropped.
func TestABundleStoredBeforeThePoolRunsNoCanceledJob(t *testing.T) {
	f, g, runs := bundleOfFour(t, map[int]job.State{1: job.Canceled})
	f.pool(2)
	rs := f.results(3)
	awaitQueue(t, f, func(i store.StreamInfo) bool { return i.Waiting+i.Leased == 0 }, "the bundle acked")
	if got, want := runs(), map[string]int{g.ID + "-m1": 1, g.ID + "-m3": 1, g.ID + "-m4": 1}; !maps.Equal(got, want) {
		t.Fatalf("jobs run %v, want %v: every job of the bundle but the canceled one; results %+v", got, want, rs)
	}
}

// A pool that ran fast tasks fetches for a batch's budget of them; a
// bundle of slow tasks fetched so waits for its workers for at most a
// second, not a third of the ack wait, before what its workers did not
// start goes back for other pools; and the pool fetches for its idle
// workers only from then on.
func TestABundleOfSlowTasksFetchedAsFastIsSharedOut(t *testing.T) {
	started := make(chan string, 8)
	release := make(chan struct{})
	f, first := warmedPool(t, 2, started, release)
	f.queue(memberTasks("g", 6)...)
	awaitStarts(t, f, started, 2, "the pool did not start two tasks of the bundle")
	// The four not running go back: two the pool had not handed out, and
	// two waiting in its workers' channel behind the running ones.
	awaitQueue(t, f, func(i store.StreamInfo) bool { return i.Waiting == 4 }, "the four tasks the pool's workers did not start given back")
	if !first.pace.slow() {
		t.Fatal("a pool that gave back tasks it had no worker for still takes its tasks for fast")
	}
	// A second pool runs two of them while the first one's two still run.
	f.pool(2)
	awaitStarts(t, f, started, 2, "the tasks given back did not start on another pool")
	close(release)
	if rs := f.results(6); len(rs) != 6 {
		t.Fatalf("results: %+v", rs)
	}
}

// A task waiting in the workers' channel behind one that turned out slow
// goes back to the queue for other workers, though the fetch that brought
// it ended without waiting (it held a task of minutes behind a task of
// minutes while other pools idled: the channel was looked at only by the
// next fetch's wait for a worker).
func TestATaskWaitingBehindASlowOneGoesBack(t *testing.T) {
	started := make(chan string, 8)
	release := make(chan struct{})
	f, first := warmedPool(t, 1, started, release)
	// Two tasks of one fetch: one runs and is held, the other waits in the
	// channel, and the fetch ends.
	f.queue(task("a", 0, 1), task("b", 0, 1))
	awaitStarts(t, f, started, 1, "the pool did not start a task")
	awaitQueue(t, f, func(i store.StreamInfo) bool { return i.Waiting == 1 && i.Leased == 1 }, "the task waiting behind the held one given back")
	if !first.pace.slow() {
		t.Fatal("a pool that gave back a task it had no worker for still takes its tasks for fast")
	}
	f.pool(1)
	awaitStarts(t, f, started, 1, "the task given back did not start on another pool")
	close(release)
	if rs := f.results(2); len(rs) != 2 {
		t.Fatalf("results: %+v", rs)
	}
}

// warmedPool starts a pool of n workers, which fetches for fast tasks
// (it ran one) and gives back a task no worker took within 200 ms, with
// kind "k" held until release and "fast".
func warmedPool(t *testing.T, n int, started chan<- string, release <-chan struct{}) (*fixture, *Pool) {
	t.Helper()
	f := newFixture(t, heldKind(started, release),
		job.Kind{Name: "fast", Map: func(context.Context, job.Task) (int64, error) { return 1, nil }})
	// An ack wait of ten minutes: a task held a third of it would outlast
	// the test.
	f.store = memstore.New(memstore.Config{AckWait: 10 * time.Minute})
	p := f.pool(n, func(c *Config) { c.heldLong = 200 * time.Millisecond })
	fast := task("warm", 0, 1)
	fast.Kind = "fast"
	f.queue(fast)
	f.results(1)
	if p.pace.slow() {
		t.Fatal("a pool that ran a task of microseconds takes its tasks for slow")
	}
	return f, p
}
