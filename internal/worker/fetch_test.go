package worker

import (
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

func TestFetchSizeFollowsTaskRunTime(t *testing.T) {
	t.Parallel()
	var p pace
	if n := p.fetchSize(4); n != 4 {
		t.Fatalf("before any task: fetch %d, want one per worker", n)
	}
	for range 50 {
		p.observe(5 * time.Microsecond)
	}
	if n := p.fetchSize(4); n != maxFetch {
		t.Fatalf("tasks of 5µs: fetch %d, want %d", n, maxFetch)
	}
	// One slow task is believed at once: no more hoarding.
	p.observe(2 * time.Second)
	if n := p.fetchSize(4); n != 4 {
		t.Fatalf("after a 2s task: fetch %d, want 4", n)
	}
	// Speed is believed gradually.
	p.observe(time.Microsecond)
	if n := p.fetchSize(4); n != 4 {
		t.Fatalf("one fast task after a slow one: fetch %d, want still 4", n)
	}
	for range 200 {
		p.observe(time.Millisecond)
	}
	if n, want := p.fetchSize(4), 4*int(batchBudget/time.Millisecond); n < want-2 || n > want {
		t.Fatalf("tasks of 1ms: fetch %d, want about %d", n, want)
	}
}

// A fetch is sized in tasks: when messages carry bundles of many tasks,
// fewer messages make the batch's budget.
func TestFetchSizeCountsTheTasksOfBundles(t *testing.T) {
	t.Parallel()
	var p pace
	for range 50 {
		p.observe(5 * time.Microsecond)
	}
	for range 100 {
		p.carried(64)
	}
	if n, want := p.fetchSize(4), maxFetch/64; n < want || n > want+1 {
		t.Fatalf("tasks of 5µs in bundles of 64: fetch %d messages, want %d (%d tasks)", n, want, maxFetch)
	}
	if n := p.fetchSize(4); p.tasksOf(n) < n*job.MaxBundle {
		t.Fatalf("%d messages of bundles of 64 may bring %d tasks, room for %d", n, n*job.MaxBundle, p.tasksOf(n))
	}
	for range 100 {
		p.carried(1)
	}
	if n := p.fetchSize(4); n < maxFetch*9/10 {
		t.Fatalf("bundles gone: fetch %d messages, want about %d again", n, maxFetch)
	}
}

func TestDiskFullDelayDoublesUpToTwoMinutes(t *testing.T) {
	for runs, want := range []time.Duration{10 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 2 * time.Minute, 2 * time.Minute} {
		if got := diskFullDelay(runs); got != want {
			t.Errorf("after %d runs: %s, want %s", runs, got, want)
		}
	}
	if got := diskFullDelay(1000); got != 2*time.Minute {
		t.Errorf("after 1000 runs: %s, want 2m", got)
	}
}
