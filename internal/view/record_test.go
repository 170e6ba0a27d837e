package view

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mrcluster/mrcluster/internal/event"
	"github.com/mrcluster/mrcluster/internal/job"
	"github.com/mrcluster/mrcluster/internal/store/memstore"
)

// The view hands the coordinator an unfinished job's record as stored:
// its revision, and its task history (which the coordinator writes the
// next revision from); a finished job's, none.
func TestRecordOfAnUnfinishedJob(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := memstore.New(memstore.Config{})
	v := New(Config{Store: st, Hub: event.NewHub(), Logger: slog.New(slog.DiscardHandler)})
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Stop(context.Background()) })
	<-v.Ready()
	seen := func(id string, rev uint64) *job.Job {
		t.Helper()
		for {
			changed := v.Changed()
			if j, r, ok := v.Record(id); ok && r == rev {
				return j
			}
			select {
			case <-ctx.Done():
				j, r, ok := v.Record(id)
				t.Fatalf("the view's record of %s: revision %d (%v), want %d; %+v", id, r, ok, rev, j)
			case <-changed:
			}
		}
	}

	now := time.Now().UTC()
	j := job.New(job.NewID("noop", now), job.Spec{Kind: "noop", Partitions: 2}, now)
	j.LogInRecord = true
	rev, err := st.Jobs.Create(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	seen(j.ID, rev)
	for p := range 2 {
		r := job.TaskResult{Job: j.ID, Partition: p, Attempt: 1, Value: 1, StartedAt: now, FinishedAt: now}
		j.Apply(r, job.SumReduce)
		j.Log([]job.TaskResult{r})
		if rev, err = st.Jobs.Update(ctx, j, rev); err != nil {
			t.Fatal(err)
		}
		if p == 0 {
			got := seen(j.ID, rev)
			if got.Done != 1 || len(got.TaskLog) != 1 {
				t.Fatalf("after one task: done %d, %d attempts logged; want 1 and 1 (the coordinator writes the next revision from it)", got.Done, len(got.TaskLog))
			}
		}
	}
	for {
		changed := v.Changed()
		if s, _ := v.State(j.ID); s == job.Succeeded {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the view never saw the job succeed")
		case <-changed:
		}
	}
	if got, _, ok := v.Record(j.ID); ok {
		t.Fatalf("a finished job's record handed out: %+v", got)
	}
	v.mu.RLock()
	logged := len(v.byID[j.ID].j.TaskLog)
	v.mu.RUnlock()
	if logged != 0 {
		t.Fatalf("the finished job held with %d attempts logged; want them left to the store", logged)
	}
}
