package worker

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// A task whose last two runs were lost with their worker runs alone in its
// pool: it waits for the task under way to end, the tasks the pool fetched
// with it go back to the queue, and nothing else starts until it ends; a
// second such task waits its turn in the queue and then runs alone too.
// The ordinary tasks all run, after.
func TestATaskLostTwiceInARowRunsAlone(t *testing.T) {
	var (
		mu      sync.Mutex
		running = map[string]bool{}
		beside  = map[string][]string{} // what ran beside each task when it started or while it ran
		started = make(chan string, 16)
	)
	release := map[string]chan struct{}{"long": make(chan struct{}), "suspect-a": make(chan struct{}), "suspect-b": make(chan struct{})}
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, tk job.Task) (int64, error) {
		mu.Lock()
		for other := range running {
			beside[tk.Job] = append(beside[tk.Job], other)
			beside[other] = append(beside[other], tk.Job)
		}
		running[tk.Job] = true
		mu.Unlock()
		started <- tk.Job
		if c := release[tk.Job]; c != nil {
			select {
			case <-c:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		mu.Lock()
		delete(running, tk.Job)
		mu.Unlock()
		return 1, nil
	}})
	p := f.pool(3)
	f.queue(task("long", 0, 1))
	if got := <-started; got != "long" {
		t.Fatalf("first task started: %s", got)
	}
	f.queue(suspectTask("suspect-a"), suspectTask("suspect-b"), task("ord-1", 0, 1), task("ord-2", 0, 1))
	// The first suspect waits for the long task; the pool fetches nothing
	// meanwhile, and gives back what it fetched with it.
	deadline := time.Now().Add(10 * time.Second)
	for p.soloing() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no task came to run alone")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		info, err := f.store.Tasks.Info(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Waiting == 3 && info.Leased == 2 { // the long task and the suspect
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue while a suspect waits: %+v; want 3 waiting, 2 leased", info)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Its worker's status says what it waits for.
	for waits := ""; waits == ""; {
		entries, err := f.store.Workers.Entries(f.ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			var st job.WorkerStatus
			if err := json.Unmarshal(e.Value, &st); err != nil {
				t.Fatal(err)
			}
			if st.WaitsAlone != "" && (st.WaitsAlone != "suspect-a" && st.WaitsAlone != "suspect-b" || st.Busy) {
				t.Fatalf("a worker's status while a suspect waits: %+v", st)
			}
			waits += st.WaitsAlone
		}
		if time.Now().After(deadline) {
			t.Fatal("no worker's status says it waits to run a task alone")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case id := <-started:
		t.Fatalf("%s started while the long task ran and a suspect waited to run alone", id)
	default:
	}
	close(release["long"])
	for range 4 {
		id := <-started
		if c := release[id]; c != nil {
			// Whatever would start beside it shows within this window.
			time.Sleep(300 * time.Millisecond)
			close(c)
		}
	}
	f.results(5)
	for _, key := range []string{"test.0", "test.1", "test.2"} {
		e, err := f.store.Workers.Get(f.ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var st job.WorkerStatus
		if err := json.Unmarshal(e.Value, &st); err != nil || st.WaitsAlone != "" {
			t.Fatalf("%s's status once the suspects ran: %+v, %v; want no wait", key, st, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"suspect-a", "suspect-b"} {
		if len(beside[id]) > 0 {
			t.Errorf("%s ran beside %v; a task lost twice in a row runs alone", id, beside[id])
		}
	}
}

// held holds the publishes that hold picks until release is closed, and
// says so on started when the first comes.
type held struct {
	store.Stream
	hold    func(msgs []store.Message) bool
	started chan struct{}
	release chan struct{}
}

func holding(s store.Stream, hold func(msgs []store.Message) bool) *held {
	return &held{Stream: s, hold: hold, started: make(chan struct{}, 1), release: make(chan struct{})}
}

func (h *held) Publish(ctx context.Context, msgs ...store.Message) []error {
	if h.hold(msgs) {
		select {
		case h.started <- struct{}{}:
		default:
		}
		select {
		case <-h.release:
		case <-ctx.Done():
		}
	}
	return h.Stream.Publish(ctx, msgs...)
}

// suspectTask is a task whose last two runs were lost with their worker.
func suspectTask(id string) job.Task {
	tk := task(id, 0, 1)
	tk.Lost, tk.MaxLostRuns = 2, 10
	return tk
}

// A suspect waits for the results of the tasks that ended before it to be
// stored too: were it to take the process down meanwhile, those tasks
// would be lost with it, and counted so.
func TestASuspectWaitsForTheResultsOnTheirWay(t *testing.T) {
	started := make(chan string, 4)
	f := newFixture(t, job.Kind{Name: "k", Map: func(_ context.Context, tk job.Task) (int64, error) {
		started <- tk.Job
		return 1, nil
	}})
	// The first task's result is held.
	results := holding(f.store.Results, func(msgs []store.Message) bool {
		for _, m := range msgs {
			if rs, err := store.DecodeResults(m.Data); err == nil && len(rs) > 0 && rs[0].Job == "held" {
				return true
			}
		}
		return false
	})
	s := *f.store
	s.Results = results
	f.store = &s
	p := f.pool(2)
	f.queue(task("held", 0, 1))
	<-started
	select {
	case <-results.started:
	case <-f.ctx.Done():
		t.Fatal("the first task's result was never sent to the store")
	}
	f.queue(suspectTask("suspect"))
	deadline := time.Now().Add(10 * time.Second)
	for p.soloing() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the suspect never came to run alone")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Whatever would start it shows within this window (the suspect also
	// waits for the fetch that brought it, up to its fetchWait).
	time.Sleep(fetchWait + 500*time.Millisecond)
	select {
	case id := <-started:
		t.Fatalf("%s started while the result of the task before it was on its way", id)
	default:
	}
	close(results.release)
	if id := <-started; id != "suspect" {
		t.Fatalf("%s started; want the suspect", id)
	}
	f.results(2)
}

// A suspect waits for its pool's tasks under way only so long: past the
// bound it runs beside them, so that a pool running a task of hours does
// not idle for hours, nor the suspect wait that long.
func TestASuspectWaitsForTheOthersOnlySoLong(t *testing.T) {
	release := make(chan struct{})
	started := make(chan string, 4)
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, tk job.Task) (int64, error) {
		started <- tk.Job
		if tk.Job == "long" {
			select {
			case <-release:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		return 1, nil
	}})
	f.pool(2, func(c *Config) { c.aloneWait = 500 * time.Millisecond })
	f.queue(task("long", 0, 1))
	<-started
	f.queue(suspectTask("suspect"))
	select {
	case id := <-started:
		if id != "suspect" {
			t.Fatalf("%s started; want the suspect", id)
		}
	case <-f.ctx.Done():
		t.Fatal("the suspect never ran while a long task ran beside it")
	}
	close(release)
	f.results(2)
}

// Two suspects fetched together: one runs alone, the other goes back to
// the queue, and the first starts only once the second is back (a CI run
// saw the first kill its process while the second's give-back was on its
// way: the second lost a run each time, and failed its job with the
// first's).
func TestASuspectWaitsForTheTasksGoingBack(t *testing.T) {
	started := make(chan string, 4)
	f := newFixture(t, job.Kind{Name: "k", Map: func(_ context.Context, tk job.Task) (int64, error) {
		started <- tk.Job
		return 1, nil
	}})
	// The copies the pool gives back are held.
	tasks := holding(f.store.Tasks, func(msgs []store.Message) bool { return len(msgs) > 0 && msgs[0].Later })
	s := *f.store
	s.Tasks = tasks
	f.store = &s
	f.queue(suspectTask("suspect-a"), suspectTask("suspect-b"))
	f.pool(2)
	select {
	case <-tasks.started:
	case id := <-started:
		t.Fatalf("%s started before the other suspect went back", id)
	case <-f.ctx.Done():
		t.Fatal("neither suspect went back to the queue")
	}
	// Whatever would start shows within this window.
	time.Sleep(fetchWait + 500*time.Millisecond)
	select {
	case id := <-started:
		t.Fatalf("%s started while the other suspect was on its way back to the queue", id)
	default:
	}
	close(tasks.release)
	f.results(2)
}

// A task going back to the queue whose copy the store does not take is
// given back again while the pool holds it, not let go: let go, it came
// back from the queue at once (a nak) as a lost run, and a task with two
// lost runs is a suspect's neighbour no longer but a suspect itself.
func TestATaskTheStoreDoesNotTakeBackIsGivenBackAgain(t *testing.T) {
	started := make(chan string, 4)
	f := newFixture(t, job.Kind{Name: "k", Map: func(_ context.Context, tk job.Task) (int64, error) {
		started <- tk.Job
		return 1, nil
	}})
	f.queue(suspectTask("suspect-a"), suspectTask("suspect-b"))
	// The first two copies given back (Later) are refused.
	tasks := f.refuseTasks(2, func(msgs []store.Message) bool { return len(msgs) > 0 && msgs[0].Later })
	f.pool(2, func(c *Config) { c.storeAgainWait = 200 * time.Millisecond })
	// The suspect that runs alone waits for the other's give-back, tried
	// again after 200 and 400 ms, to be stored.
	first := <-started
	if tasks.passed.Load() == 0 {
		t.Fatalf("%s started while the other suspect's give-back was being tried again", first)
	}
	started <- first
	rs := f.results(2)
	if left := tasks.left.Load(); left >= 0 {
		t.Fatalf("%d refusals of a give-back left; want both met (the test did not test its case)", left+1)
	}
	for _, r := range rs {
		if r.Outcome == job.OutcomeLost {
			t.Fatalf("results: %+v; want no run lost", rs)
		}
	}
	runs := map[string]int{}
	for range 2 {
		runs[<-started]++
	}
	if runs["suspect-a"] != 1 || runs["suspect-b"] != 1 {
		t.Fatalf("runs: %v; want each task run once", runs)
	}
}
