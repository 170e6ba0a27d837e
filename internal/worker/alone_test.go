package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
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
	suspect := func(id string) job.Task {
		tk := task(id, 0, 1)
		tk.Lost, tk.MaxLostRuns = 2, 10
		return tk
	}
	f.queue(suspect("suspect-a"), suspect("suspect-b"), task("ord-1", 0, 1), task("ord-2", 0, 1))
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
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"suspect-a", "suspect-b"} {
		if len(beside[id]) > 0 {
			t.Errorf("%s ran beside %v; a task lost twice in a row runs alone", id, beside[id])
		}
	}
}
