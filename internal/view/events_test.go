package view

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store"
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

// An idle worker's heartbeat, though nothing changed, goes out as an event
// every showEvery, so that a page does not take it for a silent one; a
// heartbeat sooner than that does not.
func TestIdleWorkerHeartbeatIsShown(t *testing.T) {
	t.Parallel()
	hub := event.NewHub()
	v := New(Config{Hub: hub})
	sub := hub.Subscribe(16)
	defer hub.Unsubscribe(sub)
	status, _ := json.Marshal(job.WorkerStatus{Key: "w.0", Host: "h"})
	beat := func() int {
		v.applyWorker(&store.Entry{Key: "w.0", Value: status}, false)
		n := 0
		for {
			select {
			case e := <-sub.C:
				if e.Type == "worker.status" {
					n++
				}
			default:
				return n
			}
		}
	}
	if n := beat(); n != 1 {
		t.Fatalf("a new worker: %d events", n)
	}
	if n := beat(); n != 0 {
		t.Fatalf("an unchanged heartbeat right after: %d events", n)
	}
	v.mu.Lock()
	w := v.workers["w.0"]
	w.shown = w.shown.Add(-showEvery)
	v.workers["w.0"] = w
	v.mu.Unlock()
	if n := beat(); n != 1 {
		t.Fatalf("an unchanged heartbeat %s after the last event: %d events, want 1", showEvery, n)
	}
}
