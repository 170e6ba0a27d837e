package view

import (
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/job"
)

// The watcher may first see a job already finished (the bucket keeps only
// the newest revision): the events must still say it finished.
func TestJobEventsOfAJobFirstSeenFinished(t *testing.T) {
	t.Parallel()
	v := New(Config{})
	j := job.New("noop_x", job.Spec{Kind: "noop", Partitions: 2}, time.Now())
	now := time.Now()
	j.Apply(job.TaskResult{Partition: 0, Value: 1, StartedAt: now, FinishedAt: now}, job.SumReduce)
	j.Apply(job.TaskResult{Partition: 1, Value: 1, StartedAt: now, FinishedAt: now}, job.SumReduce)
	var types []string
	for _, e := range v.jobEvents(nil, j) {
		types = append(types, e.Type)
	}
	want := []string{"job.submitted", "task.done", "job.succeeded"}
	if len(types) != len(want) {
		t.Fatalf("events = %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("events = %v, want %v", types, want)
		}
	}
	prev := j.Clone()
	j.Enqueued = true
	if evs := v.jobEvents(prev, j); len(evs) != 1 || evs[0].Type != "job.progress" {
		t.Fatalf("events of a change of no state or progress = %v, want one job.progress", evs)
	}
}
