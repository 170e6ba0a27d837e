package view

import (
	"log/slog"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
)

// The history counts, per minute, the tasks done (by kind), the jobs that
// ended and the most tasks waiting, from the changes of job records; the
// records read at start count for nothing (they are not news); an hour
// later the minute is gone.
func TestHistoryPerMinute(t *testing.T) {
	t.Parallel()
	v := New(Config{Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	now := time.Now()
	old := &job.Job{ID: "noop_old", Kind: "noop", State: job.Succeeded, Partitions: 9, Done: 9, CreatedAt: now, FinishedAt: &now}
	v.applyJobs([]*store.Entry{record(t, old)}, true)
	v.loaded()

	a := &job.Job{ID: "short_a", Kind: "short", State: job.Queued, Partitions: 4, Enqueued: true, CreatedAt: now}
	v.applyJobs([]*store.Entry{record(t, a)}, false)
	b := &job.Job{ID: "noop_b", Kind: "noop", State: job.Queued, Partitions: 2, Enqueued: true, CreatedAt: now}
	v.applyJobs([]*store.Entry{record(t, b)}, false)
	a2 := *a
	a2.State, a2.Done = job.Running, 3
	v.applyJobs([]*store.Entry{record(t, &a2)}, false)
	b2 := *b
	b2.State, b2.Done, b2.FinishedAt = job.Succeeded, 2, &now
	v.applyJobs([]*store.Entry{record(t, &b2)}, false)
	a3 := a2
	a3.State, a3.Failed, a3.FinishedAt = job.Failed, 1, &now
	v.applyJobs([]*store.Entry{record(t, &a3)}, false)

	h := v.History(time.Now())
	if len(h) != HistoryMinutes {
		t.Fatalf("%d minutes", len(h))
	}
	last := h[len(h)-1]
	if last.TasksDone != 5 || last.TasksByKind["short"] != 3 || last.TasksByKind["noop"] != 2 ||
		last.JobsSucceeded != 1 || last.JobsFailed != 1 || last.QueueDepth != 6 {
		t.Fatalf("this minute: %+v", last)
	}
	for _, m := range h[:len(h)-1] {
		if m.TasksDone != 0 || m.JobsSucceeded != 0 || !m.At.Before(last.At) {
			t.Fatalf("an earlier minute: %+v", m)
		}
	}
	if later := v.History(time.Now().Add(time.Hour)); later[0].TasksDone != 0 || later[len(later)-1].TasksDone != 0 {
		t.Fatalf("an hour later the minute is still there: %+v", later)
	}
}
