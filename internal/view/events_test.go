package view

import (
	"encoding/json"
	"log/slog"
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

// A task may start before the view sees its job's record (a submit stores
// the tasks first): its task.started waits for the record, so that a
// client sees job.submitted first, and goes out anyway after holdUnseen.
func TestTaskStartedWaitsForItsJob(t *testing.T) {
	t.Parallel()
	hub := event.NewHub()
	v := New(Config{Hub: hub, Logger: slog.New(slog.DiscardHandler)})
	v.loaded()
	sub := hub.Subscribe(64)
	defer hub.Unsubscribe(sub)
	events := func() []string {
		var out []string
		for {
			select {
			case e := <-sub.C:
				out = append(out, e.Type)
			default:
				return out
			}
		}
	}
	now := time.Now()
	j := job.New(job.NewID("noop", now), job.Spec{Kind: "noop", Partitions: 2}, now)
	lost := job.New(job.NewID("noop", now), job.Spec{Kind: "noop", Partitions: 1}, now)
	v.started[j.ID] = []job.TaskStarted{{Job: j.ID, Partition: 0, Attempt: 1}}
	v.started[lost.ID] = []job.TaskStarted{{Job: lost.ID, Partition: 0, Attempt: 1}}
	v.publishStarted(now)
	if got := events(); len(got) != 0 {
		t.Fatalf("start notices of jobs not seen yet went out: %v", got)
	}
	v.started[j.ID] = append(v.started[j.ID], job.TaskStarted{Job: j.ID, Partition: 1, Attempt: 1})
	v.applyJobs([]*store.Entry{record(t, j)}, false)
	v.publishStarted(now.Add(startedEvery))
	if got := events(); len(got) != 2 || got[0] != "job.submitted" || got[1] != "task.started" {
		t.Fatalf("once the job is seen: %v, want job.submitted then task.started", got)
	}
	// The job whose record never comes (a submit that failed): its notice
	// goes out once holdUnseen has passed, and is not held again.
	v.publishStarted(now.Add(holdUnseen))
	if got := events(); len(got) != 1 || got[0] != "task.started" {
		t.Fatalf("a notice held %s: %v, want it published", holdUnseen, got)
	}
	if len(v.unseen) != 0 || len(v.started) != 0 {
		t.Fatalf("left behind: %d unseen, %d started", len(v.unseen), len(v.started))
	}
}
