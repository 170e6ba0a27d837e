package worker

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/mrcluster/mrcluster/internal/job"
)

// startNotices records the start notices a store carries, by job.
type startNotices struct {
	mu   sync.Mutex
	jobs map[string][]job.TaskStarted
	came chan struct{}
}

func watchStarts(f *fixture) *startNotices {
	s := &startNotices{jobs: map[string][]job.TaskStarted{}, came: make(chan struct{}, 100)}
	unsub, err := f.store.Notices.OnTasksStarted("", func(ns []job.TaskStarted) {
		s.mu.Lock()
		s.jobs[ns[0].Job] = append(s.jobs[ns[0].Job], ns...)
		s.mu.Unlock()
		select {
		case s.came <- struct{}{}:
		default:
		}
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(unsub)
	return s
}

func (s *startNotices) of(id string) []job.TaskStarted {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[id]
}

// A task still running when its notice is due is announced: the dashboard
// and the job's state show it running while it runs.
func TestStartNoticeOfARunningTask(t *testing.T) {
	release := make(chan struct{})
	f := newFixture(t, job.Kind{Name: "k", Map: func(ctx context.Context, t job.Task) (int64, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return 1, nil
	}})
	starts := watchStarts(f)
	f.pool(1)
	f.queue(task("slow", 0, 1))
	for len(starts.of("slow")) == 0 {
		select {
		case <-starts.came:
		case <-f.ctx.Done():
			t.Fatal("no start notice of the running task")
		}
	}
	if n := starts.of("slow"); len(n) != 1 || n[0].Partition != 0 || n[0].Attempt != 1 || n[0].Worker == "" {
		t.Fatalf("notices of the running task: %+v; want one, of partition 0's attempt 1 and its worker", n)
	}
	close(release)
	f.results(1)
}

// A task that ended before its notice went out is not announced: its
// result says it ran, and a notice would only cost a message to the
// coordinator and to every read model, for every short task.
func TestNoStartNoticeOfAnEndedTask(t *testing.T) {
	f := newFixture(t)
	starts := watchStarts(f)
	p := New(Config{Store: f.store, Kinds: f.kinds, Concurrency: 1, Name: "test", Logger: slog.New(slog.DiscardHandler)})
	a := job.TaskStarted{Job: "a", Partition: 0, Attempt: 1, Worker: "w.0", Phase: job.PhaseMap}
	b1 := job.TaskStarted{Job: "b", Partition: 1, Attempt: 1, Worker: "w.0", Phase: job.PhaseMap}
	b2 := job.TaskStarted{Job: "b", Partition: 2, Attempt: 1, Worker: "w.1", Phase: job.PhaseMap}
	b2again := b2
	b2again.Attempt = 2
	for _, s := range []job.TaskStarted{a, b1, b2, b2again} {
		p.noteStarted(s)
	}
	p.unnoteStarted(a)
	p.unnoteStarted(b2)
	p.flushStarted()
	p.unnoteStarted(b1) // sent already: nothing to withdraw
	p.noteStarted(a)    // a task of a sent job starts again
	p.flushStarted()
	for len(starts.of("a")) == 0 {
		select {
		case <-starts.came:
		case <-f.ctx.Done():
			t.Fatal("the last notice never came")
		}
	}
	if n := starts.of("b"); len(n) != 2 || n[0] != b1 || n[1] != b2again {
		t.Fatalf("notices of job b: %+v; want partition 1's and partition 2's second attempt, not its first", n)
	}
	if n := starts.of("a"); len(n) != 1 || n[0] != a {
		t.Fatalf("notices of job a: %+v; want only the one noted after the withdrawn one", n)
	}
	if len(p.startedBuf) != 0 {
		t.Fatalf("%d jobs' notices left waiting; want none", len(p.startedBuf))
	}
}
